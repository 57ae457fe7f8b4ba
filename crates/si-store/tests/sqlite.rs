//! The SQLite store through [`Accounts`], where the same checks run over every
//! engine.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use si_auth::Accounts;
use si_store::sqlite::SqliteUsers;

#[tokio::test]
async fn users_of_single_sign_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteUsers::open(&dir.path().join("users.db")).unwrap();
    let accounts = Accounts::new(Arc::new(db.clone()), Arc::new(db)).unwrap();
    si_test_support::accounts::single_sign_on_users(&accounts).await;
}
