//! The real `si-cli` executable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[test]
fn keys_generate_writes_the_six_variables_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = si_cli_with_stdin(dir.path(), &["keys", "generate"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = std::fs::read_to_string(dir.path().join(".api_keys.env")).unwrap();
    for name in [
        "API_KEY_TINY_LLAMA_1B_8080",
        "API_KEY_BIMEDIX2_8081",
        "API_KEY_MEDICINE_LLM_8082",
        "API_KEY_TINY_LLAMA_1B_8083",
        "API_KEY_OPENINSURANCE_8084",
        "API_KEY_BIOMISTRAL_8085",
    ] {
        let line = keys
            .lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap();
        assert!(line.len() >= name.len() + 1 + 64, "{line}");
    }
    // Keys are never printed.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first_key = keys
        .lines()
        .find(|l| l.starts_with("API_KEY_"))
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap();
    assert!(!stdout.contains(first_key));
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
        ".api_keys.env\n"
    );

    let again = si_cli_with_stdin(dir.path(), &["keys", "generate"], None);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".api_keys.env")).unwrap(),
        keys
    );
    assert!(
        si_cli_with_stdin(dir.path(), &["keys", "generate", "--force"], None)
            .status
            .success()
    );
    assert_ne!(
        std::fs::read_to_string(dir.path().join(".api_keys.env")).unwrap(),
        keys
    );
}

#[test]
fn users_add_reads_the_password_from_stdin_and_list_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let add = [
        "users",
        "add",
        "doctor1",
        "--role",
        "clinician",
        "--location",
        "hospital-01",
        "--password-stdin",
    ];
    let out = si_cli_with_stdin(dir.path(), &add, Some("a long enough password\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = si_cli_with_stdin(dir.path(), &add, Some("a long enough password\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let out = si_cli_with_stdin(dir.path(), &["users", "list"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("doctor1") && table.contains("clinician") && table.contains("hospital-01"),
        "{table}"
    );

    let bad_role = si_cli_with_stdin(
        dir.path(),
        &[
            "users",
            "add",
            "x",
            "--role",
            "root",
            "--location",
            "h",
            "--password-stdin",
        ],
        Some("pw\n"),
    );
    assert_eq!(bad_role.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("admin, clinician, billing"));
    let no_stdin_flag = si_cli_with_stdin(
        dir.path(),
        &["users", "add", "x", "--role", "admin", "--location", "h"],
        None,
    );
    assert_eq!(no_stdin_flag.status.code(), Some(2));
    let short = si_cli_with_stdin(
        dir.path(),
        &[
            "users",
            "add",
            "y",
            "--role",
            "admin",
            "--location",
            "h",
            "--password-stdin",
        ],
        Some("short\n"),
    );
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12 characters"));
}

#[test]
fn users_add_refuses_a_name_that_differs_only_in_case_or_width() {
    let dir = tempfile::tempdir().unwrap();
    let add = |name: &str| {
        let args = [
            "users",
            "add",
            name,
            "--role",
            "clinician",
            "--location",
            "hospital-01",
            "--password-stdin",
        ];
        si_cli_with_stdin(dir.path(), &args, Some("a long enough password\n"))
    };
    assert!(add("doctor1").status.success());
    let upper = add("Doctor1");
    assert_eq!(upper.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&upper.stderr);
    assert!(
        stderr.contains("`Doctor1` is taken")
            && stderr.contains("matches the existing user `doctor1`"),
        "{stderr}"
    );
    let fullwidth = add("ｄｏｃｔｏｒ１");
    assert_eq!(fullwidth.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&fullwidth.stderr);
    assert!(stderr.contains("ASCII letters, digits"), "{stderr}");
    let out = si_cli_with_stdin(dir.path(), &["users", "list"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 2, "{table}");
}

#[test]
fn health_exits_1_when_the_gateway_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = si_cli_with_stdin(
        dir.path(),
        &["health", "--gateway", &format!("http://127.0.0.1:{port}")],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("gateway") && table.contains("down") && table.contains("cannot reach"),
        "{table}"
    );
}

#[test]
fn users_disable_enable_and_passwd() {
    let dir = tempfile::tempdir().unwrap();
    let add = [
        "users",
        "add",
        "nurse",
        "--role",
        "clinician",
        "--location",
        "ward-3",
        "--password-stdin",
    ];
    assert!(
        si_cli_with_stdin(dir.path(), &add, Some("first long password\n"))
            .status
            .success()
    );
    let status = |dir: &std::path::Path| {
        String::from_utf8_lossy(&si_cli_with_stdin(dir, &["users", "list"], None).stdout)
            .into_owned()
    };

    assert!(
        si_cli_with_stdin(dir.path(), &["users", "disable", "nurse"], None)
            .status
            .success()
    );
    assert!(status(dir.path()).contains("disabled"));
    assert!(
        si_cli_with_stdin(dir.path(), &["users", "enable", "nurse"], None)
            .status
            .success()
    );
    assert!(status(dir.path()).contains("active"));

    let passwd = ["users", "passwd", "nurse", "--password-stdin"];
    assert!(
        si_cli_with_stdin(dir.path(), &passwd, Some("second long password\n"))
            .status
            .success()
    );
    let users = si_store::sqlite::SqliteUsers::open(&dir.path().join("data/users.db")).unwrap();
    let accounts = si_auth::Accounts::new(
        std::sync::Arc::new(users.clone()),
        std::sync::Arc::new(users),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let login = |password: &str| {
        runtime.block_on(accounts.authenticate("nurse", &password.to_owned().into()))
    };
    assert!(login("second long password").is_ok());
    assert!(login("first long password").is_err());

    let unknown = si_cli_with_stdin(dir.path(), &["users", "disable", "nobody"], None);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user named `nobody`"));
}

#[test]
fn jwt_rotate_keeps_the_previous_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = si_cli_with_stdin(dir.path(), &["jwt", "rotate"], None);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let current = std::fs::read_to_string(data.join("jwt_secret")).unwrap();
    let second = si_cli_with_stdin(dir.path(), &["jwt", "rotate"], None);
    assert!(second.status.success());
    assert_eq!(
        std::fs::read_to_string(data.join("jwt_secret.previous")).unwrap(),
        current
    );
    assert_ne!(
        std::fs::read_to_string(data.join("jwt_secret")).unwrap(),
        current
    );
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        stdout.contains("key id") && !stdout.contains(current.trim()),
        "{stdout}"
    );

    let mut with_env = std::process::Command::new(env!("CARGO_BIN_EXE_si-cli"));
    with_env
        .current_dir(dir.path())
        .env("JWT_SECRET", "x".repeat(40))
        .args(["jwt", "rotate"]);
    let refused = with_env.output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("JWT_SECRET_PREVIOUS"));
}

#[test]
fn audit_verify_finds_an_edited_record_and_export_filters_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/audit.db");
    use si_audit::AuditStore;
    let log = si_store::sqlite::SqliteAudit::open(&path).unwrap();
    for n in 0..5 {
        log.append_detached(si_audit::AuditRecord {
            at: si_audit::now_rfc3339(),
            request_id: format!("r{n}"),
            status: 200,
            ..Default::default()
        });
    }
    drop(log);
    let ok = si_cli_with_stdin(dir.path(), &["audit", "verify"], None);
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact: 5 records"));

    let all = si_cli_with_stdin(
        dir.path(),
        &["audit", "export", "--since", "2000-01-01"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&all.stdout).lines().count(), 5);
    let none = si_cli_with_stdin(
        dir.path(),
        &["audit", "export", "--until", "2000-01-01"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&none.stdout).lines().count(), 0);
    let bad = si_cli_with_stdin(
        dir.path(),
        &["audit", "export", "--since", "last week"],
        None,
    );
    assert_eq!(bad.status.code(), Some(1));

    // An edit made behind the database's back, as someone with the file would:
    // record 4 (request r3) says 500 now.
    let mut bytes = std::fs::read(&path).unwrap();
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let record = find(&bytes, b"\"request_id\":\"r3\"").unwrap();
    let status = record + find(&bytes[record..], b"\"status\":200").unwrap();
    bytes[status + 9..status + 12].copy_from_slice(b"500");
    std::fs::write(&path, bytes).unwrap();
    let broken = si_cli_with_stdin(dir.path(), &["audit", "verify"], None);
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&broken.stdout).contains("BROKEN at record 4"),
        "{}",
        String::from_utf8_lossy(&broken.stdout)
    );
}

#[test]
fn audit_verify_names_a_record_moved_in_time_and_export_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/audit.db");
    use si_audit::AuditStore;
    let log = si_store::sqlite::SqliteAudit::open(&path).unwrap();
    for n in 0..3 {
        log.append_detached(si_audit::AuditRecord {
            at: si_audit::now_rfc3339(),
            request_id: format!("r{n}"),
            status: 200,
            ..Default::default()
        });
    }
    drop(log);
    // Record 2 moved back to 1999 behind the database's back, out of any recent
    // window: its hashed time still says today.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE audit SET at_ms = 915148800000 WHERE seq = 2", [])
        .unwrap();
    let broken = si_cli_with_stdin(dir.path(), &["audit", "verify"], None);
    assert_eq!(broken.status.code(), Some(1));
    let said = String::from_utf8_lossy(&broken.stdout);
    assert!(said.contains("BROKEN at record 2"), "{said}");
    assert!(
        said.contains("at_ms column says 1999-01-01T00:00:00.000Z"),
        "{said}"
    );

    let refused = si_cli_with_stdin(
        dir.path(),
        &["audit", "export", "--until", "2000-01-01"],
        None,
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("audit record 2 was altered"), "{said}");
    assert!(said.contains("si-cli audit verify"), "{said}");
}

/// `si-cli ARGS` in `dir`, with `stdin` on its standard input.
fn si_cli_with_stdin(
    dir: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    si_test_support::cli::run(env!("CARGO_BIN_EXE_si-cli"), dir, args, stdin)
}

#[test]
fn db_migrate_brings_the_account_database_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let out = si_cli_with_stdin(dir.path(), &["db", "migrate"], None);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("users.db: schema up to date"), "{said}");
    assert!(dir.path().join("data/users.db").exists());
    // A database URL that is not PostgreSQL is refused without being echoed.
    let out = si_test_support::cli::run_with_env(
        env!("CARGO_BIN_EXE_si-cli"),
        dir.path(),
        &["db", "migrate"],
        &[("SI_DATABASE_URL", "mysql://root:hunter2@db/si")],
    );
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("SI_DATABASE_URL") && said.contains("postgres://"),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");
}
