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
    assert_eq!(
        mode("postgresql://app@db.internal/app?sslmode=verify-ca&sslrootcert=system").to_string(),
        "verify-ca"
    );
}

#[test]
fn a_mode_libpq_does_not_know_is_rejected() {
    let err = PgConfig::from_url("postgres://app@db/app?sslmode=verify").unwrap_err();
    assert!(
        matches!(err, ConfigError::SslMode(ref value) if value == "verify"),
        "{err:?}"
    );
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
