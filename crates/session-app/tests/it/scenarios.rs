//! End-to-end scenarios, each run against SQLite and against PostgreSQL.

use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::e2e::{KEY, Options, Server, assert_no_tokens, cli};

fn options(database_url: &str) -> Options {
    Options {
        database_url: database_url.to_owned(),
        api_key: Some(KEY.to_owned()),
        ..Options::default()
    }
}

fn options_with(database_url: &str, extra: &[&str]) -> Options {
    Options {
        extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        ..options(database_url)
    }
}

/// create → resolve → revoke → resolve (401), with no token in the log.
pub(crate) async fn create_resolve_revoke_resolve(database_url: &str) {
    let server = Server::start(options(database_url));
    server.wait_ready().await;
    let (token, id) = server.create(Uuid::new_v4()).await;
    assert_eq!(server.resolve(&token).await, 200);
    assert_eq!(server.revoke(&id).await, 204);
    assert_eq!(server.resolve(&token).await, 401);
    assert_eq!(
        server.revoke(&id).await,
        204,
        "revoking again is still a success"
    );
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
}

/// kill -9 and start again on the same database: every created token still
/// resolves and every revoked one stays rejected.
pub(crate) async fn restart_keeps_sessions(database_url: &str) {
    restart_keeps_sessions_with(database_url, &[]).await;
}

/// [`restart_keeps_sessions`] with extra `serve` arguments.
pub(crate) async fn restart_keeps_sessions_with(database_url: &str, extra: &[&str]) {
    let server = Server::start(options_with(database_url, extra));
    server.wait_ready().await;
    let account = Uuid::new_v4();
    let mut kept = Vec::new();
    let mut revoked = Vec::new();
    for i in 0..20 {
        let (token, id) = server.create(account).await;
        if i % 3 == 0 {
            assert_eq!(server.revoke(&id).await, 204);
            revoked.push(token);
        } else {
            kept.push(token);
        }
    }
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/v1/accounts/{account}/sessions?except=00000000-0000-7000-8000-000000000000"),
            None,
        )
        .await;
    assert_eq!((status, body), (200, json!({ "revoked": kept.len() })));
    revoked.append(&mut kept);
    for _ in 0..5 {
        kept.push(server.create(Uuid::new_v4()).await.0);
    }
    let mut log = server.log();
    server.kill_hard();

    let server = Server::start(options_with(database_url, extra));
    server.wait_ready().await;
    for token in &kept {
        assert_eq!(
            server.resolve(token).await,
            200,
            "an acknowledged session was lost"
        );
    }
    for token in &revoked {
        assert_eq!(
            server.resolve(token).await,
            401,
            "a revoked session came back"
        );
    }
    log.push_str(&server.log());
    let all: Vec<String> = kept.iter().chain(&revoked).cloned().collect();
    assert_no_tokens(&log, &all);
}

/// With a key configured, `/v1` needs it; health stays open.
pub(crate) async fn api_key_is_enforced(database_url: &str) {
    let server = Server::start(options(database_url));
    server.wait_ready().await;
    let client = crate::e2e::http_client();
    let body = json!({ "account_id": Uuid::new_v4() });
    let anonymous = client
        .post(server.url("/v1/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong = client
        .post(server.url("/v1/sessions"))
        .bearer_auth("not-the-key-0123456789")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        server
            .call(Method::POST, "/v1/sessions", Some(body))
            .await
            .0,
        201
    );
}

/// The operator CLI against the running service: create, resolve (token on
/// stdin), list, revoke, revoke-all; tables and JSON.
pub(crate) async fn cli_round_trip(database_url: &str) {
    let server = Server::start(options(database_url));
    server.wait_ready().await;
    let url = server.url("");
    let env = [("SESSION_SERVER", url.as_str()), ("SESSION_API_KEY", KEY)];
    let account = Uuid::new_v4().to_string();

    let (status, stdout, stderr) = cli(
        &["create", "--account", &account, "--label", "cli", "--json"],
        &env,
        "",
    );
    assert!(status.success(), "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["session"]["id"].as_str().unwrap().to_owned();

    let (status, stdout, stderr) = cli(&["resolve"], &env, &format!("{token}\n"));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains(&id) && stdout.contains("cli"), "{stdout}");
    assert!(!stdout.contains(&token));

    let (status, stdout, _) = cli(&["list", "--account", &account], &env, "");
    assert!(status.success());
    assert!(
        stdout.lines().next().unwrap().starts_with("ID"),
        "a table: {stdout}"
    );
    assert!(stdout.contains(&id));

    let (status, stdout, stderr) = cli(&["revoke", &id], &env, "");
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains(&id));
    let (status, _, stderr) = cli(&["resolve"], &env, &token);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("invalid_token"), "{stderr}");
    assert!(!stderr.contains(&token[5..]));

    let (status, stdout, _) = cli(&["revoke-all", "--account", &account, "--json"], &env, "");
    assert!(status.success());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        json!({ "revoked": 0 })
    );
    let (status, stdout, _) = cli(
        &["list", "--account", &account, "--include-revoked", "--json"],
        &env,
        "",
    );
    assert!(status.success());
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(listed["sessions"][0]["revoked_at"].is_string());

    let (status, _, stderr) = cli(&["revoke", &Uuid::now_v7().to_string()], &env, "");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("not_found"), "{stderr}");
    let (status, _, stderr) = cli(
        &["list", "--account", &account],
        &[("SESSION_SERVER", url.as_str())],
        "",
    );
    assert_eq!(status.code(), Some(1), "no key: refused");
    assert!(stderr.contains("unauthorized"), "{stderr}");

    // More than a page of 200: `list` follows `next_cursor` to the end.
    let many = Uuid::new_v4();
    for _ in 0..201 {
        server.create(many).await;
    }
    let (status, stdout, stderr) = cli(
        &["list", "--account", &many.to_string(), "--json"],
        &env,
        "",
    );
    assert!(status.success(), "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ids: std::collections::HashSet<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| session["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 201, "every session once");
    assert_no_tokens(&server.log(), &[token]);
}

/// With `--cache compact`: resolve and forward auth answer exactly the id
/// and the account, `GET` and the list the whole record (from the store),
/// the CLI prints what resolve answered, a revocation holds, and the cache
/// reports its bytes.
pub(crate) async fn compact_mode_answers(database_url: &str) {
    let server = Server::start(options_with(database_url, &["--cache", "compact"]));
    server.wait_ready().await;
    let account = Uuid::new_v4();
    let (status, created) = server
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({ "account_id": account, "label": "phone" })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let identity = json!({ "session": { "id": id, "account_id": account } });
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/sessions/resolve",
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!((status, body), (200, identity.clone()));
    let forwarded = crate::e2e::http_client()
        .get(server.url("/v1/forward-auth"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 200);
    assert_eq!(
        forwarded.json::<serde_json::Value>().await.unwrap(),
        identity
    );
    let (_, read) = server
        .call(Method::GET, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(read["session"]["label"], "phone");
    let (_, list) = server
        .call(
            Method::GET,
            &format!("/v1/accounts/{account}/sessions"),
            None,
        )
        .await;
    assert_eq!(list["sessions"][0]["label"], "phone");
    let url = server.url("");
    let env = [("SESSION_SERVER", url.as_str()), ("SESSION_API_KEY", KEY)];
    let (status, out, stderr) = cli(&["resolve"], &env, &format!("{token}\n"));
    assert!(status.success(), "{stderr}");
    assert!(out.starts_with("ID") && out.contains(&id), "{out}");
    assert!(
        !out.contains("LABEL"),
        "no column compact mode does not answer: {out}"
    );
    assert!(server.metric("session_cache_bytes").await > 0.0);

    assert_eq!(server.revoke(&id).await, 204);
    assert_eq!(server.resolve(&token).await, 401);
    let log = server.log();
    assert_no_tokens(&log, &[token]);
}

/// Revocation reasons through the real binary and its store: the API's
/// `reason` parameter (default `logout`) on both revoke routes, read back by
/// `GET` and the list after a restart (so from the store, not a cache), and
/// the CLI's `--reason` and its table's REASON column.
pub(crate) async fn revocation_reasons_round_trip(database_url: &str) {
    let server = Server::start(options(database_url));
    server.wait_ready().await;
    let account = Uuid::new_v4();
    let (_, plain) = server.create(account).await;
    let (_, changed) = server.create(account).await;
    let (_, kept) = server.create(account).await;
    let (_, evicted) = server.create(account).await;
    assert_eq!(server.revoke(&plain).await, 204);
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{changed}?reason=password_change"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{changed}?reason=Not%20Allowed"),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains("Not"), "never echoed: {body}");

    let url = server.url("");
    let env = [("SESSION_SERVER", url.as_str()), ("SESSION_API_KEY", KEY)];
    let (status, _, stderr) = cli(&["revoke", &evicted, "--reason", "limit"], &env, "");
    assert!(status.success(), "{stderr}");
    let (status, _, stderr) = cli(&["revoke", &kept, "--reason", "Bad Reason"], &env, "");
    assert!(
        !status.success(),
        "a bad reason is refused before any request"
    );
    assert!(stderr.contains("--reason"), "{stderr}");
    let (status, stdout, stderr) = cli(
        &[
            "revoke-all",
            "--account",
            &account.to_string(),
            "--except",
            &evicted,
            "--reason",
            "admin",
            "--json",
        ],
        &env,
        "",
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        json!({ "revoked": 1 }),
        "only `kept` was still active"
    );

    server.kill();
    server.restart();
    server.wait_ready().await;
    for (id, reason) in [
        (&plain, "logout"),
        (&changed, "password_change"),
        (&kept, "admin"),
        (&evicted, "limit"),
    ] {
        let (status, body) = server
            .call(Method::GET, &format!("/v1/sessions/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["session"]["revocation_reason"], reason, "{body}");
    }
    let (_, active) = server.create(account).await;
    let (status, stdout, stderr) = cli(
        &[
            "list",
            "--account",
            &account.to_string(),
            "--include-revoked",
            "--json",
        ],
        &env,
        "",
    );
    assert!(status.success(), "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let reasons: std::collections::HashMap<&str, &serde_json::Value> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), &s["revocation_reason"]))
        .collect();
    assert_eq!(reasons[active.as_str()], &serde_json::Value::Null);
    assert_eq!(reasons[changed.as_str()], "password_change");
    let (status, stdout, _) = cli(
        &[
            "list",
            "--account",
            &account.to_string(),
            "--include-revoked",
        ],
        &env,
        "",
    );
    assert!(status.success());
    assert!(
        stdout.lines().next().unwrap().contains("REASON"),
        "{stdout}"
    );
    let changed_line = stdout.lines().find(|line| line.contains(&changed)).unwrap();
    assert!(changed_line.contains("password_change"), "{stdout}");
}

/// The events feed across restarts of the service and of the subscriber:
/// a subscriber (the CLI, a new process each time) that resumes after the
/// last event it printed gets every later event once, in commit order,
/// after the service was killed and started again; a revoke-all is one
/// event per session, with its reason. On PostgreSQL events are sequenced
/// from the change log just after the write is answered, so a read that
/// expects events asks again until they are there.
pub(crate) async fn events_resume_across_restarts(database_url: &str) {
    let server = Server::start(options(database_url));
    server.wait_ready().await;
    let url = server.url("");
    let env = [("SESSION_SERVER", url.as_str()), ("SESSION_API_KEY", KEY)];
    let (_, start) = server.call(Method::GET, "/v1/events", None).await;
    let start = start["next"].as_str().unwrap().to_owned();
    let account = Uuid::new_v4();
    let (token_a, a) = server.create(account).await;
    let (token_b, b) = server.create(account).await;
    let events_once = |after: &str| {
        let (status, stdout, stderr) = cli(&["events", "--after", after, "--json"], &env, "");
        assert!(status.success(), "{stderr}");
        stdout
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .collect::<Vec<_>>()
    };
    // At least `expected` events after `after`, within 10 s; the caller's
    // assertions say what came instead.
    let events = |after: &str, expected: usize| {
        let mut events = Vec::new();
        let _short = session_test_process::until(
            "the events are sequenced",
            std::time::Duration::from_secs(10),
            || {
                events = events_once(after);
                events.len() >= expected
            },
        );
        events
    };
    let first = events(&start, 2);
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(
        (
            first[0]["session_id"].as_str(),
            first[1]["session_id"].as_str()
        ),
        (Some(&*a), Some(&*b))
    );
    let last_read = first[1]["id"].as_str().unwrap().to_owned();

    server.kill();
    server.restart();
    server.wait_ready().await;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/accounts/{account}/sessions?reason=admin"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let rest = events(&last_read, 2);
    let mut revoked: Vec<(&str, &str, &str)> = rest
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap(),
                event["session_id"].as_str().unwrap(),
                event["reason"].as_str().unwrap(),
            )
        })
        .collect();
    revoked.sort_unstable();
    let mut expected = vec![("revoked", &*a, "admin"), ("revoked", &*b, "admin")];
    expected.sort_unstable();
    assert_eq!(revoked, expected);
    assert_eq!(
        events_once(rest[1]["id"].as_str().unwrap()),
        Vec::<serde_json::Value>::new()
    );
    // The whole feed again from the start: the same events, no more.
    let all = events(&start, 4);
    assert_eq!(all[..2], first[..]);
    assert_eq!(all[2..], rest[..]);
    let (status, stdout, _) = cli(&["events", "--after", &"0".repeat(32)], &env, "");
    assert!(
        !status.success(),
        "another history's cursor is refused: {stdout}"
    );
    assert_no_tokens(&server.log(), &[token_a, token_b]);
}

/// `not-before` through the CLI: no mark at first; `--at now` raises it
/// through the API, so the running server refuses a session created before
/// it at once and keeps one created after; a time in the future is refused;
/// the sweep revokes the old row with reason `admin` by the key; and the
/// mark, kept in the database, survives a restart without any flag.
pub(crate) async fn not_before_through_the_cli(database_url: &str) {
    let server = Server::start(options(database_url));
    server.wait_ready().await;
    let url = server.url("");
    let env = [("SESSION_SERVER", url.as_str()), ("SESSION_API_KEY", KEY)];
    let account = Uuid::new_v4();

    let (status, stdout, stderr) = cli(&["not-before"], &env, "");
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("not before:    none"), "{stdout}");

    let (old, old_id) = server.create(account).await;
    let (status, stdout, stderr) = cli(&["not-before", "--at", "now", "--json"], &env, "");
    assert!(status.success(), "{stderr}");
    let state: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let mark = state["not_before"].as_str().unwrap().to_owned();
    assert_eq!(state["raised_by"], "default", "{state}");
    assert_eq!(server.resolve(&old).await, 401, "refused at once");
    crate::e2e::past_the_marks_millisecond(&mark);
    let (new, _) = server.create(account).await;
    assert_eq!(server.resolve(&new).await, 200);

    let (status, _, stderr) = cli(&["not-before", "--at", "2999-01-01T00:00:00Z"], &env, "");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not_before_in_future"), "{stderr}");
    let (status, _, stderr) = cli(&["not-before", "--at", "yesterday"], &env, "");
    assert!(!status.success());
    assert!(stderr.contains("RFC 3339"), "{stderr}");

    // The sweep runs after the raise, in the background: wait for it.
    let session = loop {
        let (status, body) = server
            .call(Method::GET, &format!("/v1/sessions/{old_id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        if body["session"]["revoked_at"].is_string() {
            break body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        session["session"]["revocation_reason"], "admin",
        "{session}"
    );
    assert_eq!(session["session"]["revoked_by"], "default", "{session}");

    server.kill();
    server.restart();
    server.wait_ready().await;
    let (status, stdout, stderr) = cli(&["not-before"], &env, "");
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("not before:    {mark}")),
        "{stdout}"
    );
    assert!(stdout.contains("sweep:         done"), "{stdout}");
    assert_eq!(server.resolve(&old).await, 401);
    assert_eq!(server.resolve(&new).await, 200);
}
