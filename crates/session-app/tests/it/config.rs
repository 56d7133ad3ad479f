//! Start-up configuration errors: one clear line naming the flag, exit code 2.

use crate::e2e::cli;

#[test]
fn a_public_address_without_an_api_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
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
        (&["create", "--account", "not-a-uuid"][..], "--account"),
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
