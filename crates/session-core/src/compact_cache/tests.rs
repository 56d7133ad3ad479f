//! The table's rule and the index's answers against a model, over random
//! operations, with keys crowded on purpose (few distinct order words, tiny
//! tables) so runs are long, meet the tail and tie.

use std::collections::HashMap;

use proptest::prelude::*;

use super::table::Table;
use super::{Key, LO_LEN, MIN_GROWTH, grow, insert_growing};

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, u8, u8),
    Remove(u8, u8),
}

/// Keys from a small space: `hi` one of a few values spread over the whole
/// range (so homes land everywhere, the end included) and `lo` one of a few.
fn key(hi: u8, lo: u8) -> Key {
    Key {
        segment: 0,
        hi: (u64::from(hi) << 56) | (u64::from(hi) << 3) | 1,
        lo: [lo; LO_LEN],
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), 0..3u8, any::<u8>()).prop_map(|(h, l, v)| Op::Insert(h, l, v)),
        2 => (any::<u8>(), 0..3u8).prop_map(|(h, l)| Op::Remove(h, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_table_answers_as_a_map_does(ops in prop::collection::vec(op(), 1..400)) {
        let mut table = Table::default();
        let mut model: HashMap<(u8, u8), u8> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(hi, lo, value) => {
                    let (added, _) = insert_growing(&mut table, &key(hi, lo), &[value; 32]);
                    prop_assert_eq!(added, model.insert((hi, lo), value).is_none());
                }
                Op::Remove(hi, lo) => {
                    prop_assert_eq!(table.remove(&key(hi, lo)), model.remove(&(hi, lo)).is_some());
                }
            }
            table.check();
            prop_assert_eq!(table.len(), model.len());
        }
        for hi in 0..=255u8 {
            for lo in 0..3u8 {
                let found = table.find(&key(hi, lo)).map(|at| table.record(at)[LO_LEN]);
                prop_assert_eq!(found, model.get(&(hi, lo)).copied());
            }
        }
    }
}

#[test]
fn growth_keeps_every_key_and_the_load_in_bounds() {
    let mut table = Table::default();
    let keys: Vec<Key> = (0..20_000u64)
        .map(|i| Key {
            segment: 0,
            // Spread like hash output: a multiplicative scramble of i.
            hi: i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            lo: [(i % 251) as u8; LO_LEN],
        })
        .collect();
    for (i, key) in keys.iter().enumerate() {
        insert_growing(&mut table, key, &[1; 32]);
        if i > 1_000 {
            let load = table.len() as f64 / table.homes() as f64;
            assert!((0.80..=0.921).contains(&load), "load {load} at {i}");
        }
    }
    table.check();
    assert!(keys.iter().all(|key| table.find(key).is_some()));
    // One more growth step is one eighth, never a doubling.
    let before = table.homes();
    grow(&mut table);
    assert_eq!(table.homes(), before + (before / 8).max(MIN_GROWTH));
    table.check();
    for key in &keys[..10_000] {
        assert!(table.remove(key));
    }
    table.check();
    assert!(keys[..10_000].iter().all(|key| table.find(key).is_none()));
    assert!(keys[10_000..].iter().all(|key| table.find(key).is_some()));
}
