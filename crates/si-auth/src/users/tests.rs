use super::*;

fn store() -> (tempfile::TempDir, UserStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = UserStore::open(&dir.path().join("data/users.db")).unwrap();
    (dir, store)
}

fn pw(text: &str) -> SecretString {
    SecretString::from(text)
}

fn add(store: &UserStore, name: &str, role: Role, location: &str) -> Result<User, AuthError> {
    let password = pw("correct horse battery");
    store.add(&NewUser {
        username: name,
        password: &password,
        role,
        location,
    })
}

#[test]
fn add_list_and_authenticate() {
    let (_dir, store) = store();
    add(&store, "doctor1", Role::Clinician, "hospital-01").unwrap();
    add(&store, "biller", Role::Billing, "*").unwrap();
    let names: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|u| (u.username, u.role))
        .collect();
    assert_eq!(
        names,
        [
            ("biller".into(), Role::Billing),
            ("doctor1".into(), Role::Clinician)
        ]
    );

    let user = store
        .authenticate("doctor1", &pw("correct horse battery"))
        .unwrap();
    assert_eq!(user.location, "hospital-01");
    assert!(matches!(
        store.authenticate("doctor1", &pw("wrong horse battery")),
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        store.authenticate("nobody", &pw("correct horse battery")),
        Err(AuthError::InvalidCredentials)
    ));
}

#[test]
fn duplicate_and_invalid_users_are_refused() {
    let (_dir, store) = store();
    add(&store, "doctor1", Role::Clinician, "hospital-01").unwrap();
    assert!(matches!(
        add(&store, "doctor1", Role::Admin, "x"),
        Err(AuthError::UserExists(_))
    ));
    assert!(matches!(
        add(&store, "bad name", Role::Admin, "x"),
        Err(AuthError::InvalidUser(_))
    ));
    assert!(matches!(
        add(&store, "ok", Role::Admin, "a/b"),
        Err(AuthError::InvalidUser(_))
    ));
    let short = pw("short");
    let new = NewUser {
        username: "x",
        password: &short,
        role: Role::Admin,
        location: "x",
    };
    assert!(matches!(store.add(&new), Err(AuthError::InvalidUser(_))));
}

#[test]
fn stored_rows_hold_a_hash_not_the_password() {
    let (dir, store) = store();
    add(&store, "doctor1", Role::Clinician, "hospital-01").unwrap();
    drop(store);
    let conn = Connection::open(dir.path().join("data/users.db")).unwrap();
    let hash: String = conn
        .query_row("SELECT password_hash FROM users", [], |r| r.get(0))
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(!hash.contains("correct horse"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data/users.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn disabled_users_cannot_log_in() {
    let (_dir, store) = store();
    add(&store, "doctor1", Role::Clinician, "hospital-01").unwrap();
    store
        .lock()
        .unwrap()
        .execute("UPDATE users SET disabled = 1", [])
        .unwrap();
    assert!(matches!(
        store.authenticate("doctor1", &pw("correct horse battery")),
        Err(AuthError::InvalidCredentials)
    ));
}

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
