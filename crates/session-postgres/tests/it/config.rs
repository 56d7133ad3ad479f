//! Reading database URLs, without a server.

use session_postgres::{ConfigError, PgConfig, SslMode};

fn mode(url: &str) -> SslMode {
    PgConfig::from_url(url).unwrap().ssl_mode()
}

#[test]
fn sslmode_has_libpq_meanings_and_defaults_to_prefer() {
    let base = "postgres://app@db.internal:5432/app";
    assert_eq!(mode(base), SslMode::Prefer);
    assert_eq!(mode(&format!("{base}?sslmode=disable")), SslMode::Disable);
    assert_eq!(mode(&format!("{base}?sslmode=allow")), SslMode::Prefer);
    assert_eq!(mode(&format!("{base}?sslmode=prefer")), SslMode::Prefer);
    assert_eq!(
        mode(&format!(
            "{base}?application_name=x&sslmode=require&connect_timeout=3"
        )),
        SslMode::Require
    );
}

/// The kind: a mode that skips the host name check must not be paired with
/// roots that only mean something together with it (libpq's rules).
#[test]
fn public_roots_are_refused_below_verify_full() {
    let err = PgConfig::from_url("postgres://app@db/app?sslmode=verify-ca").unwrap_err();
    assert!(matches!(err, ConfigError::VerifyCaWithoutRoots), "{err:?}");
    assert!(
        err.to_string().contains("sslrootcert"),
        "says what to give: {err}"
    );

    for weaker in ["disable", "allow", "prefer", "require", "verify-ca"] {
        let err = PgConfig::from_url(&format!(
            "postgres://app:hunter2@db/app?sslmode={weaker}&sslrootcert=system"
        ))
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::SystemRootsBelowVerifyFull(_)),
            "{weaker}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("verify-full"), "says what to use: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn system_roots_without_sslmode_mean_verify_full() {
    match PgConfig::from_url("postgres://app@db/app?sslrootcert=system") {
        Ok(config) => assert_eq!(config.ssl_mode(), SslMode::VerifyFull),
        // The system store may be empty on a build machine: the rule was
        // still applied, since only verify-full reaches the store.
        Err(ConfigError::NoRootCertificates(_)) => {}
        Err(err) => panic!("{err:?}"),
    }
}

#[test]
fn a_mode_libpq_does_not_know_is_rejected() {
    let err = PgConfig::from_url("postgres://app@db/app?sslmode=verify").unwrap_err();
    assert!(matches!(err, ConfigError::SslMode), "{err:?}");
}

#[test]
fn only_urls_are_accepted() {
    let err = PgConfig::from_url("host=db user=app sslmode=disable").unwrap_err();
    assert!(matches!(err, ConfigError::NotAUrl), "{err:?}");
}

#[test]
fn an_unknown_parameter_is_rejected() {
    let err = PgConfig::from_url("postgres://app@db/app?sslcert=/tmp/client.crt").unwrap_err();
    assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
    // A name libpq defines is shown, so the operator knows what to remove.
    assert!(err.to_string().contains("sslcert"), "{err}");
    let err = PgConfig::from_url("postgres://app@db:port/app").unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
}

/// A password with an unencoded reserved character moves part of itself
/// into the place of a parameter's name or value, or of a host or port,
/// where the driver's own messages would quote it.
#[test]
fn a_password_with_an_unencoded_at_sign_is_refused() {
    // The driver would take `x@db` as the host, and connection errors would show it.
    let err = PgConfig::from_url("postgres://app:pw@x@db/app").unwrap_err();
    assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("percent-encode"), "{err}");
    assert!(PgConfig::from_url("postgres://app:pw%40x@db/app").is_ok());
    assert!(PgConfig::from_url("postgres://app@[::1]:5432,db_2.internal/app").is_ok());
}

/// The driver ends the credentials at the first `@`, so a `?` before it is
/// part of the password: the query starts after it.
#[test]
fn a_question_mark_in_the_password_does_not_start_the_query() {
    let config = PgConfig::from_url("postgres://app:pre?sslmode=x@db/app?sslmode=disable").unwrap();
    assert_eq!(config.ssl_mode(), SslMode::Disable);
    assert!(config.has_password());
    let config = PgConfig::from_url("postgres://app:pre?sslmode=verify@db/app").unwrap();
    assert_eq!(config.ssl_mode(), SslMode::Prefer);
}

#[test]
fn no_error_repeats_a_piece_of_a_mistyped_password() {
    const PIECE: &str = "Zq8wV3";
    for url in [
        format!("postgres://app:pre?{PIECE}@db/app"),
        format!("postgres://app:pre?{PIECE}=1@db/app"),
        format!("postgres://app:pre?sslmode={PIECE}@db/app"),
        format!("postgres://app:pre?target_session_attrs={PIECE}@db/app"),
        format!("postgres://app:pre?port={PIECE}@db/app"),
        format!("postgres://app:pre#{PIECE}@db/app"),
        format!("postgres://app:pre/{PIECE}@db/app"),
        format!("postgres://app:{PIECE}:x@db/app"),
        format!("postgres://app:pre%{PIECE}@db/app"),
        format!("postgres://app:pre@{PIECE}@db/app?sslmode=nope"),
        format!("postgres://app:pre@db:5432,[{PIECE}/app"),
        format!("postgres://app:pre@db:{PIECE}/app"),
        format!("postgres://app:pre@{PIECE}@db/app"),
        format!("postgres://app:pre@{PIECE}@db-a,db-b/app"),
    ] {
        let Err(err) = PgConfig::from_url(&url) else {
            continue;
        };
        let mut texts = vec![err.to_string(), format!("{err:?}")];
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            texts.push(cause.to_string());
            source = cause.source();
        }
        for text in texts {
            assert!(!text.contains(PIECE), "{url}: {text}");
        }
    }
}

#[test]
fn root_certificates_must_exist_and_hold_a_certificate() {
    let missing = PgConfig::from_url(
        "postgres://app@db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    )
    .unwrap_err();
    assert!(
        matches!(missing, ConfigError::RootCertificateFile { .. }),
        "{missing:?}"
    );

    let empty = tempfile::NamedTempFile::new().unwrap();
    let url = format!(
        "postgres://app@db/app?sslmode=verify-ca&sslrootcert={}",
        empty.path().display()
    );
    let err = PgConfig::from_url(&url).unwrap_err();
    assert!(matches!(err, ConfigError::NoRootCertificates(_)), "{err:?}");
}

#[test]
fn a_percent_encoded_root_certificate_path_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("my ca.pem");
    std::fs::write(&empty, "").unwrap();
    let encoded = empty.display().to_string().replace(' ', "%20");
    let err = PgConfig::from_url(&format!(
        "postgres://app@db/app?sslmode=verify-ca&sslrootcert={encoded}"
    ))
    .unwrap_err();
    // The file was found and read: it is empty, not missing.
    assert!(matches!(err, ConfigError::NoRootCertificates(_)), "{err:?}");
}

#[test]
fn the_password_is_never_shown() {
    let config = PgConfig::from_url("postgres://app:hunter2@db/app").unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
    let err = PgConfig::from_url("postgres://app:hunter2@db:notaport/app").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
}

#[test]
fn several_hosts_are_kept_with_the_tls_parameters_taken_out() {
    let config = PgConfig::from_url(
        "postgres://app:hunter2@db-a:5433,db-b:5434/app?sslmode=verify-full&sslrootcert=system\
         &target_session_attrs=read-write&connect_timeout=3",
    );
    // The system store may be empty on a build machine; the URL itself is fine.
    let config = match config {
        Ok(config) => config,
        Err(ConfigError::NoRootCertificates(_)) => return,
        Err(err) => panic!("{err:?}"),
    };
    assert_eq!(config.ssl_mode(), SslMode::VerifyFull);
    let shown = format!("{config:?}");
    for expected in ["db-a", "db-b", "5433", "5434", "ReadWrite"] {
        assert!(shown.contains(expected), "{expected} in {shown}");
    }
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn target_session_attrs_is_any_or_read_write() {
    for value in ["any", "read-write"] {
        PgConfig::from_url(&format!(
            "postgres://app@db-a,db-b/app?target_session_attrs={value}"
        ))
        .unwrap();
    }
    for value in [
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
        "readwrite",
    ] {
        let err = PgConfig::from_url(&format!(
            "postgres://app:hunter2@db-a,db-b/app?target_session_attrs={value}"
        ))
        .unwrap_err();
        assert!(matches!(err, ConfigError::TargetSessionAttrs), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("read-write"), "says what to use: {text}");
        assert!(!text.contains("hunter2") && !format!("{err:?}").contains("hunter2"));
    }
}
