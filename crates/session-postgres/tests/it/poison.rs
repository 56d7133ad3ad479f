//! Rows other SQL wrote with values the domain cannot hold, of every column
//! type, through the store's real queries: the driver decodes any stored
//! value, the domain rejects what it must, and a rejected row is skipped and
//! counted by the warm, the list and the change log, and named by a read by
//! id: it never stops a read.

use std::sync::Arc;

use session_core::port::store::{SeenAt, SessionStore, StoreError};
use session_core::testkit::account;
use session_core::{
    AccountId, Error, ListScope, MemoryCache, PageLimit, PageRequest, SessionId, SessionService,
    SessionToken,
};
use session_test_postgres::TestDatabase;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::support::{
    chain, fresh_store, instance_on, migrated_store, ready, ready_pair, rejected, sql_client,
    within_a_minute,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A bytea literal of `bytes`.
fn bytea(bytes: &[u8]) -> String {
    format!("'\\x{}'", hex(bytes))
}

/// A random token hash's bytes, as a bytea literal.
fn fresh_hash() -> String {
    bytea(SessionToken::generate().hash().as_bytes())
}

/// Every check that would refuse a poison row, dropped or turned off: rows
/// as stored before the schema checked them (the change log's check of the
/// hash length too, or a creation's entry would refuse it).
const DROP_CHECKS: &str = "ALTER TABLE session.changes DROP CONSTRAINT changes_token_hash; \
    ALTER TABLE session.sessions \
    DISABLE TRIGGER sessions_domain_rules_inserted, \
    DISABLE TRIGGER sessions_domain_rules_updated, \
    DROP CONSTRAINT sessions_token_hash_length, \
    DROP CONSTRAINT sessions_user_agent_length, \
    DROP CONSTRAINT sessions_label_length";

/// One stored row, its columns as SQL.
struct Row {
    id: SessionId,
    account: String,
    token_hash: String,
    created_at: &'static str,
    revoked_at: &'static str,
    user_agent: String,
    label: String,
}

impl Row {
    /// An active row of `account` created now, with no metadata.
    fn new(account: AccountId) -> Self {
        Self {
            id: SessionId::new(),
            account: format!("'{account}'"),
            token_hash: fresh_hash(),
            created_at: "now()",
            revoked_at: "NULL",
            user_agent: "NULL".to_owned(),
            label: "NULL".to_owned(),
        }
    }

    fn insert(&self) -> String {
        format!(
            "INSERT INTO session.sessions \
             (id, account_id, token_hash, created_at, revoked_at, user_agent, label) \
             VALUES ('{}', {}, {}, {}, {}, {}, {});",
            self.id,
            self.account,
            self.token_hash,
            self.created_at,
            self.revoked_at,
            self.user_agent,
            self.label
        )
    }
}

/// A poison row: the column the domain rejects, and the row.
struct Poison {
    column: &'static str,
    row: Row,
}

/// One poison row per boundary value of every column type, each of its
/// own account.
fn poisons() -> Vec<Poison> {
    let mut poisons = Vec::new();
    let mut add = |column, change: &dyn Fn(&mut Row)| {
        let mut row = Row::new(account());
        change(&mut row);
        poisons.push(Poison { column, row });
    };
    for instant in [
        "'infinity'",
        "'-infinity'",
        "'10000-01-01 00:00:00+00'",
        "'4713-01-01 00:00:00+00 BC'",
        // One microsecond before the first instant the domain accepts.
        "'0001-01-01 00:00:00+00'::timestamptz - interval '1 microsecond'",
    ] {
        add("created_at", &|row| row.created_at = instant);
        add("revoked_at", &|row| row.revoked_at = instant);
    }
    for text in [
        "E'secret\\x07bell'",
        "E'secret\\x1b[31m'",
        "E'secret\\u0085'",
        "''",
    ] {
        add("user_agent", &|row| row.user_agent = text.to_owned());
        add("label", &|row| row.label = text.to_owned());
    }
    add("user_agent", &|row| {
        row.user_agent = "repeat('u', 513)".to_owned()
    });
    add("label", &|row| row.label = "repeat('l', 129)".to_owned());
    for length in [0, 31, 33] {
        add("token_hash", &|row| {
            row.token_hash = bytea(&vec![9; length])
        });
    }
    add("account_id", &|row| {
        row.account = format!("'{}'", uuid::Uuid::nil())
    });
    poisons
}

/// The instants at the edges of the domain's range and at both epochs: the
/// driver and the domain accept them, and they read back exactly.
const BOUNDARIES: [(&str, OffsetDateTime); 4] = [
    (
        "'9999-12-31 23:59:59.999999+00'",
        datetime!(9999-12-31 23:59:59.999_999 UTC),
    ),
    ("'2000-01-01 00:00:00+00'", datetime!(2000-01-01 0:00 UTC)),
    ("'1970-01-01 00:00:00+00'", datetime!(1970-01-01 0:00 UTC)),
    ("'0001-01-01 00:00:00+00'", datetime!(0001-01-01 0:00 UTC)),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_of_every_kind_is_skipped_and_counted_never_a_failed_read() {
    let (database, store) = fresh_store().await;
    let store = Arc::new(store);
    let client = sql_client(database.url()).await;
    client.batch_execute(DROP_CHECKS).await.unwrap();

    // Each poison row beside a valid one of the same account.
    let poisons = poisons();
    let mut valid = Vec::new();
    let mut sql = String::new();
    for poison in &poisons {
        sql.push_str(&poison.row.insert());
        let owner = account();
        let token = SessionToken::generate();
        let row = Row {
            token_hash: bytea(token.hash().as_bytes()),
            ..Row::new(owner)
        };
        sql.push_str(&row.insert());
        valid.push((owner, token, row.id));
    }
    // The boundaries, all of one account, newest first.
    let edges = account();
    let mut boundaries = Vec::new();
    for (sql_instant, instant) in BOUNDARIES {
        let token = SessionToken::generate();
        let row = Row {
            token_hash: bytea(token.hash().as_bytes()),
            created_at: sql_instant,
            ..Row::new(edges)
        };
        sql.push_str(&row.insert());
        boundaries.push((token, row.id, instant));
    }
    let revoked_at_the_end = Row {
        revoked_at: BOUNDARIES[0].0,
        created_at: BOUNDARIES[3].0,
        ..Row::new(edges)
    };
    sql.push_str(&revoked_at_the_end.insert());
    client.batch_execute(&sql).await.unwrap();

    // A read by id names the row and the column, never the value.
    for Poison { column, row } in &poisons {
        let err = store.get(row.id).await.unwrap_err();
        assert!(matches!(err, StoreError::Failed(_)), "{column}: {err:?}");
        let text = chain(&err);
        assert!(text.contains(&row.id.to_string()), "names the row: {text}");
        assert!(text.contains(column), "names the column: {text}");
        assert!(!text.contains("secret"), "never the value: {text}");
    }
    for (_, id, instant) in &boundaries {
        let session = store.get(*id).await.unwrap().unwrap();
        assert_eq!(session.created_at, *instant);
    }
    let session = store.get(revoked_at_the_end.id).await.unwrap().unwrap();
    assert_eq!(session.revoked_at(), Some(BOUNDARIES[0].1));
    assert_eq!(session.created_at, BOUNDARIES[3].1);

    // The warm skips and counts every active poison row, over pages that
    // hold several.
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .warm_page_size(3)
        .build();
    let report = service.warm().await.unwrap();
    assert_eq!(
        report.sessions,
        valid.len() + boundaries.len(),
        "{report:?}"
    );
    let skipped = || service.status().change_log_stats.rows_skipped;
    let active_poison = poisons.iter().filter(|p| p.column != "revoked_at").count();
    assert_eq!(skipped(), active_poison as u64);
    for (_, token, _) in &valid {
        assert!(service.resolve(token.expose_secret()).await.is_ok());
    }
    for (token, _, _) in &boundaries {
        assert!(service.resolve(token.expose_secret()).await.is_ok());
    }

    // A list skips it, beside the valid row. A `created_at` out of range
    // names no place in a list, so the list leaves it out uncounted; a nil
    // account is no account's; any other rejected row is counted.
    for (Poison { column, row }, (owner, _, valid_id)) in poisons.iter().zip(&valid) {
        let poison_owner = row.account.trim_matches('\'').parse().unwrap();
        let before = skipped();
        if let Ok(poison_owner) = AccountId::new(poison_owner) {
            let page = service
                .list(
                    poison_owner,
                    ListScope::IncludeRevoked,
                    PageRequest::default(),
                )
                .await
                .unwrap();
            assert!(page.sessions.is_empty(), "{column}: {:?}", page.sessions);
            let counted = u64::from(*column != "created_at");
            assert_eq!(skipped(), before + counted, "{column}");
        }
        let page = service
            .list(*owner, ListScope::IncludeRevoked, PageRequest::default())
            .await
            .unwrap();
        let ids: Vec<SessionId> = page.sessions.iter().map(|s| s.id).collect();
        assert_eq!(ids, [*valid_id], "{column}");
    }

    // The boundaries list newest first, page by page, cursors at the edges.
    let mut listed = Vec::new();
    let mut request = PageRequest {
        after: None,
        limit: PageLimit::new(2).unwrap(),
    };
    loop {
        let page = service
            .list(edges, ListScope::IncludeRevoked, request)
            .await
            .unwrap();
        listed.extend(page.sessions.iter().map(|s| (s.id, s.created_at)));
        match page.next {
            Some(next) => request.after = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<(SessionId, OffsetDateTime)> =
        boundaries.iter().map(|(_, id, at)| (*id, *at)).collect();
    expected.push((revoked_at_the_end.id, BOUNDARIES[3].1));
    expected.sort_by_key(|&(id, at)| std::cmp::Reverse((at, id)));
    assert_eq!(listed, expected);
}

/// Text that is not UTF-8, which only a `SQL_ASCII` database stores: the
/// driver hands over its bytes and the domain rejects them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_utf8_is_skipped_and_counted() {
    let database = TestDatabase::create();
    // The same name, remade in SQL_ASCII: the guard still drops it.
    let admin = sql_client(database.admin_url()).await;
    let name = database.name();
    for statement in [
        format!("DROP DATABASE {name} WITH (FORCE)"),
        format!(
            "CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' \
             TEMPLATE template0"
        ),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    let config = session_postgres::PgConfig::from_url(database.url()).unwrap();
    let store = Arc::new(migrated_store(config).await);
    // Follows the log from before the rows are written: meets them there.
    let follower = crate::support::instance_on(database.url(), "follower").await;
    crate::support::ready(&follower).await;
    let client = sql_client(database.url()).await;
    let owner = account();
    let token = SessionToken::generate();
    let valid = Row {
        token_hash: bytea(token.hash().as_bytes()),
        user_agent: "'curl/8.5'".to_owned(),
        ..Row::new(owner)
    };
    // 'secret', then bytes that are not UTF-8.
    let bad_agent = Row {
        user_agent: "E'secret\\xff\\xfe'".to_owned(),
        ..Row::new(owner)
    };
    let bad_label = Row {
        label: "E'secret\\xc3'".to_owned(),
        ..Row::new(owner)
    };
    client
        .batch_execute(&format!(
            "{}{}{}",
            valid.insert(),
            bad_agent.insert(),
            bad_label.insert()
        ))
        .await
        .unwrap();

    for (row, column) in [(&bad_agent, "user_agent"), (&bad_label, "label")] {
        let err = store.get(row.id).await.unwrap_err();
        let text = chain(&err);
        assert!(text.contains(&row.id.to_string()), "names the row: {text}");
        assert!(text.contains(column), "names the column: {text}");
        assert!(text.contains("UTF-8"), "says why: {text}");
        assert!(!text.contains("secret"), "never the value: {text}");
    }
    let got = store.get(valid.id).await.unwrap().unwrap();
    assert_eq!(got.metadata.user_agent.unwrap().as_str(), "curl/8.5");
    // The change log reads the text as stored too: the follower skips both,
    // and the valid row beside them arrives.
    let found = crate::support::within_a_minute(async {
        loop {
            if let Ok(session) = follower.service.resolve(token.expose_secret()).await {
                return session;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(found.id, valid.id);
    assert_eq!(follower.service.status().change_log_stats.rows_skipped, 2);

    let service = SessionService::builder(store, Arc::new(MemoryCache::new())).build();
    assert_eq!(service.warm().await.unwrap().sessions, 1);
    assert_eq!(service.status().change_log_stats.rows_skipped, 2);
    assert!(service.resolve(token.expose_secret()).await.is_ok());
    let page = service
        .list(owner, ListScope::Active, PageRequest::default())
        .await
        .unwrap();
    let ids: Vec<SessionId> = page.sessions.iter().map(|s| s.id).collect();
    assert_eq!(ids, [valid.id]);
    assert_eq!(service.status().change_log_stats.rows_skipped, 4);
}

/// A poison row another writer creates is met by every follower's change
/// log read: it is skipped and counted, and the log goes on past it, so a
/// revocation after it still reaches every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_row_does_not_stop_the_change_log() {
    let database = TestDatabase::create();
    let (a, b) = ready_pair(database.url()).await;
    let owner = account();
    let created = a
        .service
        .create(owner, session_core::ClientMetadata::default())
        .await
        .unwrap();
    within_a_minute(async {
        while b
            .service
            .resolve(created.token.expose_secret())
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;

    let client = sql_client(database.url()).await;
    client.batch_execute(DROP_CHECKS).await.unwrap();
    let poison = Row {
        created_at: "'infinity'",
        label: "E'secret\\x07'".to_owned(),
        ..Row::new(owner)
    };
    let year_10000 = Row {
        created_at: "'10000-01-01 00:00:00+00'",
        ..Row::new(owner)
    };
    client
        .batch_execute(&format!("{}{}", poison.insert(), year_10000.insert()))
        .await
        .unwrap();

    a.service
        .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    within_a_minute(async {
        while !rejected(&b, &created.token).await {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(b.service.status().change_log_stats.rows_skipped >= 2);
    ready(&b).await;

    // An instance started now meets them in its warm, and skips them too.
    let c = instance_on(database.url(), "instance_c").await;
    ready(&c).await;
    assert!(c.service.status().change_log_stats.rows_skipped >= 2);
    assert!(matches!(
        c.service.resolve(created.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
}

/// A last-seen time another writer stored out of range reads as never
/// seen: the read of every other session's time still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_seen_time_out_of_range_reads_as_never_seen() {
    let (database, store) = fresh_store().await;
    let client = sql_client(database.url()).await;
    let owner = account();
    let mut ids = Vec::new();
    let mut sql = String::from(
        "ALTER TABLE session.session_activity \
         DROP CONSTRAINT IF EXISTS session_activity_last_seen_at_range;",
    );
    for instant in [
        "'infinity'",
        "'-infinity'",
        "'10000-01-01 00:00:00+00'",
        "now()",
    ] {
        let row = Row::new(owner);
        sql.push_str(&row.insert());
        sql.push_str(&format!(
            "INSERT INTO session.session_activity (session_id, last_seen_at) \
             VALUES ('{}', {instant});",
            row.id
        ));
        ids.push(row.id);
    }
    client.batch_execute(&sql).await.unwrap();
    let seen = store.last_seen(&ids).await.unwrap();
    let seen: Vec<SessionId> = seen.iter().map(|SeenAt { id, .. }| *id).collect();
    assert_eq!(seen, [ids[3]]);
}

/// The schema refuses instants the domain cannot hold, in every column
/// that stores one, and accepts the edges of its range. It checks what a
/// statement writes, not the rows it leaves alone: reverting and
/// reapplying the migration works with such rows stored, and a row stored
/// before the checks (with an infinite creation time and a control
/// character in its label) is revoked with the rest of its account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_instants_out_of_range() {
    const UP: &str =
        include_str!("../../../../migrations/postgres/2026-12-06-000002_finite_times/up.sql");
    const DOWN: &str =
        include_str!("../../../../migrations/postgres/2026-12-06-000002_finite_times/down.sql");
    let (database, store) = fresh_store().await;
    let client = sql_client(database.url()).await;
    let out_of_range = [
        "'infinity'",
        "'-infinity'",
        "'10000-01-01 00:00:00+00'",
        "'4713-01-01 00:00:00+00 BC'",
        "'0001-01-01 00:00:00+00'::timestamptz - interval '1 microsecond'",
    ];
    for instant in out_of_range {
        for (row, constraint) in [
            (
                Row {
                    created_at: instant,
                    ..Row::new(account())
                },
                "sessions_created_at_range",
            ),
            (
                Row {
                    revoked_at: instant,
                    ..Row::new(account())
                },
                "sessions_revoked_at_range",
            ),
        ] {
            let err = client.batch_execute(&row.insert()).await.unwrap_err();
            let refused_by = err.as_db_error().and_then(|db| db.constraint());
            assert_eq!(refused_by, Some(constraint), "{instant}");
        }
    }
    let mut kept = Vec::new();
    for (instant, _) in BOUNDARIES {
        let row = Row {
            created_at: instant,
            revoked_at: instant,
            ..Row::new(account())
        };
        client.batch_execute(&row.insert()).await.unwrap();
        kept.push(row.id);
    }
    for instant in out_of_range {
        let err = client
            .batch_execute(&format!(
                "INSERT INTO session.session_activity (session_id, last_seen_at) \
                 VALUES ('{}', {instant})",
                kept[0]
            ))
            .await
            .unwrap_err();
        let refused_by = err.as_db_error().and_then(|db| db.constraint());
        assert_eq!(
            refused_by,
            Some("session_activity_last_seen_at_range"),
            "{instant}"
        );
    }

    client.batch_execute(DOWN).await.unwrap();
    let owner = account();
    let stored_before = Row {
        created_at: "'infinity'",
        ..Row::new(owner)
    };
    client.batch_execute(&stored_before.insert()).await.unwrap();
    // A label from before the control-character check, which came later.
    client
        .batch_execute(&format!(
            "ALTER TABLE session.sessions DROP CONSTRAINT sessions_label_text; \
             UPDATE session.sessions SET label = E'bell\\x07' WHERE id = '{}'; \
             ALTER TABLE session.sessions ADD CONSTRAINT sessions_label_text \
                 CHECK (label !~ '[\\x01-\\x1f\\x7f-\\x9f]') NOT VALID",
            stored_before.id
        ))
        .await
        .unwrap();
    let beside = Row::new(owner);
    client.batch_execute(&beside.insert()).await.unwrap();
    client.batch_execute(UP).await.unwrap();
    let revoked = store
        .revoke_all_for_account(
            owner,
            None,
            session_core::testkit::epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
    assert_eq!(revoked.len(), 2, "the old row and the one beside it");
}

/// The schema holds a revocation reason to the domain's grammar, and to
/// revoked sessions; a row holding one the domain refuses anyway (its
/// checks dropped, as under a schema without them) is skipped and counted
/// by a list and named by a read by id, never with its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reason_the_domain_refuses_is_refused_or_skipped() {
    let (database, store) = fresh_store().await;
    let client = sql_client(database.url()).await;
    let insert = |id: SessionId, owner: AccountId, revoked_at: &str, reason: &str| {
        format!(
            "INSERT INTO session.sessions \
             (id, account_id, token_hash, created_at, revoked_at, revocation_reason) \
             VALUES ('{id}', '{owner}', {}, now(), {revoked_at}, {reason})",
            fresh_hash()
        )
    };
    let too_long = format!("'{}'", "a".repeat(33));
    for (revoked_at, reason, constraint) in [
        ("now()", "''", "sessions_revocation_reason_grammar"),
        ("now()", "'Logout'", "sessions_revocation_reason_grammar"),
        ("now()", "'pass word'", "sessions_revocation_reason_grammar"),
        (
            "now()",
            "'idle' || chr(10)",
            "sessions_revocation_reason_grammar",
        ),
        (
            "now()",
            "'d' || chr(233)",
            "sessions_revocation_reason_grammar",
        ),
        (
            "now()",
            too_long.as_str(),
            "sessions_revocation_reason_grammar",
        ),
        ("NULL", "'logout'", "sessions_revocation_reason_revoked"),
    ] {
        let statement = insert(SessionId::new(), account(), revoked_at, reason);
        let err = client.batch_execute(&statement).await.unwrap_err();
        let refused_by = err.as_db_error().and_then(|db| db.constraint());
        assert_eq!(refused_by, Some(constraint), "{statement}");
    }
    let old = SessionId::new();
    client
        .batch_execute(&insert(old, account(), "now()", "NULL"))
        .await
        .unwrap();
    let read = store.get(old).await.unwrap().expect("stored");
    assert!(read.revoked_at().is_some());
    assert_eq!(
        read.revocation_reason(),
        None,
        "revoked before reasons were recorded"
    );

    let owner = account();
    let good = SessionId::new();
    client
        .batch_execute(&insert(good, owner, "now()", "'password_change'"))
        .await
        .unwrap();
    let poison = SessionId::new();
    client
        .batch_execute(&format!(
            "ALTER TABLE session.sessions DROP CONSTRAINT sessions_revocation_reason_grammar; {}",
            insert(poison, owner, "now()", "'Secret Words'")
        ))
        .await
        .unwrap();
    let text = chain(&store.get(poison).await.unwrap_err());
    assert!(
        text.contains("revocation_reason"),
        "names the column: {text}"
    );
    assert!(!text.contains("Secret"), "never the value: {text}");
    let service =
        SessionService::builder(Arc::new(store.clone()), Arc::new(MemoryCache::new())).build();
    let page = service
        .list(
            owner,
            ListScope::IncludeRevoked,
            PageRequest {
                after: None,
                limit: PageLimit::DEFAULT,
            },
        )
        .await
        .unwrap();
    let listed: Vec<SessionId> = page.sessions.iter().map(|s| s.id).collect();
    assert_eq!(listed, vec![good]);
    assert_eq!(
        page.sessions[0]
            .revocation_reason()
            .cloned()
            .as_ref()
            .map(|r| r.as_str()),
        Some("password_change")
    );
    assert_eq!(service.status().change_log_stats.rows_skipped, 1);
}

/// The schema holds who revoked a session to the same grammar, on revoked
/// sessions only, and never lets a revoked session's revoker be rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoker_the_domain_refuses_or_a_rewritten_one_is_refused() {
    let (database, _store) = fresh_store().await;
    let client = sql_client(database.url()).await;
    let insert = |revoked_at: &str, by: &str| {
        format!(
            "INSERT INTO session.sessions \
             (id, account_id, token_hash, created_at, revoked_at, revocation_reason, revoked_by) \
             VALUES ('{}', '{}', {}, now(), {revoked_at}, \
             CASE WHEN {revoked_at} IS NULL THEN NULL ELSE 'logout' END, {by})",
            SessionId::new(),
            account(),
            fresh_hash()
        )
    };
    for (revoked_at, by, constraint) in [
        ("now()", "''", "sessions_revoked_by_grammar"),
        ("now()", "'Writer'", "sessions_revoked_by_grammar"),
        ("now()", "'key one'", "sessions_revoked_by_grammar"),
        ("NULL", "'writer'", "sessions_revoked_by_revoked"),
    ] {
        let statement = insert(revoked_at, by);
        let err = client.batch_execute(&statement).await.unwrap_err();
        let refused_by = err.as_db_error().and_then(|db| db.constraint());
        assert_eq!(refused_by, Some(constraint), "{statement}");
    }
    client
        .batch_execute(&insert("now()", "'writer'"))
        .await
        .unwrap();
    let err = client
        .batch_execute("UPDATE session.sessions SET revoked_by = 'other'")
        .await
        .unwrap_err();
    let refused_by = err.as_db_error().and_then(|db| db.constraint());
    assert_eq!(refused_by, Some("sessions_revoked_by_set_once"));
}
