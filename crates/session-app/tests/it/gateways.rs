//! Forward auth through real gateways: a throwaway nginx, Caddy and
//! HAProxy, each configured as docs/GATEWAYS.md says, in front of a small upstream that
//! echoes the headers it receives, asking the real `session-app` binary;
//! and the binary's options that name the cookie and identity headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value, json};
use session_core::memory::MemoryStore;
use session_core::{MemoryCache, SessionService};
use session_http::{ApiState, router};
use session_test_gateway::{
    Gateway, HAPROXY_LUA, Kind, caddy_site, haproxy_site, nginx_events_site, nginx_site,
};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::e2e::{Server, http_client, ready_on_sqlite};

/// The application behind the gateway: answers every request with the
/// headers it received (and, under `body length`, how many body bytes),
/// and counts the requests that reached it.
struct Upstream {
    address: SocketAddr,
    reached: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Self {
        let reached = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .fallback(echo)
            .with_state(Arc::clone(&reached));
        Self {
            address: serve(app).await,
            reached,
        }
    }

    fn reached(&self) -> usize {
        self.reached.load(Ordering::SeqCst)
    }
}

async fn echo(
    State(reached): State<Arc<AtomicUsize>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    reached.fetch_add(1, Ordering::SeqCst);
    let mut seen = Map::new();
    // Not a header name (it holds a space), so it cannot clash with one.
    seen.insert("body length".to_owned(), Value::from(body.len()));
    for name in headers.keys() {
        let values = headers
            .get_all(name)
            .iter()
            .map(|value| Value::from(String::from_utf8_lossy(value.as_bytes())))
            .collect();
        seen.insert(name.as_str().to_owned(), Value::Array(values));
    }
    axum::Json(Value::Object(seen))
}

/// Serves `app` on a free loopback port for the rest of the test.
async fn serve(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn start(kind: Kind, session: SocketAddr, app: SocketAddr) -> Gateway {
    match kind {
        Kind::Nginx => Gateway::nginx(session, app),
        Kind::Caddy => Gateway::caddy(session, app),
        Kind::HAProxy => Gateway::haproxy(session, app),
    }
}

/// A request through the gateway, as a browser or API client sends it:
/// under the application's own name, with headers of its choosing.
async fn through(gateway: &Gateway, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
    let mut request = crate::e2e::http_client()
        .get(format!("http://{}/orders/7?page=2", gateway.address()))
        .header(header::HOST, "app.example.com");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Client-supplied identity headers, which the gateway must never pass on.
const FORGED: [(&str, &str); 2] = [
    ("x-session-id", "00000000-0000-0000-0000-00000000f00d"),
    ("x-account-id", "00000000-0000-0000-0000-00000000f00d"),
];

async fn exercise(kind: Kind) {
    let upstream = Upstream::start().await;
    // Keyless: the service listens on loopback and keeps its loopback-name
    // rule, which forward auth is exempt from (Caddy forwards the client's Host).
    let (server, _dir) = ready_on_sqlite(&[]).await;
    let gateway = start(kind, server.address, upstream.address);
    let fail = |what: &str| format!("{kind:?}: {what}\ngateway log:\n{}", gateway.log());

    let account = Uuid::new_v4();
    let (token, session_id) = server.create(account).await;
    let bearer = format!("Bearer {token}");
    let cookie = format!("theme=dark; __Host-session={token}");
    // Another script's cookie in UTF-8 beside the session's, as browsers send it.
    let beside_utf8 = format!(
        "__utmz=1.1.1.1.utmccn=MinKampagneUnders\u{f8}gelse|utmcmd=social; __Host-session={token}"
    );
    for presented in [
        ("cookie", cookie.as_str()),
        ("cookie", beside_utf8.as_str()),
        ("authorization", bearer.as_str()),
    ] {
        let before = upstream.reached();
        let mut headers = FORGED.to_vec();
        headers.push(presented);
        let (status, _, body) = through(&gateway, &headers).await;
        assert_eq!(status, 200, "{}", fail(&format!("{}: {body}", presented.0)));
        assert_eq!(upstream.reached(), before + 1);
        let seen: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (&seen["x-session-id"], &seen["x-account-id"]),
            (&json!([session_id]), &json!([account.to_string()])),
            "{}",
            fail("the identity, and only it, reaches the upstream")
        );
    }

    // An identity header spelt with underscores, which CGI, WSGI, Rack and
    // PHP read as the real one: refused, or dropped on the way (nginx
    // drops header names with underscores, HAProxy's Lua deletes them),
    // never passed on.
    for forged in ["x_session_id", "X_Account_Id", "x-session_id"] {
        let (status, _, body) = through(
            &gateway,
            &[(forged, FORGED[0].1), ("cookie", cookie.as_str())],
        )
        .await;
        if (200..300).contains(&status) {
            assert!(
                !body.contains(FORGED[0].1),
                "{}",
                fail(&format!("{forged} reached the upstream: {body}"))
            );
        }
    }

    // An upload: whether the gateway relays its body to forward auth or not,
    // the request reaches the upstream whole. Under nginx's default
    // `client_max_body_size` (1 MiB), and over the service's drain bound.
    let upload = vec![b'x'; 512 << 10];
    let response = crate::e2e::http_client()
        .post(format!("http://{}/orders/7/attachments", gateway.address()))
        .header(header::HOST, "app.example.com")
        .header(header::AUTHORIZATION, bearer.as_str())
        .body(upload.clone())
        .send()
        .await
        .expect("the gateway answers an upload");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{}", fail(&format!("an upload: {body}")));
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["body length"], json!(upload.len()), "{}", fail(&body));

    // Refused at the gateway: no token, and then a revoked one.
    let (status, _, body) = through(&gateway, &FORGED).await;
    assert_eq!(status, 401, "{}", fail(&body));
    assert_eq!(server.revoke(&session_id).await, 204);
    let reached = upstream.reached();
    for presented in [
        ("cookie", cookie.as_str()),
        ("authorization", bearer.as_str()),
    ] {
        let (status, headers, body) = through(&gateway, &[presented]).await;
        assert_eq!(status, 401, "{}", fail(&body));
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#,
            "{}",
            fail("the challenge reaches the client")
        );
        assert!(!body.contains(&token[5..]), "{}", fail(&body));
    }
    assert_eq!(
        upstream.reached(),
        reached,
        "{}",
        fail("refused requests never reach the upstream")
    );

    // A service that is gone: the gateway refuses rather than allows.
    let (live, _) = server.create(account).await;
    server.kill_hard();
    let (status, _, body) =
        through(&gateway, &[("authorization", &format!("Bearer {live}"))]).await;
    assert!(
        !(200..300).contains(&status),
        "{}",
        fail(&format!("{status}: {body}"))
    );
    assert_eq!(
        upstream.reached(),
        reached,
        "{}",
        fail("nothing reaches the upstream")
    );
}

/// A service whose cache is not warm answers 503, which each gateway turns
/// into a refusal (nginx into a 500).
async fn refused_while_not_ready(kind: Kind) {
    let upstream = Upstream::start().await;
    let store = Arc::new(MemoryStore::new());
    let service = SessionService::builder(store, Arc::new(MemoryCache::new())).build();
    let created = service
        .create(
            session_core::AccountId::new(Uuid::new_v4()).unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    let session = serve(router(ApiState::builder(service).build())).await;
    let gateway = start(kind, session, upstream.address);
    let bearer = format!("Bearer {}", created.token.expose_secret());
    let (status, _, body) = through(&gateway, &[("authorization", &bearer)]).await;
    assert!(
        !(200..300).contains(&status),
        "{kind:?}: {status}: {body}\n{}",
        gateway.log()
    );
    assert_eq!(
        upstream.reached(),
        0,
        "{kind:?}: nothing reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_lets_active_sessions_through_with_their_identity_and_refuses_the_rest() {
    exercise(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_lets_active_sessions_through_with_their_identity_and_refuses_the_rest() {
    exercise(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_lets_active_sessions_through_with_their_identity_and_refuses_the_rest() {
    exercise(Kind::HAProxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_refuses_while_the_service_is_not_ready() {
    refused_while_not_ready(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_refuses_while_the_service_is_not_ready() {
    refused_while_not_ready(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_refuses_while_the_service_is_not_ready() {
    refused_while_not_ready(Kind::HAProxy).await;
}

/// HAProxy lets a request go on when a Lua action fails; the documented
/// configuration refuses every request the action did not pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_refuses_when_its_lua_action_fails() {
    let upstream = Upstream::start().await;
    let (server, _dir) = ready_on_sqlite(&[]).await;
    let (token, _) = server.create(Uuid::new_v4()).await;
    // The documented action, failing before it asks anything.
    let failing = HAPROXY_LUA.replacen(
        "local function session_auth(txn, service)\n",
        "local function session_auth(txn, service)\n    error(\"failing on purpose\")\n",
        1,
    );
    assert_ne!(failing, HAPROXY_LUA, "the action's first line moved");
    let gateway = Gateway::haproxy_with_lua(server.address, upstream.address, &failing);
    let bearer = format!("Bearer {token}");
    let (status, _, body) = through(&gateway, &[("authorization", &bearer)]).await;
    assert_eq!(status, 500, "{body}\n{}", gateway.log());
    assert!(
        gateway.log().contains("failing on purpose"),
        "the action ran and failed:\n{}",
        gateway.log()
    );
    assert_eq!(upstream.reached(), 0, "nothing reaches the upstream");
}

/// The HAProxy script sets the identity headers it names; an answer that
/// carries them under other names (the service's options renamed them) is
/// refused, never let through without an identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_refuses_an_answer_without_the_identity_headers() {
    let upstream = Upstream::start().await;
    let (server, _dir) =
        ready_on_sqlite(&["--forward-auth-session-id-header", "X-User-Session"]).await;
    let (token, _) = server.create(Uuid::new_v4()).await;
    let gateway = Gateway::haproxy(server.address, upstream.address);
    let bearer = format!("Bearer {token}");
    let (status, _, body) = through(&gateway, &[("authorization", &bearer)]).await;
    assert_eq!(status, 500, "{body}\n{}", gateway.log());
    assert_eq!(upstream.reached(), 0, "nothing reaches the upstream");
}

/// The configurations docs/GATEWAYS.md shows are the ones tested here.
#[test]
fn the_documented_configurations_are_the_tested_ones() {
    let doc = include_str!("../../../../docs/GATEWAYS.md");
    for (what, text) in [
        (
            "nginx configuration",
            nginx_site("80", "app.example.com", "127.0.0.1:8080", "127.0.0.1:3000"),
        ),
        (
            "Caddy configuration",
            caddy_site("app.example.com", "127.0.0.1:8080", "127.0.0.1:3000"),
        ),
        (
            "HAProxy configuration",
            haproxy_site(
                ":80",
                "/etc/haproxy/session_auth.lua",
                "127.0.0.1:8080",
                "127.0.0.1:3000",
            ),
        ),
        ("HAProxy Lua script", HAPROXY_LUA.to_owned()),
        (
            "nginx configuration of the events feed",
            nginx_events_site("443 ssl", "sessions.example.com", "127.0.0.1:8080"),
        ),
    ] {
        assert!(
            doc.contains(&text),
            "docs/GATEWAYS.md must show the tested {what}:\n{text}"
        );
    }
}

/// The options name the cookie and the identity headers of the real binary.
#[tokio::test]
async fn the_cookie_and_the_identity_headers_are_named_by_options() {
    let (server, _dir) = ready_on_sqlite(&[
        "--forward-auth-cookie",
        "sid",
        "--forward-auth-session-id-header",
        "X-User-Session",
        "--forward-auth-account-id-header",
        "X-User",
    ])
    .await;
    let account = Uuid::new_v4();
    let (token, session_id) = server.create(account).await;
    let check = |cookie: String| {
        http_client()
            .get(server.url("/v1/forward-auth"))
            .header(header::COOKIE, cookie)
            .send()
    };
    let response = check(format!("sid={token}")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-user-session"], session_id.as_str());
    assert_eq!(response.headers()["x-user"], account.to_string().as_str());
    assert!(!response.headers().contains_key("x-session-id"));
    let response = check(format!("__Host-session={token}")).await.unwrap();
    assert_eq!(response.status(), 401, "only the configured cookie is read");
}

/// How long [`events_through`] waits for one event before it calls it held
/// back: a bound on waiting, far past any delivery on a loaded machine.
const EVENT_BOUND: Duration = Duration::from_secs(30);

/// Opens the events stream through `gateway`, then three times creates a
/// session on `server` and reads the stream until its `created` event
/// arrives, waiting at most `bound` for the head and for each event.
/// Nothing else is written while the test waits and the stream stays open,
/// so a proxy that buffers holds the head or the event (far smaller than
/// any buffer) until the bound: `Err` says what was held back, with what
/// arrived and the gateway's log.
async fn events_through(server: &Server, gateway: &Gateway, bound: Duration) -> Result<(), String> {
    let opened = http_client()
        .get(format!("http://{}/v1/events", gateway.address()))
        .header(header::ACCEPT, "text/event-stream")
        .send();
    let Ok(stream) = tokio::time::timeout(bound, opened).await else {
        return Err(format!(
            "the stream's head is held back: not received within {bound:?}:\n{}",
            gateway.log()
        ));
    };
    let mut stream = stream.unwrap();
    assert_eq!(stream.status(), 200, "{}", gateway.log());
    assert_eq!(stream.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut received = String::new();
    for round in 0..3 {
        let (_, id) = server.create(Uuid::new_v4()).await;
        let arrived = tokio::time::timeout(bound, async {
            while !received.contains(&id) {
                match stream.chunk().await {
                    Ok(Some(chunk)) => received.push_str(std::str::from_utf8(&chunk).unwrap()),
                    Ok(None) => return Err("the stream ended"),
                    Err(_) => return Err("the stream failed"),
                }
            }
            Ok(())
        })
        .await;
        match arrived {
            Ok(Ok(())) => {}
            Ok(Err(ended)) => {
                return Err(format!(
                    "{ended} before event {round} arrived:\n{received}\n{}",
                    gateway.log()
                ));
            }
            Err(_) => {
                return Err(format!(
                    "event {round} is held back: not read from the open stream within \
                     {bound:?}:\n{received}\n{}",
                    gateway.log()
                ));
            }
        }
    }
    assert_eq!(received.matches("event: created").count(), 3, "{received}");
    Ok(())
}

/// The events feed through nginx configured as docs/GATEWAYS.md says: a
/// stream subscriber receives each event through the proxy while the
/// stream stays open, not when nginx's buffers fill or the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_reaches_its_subscriber_through_nginx_as_each_event_commits() {
    let (server, _dir) = ready_on_sqlite(&[]).await;
    let gateway = Gateway::nginx_events(server.address);
    if let Err(held) = events_through(&server, &gateway, EVENT_BOUND).await {
        panic!("{held}");
    }
}

/// The check above tells a buffering nginx from the documented one: with
/// buffering on and the service's `X-Accel-Buffering: no` ignored, nginx
/// holds the stream back (its head too: the service sends nothing before
/// the first event, and nginx sends the head with the first bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffering_nginx_holds_the_event_stream_back() {
    let (server, _dir) = ready_on_sqlite(&[]).await;
    let buffering = |site: String| {
        let edited = site.replace(
            "proxy_buffering off;",
            "proxy_buffering on;\n        proxy_ignore_headers X-Accel-Buffering;",
        );
        assert_ne!(edited, site, "the documented site changed: edit this test");
        edited
    };
    let gateway = Gateway::nginx_events_edited(server.address, &buffering);
    // A bound on waiting: nothing buffered arrives while the stream is open.
    let held = events_through(&server, &gateway, Duration::from_secs(5)).await;
    assert!(
        held.as_ref().is_err_and(|held| held.contains("held back")),
        "{held:?}"
    );
}
