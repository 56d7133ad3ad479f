//! The operator commands: clients of a running service's HTTP API, so the
//! service's cache stays the single truth. TLS goes through rustls on ring,
//! with the system's roots and `--ca-file`; no API key is sent over plain
//! HTTP beyond loopback, a loopback server is reached without a proxy, and
//! no redirect is followed.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ConfigError;
use crate::cli::{
    ClientArgs, CreateArgs, EventsArgs, ListArgs, MarkAt, NotBeforeArgs, RevokeAllArgs, RevokeArgs,
};
use crate::loopback::is_loopback;
use crate::secret::without_byte_order_mark;
use crate::serve::{API_KEY_ENV, read_key_file};
use crate::terminal::{json_shown, shown};

struct Client {
    http: reqwest::Client,
    args: ClientArgs,
    key: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl Client {
    fn new(args: ClientArgs) -> anyhow::Result<Self> {
        let key = match &args.api_key_file {
            Some(path) => read_key_file(path)?
                .into_iter()
                .next()
                .map(|key| key.secret),
            None => std::env::var(API_KEY_ENV)
                .ok()
                .map(|key| key.trim_ascii().to_owned()),
        };
        let http = http_client(&args, key.is_some())?;
        Ok(Self { http, args, key })
    }

    /// Sends a request and returns the JSON body of a successful response.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = self
            .args
            .server
            .join(path)
            .with_context(|| format!("{path} is not a path under {}", self.args.server))?;
        let mut request = self.http.request(method, url);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|err| {
            let hint = if is_certificate_error(&err) {
                " (its certificate is not trusted: if a private CA signed it, pass the CA's \
                 certificate with --ca-file)"
            } else {
                ""
            };
            anyhow::Error::new(err).context(format!(
                "could not reach the service at {}{hint}",
                self.args.server
            ))
        })?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let text = response
            .text()
            .await
            .context("could not read the response")?;
        if status.is_success() {
            return serde_json::from_str(&text).context("the service sent invalid JSON");
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            // The server's words: shown so they cannot act on the terminal.
            Ok(ErrorBody { error }) => bail!(
                "{} ({}, HTTP {status})",
                shown(&error.message),
                shown(&error.code)
            ),
            Err(_) => bail!("the service answered HTTP {status}"),
        }
    }

    /// Prints `body` as JSON (`--json`) or as `table` renders it; either
    /// way no text from the service can act on the terminal (`table` shows
    /// each value it prints through [`shown`]).
    fn print(&self, body: &Value, table: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
        let text = if self.args.json {
            json_shown(serde_json::to_string_pretty(body)?)
        } else {
            table(body)
        };
        println!("{text}");
        Ok(())
    }
}

pub(crate) async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = Client::new(args.client)?;
    let body = json!({
        "account_id": args.account,
        "label": args.label,
        "user_agent": args.user_agent,
        "ip": args.ip,
    });
    let created = client.call(Method::POST, "v1/sessions", Some(body)).await?;
    client.print(&created, |created| {
        format!(
            "token: {}\n(shown once: store it now)\n\n{}",
            shown(text(&created["token"])),
            sessions_table(std::slice::from_ref(&created["session"]))
        )
    })
}

pub(crate) async fn resolve(args: ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let mut token = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut token)
        .context("could not read the token from stdin")?;
    // PowerShell 5.1 and some editors write a byte-order mark first.
    let token = without_byte_order_mark(&token).trim();
    if token.is_empty() {
        bail!("no token on stdin: pipe it in, for example `session-app resolve < token.txt`");
    }
    let resolved = client
        .call(
            Method::POST,
            "v1/sessions/resolve",
            Some(json!({ "token": token })),
        )
        .await?;
    client.print(&resolved, |resolved| {
        sessions_table(std::slice::from_ref(&resolved["session"]))
    })
}

pub(crate) async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let client = Client::new(args.client)?;
    let mut path = format!("v1/sessions/{}", args.id);
    // A checked reason is an identifier: nothing in it needs escaping.
    if let Some(reason) = &args.reason {
        path.push_str(&format!("?reason={reason}"));
    }
    client.call(Method::DELETE, &path, None).await?;
    client.print(&json!({ "revoked": args.id }), |_| {
        format!("session {} is revoked", args.id)
    })
}

pub(crate) async fn revoke_all(args: RevokeAllArgs) -> anyhow::Result<()> {
    let client = Client::new(args.client)?;
    let mut path = format!("v1/accounts/{}/sessions", args.account);
    let mut query = Vec::new();
    if let Some(except) = args.except {
        query.push(format!("except={except}"));
    }
    // A checked reason is an identifier: nothing in it needs escaping.
    if let Some(reason) = &args.reason {
        query.push(format!("reason={reason}"));
    }
    if !query.is_empty() {
        path.push_str(&format!("?{}", query.join("&")));
    }
    let revoked = client.call(Method::DELETE, &path, None).await?;
    client.print(&revoked, |revoked| {
        format!(
            "revoked {} session(s) of account {}",
            shown(&revoked["revoked"].to_string()),
            args.account
        )
    })
}

/// Prints the "not before" mark in force and its sweep's progress; with
/// `--at`, raises it first (through the API, so a running server applies it
/// at once and the other instances learn it from the store).
pub(crate) async fn not_before(args: NotBeforeArgs) -> anyhow::Result<()> {
    let client = Client::new(args.client)?;
    let path = "v1/not-before";
    if let Some(at) = args.at {
        let body = match at {
            MarkAt::Now => json!({}),
            MarkAt::At(at) => json!({
                "not_before": at
                    .format(&time::format_description::well_known::Rfc3339)
                    .context("the time cannot be written as RFC 3339")?,
            }),
        };
        client.call(Method::PUT, path, Some(body)).await?;
    }
    let state = client.call(Method::GET, path, None).await?;
    client.print(&state, |state| {
        let field = |name: &str| match &state[name] {
            Value::Null => "none".to_owned(),
            value => shown(text(value)).into_owned(),
        };
        let sweep = if state["swept"] == Value::Bool(true) {
            "done"
        } else {
            "in progress"
        };
        format!(
            "not before:    {}\nraised by:     {}\nswept through: {}\nsweep:         {sweep}",
            field("not_before"),
            field("raised_by"),
            field("swept_through"),
        )
    })
}

/// Lists every session of the account: follows `next_cursor` page by page
/// (200 a page, the most the API gives), so each request stays bounded and
/// the operator sees the whole list, as one table or one JSON `sessions`.
pub(crate) async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = Client::new(args.client)?;
    let first = format!(
        "v1/accounts/{}/sessions?include_revoked={}&limit=200",
        args.account, args.include_revoked
    );
    let mut sessions = Vec::new();
    let mut path = first.clone();
    loop {
        let mut page = client.call(Method::GET, &path, None).await?;
        if let Some(listed) = page["sessions"].as_array_mut() {
            sessions.append(listed);
        }
        match page["next_cursor"].as_str() {
            // URL-safe base64: it goes into the query as it is.
            Some(cursor) => path = format!("{first}&cursor={cursor}"),
            None => break,
        }
    }
    client.print(&json!({ "sessions": sessions }), |listed| {
        let sessions = listed["sessions"].as_array().map_or(&[][..], Vec::as_slice);
        if sessions.is_empty() {
            "no sessions".to_owned()
        } else {
            sessions_table(sessions)
        }
    })
}

/// How long each long-poll of `events --follow` waits for an event, in
/// seconds: under the client's 30 s timeout and the service's longest wait.
const FOLLOW_WAIT_SECONDS: u64 = 20;

pub(crate) async fn events(args: EventsArgs) -> anyhow::Result<()> {
    if args
        .after
        .as_deref()
        .is_some_and(|after| after.len() != 32 || !after.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(
            ConfigError("--after: not an event id (32 hexadecimal digits)".to_owned()).into(),
        );
    }
    let client = Client::new(args.client)?;
    let wait = if args.follow { FOLLOW_WAIT_SECONDS } else { 0 };
    let mut after = args.after;
    loop {
        // An event id is 32 hexadecimal digits: it goes into the query as it is.
        let path = match &after {
            Some(cursor) => format!("v1/events?wait={wait}&limit=1000&after={cursor}"),
            None => format!("v1/events?wait={wait}&limit=1000"),
        };
        let page = client.call(Method::GET, &path, None).await?;
        let events = page["events"].as_array().map_or(&[][..], Vec::as_slice);
        for event in events {
            if client.args.json {
                println!("{}", json_shown(serde_json::to_string(event)?));
            } else {
                println!("{}", event_line(event));
            }
        }
        after = page["next"].as_str().map(str::to_owned);
        if !args.follow && events.len() < 1000 {
            return Ok(());
        }
    }
}

/// One event as a line: id, type, session, account, time, reason.
fn event_line(event: &Value) -> String {
    let field = |name: &str| shown(event[name].as_str().unwrap_or("-"));
    format!(
        "{}  {:<7}  {}  {}  {}  {}",
        field("id"),
        field("type"),
        field("session_id"),
        field("account_id"),
        field("time"),
        field("reason"),
    )
}

/// The HTTP client for `args.server`: TLS through rustls (ring) with the
/// system's roots and `--ca-file`'s; no redirects (the API has none, and
/// one could carry the key elsewhere); no proxy for a loopback server.
///
/// # Errors
///
/// A [`ConfigError`] when a key would go over plain HTTP to a host that is
/// not loopback, or `--ca-file` cannot be used; before any connection.
fn http_client(args: &ClientArgs, sends_key: bool) -> anyhow::Result<reqwest::Client> {
    let server = &args.server;
    let loopback = is_loopback(server);
    if sends_key && server.scheme() == "http" && !loopback {
        return Err(ConfigError(
            "--server: refusing to send the API key over plain http:// to a host that is not \
             loopback, where anyone on the path could read it; use https://"
                .to_owned(),
        )
        .into());
    }
    let mut builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(tls_config(args.ca_file.as_deref())?);
    if loopback {
        // A proxy would see the key and the tokens, and could not reach
        // this machine's loopback anyway.
        builder = builder.no_proxy();
        if server.host_str() == Some("localhost")
            && let Some(port) = server.port_or_known_default()
        {
            // `localhost` is loopback only if it resolves there; make it.
            builder = builder.resolve_to_addrs(
                "localhost",
                &[
                    std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
                    std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
                ],
            );
        }
    }
    builder.build().context("could not build the HTTP client")
}

/// rustls settings trusting the system's roots and those in `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system entries are skipped, as every other TLS client does.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let refused =
            |reason: String| ConfigError(format!("--ca-file {}: {reason}", path.display()));
        let before = roots.len();
        let pem = std::fs::read(path).map_err(|err| refused(err.to_string()))?;
        // An editor's UTF-8 byte-order mark would hide the first `-----BEGIN`.
        let pem = pem.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&pem);
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|err| refused(err.to_string()))?;
            roots.add(cert).map_err(|err| refused(err.to_string()))?;
        }
        if roots.len() == before {
            return Err(refused("holds no PEM certificate".to_owned()).into());
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("could not set up TLS")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// Whether the request failed because the server's certificate was refused.
fn is_certificate_error(err: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = next {
        if let Some(rustls::Error::InvalidCertificate(_)) = cause.downcast_ref::<rustls::Error>() {
            return true;
        }
        // An `io::Error`'s `source` skips the error it wraps: look at that one.
        next = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    false
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// Sessions as an aligned table.
fn sessions_table(sessions: &[Value]) -> String {
    const COLUMNS: [(&str, &str); 9] = [
        ("ID", "id"),
        ("CREATED", "created_at"),
        ("REVOKED", "revoked_at"),
        ("REASON", "revocation_reason"),
        ("REVOKED BY", "revoked_by"),
        ("LAST SEEN", "last_seen_at"),
        ("IP", "ip"),
        ("LABEL", "label"),
        ("USER AGENT", "user_agent"),
    ];
    // A column only when some answer has the field: only answers read from
    // the store (get, list) say when a session was last seen, why it was
    // revoked and by which key, and a compact
    // cache's resolve answers the id and the account alone.
    let columns: Vec<(&str, &str)> = COLUMNS
        .into_iter()
        .filter(|(_, key)| {
            *key == "id" || sessions.iter().any(|session| session.get(key).is_some())
        })
        .collect();
    let rows: Vec<Vec<Cow<'_, str>>> = sessions
        .iter()
        .map(|session| {
            columns
                .iter()
                .map(|(_, key)| shown(text(&session[*key])))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (title, _))| {
            rows.iter()
                .map(|row| row[i].len())
                .fold(title.len(), usize::max)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    std::iter::once(line(columns.iter().map(|(title, _)| *title).collect()))
        .chain(
            rows.iter()
                .map(|row| line(row.iter().map(AsRef::as_ref).collect())),
        )
        .collect::<Vec<_>>()
        .join("\n")
}
