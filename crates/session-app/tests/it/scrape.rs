//! A real Prometheus scrapes the real binary's `/metrics`: every family the
//! service exposes arrives with its type and help text, and the values are
//! what the test did.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use session_core::SessionToken;
use session_test_gateway::Prometheus;
use session_test_postgres::TestDatabase;
use uuid::Uuid;

use crate::e2e::{KEY, Options, Server, http_client, sqlite_url, temp_dir};

/// How long Prometheus may take to scrape what the test needs: a bound on
/// waiting, not a timing assertion (it scrapes every second).
const SCRAPE_BOUND: Duration = Duration::from_secs(60);

/// A metric family as `/metrics` declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    kind: String,
    help: String,
}

/// The families of an OpenMetrics text, by name, from its `# TYPE` and
/// `# HELP` lines.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut families = BTreeMap::<String, Family>::new();
    for line in text.lines() {
        let (is_type, rest) = if let Some(rest) = line.strip_prefix("# TYPE ") {
            (true, rest)
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            (false, rest)
        } else {
            continue;
        };
        let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let family = families.entry(name.to_owned()).or_insert(Family {
            kind: String::new(),
            help: String::new(),
        });
        if is_type {
            value.clone_into(&mut family.kind);
        } else {
            value.clone_into(&mut family.help);
        }
    }
    families
}

/// Drives traffic so every family has samples, and returns how many
/// malformed tokens it resolved.
async fn drive(server: &Server) -> u64 {
    let (token, id) = server.create(Uuid::new_v4()).await;
    assert_eq!(server.resolve(&token).await, 200);
    assert_eq!(server.resolve(&token).await, 200);
    let malformed = 3;
    for _ in 0..malformed {
        assert_eq!(server.resolve("sess_garbage").await, 401);
    }
    assert_eq!(
        server
            .resolve(SessionToken::generate().expose_secret())
            .await,
        401
    );
    let answer = http_client()
        .get(server.url("/v1/forward-auth"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let (status, _) = server
        .call(Method::GET, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.revoke(&id).await, 204);
    malformed
}

/// GETs a Prometheus API path and returns its `data`.
async fn api(prometheus: &Prometheus, path: &str) -> Value {
    let url = format!("http://{}{path}", prometheus.address());
    let body: Value = http_client()
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|err| panic!("{path}: {err}; its log:\n{}", prometheus.log()))
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "success", "{path}: {body}");
    body["data"].clone()
}

/// Polls `check` until it returns `Some`, within [`SCRAPE_BOUND`].
async fn eventually<T>(
    prometheus: &Prometheus,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            started.elapsed() < SCRAPE_BOUND,
            "never happened: {what}; Prometheus logged:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of the one series `query` selects, as Prometheus last scraped it.
async fn value(prometheus: &Prometheus, query: &str) -> f64 {
    let path = format!(
        "/api/v1/query?query={}",
        form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
    );
    let data = api(prometheus, &path).await;
    let series = data["result"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{query}: {data}");
    series[0]["value"][1].as_str().unwrap().parse().unwrap()
}

/// Starts Prometheus on `server`, waits until it has scraped every family,
/// and checks each family's type and help and a few values.
/// `also`: families this server's settings add to those every server has.
async fn scraped(server: &Server, pools: &[&str], also: &[&str]) {
    server.wait_ready().await;
    let malformed = drive(server).await;
    let exposed = http_client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exposed = families(&exposed);
    for family in [
        "http_server_request_duration_seconds",
        "session_resolves",
        "session_store_call_duration_seconds",
        "session_store_pool_connections",
        "session_store_pool_waiting",
        "session_store_pool_max_connections",
        "session_cache_sessions",
        "session_cache_warm_duration_seconds",
        "session_change_log_read_failures",
        "session_forward_auths",
    ]
    .iter()
    .chain(also)
    {
        assert!(exposed.contains_key(*family), "{family} not exposed");
    }

    let prometheus = Prometheus::scraping(&[server.address]);
    // Its API answers 503 until the storage is open.
    eventually(&prometheus, "Prometheus is ready", async || {
        let url = format!("http://{}/-/ready", prometheus.address());
        let ready = http_client().get(&url).send().await;
        ready
            .is_ok_and(|answer| answer.status() == 200)
            .then_some(())
    })
    .await;
    eventually(&prometheus, "the target is scraped and up", async || {
        let data = api(&prometheus, "/api/v1/targets").await;
        let target = &data["activeTargets"][0];
        (target["health"] == "up").then_some(())
    })
    .await;
    let arrived = eventually(&prometheus, "every family's metadata arrives", async || {
        let data = api(
            &prometheus,
            "/api/v1/targets/metadata?match_target={job=\"session\"}",
        )
        .await;
        let arrived: BTreeMap<String, Family> = data
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                (
                    entry["metric"].as_str().unwrap().to_owned(),
                    Family {
                        kind: entry["type"].as_str().unwrap().to_owned(),
                        help: entry["help"].as_str().unwrap().to_owned(),
                    },
                )
            })
            .collect();
        exposed
            .keys()
            .all(|name| arrived.contains_key(name))
            .then_some(arrived)
    })
    .await;
    for (name, family) in &exposed {
        assert!(!family.help.is_empty(), "{name} has no help text");
        assert!(!family.kind.is_empty(), "{name} has no type");
        assert_eq!(
            arrived.get(name),
            Some(family),
            "{name} as Prometheus has it"
        );
    }

    let query = async |query: &str| value(&prometheus, query).await;
    assert_eq!(
        query("session_resolves_total{outcome=\"malformed\"}").await,
        malformed as f64
    );
    // Two resolves and one forward auth of the created token.
    assert_eq!(query("session_resolves_total{outcome=\"hit\"}").await, 3.0);
    assert_eq!(
        query("session_store_call_duration_seconds_count{operation=\"insert\"}").await,
        1.0
    );
    assert_eq!(
        query("session_store_call_duration_seconds_count{operation=\"revoke\"}").await,
        1.0
    );
    assert_eq!(
        query("sum(session_store_errors_total) or vector(0)").await,
        0.0,
        "no store call failed"
    );
    for pool in pools {
        let max = query(&format!(
            "session_store_pool_max_connections{{pool=\"{pool}\"}}"
        ))
        .await;
        assert!(max >= 1.0, "{pool}: {max}");
    }
}

#[tokio::test]
async fn prometheus_scrapes_every_family_with_its_help_over_sqlite() {
    let dir = temp_dir();
    let server = Server::start(Options {
        database_url: sqlite_url(dir.path()),
        api_key: Some(KEY.to_owned()),
        ..Options::default()
    });
    scraped(&server, &["sqlite_readers", "sqlite_writer"], &[]).await;
}

#[tokio::test]
async fn prometheus_scrapes_every_family_with_its_help_over_postgres() {
    let database = TestDatabase::create();
    // With last-seen activity on, so its families are checked too.
    let server = Server::start(Options {
        database_url: database.url().to_owned(),
        api_key: Some(KEY.to_owned()),
        extra: vec!["--last-seen".to_owned()],
        ..Options::default()
    });
    scraped(
        &server,
        &["postgres"],
        &[
            "session_last_seen_marks_flushed",
            "session_last_seen_marks_dropped",
        ],
    )
    .await;
}
