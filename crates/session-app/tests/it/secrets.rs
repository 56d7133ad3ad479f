//! Database passwords: given in a file or the environment, and never shown,
//! whatever goes wrong. Each case runs the real binary and searches all it
//! printed for the password.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use session_test_postgres::TestServer;

use crate::e2e::cli;

const PASSWORD: &str = "Pw-s3kr1t-Xq";
const ROLE: &str = "pw_owner";

/// Asserts that neither output holds the password, raw or percent-encoded.
fn assert_hidden(case: &str, stdout: &str, stderr: &str) {
    for output in [stdout, stderr] {
        for text in [PASSWORD, "s3kr1t", "Pw-s3kr1t%2DXq"] {
            assert!(
                !output.contains(text),
                "{case}: printed the password:\n{output}"
            );
        }
    }
}

fn write_secret(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// A throwaway server where `ROLE` must give its password (SCRAM) and owns a
/// database; every other role is trusted as before.
fn server_with_password_role() -> (TestServer, String) {
    let server = TestServer::start();
    let database = server.create_database();
    let admin = |sql: &str| {
        let url = server.admin_url().to_owned();
        let sql = sql.to_owned();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(connection);
                    let rows = client.simple_query(&sql).await.unwrap();
                    rows.into_iter()
                        .find_map(|row| match row {
                            tokio_postgres::SimpleQueryMessage::Row(row) => {
                                row.get(0).map(str::to_owned)
                            }
                            _ => None,
                        })
                        .unwrap_or_default()
                })
        })
        .join()
        .unwrap()
    };
    admin(&format!(
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'; \
         ALTER DATABASE {} OWNER TO {ROLE}",
        database.name()
    ));
    let hba = admin("SHOW hba_file");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all {ROLE} 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    admin("SELECT pg_reload_conf()");
    let url = format!("postgres://127.0.0.1:{}/{}", server.port(), database.name());
    std::mem::forget(database); // dropped with the server
    (server, url)
}

#[test]
fn a_password_is_taken_from_a_file_or_the_environment_and_never_printed() {
    let (_server, base) = server_with_password_role();
    let with_user = base.replacen("://", &format!("://{ROLE}@"), 1);
    let with_password = base.replacen("://", &format!("://{ROLE}:{PASSWORD}@"), 1);
    let with_wrong = base.replacen("://", &format!("://{ROLE}:{PASSWORD}-no@"), 1);
    let dir = tempfile::tempdir().unwrap();
    let right_file = write_secret(dir.path(), "right", &format!("{with_password}\n"));
    let wrong_file = write_secret(dir.path(), "wrong", &format!("\u{feff}{with_wrong}\r\n"));

    // Accepted: the whole URL in a file, or the password in PGPASSWORD.
    for (case, args, env) in [
        (
            "URL file",
            vec!["migrate", "--database-url-file", &right_file],
            vec![],
        ),
        (
            "URL file from the environment",
            vec!["migrate"],
            vec![("DATABASE_URL_FILE", right_file.as_str())],
        ),
        (
            "PGPASSWORD",
            vec!["migrate", "--database-url", &with_user],
            vec![("PGPASSWORD", PASSWORD)],
        ),
    ] {
        let (status, stdout, stderr) = cli(&args, &env, "");
        assert!(status.success(), "{case}: {stderr}");
        assert!(stdout.contains("postgres"), "{case}: {stdout}");
        assert_hidden(case, &stdout, &stderr);
    }

    // Refused by the server, each way the password can come.
    for (case, args, env) in [
        (
            "wrong password on the command line",
            vec!["migrate", "--database-url", &with_wrong],
            vec![],
        ),
        (
            "wrong password in a file",
            vec!["migrate", "--database-url-file", &wrong_file],
            vec![],
        ),
        (
            "wrong PGPASSWORD",
            vec!["migrate", "--database-url", &with_user],
            vec![("PGPASSWORD", "Pw-s3kr1t-Xq-no")],
        ),
        (
            "the URL's password wins over PGPASSWORD",
            vec!["serve", "--database-url", &with_wrong],
            vec![("PGPASSWORD", PASSWORD)],
        ),
    ] {
        let (status, stdout, stderr) = cli(&args, &env, "");
        assert_eq!(status.code(), Some(1), "{case}: {stderr}");
        assert!(
            stderr.contains("password authentication failed"),
            "{case}: {stderr}"
        );
        assert_hidden(case, &stdout, &stderr);
    }
}

#[test]
fn no_mistake_with_a_database_url_prints_its_password() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let closed = format!("127.0.0.1:{}", session_test_process::free_port().unwrap());
    let unreachable = format!("postgres://app:{PASSWORD}@{closed}/app");
    let unreadable_env = format!(
        "postgres://app:{PASSWORD}@{closed}/app?sslmode=verify-full&sslrootcert=/nonexistent"
    );
    for (case, args, env) in [
        (
            "bad scheme",
            vec![
                "serve",
                "--database-url",
                "postgress://app:Pw-s3kr1t-Xq@db/app",
            ],
            vec![],
        ),
        (
            "bad scheme, env",
            vec!["migrate"],
            vec![("DATABASE_URL", "mysql://app:Pw-s3kr1t-Xq@db/app")],
        ),
        (
            "unreachable",
            vec![
                "migrate",
                "--pg-connect-timeout",
                "2s",
                "--database-url",
                &unreachable,
            ],
            vec![],
        ),
        (
            "bad root certificates",
            vec!["migrate"],
            vec![("DATABASE_URL", unreadable_env.as_str())],
        ),
        // A reserved character left unencoded moves part of the password
        // into the query, or into the host name.
        (
            "unencoded ?",
            vec![
                "migrate",
                "--database-url",
                "postgres://app:x?sslmode=Pw-s3kr1t-Xq@db/app",
            ],
            vec![],
        ),
        (
            "unencoded ? and a parameter",
            vec![
                "migrate",
                "--database-url",
                "postgres://app:x?Pw-s3kr1t-Xq@db/app?sslmode=nope",
            ],
            vec![],
        ),
        (
            "unencoded @",
            vec![
                "migrate",
                "--database-url",
                "postgres://app:x@Pw-s3kr1t-Xq@db/app",
            ],
            vec![],
        ),
        (
            "bad port",
            vec![
                "migrate",
                "--database-url",
                "postgres://app:Pw-s3kr1t-Xq@db:port/app",
            ],
            vec![],
        ),
        (
            "both a URL and a file",
            vec![
                "migrate",
                "--database-url",
                &unreachable,
                "--database-url-file",
                "/nonexistent",
            ],
            vec![],
        ),
        (
            "--help with the URL in the environment",
            vec!["serve", "--help"],
            vec![("DATABASE_URL", unreachable.as_str())],
        ),
        (
            "migrate --help",
            vec!["migrate", "--help"],
            vec![
                ("DATABASE_URL", unreachable.as_str()),
                ("PGPASSWORD", PASSWORD),
            ],
        ),
    ] {
        let (status, stdout, stderr) = cli(&args, &env, "");
        if case.contains("--help") {
            assert!(status.success(), "{case}: {stderr}");
            assert!(stdout.contains("--database-url-file"), "{case}: {stdout}");
        } else {
            assert!(!status.success(), "{case}: {stdout}");
        }
        assert_hidden(case, &stdout, &stderr);
    }
    let _ = dir;
}

#[test]
fn a_password_on_the_command_line_draws_a_warning() {
    let closed = format!("127.0.0.1:{}", session_test_process::free_port().unwrap());
    let with_password = format!("postgres://app:{PASSWORD}@{closed}/app");
    let without = format!("postgres://app@{closed}/app");
    for (args, env, warned) in [
        (
            vec!["migrate", "--database-url", with_password.as_str()],
            vec![],
            true,
        ),
        (
            vec!["migrate"],
            vec![("DATABASE_URL", with_password.as_str())],
            false,
        ),
        (
            vec!["migrate", "--database-url", without.as_str()],
            vec![("PGPASSWORD", PASSWORD)],
            false,
        ),
    ] {
        let (_, stdout, stderr) = cli(&args, &env, "");
        assert_eq!(
            stderr.contains("process list"),
            warned,
            "{args:?} {env:?}: {stderr}"
        );
        assert_hidden("warning", &stdout, &stderr);
    }
}

#[test]
fn a_database_url_file_must_hold_a_url_and_should_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write_secret(dir.path(), "empty", "\n");
    let (status, _, stderr) = cli(&["migrate", "--database-url-file", &empty], &[], "");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&empty) && stderr.contains("empty"),
        "{stderr}"
    );

    let garbled = write_secret(
        dir.path(),
        "garbled",
        &format!("postgress://app:{PASSWORD}@db/app"),
    );
    let (status, stdout, stderr) = cli(&["migrate", "--database-url-file", &garbled], &[], "");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&garbled) && stderr.contains("postgres://"),
        "{stderr}"
    );
    assert_hidden("garbled file", &stdout, &stderr);

    // Readable by others: a warning naming the file, and the start goes on.
    let sqlite = format!("sqlite://{}", dir.path().join("s.db").display());
    let shared = write_secret(dir.path(), "shared", &sqlite);
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, _, stderr) = cli(&["migrate", "--database-url-file", &shared], &[], "");
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("chmod 600") && stderr.contains(&shared),
        "{stderr}"
    );
    let private = write_secret(dir.path(), "private", &sqlite);
    let (status, _, stderr) = cli(&["migrate", "--database-url-file", &private], &[], "");
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("chmod"), "{stderr}");
}
