//! A database of its own for each test that needs PostgreSQL, on the server at
//! `SI_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! trust auth; `.ci/run` makes sure one answers).

/// A fresh database on the test server; its URL.
pub async fn fresh_database() -> String {
    let admin = std::env::var("SI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL server");
    tokio::spawn(connection);
    // Databases earlier runs left behind (this run's are in use, or are its own).
    let ours = format!("si_test_{}_", std::process::id());
    for row in client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'si_test_%'",
            &[],
        )
        .await
        .unwrap()
    {
        let name: String = row.get(0);
        if !name.starts_with(&ours) {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .await;
        }
    }
    let name = format!(
        "si_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}
