use super::*;

#[test]
fn login_location_rules() {
    let user = |location: &str| User {
        username: "u".into(),
        role: Role::Clinician,
        location: location.into(),
        disabled: false,
        created_at: 0,
    };
    assert_eq!(login_location(&user("h1"), None, &[]).unwrap(), "h1");
    assert_eq!(login_location(&user("h1"), Some("h1"), &[]).unwrap(), "h1");
    assert!(matches!(
        login_location(&user("h1"), Some("h2"), &[]),
        Err(AuthError::WrongLocation { .. })
    ));
    assert_eq!(login_location(&user("*"), Some("h2"), &[]).unwrap(), "h2");
    assert!(matches!(
        login_location(&user("*"), None, &[]),
        Err(AuthError::LocationRequired(_))
    ));
    assert!(login_location(&user("*"), Some("../etc"), &[]).is_err());
    let known = ["h1".to_owned(), "h2".to_owned()];
    assert_eq!(
        login_location(&user("*"), Some("h2"), &known).unwrap(),
        "h2"
    );
    assert!(matches!(
        login_location(&user("*"), Some("anywhere"), &known),
        Err(AuthError::WrongLocation { .. })
    ));
}

#[test]
fn any_location_is_not_a_place_to_log_in() {
    let user = |location: &str| User {
        username: "u".into(),
        role: Role::Clinician,
        location: location.into(),
        disabled: false,
        created_at: 0,
    };
    let known = ["*".to_owned(), "h1".to_owned()];
    for location in ["*", "h1"] {
        for listed in [&[][..], &known[..]] {
            assert!(
                matches!(
                    login_location(&user(location), Some(" * "), listed),
                    Err(AuthError::LocationNotAPlace)
                ),
                "{location} {listed:?}"
            );
        }
    }
}

#[test]
fn username_keys_ignore_case_and_compatibility_forms() {
    let key = |name: &str| UsernameKey::of(name).as_str().to_owned();
    for same in [
        "doctor1",
        "Doctor1",
        "DOCTOR1",
        "ｄｏｃｔｏｒ１",
        "Ｄｏｃｔｏｒ１",
    ] {
        assert_eq!(key(same), "doctor1", "{same}");
    }
    assert_eq!(key("\u{212A}elvin"), "kelvin", "the Kelvin sign is a K");
    assert_eq!(key("\u{FB01}le"), "file", "ligatures come apart");
    assert_eq!(key("dr.smith@ward-3"), "dr.smith@ward-3");
    assert_ne!(key("doctor1"), key("doctor2"));
    assert!(is_well_formed_username("Doctor1"));
    assert!(!is_well_formed_username("ｄｏｃｔｏｒ１"));
}
