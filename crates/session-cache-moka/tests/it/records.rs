//! `MokaRecordCache`: bounded by bytes, and never replacing a write's record
//! with a read's.

use std::sync::Arc;

use session_cache_moka::MokaRecordCache;
use session_core::port::cache::RecordCache;
use session_core::testkit::{account, cached, epoch, session_at, session_with_metadata};
use session_core::{Label, Session};

fn session() -> Arc<Session> {
    cached(session_at(account(), epoch()).1)
}

#[test]
fn the_bound_holds_and_bytes_count_what_is_held() {
    const BOUND: u64 = 1 << 20;
    let records = MokaRecordCache::new(BOUND);
    let all: Vec<_> = (0..20_000).map(|_| session()).collect();
    for session in &all {
        records.insert(Arc::clone(session));
    }
    records.run_pending_tasks();
    let bytes = records.bytes() as u64;
    assert!(bytes <= BOUND, "{bytes} bytes held past a bound of {BOUND}");
    // Each record weighs its session and moka's entry, so a full cache
    // holds far fewer than were inserted, and at least one.
    let held = all
        .iter()
        .filter(|s| records.get(&s.token_hash).is_some())
        .count();
    assert!(held > 0 && held < 20_000 / 4, "{held} held");
    assert!(bytes >= held as u64 * size_of::<Session>() as u64);
}

#[test]
fn a_record_with_text_weighs_more() {
    let records = MokaRecordCache::new(1 << 20);
    records.insert(session());
    records.run_pending_tasks();
    let plain = records.bytes();
    records.clear();
    records.run_pending_tasks();
    assert_eq!(records.bytes(), 0);
    records.insert(Arc::new(session_with_metadata(account())));
    records.run_pending_tasks();
    assert!(
        records.bytes() >= plain + 512,
        "the user agent's 512 bytes are counted"
    );
}

#[test]
fn insert_if_absent_keeps_a_held_record_and_insert_replaces_it() {
    let records = MokaRecordCache::default();
    let old = session();
    let mut newer = (*old).clone();
    newer.metadata.label = Label::new("newer").ok();
    let newer = Arc::new(newer);
    records.insert(Arc::clone(&newer));
    records.insert_if_absent(Arc::clone(&old));
    assert!(Arc::ptr_eq(&records.get(&old.token_hash).unwrap(), &newer));
    records.remove(&old.token_hash);
    records.insert_if_absent(Arc::clone(&old));
    assert!(Arc::ptr_eq(&records.get(&old.token_hash).unwrap(), &old));
    records.insert(Arc::clone(&newer));
    assert!(Arc::ptr_eq(&records.get(&old.token_hash).unwrap(), &newer));
}
