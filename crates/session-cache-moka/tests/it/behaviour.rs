//! Behaviour this adapter promises beyond the shared contract.

use std::sync::Arc;

use session_cache_moka::MokaSessionCache;
use session_core::port::cache::SessionCache;
use session_core::testkit::{account, cached, epoch, session_at};
use session_core::token::TokenHash;
use session_core::{Label, Session};

fn sessions(n: usize) -> Vec<Arc<Session>> {
    (0..n)
        .map(|_| cached(session_at(account(), epoch()).1))
        .collect()
}

/// A different value for the same token hash.
fn relabelled(session: &Session, label: &str) -> Arc<Session> {
    let mut copy = session.clone();
    copy.metadata.label = Label::new(label).ok();
    Arc::new(copy)
}

#[test]
fn lookups_return_the_cached_value_itself() {
    let cache = MokaSessionCache::new();
    let session = sessions(1).remove(0);
    cache.insert(Arc::clone(&session));
    let found = cache.record(&session.token_hash).unwrap();
    assert!(Arc::ptr_eq(&found, &session), "a lookup copied the session");
}

#[test]
fn remove_many_counts_a_repeated_hash_once() {
    let cache = MokaSessionCache::new();
    let all = sessions(4);
    for session in &all {
        cache.insert(Arc::clone(session));
    }
    let hash = all[0].token_hash;
    cache.remove_many(&[hash, hash, hash]);
    assert_eq!(cache.len(), 3);
    assert!(cache.get(&hash).is_none());
}

#[test]
fn replace_all_keeps_the_last_of_a_repeated_hash_and_counts_it_once() {
    let cache = MokaSessionCache::new();
    let all = sessions(3);
    let last = relabelled(&all[1], "last");
    cache.replace_all(vec![
        Arc::clone(&all[0]),
        Arc::clone(&all[1]),
        Arc::clone(&all[2]),
        Arc::clone(&last),
    ]);
    assert_eq!(cache.len(), 3);
    assert!(Arc::ptr_eq(&cache.record(&last.token_hash).unwrap(), &last));
}

#[test]
fn writes_after_replace_all_apply_on_top_of_the_new_contents() {
    let cache = MokaSessionCache::new();
    let all = sessions(6);
    cache.insert(Arc::clone(&all[0]));
    cache.replace_all(all[1..4].to_vec());
    cache.insert(Arc::clone(&all[4]));
    cache.remove(&all[1].token_hash);
    cache.remove_many(&[all[2].token_hash, all[5].token_hash]);
    let present: Vec<bool> = all
        .iter()
        .map(|s| cache.get(&s.token_hash).is_some())
        .collect();
    assert_eq!(present, [false, false, false, true, true, false]);
    assert_eq!(cache.len(), 2);
}

#[test]
fn replacing_a_value_keeps_the_count_and_returns_the_new_value() {
    let cache = MokaSessionCache::new();
    let session = sessions(1).remove(0);
    let newer = relabelled(&session, "newer");
    cache.insert(Arc::clone(&session));
    cache.insert(Arc::clone(&newer));
    cache.remove(&TokenHash::from_bytes([7; 32]));
    assert_eq!(cache.len(), 1);
    assert!(Arc::ptr_eq(
        &cache.record(&session.token_hash).unwrap(),
        &newer
    ));
}

#[test]
fn debug_shows_the_count_and_no_session() {
    let cache = MokaSessionCache::new();
    let all = sessions(2);
    cache.replace_all(all.clone());
    let text = format!("{cache:?}");
    assert!(text.contains("len: 2"), "{text}");
    assert!(!text.contains("account"), "{text}");
}
