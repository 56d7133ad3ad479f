//! Start-up configuration errors: one clear line naming the flag, exit code 2.

use crate::e2e::cli;

#[test]
fn a_public_address_without_an_api_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A database that cannot be opened: were the key wrongly accepted, the
    // start would fail there (exit 1) rather than run on.
    std::fs::write(dir.path().join("not-a-dir"), "").unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("not-a-dir").join("s.db").display()
    );
    let (status, _, stderr) = cli(
        &["serve", "--listen", "0.0.0.0:0", "--database-url", &url],
        &[],
        "",
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--listen") && stderr.contains("API key"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("s.db").exists(),
        "refused before touching the database"
    );
}

#[test]
fn bad_values_name_their_flag() {
    for (args, flag) in [
        (&["serve", "--listen", "nowhere"][..], "--listen"),
        (
            &["serve", "--database-url", "mysql://x"][..],
            "--database-url",
        ),
        (
            &["serve", "--shutdown-timeout", "soon"][..],
            "--shutdown-timeout",
        ),
        (&["serve", "--warm-page-size", "0"][..], "--warm-page-size"),
        // A zero limit would close every connection at once, or none could open.
        (
            &["serve", "--header-read-timeout", "0s"][..],
            "--header-read-timeout",
        ),
        (
            &["serve", "--request-timeout", "0ms"][..],
            "--request-timeout",
        ),
        (&["serve", "--idle-timeout", "0s"][..], "--idle-timeout"),
        (&["serve", "--idle-timeout", "later"][..], "--idle-timeout"),
        (
            &["serve", "--max-connections", "0"][..],
            "--max-connections",
        ),
        (
            &["serve", "--pg-wake-ups", "sometimes"][..],
            "--pg-wake-ups",
        ),
        (&["create", "--account", "not-a-uuid"][..], "--account"),
        (
            &["serve", "--forward-auth-cookie", "a b"][..],
            "--forward-auth-cookie",
        ),
        (
            &["serve", "--forward-auth-session-id-header", "Cookie"][..],
            "--forward-auth-session-id-header",
        ),
        (
            &["serve", "--forward-auth-account-id-header", "X Account"][..],
            "--forward-auth-account-id-header",
        ),
        (
            &[
                "serve",
                "--forward-auth-session-id-header",
                "X-Id",
                "--forward-auth-account-id-header",
                "x-id",
            ][..],
            "--forward-auth-account-id-header",
        ),
    ] {
        let (status, _, stderr) = cli(args, &[], "");
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn a_short_api_key_is_refused() {
    let (status, _, stderr) = cli(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("SESSION_API_KEY", "short")],
        "",
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("at least 16"), "{stderr}");
}

#[test]
fn resolve_refuses_an_empty_stdin() {
    let (status, _, stderr) = cli(&["resolve", "--server", "http://127.0.0.1:9"], &[], "");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("stdin"), "{stderr}");
}

#[test]
fn a_key_file_line_a_header_cannot_carry_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api-keys");
    let key = "0123456789abcdef-key";
    // A non-breaking space, as pasted from a web page or chat.
    std::fs::write(&key_file, format!("# keys\n{key}\u{a0}\n")).unwrap();
    // A database that cannot be opened: were the key wrongly accepted, the
    // start would fail there (exit 1) rather than run on.
    std::fs::write(dir.path().join("not-a-dir"), "").unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("not-a-dir").join("s.db").display()
    );
    let (status, _, stderr) = cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--api-key-file",
            &key_file.display().to_string(),
        ],
        &[],
        "",
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&key_file.display().to_string()) && stderr.contains("line 2"),
        "names the file and the line: {stderr}"
    );
    assert!(!stderr.contains(key), "never shows the key: {stderr}");
}

/// A mistyped database URL is refused without repeating it, from the flag
/// and from the environment alike: it may hold a password.
#[test]
fn a_bad_database_url_is_refused_without_repeating_it() {
    let url = "postgress://app:hunter2-secret@db.internal/app";
    for (args, env) in [
        (vec!["serve", "--database-url", url], vec![]),
        (vec!["migrate", "--database-url", url], vec![]),
        (vec!["serve"], vec![("DATABASE_URL", url)]),
    ] {
        let (status, stdout, stderr) = cli(&args, &env, "");
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--database-url"),
            "names the flag: {stderr}"
        );
        assert!(
            stderr.contains("postgres://"),
            "says what is expected: {stderr}"
        );
        for output in [&stdout, &stderr] {
            assert!(!output.contains("hunter2"), "{args:?} echoes it: {output}");
            assert!(!output.contains("db.internal"), "{args:?}: {output}");
        }
    }
}

#[test]
fn a_header_read_timeout_longer_than_the_request_timeout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A database that cannot be opened: were the limits wrongly accepted,
    // the start would fail there (exit 1) rather than run on.
    std::fs::write(dir.path().join("not-a-dir"), "").unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("not-a-dir").join("s.db").display()
    );
    let (status, _, stderr) = cli(
        &[
            "serve",
            "--database-url",
            &url,
            "--header-read-timeout",
            "20s",
        ],
        &[("SESSION_REQUEST_TIMEOUT", "10s")],
        "",
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--header-read-timeout 20s") && stderr.contains("--request-timeout 10s"),
        "{stderr}"
    );
}

/// A bad OTLP setting fails the start with exit code 2 before anything is
/// opened, naming the setting and never its value (an endpoint may carry
/// credentials).
#[test]
fn a_bad_otlp_setting_is_refused_by_name_without_its_value() {
    const SECRET: &str = "otlp-secret-0123";
    let good = "http://127.0.0.1:4318";
    let https = format!("https://user:{SECRET}@collector.example:4318");
    let not_a_url = format!("{SECRET} is no url");
    let ftp = format!("ftp://{SECRET}@collector.example/v1/traces");
    /// Flags, environment, and the setting the error must name.
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 6] = [
        (&["--otlp-endpoint", &https], vec![], "--otlp-endpoint"),
        (&["--otlp-endpoint", &not_a_url], vec![], "--otlp-endpoint"),
        (
            &[],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", &not_a_url)],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            &[],
            vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &ftp)],
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
        (
            &["--otlp-endpoint", good],
            vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            &[],
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", good),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ],
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ];
    for (flags, env, setting) in cases {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--database-url", &url];
        args.extend(flags);
        let (status, _, stderr) = cli(&args, &env, "");
        assert_eq!(status.code(), Some(2), "{setting}: {stderr}");
        assert!(stderr.contains(setting), "{setting}: {stderr}");
        assert!(!stderr.contains(SECRET), "{setting}: {stderr}");
        assert!(
            !dir.path().join("s.db").exists(),
            "{setting}: the database was opened"
        );
    }
}

#[test]
fn idle_revocation_without_last_seen_or_with_a_short_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A database that cannot be opened: were the settings wrongly accepted,
    // the start would fail there (exit 1) rather than run on.
    std::fs::write(dir.path().join("not-a-dir"), "").unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("not-a-dir").join("s.db").display()
    );
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--database-url", &url];
        args.extend_from_slice(extra);
        cli(&args, &[], "")
    };
    let (status, _, stderr) = serve(&["--revoke-idle-after", "90d"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--revoke-idle-after") && stderr.contains("--last-seen"),
        "{stderr}"
    );
    // Ten times (10 s + 1 min) is 700 s.
    let (status, _, stderr) = serve(&["--last-seen", "--revoke-idle-after", "11m"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--revoke-idle-after 11m") && stderr.contains("at least 700 s"),
        "{stderr}"
    );
    let (status, _, stderr) = cli(
        &["revoke-idle", "--database-url", &url, "--older-than", "1m"],
        &[],
        "",
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--older-than 1m"), "{stderr}");
}
