//! The per-account limit with two instances on one database: a burst of
//! logins for one account, spread over both, leaves exactly the limit
//! active, and every evicted token is refused on both.

use std::num::NonZeroU32;
use std::time::Duration;

use session_core::config::{LimitPolicy, SessionLimit};
use session_core::testkit::account;
use session_core::{ClientMetadata, NewSession};
use session_test_postgres::TestDatabase;

use crate::support::{instance_built, ready, rejected, sql_client, within_a_minute};

const LOGINS: usize = 50;
const MAX: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_logins_over_two_instances_leave_exactly_the_limit() {
    let database = TestDatabase::create();
    let limit = SessionLimit {
        max: NonZeroU32::new(MAX).unwrap(),
        policy: LimitPolicy::EvictLeastRecentlySeen,
    };
    let mut instances = Vec::new();
    for name in ["instance_a", "instance_b"] {
        let instance = instance_built(
            database.url(),
            name,
            |config| config,
            |builder| builder.session_limit(limit),
        )
        .await;
        ready(&instance).await;
        instances.push(instance);
    }
    let owner = account();
    let logins: Vec<_> = (0..LOGINS)
        .map(|login| {
            let service = instances[login % 2].service.clone();
            tokio::spawn(async move { service.create(owner, ClientMetadata::default()).await })
        })
        .collect();
    let mut created: Vec<NewSession> = Vec::new();
    for login in logins {
        created.push(
            within_a_minute(login)
                .await
                .unwrap()
                .expect("every login succeeds"),
        );
    }

    let client = sql_client(database.url()).await;
    let counts = client
        .query_one(
            "SELECT count(*) FILTER (WHERE revoked_at IS NULL), \
                    count(*) FILTER (WHERE revocation_reason = 'limit'), \
                    count(*) \
             FROM session.sessions WHERE account_id = $1::text::uuid",
            &[&owner.as_uuid().to_string()],
        )
        .await
        .unwrap();
    let (active, evicted, total): (i64, i64, i64) = (counts.get(0), counts.get(1), counts.get(2));
    assert_eq!(active, i64::from(MAX), "exactly the limit remains active");
    assert_eq!(
        evicted,
        LOGINS as i64 - i64::from(MAX),
        "every other one was evicted for the limit"
    );
    assert_eq!(total, LOGINS as i64);

    for instance in &instances {
        for session in &created {
            let stored = instance.service.get(session.session.id).await.unwrap();
            if stored.revoked_at().is_some() {
                // Within the staleness bound: once the instance has read
                // the change log.
                within_a_minute(async {
                    while !rejected(instance, &session.token).await {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await;
            } else {
                instance
                    .service
                    .resolve(session.token.expose_secret())
                    .await
                    .expect("a session within the limit resolves");
            }
        }
    }
}
