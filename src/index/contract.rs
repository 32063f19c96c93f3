//! The [`Index`] contract, one suite run against every implementation through `dyn Index`:
//! what a caller may rely on whichever index answers (length, replacement, removal, `k`,
//! `min_score`, order, true scores). What only one index promises (the exact scan's
//! completeness, the graph's structure and zeroing) is tested beside it.
use std::collections::HashMap;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{ExactIndex, Hit, HnswIndex, HnswParams, Index};
use crate::{embedding::Embedding, record::RecordId};

const D: usize = 8;

/// Every implementation, empty. The graph's `ef_search` exceeds every population here, so
/// its answers are as complete as the scan's.
fn implementations() -> Vec<Box<dyn Index>> {
    let params = HnswParams { m: 4, ef_construction: 16, ef_search: 64, seed: 3 };
    vec![Box::new(ExactIndex::new(D)), Box::new(HnswIndex::new(D, params).expect("valid parameters"))]
}

fn unit(seed: u64) -> Embedding {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..D).map(|_| rng.random::<f32>() - 0.5).collect();
    Embedding::new(v, D).expect("non-zero vector")
}

fn id(n: u8) -> RecordId {
    RecordId::from_bytes([n; 16])
}

/// What every answer must be, given the records present (`live`).
fn check_answer(
    hits: &[Hit],
    probe: &Embedding,
    k: usize,
    min_score: Option<f32>,
    live: &HashMap<RecordId, Embedding>,
) -> Result<(), TestCaseError> {
    prop_assert!(hits.len() <= k);
    for w in hits.windows(2) {
        prop_assert!(w[0].rank(&w[1]).is_lt(), "hits out of order");
    }
    for h in hits {
        let e = live.get(&h.id);
        prop_assert!(e.is_some(), "a removed or unknown id was returned");
        prop_assert!((e.map_or(f32::NAN, |e| e.similarity(probe)) - h.score).abs() < 1e-5, "not the true score");
        prop_assert!(h.score >= min_score.unwrap_or(f32::NEG_INFINITY), "below min_score");
    }
    Ok(())
}

#[test]
fn names_differ() {
    let names: Vec<_> = implementations().iter().map(|i| i.name()).collect();
    assert_eq!(names, ["exact", "hnsw"]);
}

#[test]
fn insert_replace_remove_search() {
    for mut index in implementations() {
        let name = index.name();
        let mut live = HashMap::new();
        for n in 0..30 {
            index.insert(id(n), &unit(u64::from(n)));
            live.insert(id(n), unit(u64::from(n)));
        }
        assert_eq!(index.len(), 30, "{name}");
        for n in 0..30 {
            let hits = index.search(&unit(u64::from(n)), 1, None);
            assert_eq!(hits.first().map(|h| h.id), Some(id(n)), "{name}: a record finds itself");
        }
        // Insert with a present id replaces its vector.
        index.insert(id(0), &unit(100));
        live.insert(id(0), unit(100));
        assert_eq!(index.len(), 30, "{name}");
        assert_eq!(index.search(&unit(100), 1, None)[0].id, id(0), "{name}: the new vector answers");
        check_answer(&index.search(&unit(0), 30, None), &unit(0), 30, None, &live).expect(name);
        assert!(index.search(&unit(1), 0, None).is_empty(), "{name}: k = 0");
        let above = index.search(&unit(1), 30, Some(0.5));
        check_answer(&above, &unit(1), 30, Some(0.5), &live).expect(name);
        let (counted, compared) = index.search_counted(&unit(1), 5, None);
        assert_eq!(counted, index.search(&unit(1), 5, None), "{name}: counting changes nothing");
        assert!(compared >= counted.len(), "{name}");
        assert!(index.remove(id(0)), "{name}");
        assert!(!index.remove(id(0)), "{name}: removed twice");
        live.remove(&id(0));
        assert_eq!(index.len(), 29, "{name}");
        assert!(index.search(&unit(100), 30, None).iter().all(|h| h.id != id(0)), "{name}: removed id returned");
        for n in 1..30 {
            assert!(index.remove(id(n)), "{name}");
        }
        assert!(index.is_empty(), "{name}");
        assert!(index.search(&unit(1), 5, None).is_empty(), "{name}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, u64),
    Remove(u8),
    Search(u64, usize, Option<f32>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..40, any::<u64>()).prop_map(|(i, s)| Op::Insert(i, s)),
        2 => (0u8..40).prop_map(Op::Remove),
        2 => (any::<u64>(), 0usize..12, proptest::option::of(-1f32..1.0)).prop_map(|(s, k, m)| Op::Search(s, k, m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Random inserts, re-inserts, removals and searches on every implementation: the length
    /// follows, `remove` says whether the id was there, and every answer keeps the contract.
    #[test]
    fn every_index_keeps_the_contract(ops in proptest::collection::vec(op(), 1..120)) {
        for mut index in implementations() {
            let mut live: HashMap<RecordId, Embedding> = HashMap::new();
            for op in &ops {
                match *op {
                    Op::Insert(i, seed) => {
                        index.insert(id(i), &unit(seed));
                        live.insert(id(i), unit(seed));
                    }
                    Op::Remove(i) => {
                        prop_assert_eq!(index.remove(id(i)), live.remove(&id(i)).is_some());
                    }
                    Op::Search(seed, k, min_score) => {
                        let probe = unit(seed);
                        check_answer(&index.search(&probe, k, min_score), &probe, k, min_score, &live)?;
                    }
                }
                prop_assert_eq!(index.len(), live.len(), "{}", index.name());
            }
        }
    }
}
