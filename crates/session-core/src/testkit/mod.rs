//! Contract test suites that every [`SessionStore`](crate::port::store::SessionStore) and
//! [`SessionCache`](crate::port::cache::SessionCache) adapter runs from its own tests, and
//! every [`ChangeLog`](crate::port::change_log::ChangeLog) of a shared store too.
//!
//! An adapter is correct when it passes the same suite as every other one:
//!
//! ```ignore
//! // tests/it/main.rs of a store adapter; the crate needs tokio (macros,
//! // rt-multi-thread) as a dev-dependency.
//! session_core::store_contract_tests!(async { MyStore::connect_fresh().await });
//! // and of a cache adapter:
//! session_core::cache_contract_tests!(MyCache::new);
//! // and of a store that is also a change log:
//! session_core::change_log_contract_tests!(async { MyStore::connect_fresh().await });
//! ```
//!
//! Each case becomes its own `#[test]`, named after the behaviour it checks;
//! the expression is evaluated once per case, so each case gets fresh state.

pub mod cache;
pub mod change_log;
mod counting;
pub mod events;
mod records;
pub mod store;

pub use counting::CountingStore;
pub use records::FifoRecords;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::SessionToken;
use crate::session::{AccountId, ClientMetadata, Label, Session, SessionId, UserAgent};

/// A fixed instant that test clocks start at, with whole microseconds.
#[must_use]
pub fn epoch() -> OffsetDateTime {
    time::macros::datetime!(2026-01-02 03:04:05.123456 UTC)
}

/// A new random account.
#[must_use]
pub fn account() -> AccountId {
    AccountId::new(Uuid::new_v4()).unwrap_or_else(|_| unreachable!("a v4 UUID is never nil"))
}

/// A new active session for `account`, created at `created_at`, with its token.
#[must_use]
pub fn session_at(account: AccountId, created_at: OffsetDateTime) -> (SessionToken, Session) {
    let token = SessionToken::generate();
    let session = Session {
        id: SessionId::new(),
        account_id: account,
        token_hash: token.hash(),
        created_at,
        revocation: None,
        metadata: ClientMetadata::default(),
    };
    (token, session)
}

/// A new active session for `account` created at `at`, its id minted at
/// `at` too (a UUIDv7 of that millisecond), with its token.
#[must_use]
pub fn session_minted_at(account: AccountId, at: OffsetDateTime) -> (SessionToken, Session) {
    let (token, mut session) = session_at(account, at);
    let seconds = u64::try_from(at.unix_timestamp()).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(uuid::NoContext, seconds, at.nanosecond());
    session.id = SessionId::from_uuid(Uuid::new_v7(timestamp));
    (token, session)
}

/// A new active session for `account` with every metadata field set, at the limits.
#[must_use]
pub fn session_with_metadata(account: AccountId) -> Session {
    let (_, mut session) = session_at(account, epoch());
    // Multi-byte characters up to the byte limit, to catch char/byte confusion.
    let user_agent = "Mozilla/5.0 (ü) ".repeat(32);
    let user_agent = &user_agent[..UserAgent::MAX_LEN];
    session.metadata = ClientMetadata {
        user_agent: UserAgent::new(user_agent).ok(),
        ip: Some(IpAddr::V6(Ipv6Addr::new(
            0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x42,
        ))),
        label: Label::new("é".repeat(Label::MAX_LEN / 2)).ok(),
    };
    assert!(session.metadata.user_agent.is_some() && session.metadata.label.is_some());
    session
}

/// Wraps a session for a cache.
#[must_use]
pub fn cached(session: Session) -> Arc<Session> {
    Arc::new(session)
}

/// Defines one `#[tokio::test]` per store contract case, each calling `$make`
/// (an expression evaluating to a future of the store) for a fresh store.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@cases $make;
            insert_then_find,
            unknown_hash_and_id_are_absent,
            duplicate_token_hash_is_rejected,
            metadata_round_trips_at_the_limits,
            revoke_is_idempotent_and_hides_the_session,
            revocation_reason_round_trips_for_each_revoke_form,
            the_first_revocation_reason_stays,
            revoke_unknown_id_is_not_found,
            revoke_all_revokes_only_that_accounts_active_sessions,
            revoke_all_keeps_the_exception,
            list_is_newest_first_and_filters_revoked,
            list_pages_have_no_gaps_or_duplicates_while_sessions_are_created,
            list_pages_are_bounded_by_their_limit,
            list_pages_filter_revoked_and_stay_in_the_account,
            active_pages_cover_every_active_session_once,
            identity_pages_are_the_active_pages_narrowed,
            active_identities_are_each_active_identity_once,
            concurrent_creates_and_revokes_end_consistent,
            service_round_trip,
            health_check_answers,
            last_seen_never_moves_back,
            last_seen_ignores_unknown_ids_and_keeps_revoked_ones,
            concurrent_last_seen_batches_never_conflict,
            a_limited_insert_keeps_the_account_at_its_cap,
            a_limited_insert_evicts_the_least_recently_seen_first,
            a_refused_insert_changes_nothing,
            a_failed_limited_insert_evicts_nothing,
            concurrent_limited_inserts_end_at_the_cap,
            the_revoker_round_trips_and_the_first_stays,
            revoke_idle_takes_the_unseen_by_creation_and_spares_the_seen,
            revoke_idle_batches_are_bounded_and_resume_after,
            purge_revoked_erases_or_deletes_only_old_revocations,
            purge_revoked_batches_are_bounded,
            the_not_before_mark_only_rises,
            concurrent_not_before_raises_end_at_the_latest,
            revoke_marked_takes_the_sessions_created_or_minted_before_the_mark,
            the_not_before_sweep_is_recorded_up_to_the_mark,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $make.await;
                $crate::testkit::store::$case(::std::sync::Arc::new(store)).await;
            }
        )*
    };
}

/// Defines one `#[tokio::test]` per change-log contract case, each calling
/// `$make` (an expression evaluating to a future of a value that is both the
/// [`SessionStore`](crate::port::store::SessionStore) and its
/// [`ChangeLog`](crate::port::change_log::ChangeLog)) for a fresh store.
#[macro_export]
macro_rules! change_log_contract_tests {
    ($make:expr) => {
        $crate::change_log_contract_tests!(@cases $make;
            created_sessions_are_read_as_stored,
            a_revocation_is_logged_with_its_hash,
            revoke_all_is_logged_with_exactly_the_revoked_hashes,
            writes_that_change_nothing_log_nothing,
            entries_are_in_commit_order_and_creations_read_as_they_are_now,
            reads_from_a_head_or_a_later_cursor_find_every_later_write,
            reading_again_returns_the_same_entries,
            pages_cover_the_log_exactly_once,
            a_session_stored_revoked_logs_no_creation,
            a_write_wakes_a_listener,
            recording_last_seen_logs_nothing,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = ::std::sync::Arc::new($make.await);
                $crate::testkit::change_log::$case(store.clone(), store).await;
            }
        )*
    };
}

/// Defines one `#[tokio::test]` per events-feed contract case, each calling
/// `$make` (an expression evaluating to a future of a value that is both the
/// [`SessionStore`](crate::port::store::SessionStore) and its
/// [`EventLog`](crate::port::events::EventLog)) for a fresh store; the
/// case about another history calls it twice.
#[macro_export]
macro_rules! event_log_contract_tests {
    ($make:expr) => {
        $crate::event_log_contract_tests!(@cases $make;
            events_follow_writes_in_commit_order,
            resuming_after_any_event_has_no_gap_or_duplicate,
            revoke_all_is_one_event_per_session_with_its_reason,
            writes_that_change_nothing_are_no_events,
            a_cursor_before_pruned_events_is_gone,
        );
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_cursor_of_another_history_or_past_the_head_is_gone() {
            let store = ::std::sync::Arc::new($make.await);
            let other = ::std::sync::Arc::new($make.await);
            $crate::testkit::events::a_cursor_of_another_history_or_past_the_head_is_gone(
                store.clone(),
                store,
                other,
            )
            .await;
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = ::std::sync::Arc::new($make.await);
                $crate::testkit::events::$case(store.clone(), store).await;
            }
        )*
    };
}

/// Defines one `#[test]` per cache contract case, each calling `$make` (a
/// function or closure returning the cache) for a fresh cache.
#[macro_export]
macro_rules! cache_contract_tests {
    ($make:expr) => {
        $crate::cache_contract_tests!(@cases $make;
            insert_then_get,
            missing_hash_is_absent,
            insert_replaces_the_same_hash,
            remove_and_remove_missing,
            remove_many_drops_exactly_those,
            replace_all_swaps_the_contents,
            replace_all_is_never_seen_half_done,
            prepared_contents_are_unseen_until_installed,
            a_refresh_answers_throughout_and_ends_with_what_it_was_given,
            a_dropped_refresh_leaves_the_cache_and_confirms_nothing,
            a_refresh_never_hides_a_session_it_keeps,
            len_is_exact_after_bulk_inserts,
            concurrent_writers_end_in_the_expected_state,
            records_are_only_of_cached_sessions,
            a_kept_record_never_replaces_a_written_one,
            bytes_follow_the_contents,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let cache = ($make)();
                $crate::testkit::cache::$case(::std::sync::Arc::new(cache));
            }
        )*
    };
}
