//! How the operator CLI reaches the service: TLS with the system's roots
//! and `--ca-file`, no API key over plain HTTP beyond loopback, no proxy for
//! loopback, no redirects. The real binary against small recording servers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::e2e::{KEY, cli};

const ACCOUNT: &str = "0b6f1d4e-6a3c-4c1f-9d7e-2f1a5c9e8b70";

/// An HTTP server on a free loopback port that answers every request the
/// same way and records each one as `METHOD URI key=yes|no`. The body is
/// an empty list on a 200, empty otherwise, unless given.
struct Recorder {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Recorder {
    fn start(tls: Option<rustls::ServerConfig>, status: u16, location: Option<String>) -> Self {
        Self::start_with(tls, status, location, None)
    }

    /// Answers every request with `status` and `body` (JSON).
    fn answering(status: u16, body: &str) -> Self {
        Self::start_with(None, status, None, Some(body.to_owned()))
    }

    fn start_with(
        tls: Option<rustls::ServerConfig>,
        status: u16,
        location: Option<String>,
        body: Option<String>,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        let log = Arc::clone(&requests);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, log, location, body) = (
                    acceptor.clone(),
                    Arc::clone(&log),
                    location.clone(),
                    body.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<_>| {
                        let key = request.headers().contains_key("authorization");
                        log.lock().unwrap().push(format!(
                            "{} {} key={}",
                            request.method(),
                            request.uri(),
                            if key { "yes" } else { "no" }
                        ));
                        let mut response = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json");
                        if let Some(location) = &location {
                            response = response.header("location", location);
                        }
                        let body = match &body {
                            Some(body) => body.clone(),
                            None if status == 200 => r#"{"sessions":[]}"#.to_owned(),
                            None => String::new(),
                        };
                        async move {
                            Ok::<_, Infallible>(
                                response.body(Full::new(Bytes::from(body))).unwrap(),
                            )
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Self {
            address,
            requests,
            _runtime: runtime,
        }
    }

    fn plain() -> Self {
        Self::start(None, 200, None)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A fresh authority's PEM, and server settings with a certificate it
/// signed for `localhost` and 127.0.0.1.
fn authority_and_server() -> (String, rustls::ServerConfig) {
    let mut authority = CertificateParams::new(Vec::<String>::new()).unwrap();
    authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let authority = CertifiedIssuer::self_signed(authority, KeyPair::generate().unwrap()).unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, &authority).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(certificate.pem().as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    (authority.pem(), config)
}

fn list(server: &str, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut args = vec!["list", "--account", ACCOUNT, "--server", server];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = cli(&args, env, "");
    (status.code(), stdout, stderr)
}

#[test]
fn https_reaches_a_server_whose_authority_is_given_and_no_other() {
    let (authority, config) = authority_and_server();
    let server = Recorder::start(Some(config), 200, None);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, authority).unwrap();
    let ca_file = ca_file.display().to_string();

    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{}", server.address.port());
        let (code, stdout, stderr) =
            list(&url, &["--ca-file", &ca_file], &[("SESSION_API_KEY", KEY)]);
        assert_eq!(code, Some(0), "{host}: {stderr}");
        assert!(stdout.contains("no sessions"), "{stdout}");
    }
    assert_eq!(server.requests().len(), 2);
    assert!(
        server
            .requests()
            .iter()
            .all(|request| request.ends_with("key=yes"))
    );

    // The system's roots do not know this authority.
    let url = format!("https://127.0.0.1:{}", server.address.port());
    let (code, _, stderr) = list(&url, &[], &[("SESSION_API_KEY", KEY)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    assert_eq!(
        server.requests().len(),
        2,
        "no request without a trusted certificate"
    );

    // A CA file that holds no certificate is a configuration mistake.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let (code, _, stderr) = list(&url, &["--ca-file", &empty.display().to_string()], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--ca-file") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}

#[test]
fn an_api_key_goes_over_plain_http_only_to_loopback() {
    // 192.0.2.0/24 is reserved for documentation: nothing answers there, so
    // a refusal that came from a connection attempt would be a timeout or a
    // connection error, exit 1, not this message and exit 2.
    for server in [
        "http://192.0.2.1:8080",
        "http://sessions.example:8080",
        "http://[2001:db8::1]",
    ] {
        let (code, _, stderr) = list(server, &[], &[("SESSION_API_KEY", KEY)]);
        assert_eq!(code, Some(2), "{server}: {stderr}");
        assert!(
            stderr.contains("plain http://") && stderr.contains("https://"),
            "{stderr}"
        );
        assert!(!stderr.contains(KEY), "{stderr}");
    }
    // Without a key nothing secret is sent, so the request is tried: to
    // 0.0.0.0, which the rule does not take for loopback (a host cannot
    // name it) but which connects to this machine, so no test traffic
    // leaves it; port 9 refuses.
    let (code, _, stderr) = list("http://0.0.0.0:9", &[], &[]);
    assert_ne!(code, Some(2), "{stderr}");

    let server = Recorder::plain();
    let port = server.address.port();
    for url in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://LOCALHOST:{port}/"),
    ] {
        let (code, _, stderr) = list(&url, &[], &[("SESSION_API_KEY", KEY)]);
        assert_eq!(code, Some(0), "{url}: {stderr}");
    }
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_loopback_server_is_never_reached_through_a_proxy() {
    let server = Recorder::plain();
    let proxy = Recorder::plain();
    let proxy_url = format!("http://{}", proxy.address);
    let env = [
        ("SESSION_API_KEY", KEY),
        ("HTTP_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
        ("all_proxy", proxy_url.as_str()),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ];
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("http://{host}:{}", server.address.port());
        let (code, _, stderr) = list(&url, &[], &env);
        assert_eq!(code, Some(0), "{host}: {stderr}");
    }
    assert_eq!(
        proxy.requests(),
        Vec::<String>::new(),
        "the proxy saw the key"
    );
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn redirects_are_not_followed() {
    let elsewhere = Recorder::plain();
    let server = Recorder::start(
        None,
        307,
        Some(format!(
            "http://{}/v1/accounts/{ACCOUNT}/sessions",
            elsewhere.address
        )),
    );
    let (code, _, stderr) = list(
        &format!("http://{}", server.address),
        &[],
        &[("SESSION_API_KEY", KEY)],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("307"), "{stderr}");
    assert_eq!(server.requests().len(), 1);
    assert_eq!(elsewhere.requests(), Vec::<String>::new());
}

#[test]
fn a_server_url_is_refused_without_repeating_it() {
    for (server, reason) in [
        (
            "https://admin:Pw-s3kr1t@sessions.example",
            "user name or password",
        ),
        ("ftp://Pw-s3kr1t.example", "http://"),
        ("Pw-s3kr1t", "URL"),
    ] {
        let (code, stdout, stderr) = list(server, &[], &[]);
        assert_eq!(code, Some(2), "{server}: {stderr}");
        assert!(
            stderr.contains("--server") && stderr.contains(reason),
            "{stderr}"
        );
        assert!(
            !stdout.contains("s3kr1t") && !stderr.contains("s3kr1t"),
            "{stderr}"
        );
    }
    let (code, stdout, _) = cli(
        &["list", "--help"],
        &[("SESSION_SERVER", "https://Pw-s3kr1t.example")],
        "",
    );
    assert_eq!(code.code(), Some(0));
    assert!(
        stdout.contains("--ca-file") && !stdout.contains("s3kr1t"),
        "{stdout}"
    );
}

#[test]
fn a_path_prefix_of_the_server_is_kept_with_or_without_a_trailing_slash() {
    let server = Recorder::plain();
    for url in [
        format!("http://{}/sessions-api", server.address),
        format!("http://{}/sessions-api/", server.address),
        format!("http://{}/a/b", server.address),
    ] {
        let (code, _, stderr) = list(&url, &["--include-revoked"], &[]);
        assert_eq!(code, Some(0), "{url}: {stderr}");
    }
    let listed = format!("/v1/accounts/{ACCOUNT}/sessions?include_revoked=true&limit=200");
    assert_eq!(
        server.requests(),
        vec![
            format!("GET /sessions-api{listed} key=no"),
            format!("GET /sessions-api{listed} key=no"),
            format!("GET /a/b{listed} key=no"),
        ]
    );
}

#[test]
fn a_ca_file_saved_with_a_byte_order_mark_is_read() {
    let (authority, config) = authority_and_server();
    let server = Recorder::start(Some(config), 200, None);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, format!("\u{feff}{authority}")).unwrap();
    let url = format!("https://127.0.0.1:{}", server.address.port());
    let (code, _, stderr) = list(&url, &["--ca-file", &ca_file.display().to_string()], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(server.requests().len(), 1);
}

/// Characters that move the cursor, recolour, reorder or hide text.
const SPOOFING: [char; 8] = [
    '\u{1b}', '\u{7}', '\u{85}', '\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}', '\u{2028}',
];

fn assert_neutralised(what: &str, text: &str) {
    for c in SPOOFING {
        assert!(!text.contains(c), "{what} holds {c:?}: {text:?}");
    }
}

/// What a server stores and says is shown so that it cannot rewrite the
/// operator's terminal: control, bidi and zero-width characters in user
/// agents, labels and messages are escaped visibly, in tables, in JSON and
/// in errors.
#[test]
fn stored_text_and_server_messages_cannot_spoof_the_terminal() {
    let hostile = "a\u{1b}[2J\u{7}b\u{85}\u{202e}gpj.exe\u{2066}c\u{200b}d\u{feff}e\u{2028}f";
    let session = serde_json::json!({
        "id": "019ab5a0-0000-7000-8000-000000000001",
        "account_id": ACCOUNT,
        "created_at": "2026-01-01T00:00:00Z",
        "revoked_at": null,
        "last_seen_at": null,
        "ip": null,
        "label": hostile,
        "user_agent": hostile,
    });
    let server = Recorder::answering(
        200,
        &serde_json::json!({ "sessions": [session] }).to_string(),
    );
    let url = format!("http://{}", server.address);
    let (code, stdout, stderr) = list(&url, &[], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_neutralised("the table", &stdout);
    assert!(
        stdout
            .contains(r"a\u{1b}[2J\u{7}b\u{85}\u{202e}gpj.exe\u{2066}c\u{200b}d\u{feff}e\u{2028}f"),
        "escaped visibly: {stdout}"
    );

    let (code, stdout, stderr) = list(&url, &["--json"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_neutralised("the JSON", &stdout);
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        listed["sessions"][0]["label"], hostile,
        "the JSON means the same"
    );

    let error = Recorder::answering(
        400,
        &serde_json::json!({"error": {"code": hostile, "message": hostile}}).to_string(),
    );
    let (code, stdout, stderr) = list(&format!("http://{}", error.address), &[], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_neutralised("the error", &stderr);
    assert_neutralised("the output", &stdout);
    assert!(stderr.contains(r"\u{202e}gpj.exe"), "{stderr}");
}
