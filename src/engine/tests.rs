//! The engine on the in-memory store: enrolment and idempotency, both indexes answering the
//! same records, quarantine, removal, and a reopen that reconciles the stored graph.
use std::{collections::HashSet, sync::Arc};

use jiff::Timestamp;

use super::{Engine, Error, IndexChoice, IndexConfig, IndexUse, Query};
use crate::{
    embedding::Embedding,
    record::{IdempotencyKey, NewRecord, Provenance, RecordId},
    store::MemoryStore,
};

const DIM: usize = 16;

fn template(seed: u64) -> Embedding {
    wide_template(seed, DIM)
}

fn record(seed: u64, key: Option<&str>) -> NewRecord {
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    NewRecord {
        embedding: template(seed),
        provenance: Provenance::scraped(format!("https://photos.example/{seed}.jpg"), now).unwrap(),
        idempotency_key: key.map(|k| IdempotencyKey::parse(k.into()).unwrap().unwrap()),
    }
}

fn engine(store: &Arc<MemoryStore>, choice: IndexChoice) -> Engine {
    Engine::with_storage(store.clone(), IndexConfig { choice, ..IndexConfig::default() }).unwrap()
}

fn memory() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(DIM, "test.example/log").unwrap())
}

#[test]
fn idempotency_keys_answer_with_their_record_and_refuse_other_content() {
    let store = memory();
    let engine = engine(&store, IndexChoice::Exact);
    let first = engine.enroll(&[record(1, Some("k1")), record(1, Some("k1"))], &[]).unwrap();
    assert!(first[0].created && !first[1].created && first[0].id == first[1].id, "{first:?}");
    let again = engine.enroll(&[record(1, Some("k1"))], &[]).unwrap();
    assert_eq!((again[0].id, again[0].created), (first[0].id, false));
    assert!(matches!(engine.enroll(&[record(2, Some("k1"))], &[]), Err(Error::IdempotencyConflict { item: 0 })));
    assert_eq!(engine.stats().unwrap().record_count, 1, "a refused batch stores nothing");
}

#[test]
fn both_indexes_find_the_same_records_and_quarantine_hides_from_operators_only() {
    let store = memory();
    let engine = engine(&store, IndexChoice::Hnsw);
    let records: Vec<NewRecord> = (0..200).map(|i| record(i, None)).collect();
    let held: Vec<Option<&str>> = (0..200).map(|i| (i == 7).then_some("no-legal-basis")).collect();
    let ids: Vec<_> = engine.enroll(&records, &held).unwrap().iter().map(|e| e.id).collect();
    let probe = template(7);
    let graph = engine.search(&Query::new(&probe, 5)).unwrap();
    let exact = engine.search(&Query { index: IndexUse::Exact, ..Query::new(&probe, 5) }).unwrap();
    assert_eq!((graph.index, exact.index), ("hnsw", "exact"));
    assert_eq!(graph.hits[0].id, ids[7]);
    assert_eq!(
        graph.hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        exact.hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        "at this size the graph finds exactly the scan's hits"
    );
    for (g, e) in graph.hits.iter().zip(&exact.hits) {
        // The graph rescores with the vector kernel, the scan with the panel kernel.
        assert!((g.score - e.score).abs() < 1e-5, "{} vs {}", g.score, e.score);
    }
    assert!(engine.is_quarantined(ids[7]));
    let operator = engine.search(&Query { include_quarantined: false, ..Query::new(&probe, 5) }).unwrap();
    assert!(operator.hits.iter().all(|h| h.id != ids[7]) && operator.hits.len() == 5);
    let matches = engine.match_exact(&[probe], 0.99).unwrap();
    assert_eq!(matches.best().iter().map(|h| h.id).collect::<Vec<_>>(), [ids[7]], "rights requests see it");
    assert!(matches!(engine.search(&Query::new(&template(1), 0)), Err(Error::InvalidK(0))));
    assert!(matches!(engine.match_exact(&[template(1)], 1.5), Err(Error::InvalidMinScore(_))));
}

#[test]
fn unindexed_records_are_never_found_and_a_reopen_reconciles_the_graph() {
    let store = memory();
    let ids: Vec<_> = {
        let engine = engine(&store, IndexChoice::Hnsw);
        let records: Vec<NewRecord> = (0..50).map(|i| record(i, None)).collect();
        let ids: Vec<_> = engine.enroll(&records, &[]).unwrap().iter().map(|e| e.id).collect();
        assert!(engine.unindex(ids[3]));
        assert!(!engine.unindex(ids[3]), "a second removal finds nothing");
        let hits = engine.search(&Query::new(&template(3), 50)).unwrap().hits;
        assert!(hits.iter().all(|h| h.id != ids[3]));
        ids
    };
    // The record itself is still stored (only the store's erase deletes it): at reopen the
    // graph was saved without it, and the reconcile links it again, from the records.
    let engine = engine(&store, IndexChoice::Hnsw);
    let status = engine.graph_status();
    assert!(status.loaded && status.linked == 1 && status.dropped == 0, "{status:?}");
    assert_eq!(engine.search(&Query::new(&template(3), 1)).unwrap().hits[0].id, ids[3]);
}

/// Concurrent enrolments through the group commit: every call gets its own records (distinct
/// ids, all stored and found), a key used by several calls gives every one of them the same
/// record, and a call refused for an idempotency conflict fails alone, not the others of its
/// group.
#[test]
fn concurrent_grouped_enrolments_each_get_their_own_outcome() {
    let store = memory();
    let engine = Arc::new(engine(&store, IndexChoice::Exact));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..40u64 {
                    let outcome = engine.enroll_grouped(vec![record(1000 + t * 100 + i, None)], vec![None]).unwrap();
                    mine.push(outcome[0].id);
                }
                let shared = engine.enroll_grouped(vec![record(7, Some("shared"))], vec![None]).unwrap()[0].id;
                let conflict = engine.enroll_grouped(vec![record(8 + t, Some("shared"))], vec![None]);
                (mine, shared, conflict.is_err())
            })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut shared = HashSet::new();
    for t in threads {
        let (mine, one, refused) = t.join().unwrap();
        assert!(refused, "other content under a used key is refused");
        ids.extend(mine);
        shared.insert(one);
    }
    assert_eq!(ids.len(), 8 * 40, "distinct ids for distinct calls");
    assert_eq!(shared.len(), 1, "one record for the shared key");
    assert_eq!(engine.stats().unwrap().record_count, 8 * 40 + 1);
    for id in ids.iter().take(20) {
        assert!(engine.get(*id).is_ok());
    }
}

/// A template of `dim` values from `seed`: a deterministic spread of directions (a small LCG,
/// no RNG state to share between tests).
fn wide_template(seed: u64, dim: usize) -> Embedding {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let values = (0..dim)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    Embedding::new(values, dim).unwrap()
}

/// What a search answered, with scores as bits: equal only if identical.
fn answer(engine: &Engine, probe: &Embedding, k: usize, min_score: Option<f32>) -> (Vec<(RecordId, u32)>, usize) {
    let query = Query { probe, k, min_score, index: IndexUse::Exact, include_quarantined: false };
    let result = engine.search(&query).unwrap();
    (result.hits.iter().map(|h| (h.id, h.score.to_bits())).collect(), result.candidates)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, ..Default::default() })]
    /// Exact searches scored together in one pass of the batched kernel answer exactly what each
    /// answers alone: the same records, in the same order, with bit-identical scores, whatever
    /// their k, their floors and the quarantined records; directly, and through concurrent
    /// callers whose searches the engine batches as they come.
    #[test]
    fn micro_batched_searches_equal_lone_searches_bit_for_bit(
        dim in proptest::sample::select(vec![16usize, 100, 512]),
        records in 1u64..400,
        quarantined in 0u64..5,
        queries in proptest::collection::vec((proptest::num::u64::ANY, 1usize..24, proptest::option::of(-0.2f32..0.5)), 1..48),
    ) {
        let store = Arc::new(MemoryStore::new(dim, "test.example/log").unwrap());
        let engine = Engine::with_storage(store, IndexConfig { choice: IndexChoice::Exact, ..IndexConfig::default() }).unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let population: Vec<NewRecord> = (0..records)
            .map(|seed| NewRecord {
                embedding: wide_template(seed, dim),
                provenance: Provenance::scraped(format!("https://photos.example/{seed}.jpg"), now).unwrap(),
                idempotency_key: None,
            })
            .collect();
        let held: Vec<Option<&str>> = (0..records).map(|i| (i < quarantined).then_some("test-rule")).collect();
        engine.enroll(&population, &held).unwrap();
        // Probes near enrolled templates as well as far from all of them.
        let probes: Vec<Embedding> = queries.iter().map(|(seed, _, _)| wide_template(seed % (2 * records), dim)).collect();
        let lone: Vec<_> = probes.iter().zip(&queries).map(|(p, &(_, k, m))| answer(&engine, p, k, m)).collect();

        let scans = probes
            .iter()
            .zip(&queries)
            .map(|(probe, &(_, k, min_score))| super::Scan { probe: probe.clone(), wanted: k + quarantined as usize, min_score })
            .collect::<Vec<_>>();
        let alone: Vec<_> = scans
            .iter()
            .map(|s| engine.scan_batch(vec![super::Scan { probe: s.probe.clone(), ..*s }]).remove(0))
            .collect();
        let together = engine.scan_batch(scans);
        for (a, b) in alone.iter().zip(&together) {
            let bits = |hits: &[crate::index::Hit]| hits.iter().map(|h| (h.id, h.score.to_bits())).collect::<Vec<_>>();
            proptest::prop_assert_eq!(bits(&a.0), bits(&b.0));
            proptest::prop_assert_eq!(a.1, b.1);
        }

        std::thread::scope(|s| {
            for t in 0..4 {
                let (engine, probes, queries, lone) = (&engine, &probes, &queries, &lone);
                s.spawn(move || {
                    for round in 0..3 {
                        for i in (0..probes.len()).map(|i| (i + t * 7 + round) % probes.len()) {
                            let (_, k, m) = queries[i];
                            assert_eq!(answer(engine, &probes[i], k, m), lone[i], "query {i}, thread {t}");
                        }
                    }
                });
            }
        });
    }
}
