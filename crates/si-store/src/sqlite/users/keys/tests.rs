//! Username keys through [`Accounts`]: one user per name whatever its case or
//! width, and what a database from before keys becomes.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use secrecy::SecretString;
use si_auth::{Accounts, AuthError, NewUser, User};
use si_core::Role;

use crate::sqlite::{SqliteUsers, migrate};

fn accounts(path: &Path) -> Accounts {
    let db = Arc::new(SqliteUsers::open(path).unwrap());
    Accounts::new(db.clone(), db).unwrap()
}

fn pw(text: &str) -> SecretString {
    SecretString::from(text)
}

async fn add(store: &Accounts, name: &str, role: Role, location: &str) -> Result<User, AuthError> {
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

/// Accounts with `doctor1` at `h1`.
async fn accounts_with_doctor() -> (tempfile::TempDir, Accounts) {
    let dir = tempfile::tempdir().unwrap();
    let store = accounts(&dir.path().join("users.db"));
    add(&store, "doctor1", Role::Clinician, "h1").await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn names_differing_only_in_case_or_width_are_one_user() {
    let (_dir, store) = accounts_with_doctor().await;
    match add(&store, "Doctor1", Role::Admin, "h1").await {
        Err(e @ AuthError::UsernameTaken { .. }) => {
            let message = e.to_string();
            assert!(message.contains("existing user `doctor1`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Only ASCII names are made; the fullwidth form is refused all the same.
    assert!(matches!(
        add(&store, "ｄｏｃｔｏｒ１", Role::Admin, "h1").await,
        Err(AuthError::InvalidUser(_))
    ));
    let found = store
        .authenticate("ＤＯＣＴＯＲ１", &pw("correct horse battery"))
        .await
        .unwrap();
    assert_eq!(found.username, "doctor1", "the stored name comes back");
    store.set_disabled("Doctor1", true).await.unwrap();
    assert!(store.list().await.unwrap()[0].disabled);
    assert_eq!(store.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn existing_users_get_keys_and_look_alikes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    {
        // A database from before username keys, holding two look-alike names.
        let mut conn = Connection::open(&path).unwrap();
        migrate::apply(&mut conn, &migrate::USERS[..1]).unwrap();
        for (name, created) in [("Doctor1", 1), ("doctor1", 2), ("nurse", 3)] {
            conn.execute(
                "INSERT INTO users (username, password_hash, role, location, created_at)
                 VALUES (?1, 'x', 'clinician', 'h1', ?2)",
                rusqlite::params![name, created],
            )
            .unwrap();
        }
    }
    let store = accounts(&path);
    let keys: Vec<(String, Option<String>)> = {
        let conn = Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT username, username_key FROM users ORDER BY created_at")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        keys,
        [
            ("Doctor1".to_owned(), Some("doctor1".to_owned())),
            ("doctor1".to_owned(), None),
            ("nurse".to_owned(), Some("nurse".to_owned())),
        ],
        "the oldest keeps the key"
    );
    // Each still answers to its exact name; other spellings find the oldest.
    store.set_disabled("doctor1", true).await.unwrap();
    store.set_disabled("DOCTOR1", false).await.unwrap();
    let disabled: Vec<_> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.username, u.disabled))
        .collect();
    assert_eq!(
        disabled,
        [
            ("Doctor1".to_owned(), false),
            ("doctor1".to_owned(), true),
            ("nurse".to_owned(), false)
        ]
    );
    assert!(matches!(
        add(&store, "DOCTOR1", Role::Admin, "h1").await,
        Err(AuthError::UsernameTaken { existing, .. }) if existing == "Doctor1"
    ));
}
