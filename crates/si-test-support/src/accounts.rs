//! What every user store must do for users of single sign-on, run over each
//! engine's [`Accounts`].

use secrecy::SecretString;
use si_auth::{Accounts, AuthError, NewUser};
use si_core::Role;

/// A user single sign-on names is created without a password, takes the role and
/// location of each sign-in, never matches a password, cannot take a local
/// user's name, and stays out while disabled here.
pub async fn single_sign_on_users(accounts: &Accounts) {
    let first = accounts
        .sign_in_external("alice@hospital.example", Role::Clinician, "north")
        .await
        .unwrap();
    assert_eq!(
        (first.role, first.location.as_str()),
        (Role::Clinician, "north")
    );
    let again = accounts
        .sign_in_external("alice@hospital.example", Role::Admin, "south")
        .await
        .unwrap();
    assert_eq!(
        (again.role, again.location.as_str()),
        (Role::Admin, "south")
    );
    let listed = accounts.list().await.unwrap();
    let stored = listed
        .iter()
        .find(|user| user.username == "alice@hospital.example")
        .unwrap();
    assert_eq!(
        (stored.role, stored.location.as_str()),
        (Role::Admin, "south")
    );
    for password in [
        "",
        "!single-sign-on",
        "anything at all",
        "dummy password for timing",
    ] {
        let refused = accounts
            .authenticate("alice@hospital.example", &SecretString::from(password))
            .await;
        assert!(
            matches!(refused, Err(AuthError::InvalidCredentials)),
            "{password:?}"
        );
    }
    accounts
        .add(&NewUser {
            username: "breakglass",
            password: &SecretString::from("correct horse battery staple"),
            role: Role::Admin,
            location: "*",
        })
        .await
        .unwrap();
    for name in ["breakglass", "BreakGlass"] {
        let taken = accounts
            .sign_in_external(name, Role::Billing, "north")
            .await;
        assert!(
            matches!(&taken, Err(AuthError::LocalAccountExists(existing)) if existing == "breakglass"),
            "{name}: {taken:?}"
        );
    }
    accounts
        .set_disabled("alice@hospital.example", true)
        .await
        .unwrap();
    let disabled = accounts
        .sign_in_external("alice@hospital.example", Role::Admin, "south")
        .await;
    assert!(
        matches!(disabled, Err(AuthError::UserDisabled(_))),
        "{disabled:?}"
    );
    let odd = accounts.sign_in_external("a b", Role::Admin, "south").await;
    assert!(matches!(odd, Err(AuthError::InvalidUser(_))), "{odd:?}");
}
