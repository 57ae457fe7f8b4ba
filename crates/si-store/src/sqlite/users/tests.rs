//! The SQLite stores through [`Accounts`]: what a login, a refresh and a logout
//! do to the database.

use std::path::Path;

use rusqlite::Connection;
use secrecy::{ExposeSecret, SecretString};
use si_auth::accounts::{IssuedRefresh, Refreshed, token_hash};
use si_auth::store::RevocationStore;
use si_auth::{Accounts, AuthError, NewUser, RevokedSet, User};
use si_core::Role;

use super::SqliteUsers;

/// The accounts over one SQLite file, with the old single-object calls.
struct Store {
    accounts: Accounts,
    db: SqliteUsers,
}

impl Store {
    async fn open(path: &Path) -> Store {
        let db = SqliteUsers::open(path).unwrap();
        let accounts = Accounts::new(
            std::sync::Arc::new(db.clone()),
            std::sync::Arc::new(db.clone()),
        )
        .unwrap();
        Store { accounts, db }
    }
    async fn add(&self, user: &NewUser<'_>) -> Result<User, AuthError> {
        self.accounts.add(user).await
    }
    async fn list(&self) -> Result<Vec<User>, AuthError> {
        self.accounts.list().await
    }
    async fn authenticate(&self, name: &str, password: &SecretString) -> Result<User, AuthError> {
        self.accounts.authenticate(name, password).await
    }
    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), AuthError> {
        self.accounts.set_disabled(name, disabled).await
    }
    async fn set_password(&self, name: &str, password: &SecretString) -> Result<(), AuthError> {
        self.accounts.set_password(name, password).await
    }
    async fn start_session(
        &self,
        name: &str,
        location: &str,
        ttl: u64,
    ) -> Result<IssuedRefresh, AuthError> {
        self.accounts.start_session(name, location, ttl).await
    }
    async fn refresh(&self, token: &SecretString, ttl: u64) -> Result<Refreshed, AuthError> {
        self.accounts.refresh(token, ttl).await
    }
    async fn revoke(
        &self,
        jti: &str,
        expires_at: u64,
        family: Option<&str>,
    ) -> Result<(), AuthError> {
        self.db.revoke(jti, expires_at, family).await
    }
    async fn revoked_set(&self) -> Result<RevokedSet, AuthError> {
        self.db.revoked().await
    }
    async fn data_version(&self) -> Result<i64, AuthError> {
        self.db.version().await
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data/users.db")).await;
    (dir, store)
}

/// A store with `doctor1` at `h1`.
async fn store_with_doctor() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("users.db")).await;
    let password = SecretString::from("correct horse battery");
    let user = NewUser {
        username: "doctor1",
        password: &password,
        role: Role::Clinician,
        location: "h1",
    };
    store.add(&user).await.unwrap();
    (dir, store)
}

fn pw(text: &str) -> SecretString {
    SecretString::from(text)
}

async fn add(store: &Store, name: &str, role: Role, location: &str) -> Result<User, AuthError> {
    let password = pw("correct horse battery");
    store
        .add(&NewUser {
            username: name,
            password: &password,
            role,
            location,
        })
        .await
}

#[tokio::test]
async fn add_list_and_authenticate() {
    let (_dir, store) = store().await;
    add(&store, "doctor1", Role::Clinician, "hospital-01")
        .await
        .unwrap();
    add(&store, "biller", Role::Billing, "*").await.unwrap();
    let names: Vec<_> = store
        .list()
        .await
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
        .await
        .unwrap();
    assert_eq!(user.location, "hospital-01");
    assert!(matches!(
        store
            .authenticate("doctor1", &pw("wrong horse battery"))
            .await,
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        store
            .authenticate("nobody", &pw("correct horse battery"))
            .await,
        Err(AuthError::InvalidCredentials)
    ));
}

#[tokio::test]
async fn duplicate_and_invalid_users_are_refused() {
    let (_dir, store) = store().await;
    add(&store, "doctor1", Role::Clinician, "hospital-01")
        .await
        .unwrap();
    assert!(matches!(
        add(&store, "doctor1", Role::Admin, "x").await,
        Err(AuthError::UserExists(_))
    ));
    assert!(matches!(
        add(&store, "bad name", Role::Admin, "x").await,
        Err(AuthError::InvalidUser(_))
    ));
    assert!(matches!(
        add(&store, "ok", Role::Admin, "a/b").await,
        Err(AuthError::InvalidUser(_))
    ));
    let short = pw("short");
    let new = NewUser {
        username: "x",
        password: &short,
        role: Role::Admin,
        location: "x",
    };
    assert!(matches!(
        store.add(&new).await,
        Err(AuthError::InvalidUser(_))
    ));
}

#[tokio::test]
async fn stored_rows_hold_a_hash_not_the_password() {
    let (dir, store) = store().await;
    add(&store, "doctor1", Role::Clinician, "hospital-01")
        .await
        .unwrap();
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

#[tokio::test]
async fn disabled_users_cannot_log_in() {
    let (_dir, store) = store().await;
    add(&store, "doctor1", Role::Clinician, "hospital-01")
        .await
        .unwrap();
    rusqlite::Connection::open(store.db.path())
        .unwrap()
        .execute("UPDATE users SET disabled = 1", [])
        .unwrap();
    assert!(matches!(
        store
            .authenticate("doctor1", &pw("correct horse battery"))
            .await,
        Err(AuthError::InvalidCredentials)
    ));
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let (_dir, store) = store_with_doctor().await;
    let first = store.start_session("doctor1", "h1", 3600).await.unwrap();
    let second = store.refresh(&first.token, 3600).await.unwrap();
    assert_eq!(second.user.username, "doctor1");
    assert_eq!(second.location, "h1");
    assert_eq!(second.refresh.family, first.family);
    assert_ne!(
        second.refresh.token.expose_secret(),
        first.token.expose_secret()
    );

    // The spent token comes back: the family dies, including the newest token.
    assert!(matches!(
        store.refresh(&first.token, 3600).await,
        Err(AuthError::RefreshReused { .. })
    ));
    assert!(store.refresh(&second.refresh.token, 3600).await.is_err());
    assert!(
        store
            .revoked_set()
            .await
            .unwrap()
            .families
            .contains(&first.family)
    );

    // Other sessions of the same user are untouched.
    let other = store.start_session("doctor1", "h1", 3600).await.unwrap();
    assert!(store.refresh(&other.token, 3600).await.is_ok());
}

#[tokio::test]
async fn tokens_are_stored_only_as_hashes() {
    let (dir, store) = store_with_doctor().await;
    let issued = store.start_session("doctor1", "h1", 3600).await.unwrap();
    drop(store);
    let conn = Connection::open(dir.path().join("users.db")).unwrap();
    let stored: String = conn
        .query_row("SELECT token_hash FROM refresh_tokens", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, issued.token.expose_secret());
    assert_eq!(stored, token_hash(issued.token.expose_secret()));
}

#[tokio::test]
async fn unknown_expired_and_disabled_are_refused() {
    let (_dir, store) = store_with_doctor().await;
    assert!(matches!(
        store.refresh(&"nope".to_owned().into(), 60).await,
        Err(AuthError::InvalidToken(_))
    ));
    let expired = store.start_session("doctor1", "h1", 0).await.unwrap();
    assert!(matches!(
        store.refresh(&expired.token, 60).await,
        Err(AuthError::ExpiredToken)
    ));
    let live = store.start_session("doctor1", "h1", 3600).await.unwrap();
    store.set_disabled("doctor1", true).await.unwrap();
    assert!(store.refresh(&live.token, 60).await.is_err());
    assert!(
        store
            .revoked_set()
            .await
            .unwrap()
            .disabled_users
            .contains("doctor1")
    );
    store.set_disabled("doctor1", false).await.unwrap();
    assert!(store.revoked_set().await.unwrap().disabled_users.is_empty());
    assert!(matches!(
        store.set_disabled("nobody", true).await,
        Err(AuthError::UnknownUser(_))
    ));
}

#[tokio::test]
async fn logout_revocations_are_listed_until_they_expire() {
    let (_dir, store) = store_with_doctor().await;
    let session = store.start_session("doctor1", "h1", 3600).await.unwrap();
    store
        .revoke("jti-1", u64::MAX / 2, Some(&session.family))
        .await
        .unwrap();
    store.revoke("jti-old", 1, None).await.unwrap();
    let set = store.revoked_set().await.unwrap();
    assert!(set.jtis.contains("jti-1"));
    assert!(
        !set.jtis.contains("jti-old"),
        "expired revocations are purged"
    );
    assert!(set.families.contains(&session.family));
    assert!(store.refresh(&session.token, 60).await.is_err());
}

#[tokio::test]
async fn a_new_password_ends_every_session() {
    let (_dir, store) = store_with_doctor().await;
    let session = store.start_session("doctor1", "h1", 3600).await.unwrap();
    store
        .set_password("doctor1", &"another long password".to_owned().into())
        .await
        .unwrap();
    assert!(store.refresh(&session.token, 60).await.is_err());
    assert!(
        store
            .authenticate("doctor1", &"another long password".to_owned().into())
            .await
            .is_ok()
    );
    assert!(
        store
            .authenticate("doctor1", &"correct horse battery".to_owned().into())
            .await
            .is_err()
    );
    assert!(
        store
            .set_password("doctor1", &"short".to_owned().into())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn another_connection_changes_the_data_version() {
    let (dir, store) = store_with_doctor().await;
    let before = store.data_version().await.unwrap();
    let other = Store::open(&dir.path().join("users.db")).await;
    other.set_disabled("doctor1", true).await.unwrap();
    assert_ne!(store.data_version().await.unwrap(), before);
}
