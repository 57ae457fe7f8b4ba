use si_core::Role;

use super::*;
use crate::NewUser;

fn store() -> (tempfile::TempDir, UserStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = UserStore::open(&dir.path().join("users.db")).unwrap();
    let password = SecretString::from("correct horse battery");
    let user = NewUser {
        username: "doctor1",
        password: &password,
        role: Role::Clinician,
        location: "h1",
    };
    store.add(&user).unwrap();
    (dir, store)
}

#[test]
fn refresh_rotates_and_reuse_revokes_the_family() {
    let (_dir, store) = store();
    let first = store.start_session("doctor1", "h1", 3600).unwrap();
    let second = store.refresh(&first.token, 3600).unwrap();
    assert_eq!(second.user.username, "doctor1");
    assert_eq!(second.location, "h1");
    assert_eq!(second.refresh.family, first.family);
    assert_ne!(
        second.refresh.token.expose_secret(),
        first.token.expose_secret()
    );

    // The spent token comes back: the family dies, including the newest token.
    assert!(matches!(
        store.refresh(&first.token, 3600),
        Err(AuthError::RefreshReused { .. })
    ));
    assert!(store.refresh(&second.refresh.token, 3600).is_err());
    assert!(
        store
            .revoked_set()
            .unwrap()
            .families
            .contains(&first.family)
    );

    // Other sessions of the same user are untouched.
    let other = store.start_session("doctor1", "h1", 3600).unwrap();
    assert!(store.refresh(&other.token, 3600).is_ok());
}

#[test]
fn tokens_are_stored_only_as_hashes() {
    let (dir, store) = store();
    let issued = store.start_session("doctor1", "h1", 3600).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("users.db")).unwrap();
    let stored: String = conn
        .query_row("SELECT token_hash FROM refresh_tokens", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, issued.token.expose_secret());
    assert_eq!(stored, hash(issued.token.expose_secret()));
}

#[test]
fn unknown_expired_and_disabled_are_refused() {
    let (_dir, store) = store();
    assert!(matches!(
        store.refresh(&"nope".to_owned().into(), 60),
        Err(AuthError::InvalidToken(_))
    ));
    let expired = store.start_session("doctor1", "h1", 0).unwrap();
    assert!(matches!(
        store.refresh(&expired.token, 60),
        Err(AuthError::ExpiredToken)
    ));
    let live = store.start_session("doctor1", "h1", 3600).unwrap();
    store.set_disabled("doctor1", true).unwrap();
    assert!(store.refresh(&live.token, 60).is_err());
    assert!(
        store
            .revoked_set()
            .unwrap()
            .disabled_users
            .contains("doctor1")
    );
    store.set_disabled("doctor1", false).unwrap();
    assert!(store.revoked_set().unwrap().disabled_users.is_empty());
    assert!(matches!(
        store.set_disabled("nobody", true),
        Err(AuthError::UnknownUser(_))
    ));
}

#[test]
fn logout_revocations_are_listed_until_they_expire() {
    let (_dir, store) = store();
    let session = store.start_session("doctor1", "h1", 3600).unwrap();
    store
        .revoke("jti-1", u64::MAX / 2, Some(&session.family))
        .unwrap();
    store.revoke("jti-old", 1, None).unwrap();
    let set = store.revoked_set().unwrap();
    assert!(set.jtis.contains("jti-1"));
    assert!(
        !set.jtis.contains("jti-old"),
        "expired revocations are purged"
    );
    assert!(set.families.contains(&session.family));
    assert!(store.refresh(&session.token, 60).is_err());
}

#[test]
fn a_new_password_ends_every_session() {
    let (_dir, store) = store();
    let session = store.start_session("doctor1", "h1", 3600).unwrap();
    store
        .set_password("doctor1", &"another long password".to_owned().into())
        .unwrap();
    assert!(store.refresh(&session.token, 60).is_err());
    assert!(
        store
            .authenticate("doctor1", &"another long password".to_owned().into())
            .is_ok()
    );
    assert!(
        store
            .authenticate("doctor1", &"correct horse battery".to_owned().into())
            .is_err()
    );
    assert!(
        store
            .set_password("doctor1", &"short".to_owned().into())
            .is_err()
    );
}

#[test]
fn another_connection_changes_the_data_version() {
    let (dir, store) = store();
    let before = store.data_version().unwrap();
    let other = UserStore::open(&dir.path().join("users.db")).unwrap();
    other.set_disabled("doctor1", true).unwrap();
    assert_ne!(store.data_version().unwrap(), before);
}
