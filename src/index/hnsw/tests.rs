//! The graph's own tests: recall against the exact scan, removal (repair, zeroing, slot reuse),
//! the stored graph's round trip, and a property test of random inserts and removals that checks
//! the graph's structure after every sequence.
use std::{cmp::Ordering, collections::HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::index::ExactIndex;

fn random_unit(rng: &mut ChaCha8Rng, d: usize) -> Embedding {
    let v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
    Embedding::new(v, d).expect("non-zero vector")
}

fn small(m: usize) -> HnswParams {
    HnswParams { m, ef_construction: 64, ef_search: 64, seed: 7 }
}

/// Every edge points to a live node on a layer it has, and in-edges mirror out-edges.
fn check_graph(index: &HnswIndex) {
    let mut expected_inbound = vec![Vec::new(); index.slots.len()];
    for (slot, node) in index.slots.nodes().iter().enumerate() {
        if node.id.is_none() {
            assert!(index.read_links(slot as u32, 0).is_empty(), "free slot {slot} has edges");
            continue;
        }
        for layer in 0..=node.level as usize {
            for t in index.read_links(slot as u32, layer) {
                let target = index.slots.node(t);
                assert!(target.id.is_some() && target.level as usize >= layer, "edge {slot}->{t} on {layer}");
                expected_inbound[t as usize].push(slot as u32);
            }
        }
    }
    for (slot, mut expected) in expected_inbound.into_iter().enumerate() {
        let mut got = index.slots.nodes()[slot].inbound.lock().clone();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected, "in-edges of {slot}");
    }
    let (ep, level) = index.entry();
    if index.positions.is_empty() {
        assert_eq!(ep, NONE);
    } else {
        assert_eq!(index.slots.node(ep).level as usize, level);
        let top = index.slots.nodes().iter().filter(|n| n.id.is_some()).map(|n| n.level).max().unwrap();
        assert_eq!(level, top as usize);
    }
}

#[test]
fn finds_what_exact_finds_on_random_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut hnsw = HnswIndex::new(32, small(8)).unwrap();
    let mut exact = ExactIndex::new(32);
    let items: Vec<(RecordId, Embedding)> =
        (0..2000).map(|_| (RecordId::random(), random_unit(&mut rng, 32))).collect();
    let refs: Vec<(RecordId, &[f32])> = items.iter().map(|(id, e)| (*id, e.as_slice())).collect();
    hnsw.insert_batch(&refs);
    for (id, e) in &items {
        exact.insert(*id, e);
    }
    check_graph(&hnsw);
    let mut found = 0;
    for _ in 0..100 {
        let q = random_unit(&mut rng, 32);
        let truth = exact.search(&q, 1, None)[0].id;
        found += usize::from(hnsw.search(&q, 10, None).iter().any(|h| h.id == truth));
    }
    assert!(found >= 95, "nearest neighbour found for {found} of 100 queries");
}

#[test]
fn removal_unlinks_repairs_and_zeroes() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut index = HnswIndex::new(16, small(4)).unwrap();
    let items: Vec<(RecordId, Embedding)> = (0..400).map(|_| (RecordId::random(), random_unit(&mut rng, 16))).collect();
    for (id, e) in &items {
        index.insert(*id, e);
    }
    check_graph(&index);
    let (entry_slot, _) = index.entry();
    let entry_id = index.slots.node(entry_slot).id.unwrap();
    assert!(index.remove(entry_id), "the entry point can be removed");
    for (id, _) in items.iter().step_by(2) {
        index.remove(*id);
    }
    check_graph(&index);
    assert_eq!(index.len(), 400 - 200 - usize::from(items.iter().step_by(2).all(|(id, _)| *id != entry_id)));
    for (id, e) in items.iter().step_by(2) {
        let hits = index.search(e, 50, None);
        assert!(hits.iter().all(|h| h.id != *id && h.id != entry_id), "a removed id was returned");
    }
    // Free slots are reused, and the survivors are still found.
    let slots_before = index.slots.len();
    for (id, e) in items.iter().step_by(2).take(50) {
        index.insert(*id, e);
    }
    assert_eq!(index.slots.len(), slots_before, "free slots were reused");
    check_graph(&index);
    let mut found = 0;
    for (id, e) in items.iter().skip(1).step_by(2).take(100) {
        found += usize::from(index.search(e, 1, None).first().map(|h| h.id) == Some(*id));
    }
    assert!(found >= 98, "{found} of 100 survivors find themselves");
    // Remove everything: an empty graph with no entry point and no vector bytes.
    for (id, _) in &items {
        index.remove(*id);
    }
    check_graph(&index);
    assert!(index.is_empty());
    assert!(index.vector_memory().iter().all(|&b| b == 0));
    assert!(index.code_memory().iter().all(|&b| b == 0));
    assert!(index.search(&items[0].1, 5, None).is_empty());
}

#[test]
fn stored_graph_round_trips() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut index = HnswIndex::new(16, small(6)).unwrap();
    let items: Vec<(RecordId, Embedding)> = (0..300).map(|_| (RecordId::random(), random_unit(&mut rng, 16))).collect();
    for (id, e) in &items {
        index.insert(*id, e);
    }
    let mut stored: HashMap<u32, Vec<u8>> = HashMap::new();
    let apply = |stored: &mut HashMap<u32, Vec<u8>>, c: GraphChanges| {
        for (s, row) in c.upserts {
            stored.insert(s, row);
        }
        for s in c.removed {
            stored.remove(&s);
        }
        c.meta
    };
    apply(&mut stored, index.take_changes());
    for (id, _) in items.iter().take(40) {
        index.remove(*id);
    }
    let meta = apply(&mut stored, index.take_changes());
    let mut loaded =
        HnswIndex::from_stored(16, small(6), &meta, stored.iter().map(|(s, r)| (*s, r.as_slice()))).unwrap();
    for (id, e) in &items {
        loaded.set_vector(*id, e.as_slice());
    }
    check_graph(&loaded);
    assert_eq!(loaded.len(), 260);
    for (_, e) in items.iter().skip(30).take(30) {
        assert_eq!(loaded.search(e, 10, None), index.search(e, 10, None));
    }
    assert!(matches!(
        HnswIndex::from_stored(16, small(5), &meta, stored.iter().map(|(s, r)| (*s, r.as_slice()))),
        Err(HnswError::Mismatch(_))
    ));
    let mut bad = stored.clone();
    let (&slot, _) = bad.iter().next().unwrap();
    bad.get_mut(&slot).unwrap().truncate(20);
    assert!(matches!(
        HnswIndex::from_stored(16, small(6), &meta, bad.iter().map(|(s, r)| (*s, r.as_slice()))),
        Err(HnswError::Corrupt(_))
    ));
}

#[test]
fn parameters_are_checked() {
    assert!(HnswIndex::new(4, HnswParams { m: 1, ..Default::default() }).is_err());
    assert!(HnswIndex::new(4, HnswParams { ef_construction: 3, ..Default::default() }).is_err());
    assert!(HnswIndex::new(4, HnswParams { ef_search: 0, ..Default::default() }).is_err());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u64),
        Remove(u8),
        Search(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..60, any::<u64>()).prop_map(|(i, s)| Op::Insert(i, s)),
            2 => (0u8..60).prop_map(Op::Remove),
            1 => any::<u64>().prop_map(Op::Search),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// Random inserts, re-inserts and removals: no removed id is ever returned, every
        /// hit is live with its true score, results are ordered and within k, and the graph
        /// stays consistent.
        #[test]
        fn removed_ids_are_never_returned(ops in proptest::collection::vec(op(), 1..150)) {
            let mut index = HnswIndex::new(8, HnswParams { m: 3, ef_construction: 8, ef_search: 8, seed: 1 }).unwrap();
            let mut live: HashMap<RecordId, Embedding> = HashMap::new();
            let id = |i: u8| RecordId::from_bytes([i; 16]);
            for op in ops {
                match op {
                    Op::Insert(i, seed) => {
                        let e = random_unit(&mut ChaCha8Rng::seed_from_u64(seed), 8);
                        index.insert(id(i), &e);
                        live.insert(id(i), e);
                    }
                    Op::Remove(i) => {
                        prop_assert_eq!(index.remove(id(i)), live.remove(&id(i)).is_some());
                    }
                    Op::Search(seed) => {
                        let q = random_unit(&mut ChaCha8Rng::seed_from_u64(seed), 8);
                        let hits = index.search(&q, 5, None);
                        prop_assert!(hits.len() <= 5);
                        prop_assert!(hits.len() == 5.min(live.len()) || live.len() > 5);
                        for w in hits.windows(2) {
                            prop_assert!(w[0].rank(&w[1]) == Ordering::Less);
                        }
                        for h in &hits {
                            let e = live.get(&h.id);
                            prop_assert!(e.is_some(), "a removed id was returned");
                            prop_assert!((e.unwrap().similarity(&q) - h.score).abs() < 1e-5);
                        }
                    }
                }
                prop_assert_eq!(index.len(), live.len());
            }
            check_graph(&index);
            // Every live vector is where it should be; every free slot is zero.
            for (slot, node) in index.slots.nodes().iter().enumerate() {
                match node.id {
                    Some(id) => prop_assert_eq!(&index.row(slot as u32)[..8], live[&id].as_slice()),
                    None => prop_assert!(index.row(slot as u32).iter().all(|&x| x == 0.0)),
                }
            }
        }
    }
}
