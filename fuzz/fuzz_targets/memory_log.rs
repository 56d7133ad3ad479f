//! The memory store's change log, its equivalent of the PostgreSQL log's
//! decoding: what a read turns the logged writes into.
//!
//! A sequence of writes (creates, revokes, revoke-alls, a truncate, a
//! pruned log), structured with `arbitrary`, interleaved with a follower
//! that reads the log as `SessionService` does: from the head it took
//! before loading every active session, page by page, loading everything
//! again on `Expired` and on `Reload` (then going on with the page).
//! Invariants: no panic; no page over its limit, and a full page moves the
//! cursor; every creation reported is of an active session; and once the
//! follower has read to the end, it holds exactly the store's active
//! sessions.

#![no_main]

use std::collections::BTreeSet;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use session_core::memory::MemoryStore;
use session_core::port::change_log::{Change, ChangeLog, LogCursor, LogRead};
use session_core::port::store::SessionStore;
use session_core::token::TokenHash;
use session_core::{AccountId, ClientMetadata, RevocationReason, Session, SessionId};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Arbitrary, Debug)]
enum Op {
    Create { account: u8 },
    Revoke { pick: u8 },
    RevokeAll { account: u8, except: Option<u8> },
    Truncate,
    PruneLog,
    Follow { limit: u8 },
}

/// Runs a memory store call: they never wait, so one poll finishes them.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a memory store call waited"),
    }
}

fn account(n: u8) -> AccountId {
    AccountId::new(Uuid::from_u128(u128::from(n) + 1)).expect("not nil")
}

fn active(store: &MemoryStore) -> BTreeSet<TokenHash> {
    let page = now(store.active_page(None, u32::MAX)).expect("available");
    assert!(page.rejected.is_empty());
    page.sessions.iter().map(|s| s.token_hash).collect()
}

/// A reader of the log, as `SessionService` follows it.
struct Follower {
    at: LogCursor,
    cache: BTreeSet<TokenHash>,
}

impl Follower {
    fn load(store: &MemoryStore) -> Self {
        let at = now(store.head()).expect("available");
        Self {
            at,
            cache: active(store),
        }
    }

    /// Reads to the end of the log, `limit` entries at a time, as the
    /// service does: a `Reload` loads everything and the page goes on.
    fn follow(&mut self, store: &MemoryStore, limit: u32) {
        loop {
            let page = match now(store.read(&self.at, limit)).expect("available") {
                LogRead::Expired => {
                    *self = Self::load(store);
                    continue;
                }
                LogRead::Page(page) => page,
            };
            assert!(
                page.rejected.is_empty(),
                "the memory store rejected its own session"
            );
            assert!(
                page.entries.len() <= limit.max(1) as usize,
                "a page over its limit"
            );
            for change in &page.entries {
                match change {
                    Change::Created(session) => {
                        assert!(session.is_active(), "a revoked session reported as created");
                        self.cache.insert(session.token_hash);
                    }
                    Change::Revoked(hashes) => {
                        for hash in hashes {
                            self.cache.remove(hash);
                        }
                    }
                    Change::Reload => self.cache = active(store),
                    Change::NotBefore(_) => panic!("a not-before change no operation made"),
                }
            }
            assert!(
                !page.more || page.next != self.at,
                "a full page that moved nowhere"
            );
            self.at = page.next;
            if !page.more {
                return;
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let store = MemoryStore::new();
    let mut follower = Follower::load(&store);
    let mut ids: Vec<SessionId> = Vec::new();
    let at = OffsetDateTime::UNIX_EPOCH;
    for op in ops.into_iter().take(256) {
        match op {
            Op::Create { account: n } => {
                let hash = TokenHash::from_bytes({
                    let mut bytes = [0u8; 32];
                    bytes[..8].copy_from_slice(&(ids.len() as u64 + 1).to_le_bytes());
                    bytes
                });
                let session = Session {
                    id: SessionId::from_uuid(Uuid::from_u128(ids.len() as u128 + 1)),
                    account_id: account(n % 4),
                    token_hash: hash,
                    created_at: at,
                    revocation: None,
                    metadata: ClientMetadata::default(),
                };
                now(store.insert(&session)).expect("a new hash");
                ids.push(session.id);
            }
            Op::Revoke { pick } => {
                if let Some(id) = ids.get(usize::from(pick) % ids.len().max(1)) {
                    now(store.revoke(*id, at, RevocationReason::LOGOUT, None)).expect("available");
                }
            }
            Op::RevokeAll { account: n, except } => {
                let except =
                    except.and_then(|pick| ids.get(usize::from(pick) % ids.len().max(1)).copied());
                now(store.revoke_all_for_account(
                    account(n % 4),
                    except,
                    at,
                    RevocationReason::LOGOUT,
                    None,
                ))
                .expect("available");
            }
            Op::Truncate => store.truncate(),
            Op::PruneLog => store.prune_log(),
            Op::Follow { limit } => {
                follower.follow(&store, u32::from(limit));
                assert_eq!(
                    follower.cache,
                    active(&store),
                    "the follower's sessions differ from the store's"
                );
            }
        }
    }
    follower.follow(&store, 7);
    assert_eq!(
        follower.cache,
        active(&store),
        "the follower's sessions differ from the store's"
    );
});
