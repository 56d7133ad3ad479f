//! What the store writes, and what it does with rows it did not write.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use session_core::port::store::{SessionStore, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_core::{ClientMetadata, Label, MemoryCache, SessionService, SessionToken, UserAgent};
use uuid::Uuid;

use crate::support::{chain, fresh_store, sql_client};

/// Creates sessions through the service, then reads every table of the schema
/// as text: the tokens appear nowhere, and the stored hash is the token's SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_never_holds_a_raw_token() {
    let (database, store) = fresh_store().await;
    let service = SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new())).build();
    service.warm().await.unwrap();
    let owner = account();
    let mut created = Vec::new();
    for i in 0..5 {
        let metadata = ClientMetadata {
            user_agent: UserAgent::new(format!("agent {i}")).ok(),
            ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i))),
            label: Label::new("laptop").ok(),
        };
        created.push(service.create(owner, metadata).await.unwrap());
    }
    service
        .revoke(
            created[0].session.id,
            session_core::RevocationReason::LOGOUT,
        )
        .await
        .unwrap();

    let client = sql_client(database.url()).await;
    let dump: Vec<String> = client
        .query(
            "SELECT format('SELECT row_to_json(t)::text FROM session.%I t', tablename) \
             FROM pg_tables WHERE schemaname = 'session'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    let mut rows = Vec::new();
    for query in dump {
        for row in client.query(query.as_str(), &[]).await.unwrap() {
            rows.push(row.get::<_, String>(0));
        }
    }
    assert!(rows.len() > created.len(), "every table was read: {rows:?}");
    for new in &created {
        let token = new.token.expose_secret();
        // The random part alone, in case something stripped the prefix.
        let body = &token[session_core::token::TOKEN_PREFIX.len()..];
        assert!(
            rows.iter().all(|row| !row.contains(body)),
            "a token is stored in plain text"
        );
        let stored: Vec<u8> = client
            .query_one(
                "SELECT token_hash FROM session.sessions WHERE id = $1::text::uuid",
                &[&new.session.id.to_string()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, new.token.hash().as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_address_round_trips() {
    let (_database, store) = fresh_store().await;
    let (_, mut session) = session_at(account(), epoch());
    session.metadata.ip = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)));
    store.insert(&session).await.unwrap();
    assert_eq!(store.get(session.id).await.unwrap(), Some(session));
}

/// A row written by something else that breaks a domain rule is refused by
/// the schema; one stored before the schema checked it is a failure naming
/// the row, never a panic, and never echoes the offending value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_domain_rejects_is_refused_or_a_failure() {
    let (database, store) = fresh_store().await;
    let client = sql_client(database.url()).await;
    // Ids as text: the test's SQL client is built without UUID support.
    let insert = "INSERT INTO session.sessions (id, account_id, token_hash, created_at, label) \
                  VALUES ($1::text::uuid, $2::text::uuid, $3, now(), $4)";
    for (account, label, constraint) in [
        (Uuid::nil(), None, "sessions_account_id_not_nil"),
        (
            Uuid::new_v4(),
            Some("bell\u{7}".to_owned()),
            "sessions_label_text",
        ),
        (
            Uuid::new_v4(),
            Some("c1 \u{85}".to_owned()),
            "sessions_label_text",
        ),
    ] {
        let err = client
            .execute(
                insert,
                &[
                    &Uuid::now_v7().to_string(),
                    &account.to_string(),
                    &SessionToken::generate().hash().as_bytes().to_vec(),
                    &label,
                ],
            )
            .await
            .unwrap_err();
        let refused_by = err.as_db_error().and_then(|db| db.constraint());
        assert_eq!(refused_by, Some(constraint));
    }
    // As stored under an older schema.
    client
        .batch_execute(
            "ALTER TABLE session.sessions DISABLE TRIGGER sessions_domain_rules_inserted",
        )
        .await
        .unwrap();
    let nil_account = Uuid::now_v7();
    client
        .execute(
            insert,
            &[
                &nil_account.to_string(),
                &Uuid::nil().to_string(),
                &vec![1u8; 32],
                &None::<String>,
            ],
        )
        .await
        .unwrap();
    let bad_label = Uuid::now_v7();
    client
        .execute(
            insert,
            &[
                &bad_label.to_string(),
                &Uuid::new_v4().to_string(),
                &vec![2u8; 32],
                &Some("secret\u{7}bell".to_owned()),
            ],
        )
        .await
        .unwrap();

    for id in [nil_account, bad_label] {
        let err = store
            .get(session_core::SessionId::from_uuid(id))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Failed(_)), "got {err:?}");
        let text = chain(&err);
        assert!(text.contains(&id.to_string()), "names the row: {text}");
        assert!(!text.contains("secret"), "does not echo the value: {text}");
    }
    // Warming meets the same rows through a page: left out and named, so
    // one bad row cannot stop every warm.
    let page = store.active_page(None, 10).await.unwrap();
    assert!(page.sessions.is_empty());
    let named: Vec<String> = page.rejected.iter().map(ToString::to_string).collect();
    assert_eq!(named.len(), 2, "{named:?}");
    for (text, id) in named.iter().zip([nil_account, bad_label]) {
        assert!(text.contains(&id.to_string()), "names the row: {text}");
        assert!(!text.contains("secret"), "does not echo the value: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_rejects_a_hash_that_is_not_32_bytes() {
    let (database, _store) = fresh_store().await;
    let client = sql_client(database.url()).await;
    let err = client
        .execute(
            "INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
             VALUES ($1::text::uuid, $2::text::uuid, $3, now())",
            &[
                &Uuid::now_v7().to_string(),
                &Uuid::new_v4().to_string(),
                &vec![0u8; 31],
            ],
        )
        .await
        .unwrap_err();
    let constraint = err.as_db_error().and_then(|db| db.constraint());
    assert_eq!(constraint, Some("sessions_token_hash_length"));
}

/// Only the token hash's uniqueness is "duplicate": a repeated id is a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_id_is_a_failure_not_a_duplicate_hash() {
    let (_database, store) = fresh_store().await;
    let (_, first) = session_at(account(), epoch());
    store.insert(&first).await.unwrap();
    let (_, mut second) = session_at(account(), epoch());
    second.id = first.id;
    let err = store.insert(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::Failed(_)), "got {err:?}");
    assert!(!err.is_retryable());
}
