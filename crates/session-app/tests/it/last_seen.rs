//! Last-seen activity end to end: `--last-seen` makes `GET` and list show
//! when a session was last resolved; without it they show null.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::e2e::{Options, Server, cli, http_client, sqlite_url, temp_dir};

async fn started(url: &str, extra: &[&str]) -> Server {
    let server = Server::start(Options {
        database_url: url.to_owned(),
        extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Options::default()
    });
    server.wait_ready().await;
    server
}

async fn get(server: &Server, id: &str) -> Value {
    let (status, body) = server
        .call(Method::GET, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["session"].clone()
}

async fn listed(server: &Server, account: Uuid) -> Vec<Value> {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/v1/accounts/{account}/sessions"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["sessions"].as_array().unwrap().clone()
}

/// The `last_seen_at` of a session's JSON: present always, null or a time.
fn last_seen_at(session: &Value) -> Option<OffsetDateTime> {
    let value = session
        .get("last_seen_at")
        .unwrap_or_else(|| panic!("no last_seen_at in {session}"));
    value
        .as_str()
        .map(|text| OffsetDateTime::parse(text, &Rfc3339).unwrap())
}

/// With the flag on, the background flush writes the marks: `GET` and list
/// show the start of the minute of the last resolve for the session
/// resolved, and null for the one never resolved; metrics count the write.
#[tokio::test]
async fn get_and_list_show_when_a_session_was_last_resolved() {
    let dir = temp_dir();
    let server = started(
        &sqlite_url(dir.path()),
        &["--last-seen", "--last-seen-flush-interval", "1s"],
    )
    .await;
    let account = Uuid::new_v4();
    let (token, seen_id) = server.create(account).await;
    let (_, unseen_id) = server.create(account).await;
    let before = OffsetDateTime::now_utc();
    assert_eq!(server.resolve(&token).await, 200);
    assert_eq!(server.resolve(&token).await, 200);

    // A bound on waiting for the flush, not a measure of its speed.
    let mut seen = None;
    for _ in 0..600 {
        seen = last_seen_at(&get(&server, &seen_id).await);
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.expect("last_seen_at stayed null with --last-seen");
    assert_eq!((seen.second(), seen.nanosecond()), (0, 0), "a whole minute");
    assert!(seen > before - time::Duration::minutes(1) && seen <= OffsetDateTime::now_utc());
    assert_eq!(last_seen_at(&get(&server, &unseen_id).await), None);

    let sessions = listed(&server, account).await;
    assert_eq!(sessions.len(), 2);
    for session in &sessions {
        let expected = (session["id"] == seen_id.as_str()).then_some(seen);
        assert_eq!(last_seen_at(session), expected, "{session}");
    }

    // The operator CLI's list shows it too, as a column.
    let server_url = server.url("");
    let account_text = account.to_string();
    let (status, stdout, stderr) = cli(
        &["list", "--account", &account_text],
        &[("SESSION_SERVER", server_url.as_str())],
        "",
    );
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.lines().next().unwrap().contains("LAST SEEN"),
        "{stdout}"
    );
    let seen_text = seen.format(&Rfc3339).unwrap();
    let row = stdout
        .lines()
        .find(|line| line.starts_with(&seen_id))
        .unwrap();
    assert!(row.contains(&seen_text), "{stdout}");

    let metrics = http_client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("session_last_seen_marks_flushed_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("session_last_seen_marks_dropped_total 0\n"));
}

/// Without the flag nothing is recorded, even across a shutdown; with it,
/// the marks not yet flushed are written at shutdown.
#[tokio::test]
async fn nothing_is_recorded_without_the_flag_and_shutdown_flushes_with_it() {
    let dir = temp_dir();
    let url = sqlite_url(dir.path());
    let account = Uuid::new_v4();

    let off = started(&url, &[]).await;
    let (token, id) = off.create(account).await;
    assert_eq!(off.resolve(&token).await, 200);
    assert_eq!(last_seen_at(&get(&off, &id).await), None);
    assert_eq!(last_seen_at(&listed(&off, account).await[0]), None);
    assert!(off.terminate().success());

    // On, with a flush interval no test waits for: only the shutdown flushes.
    let on = ["--last-seen", "--last-seen-flush-interval", "1h"];
    let first = started(&url, &on).await;
    assert_eq!(
        last_seen_at(&get(&first, &id).await),
        None,
        "the resolve made while off was not recorded"
    );
    assert_eq!(first.resolve(&token).await, 200);
    assert!(first.terminate().success());

    let second = started(&url, &on).await;
    assert!(last_seen_at(&get(&second, &id).await).is_some());
    assert!(last_seen_at(&listed(&second, account).await[0]).is_some());
}
