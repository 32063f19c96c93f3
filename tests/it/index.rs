//! The search indexes on synthetic face data: HNSW's match recall against the exact scan
//! (fresh, after deleting half, after deleting and re-inserting a fifth), no copy of a deleted
//! template left in the index's memory, the graph loaded (not rebuilt) after a restart with the
//! same answers, index selection over gRPC, and the batched exact scan rights requests use.
//!
//! `make test` runs these at a few thousand records; the `#[ignore]`d `*_100k` versions run the
//! same checks at 100,000 records in release (`make test-heavy`).
use std::collections::HashSet;

use oubli::{
    embedding::Embedding,
    engine::{Engine, IndexChoice, IndexConfig, IndexUse, OpenOptions, Query},
    grpc::pb,
    index::{ExactIndex, HnswIndex, HnswParams, Index},
    record::{NewRecord, RecordId},
    synth::{Population, PopulationConfig, stats::Scores},
};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::harness::{Dirs, stream_of};

const K: usize = 10;

/// `identities` people with two photos each and one held-out selfie each.
fn population(identities: usize, seed: u64) -> Population {
    let config =
        PopulationConfig { seed, identities, samples_per_identity: 2, probes_per_identity: 1, ..Default::default() };
    Population::generate(&config).expect("valid population")
}

/// The population's FMR 1e-3 threshold (the operating point match recall is measured at).
fn threshold(population: &Population) -> f32 {
    Scores::of_population(population, 1, 100_000, 2_000_000).expect("scores").threshold_at(1e-3).expect("measured")
}

fn embedding(values: &[f32]) -> Embedding {
    Embedding::new(values.to_vec(), values.len()).expect("unit vector")
}

/// Match recall: of the exact top-10 hits scoring at least `threshold`, the share HNSW's top
/// 10 also holds. Also checks that HNSW never returns an id outside `live`.
fn match_recall(
    hnsw: &HnswIndex,
    exact: &ExactIndex,
    probes: &[Embedding],
    threshold: f32,
    live: &HashSet<RecordId>,
) -> (f64, usize) {
    let (mut found, mut total) = (0, 0);
    for probe in probes {
        let got = hnsw.search(probe, K, None);
        for hit in &got {
            assert!(live.contains(&hit.id), "HNSW returned a deleted (or never enrolled) record");
        }
        for truth in exact.search(probe, K, Some(threshold)) {
            total += 1;
            found += usize::from(got.iter().any(|h| h.id == truth.id));
        }
    }
    (found as f64 / total.max(1) as f64, total)
}

/// Every 16-byte window (at float alignment) of `memory` that starts a vector in `vectors`.
fn occurrences(memory: &[u8], vectors: &[&[f32]]) -> usize {
    let heads: HashSet<[u8; 16]> = vectors
        .iter()
        .map(|v| {
            let mut head = [0u8; 16];
            for (i, x) in v[..4].iter().enumerate() {
                head[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
            }
            head
        })
        .collect();
    memory.windows(16).step_by(4).filter(|w| heads.contains(<&[u8; 16]>::try_from(*w).expect("16 bytes"))).count()
}

/// How many of `vectors`' int8 codes (their first 16) appear in `memory`.
fn code_occurrences(memory: &[u8], vectors: &[&[f32]]) -> usize {
    let heads: HashSet<[u8; 16]> = vectors
        .iter()
        .map(|v| {
            let mut codes = vec![0i8; v.len()];
            oubli::kernel::quantize(v, &mut codes);
            std::array::from_fn(|i| codes[i] as u8)
        })
        .collect();
    memory.windows(16).filter(|w| heads.contains(<&[u8; 16]>::try_from(*w).expect("16 bytes"))).count()
}

/// Builds HNSW and the exact index over a population, then deletes half, then deletes and
/// re-inserts a fifth of the rest; match recall must stay at 0.99 or more throughout, no
/// deleted id may come back, and the vector memory must hold no deleted template.
fn recall_through_deletions(identities: usize, probes: usize) {
    let population = population(identities, 31);
    let threshold = threshold(&population);
    let n = population.len();
    let ids: Vec<RecordId> = (0..n).map(|_| RecordId::random()).collect();
    let samples: Vec<Embedding> = (0..n).map(|i| embedding(population.sample(i))).collect();
    let probes: Vec<Embedding> = (0..probes).map(|i| embedding(population.probe(i))).collect();

    let mut exact = ExactIndex::with_capacity(population.dimension(), n);
    for (id, e) in ids.iter().zip(&samples) {
        exact.insert(*id, e);
    }
    let mut hnsw = HnswIndex::new(population.dimension(), HnswParams::default()).expect("default parameters");
    let items: Vec<(RecordId, &[f32])> = ids.iter().zip(&samples).map(|(id, e)| (*id, e.as_slice())).collect();
    hnsw.insert_batch(&items);
    let mut live: HashSet<RecordId> = ids.iter().copied().collect();
    let (recall, matches) = match_recall(&hnsw, &exact, &probes, threshold, &live);
    eprintln!("n = {n}: match recall {recall:.4} over {matches} matches at threshold {threshold:.3}");
    assert!(matches > probes.len(), "the probes have matches to find ({matches})");
    assert!(recall >= 0.99, "match recall {recall:.4} after building");

    // Delete a random half.
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(9));
    let (deleted, kept) = order.split_at(n / 2);
    for &i in deleted {
        assert!(hnsw.remove(ids[i]));
        assert!(exact.remove(ids[i]));
        live.remove(&ids[i]);
    }
    assert_eq!(hnsw.len(), n - n / 2);
    let (recall, matches) = match_recall(&hnsw, &exact, &probes, threshold, &live);
    eprintln!("after deleting half: match recall {recall:.4} over {matches} matches");
    assert!(recall >= 0.99, "match recall {recall:.4} after deleting half");
    let deleted_vectors: Vec<&[f32]> = deleted.iter().map(|&i| samples[i].as_slice()).collect();
    let kept_vectors: Vec<&[f32]> = kept.iter().map(|&i| samples[i].as_slice()).collect();
    assert_eq!(occurrences(hnsw.vector_memory(), &kept_vectors), kept.len(), "the scan finds every survivor");
    assert_eq!(occurrences(hnsw.vector_memory(), &deleted_vectors), 0, "a deleted template is still in memory");
    let codes = hnsw.code_memory();
    assert_eq!(code_occurrences(&codes, &kept_vectors), kept.len(), "the scan finds every survivor's codes");
    assert_eq!(code_occurrences(&codes, &deleted_vectors), 0, "a deleted template's codes are still in memory");

    // Delete a fifth of the survivors and insert them again (into the freed slots).
    let again = &kept[..kept.len() / 5];
    for &i in again {
        assert!(hnsw.remove(ids[i]));
    }
    for &i in again {
        hnsw.insert(ids[i], &samples[i]);
    }
    assert_eq!(hnsw.len(), n - n / 2);
    let (recall, matches) = match_recall(&hnsw, &exact, &probes, threshold, &live);
    eprintln!("after deleting and re-inserting a fifth: match recall {recall:.4} over {matches} matches");
    assert!(recall >= 0.99, "match recall {recall:.4} after deleting and re-inserting a fifth");
    assert_eq!(occurrences(hnsw.vector_memory(), &deleted_vectors), 0, "a deleted template is still in memory");
    assert_eq!(code_occurrences(&hnsw.code_memory(), &deleted_vectors), 0, "a deleted template's codes remain");
}

#[test]
fn hnsw_match_recall_survives_deletion() {
    recall_through_deletions(2_500, 300);
}

#[test]
#[ignore = "100,000 templates: run in release with `make test-heavy`"]
fn hnsw_match_recall_survives_deletion_100k() {
    recall_through_deletions(50_000, 1_000);
}

fn records(population: &Population) -> Vec<NewRecord> {
    (0..population.len())
        .map(|i| NewRecord {
            embedding: embedding(population.sample(i)),
            provenance: population.provenance[i].clone(),
            idempotency_key: None,
        })
        .collect()
}

fn hnsw_config() -> IndexConfig {
    IndexConfig { choice: IndexChoice::Hnsw, ..IndexConfig::default() }
}

fn open(dirs: &Dirs, config: IndexConfig) -> Engine {
    Engine::open(&OpenOptions { index: config, ..OpenOptions::new(&dirs.data, &dirs.keys) }).expect("open engine")
}

/// Ids and scores of each probe's top 10, from whichever index the engine picks.
fn answers(engine: &Engine, probes: &[Embedding]) -> Vec<Vec<(RecordId, f32)>> {
    probes
        .iter()
        .map(|p| {
            let result = engine.search(&Query::new(p, K)).expect("search");
            assert_eq!(result.index, "hnsw");
            result.hits.iter().map(|h| (h.id, h.score)).collect()
        })
        .collect()
}

/// A restart loads the stored graph instead of building it, and answers exactly as before;
/// a graph that lost nodes (or holds erased ones) is reconciled with the store; a change of
/// parameters, or a stretch of running without the graph, rebuilds it.
fn restart_loads_the_graph(identities: usize, enrol_batch: usize) {
    let population = population(identities, 41);
    let probes: Vec<Embedding> = (0..200).map(|i| embedding(population.probe(i))).collect();
    let dirs = Dirs::new();
    let engine = open(&dirs, hnsw_config());
    assert!(!engine.graph_status().loaded, "a new data dir has no graph");
    for chunk in records(&population).chunks(enrol_batch) {
        engine.enroll(chunk, &[]).expect("enrol");
    }
    let before = answers(&engine, &probes);
    drop(engine);

    let engine = open(&dirs, hnsw_config());
    let status = engine.graph_status();
    assert!(status.loaded && status.linked == 0 && status.dropped == 0, "graph loaded as stored: {status:?}");
    assert_eq!(answers(&engine, &probes), before, "the same answers after a restart");

    // Unlink some records from the indexes only (the store still holds them): the next open
    // finds them missing from the graph and links them again.
    let result = engine.search(&Query::new(&probes[0], 3)).expect("search");
    for hit in &result.hits {
        assert!(engine.unindex(hit.id));
        assert!(engine.search(&Query::new(&probes[0], K)).expect("search").hits.iter().all(|h| h.id != hit.id));
    }
    drop(engine);
    let engine = open(&dirs, hnsw_config());
    assert_eq!(engine.graph_status(), oubli::engine::GraphStatus { loaded: true, linked: 3, dropped: 0 });
    let found = engine.search(&Query::new(&probes[0], K)).expect("search").hits;
    assert!(result.hits.iter().all(|h| found.iter().any(|f| f.id == h.id)), "re-linked records are found");
    drop(engine);

    // Other parameters: the stored graph is not used.
    let other = IndexConfig { hnsw: HnswParams { m: 12, ..HnswParams::default() }, ..hnsw_config() };
    assert!(!open(&dirs, other).graph_status().loaded);
    // Running exact-only drops the graph, which is then rebuilt.
    drop(open(&dirs, IndexConfig { choice: IndexChoice::Exact, ..IndexConfig::default() }));
    let engine = open(&dirs, hnsw_config());
    assert!(!engine.graph_status().loaded);
    assert_eq!(engine.graph_status().linked, population.len());
}

#[test]
fn restart_loads_the_graph_with_the_same_answers() {
    restart_loads_the_graph(1_000, 400);
}

#[test]
#[ignore = "100,000 templates: run in release with `make test-heavy`"]
fn restart_loads_the_graph_with_the_same_answers_100k() {
    restart_loads_the_graph(50_000, 10_000);
}

/// The batched exact scan finds, for each probe, exactly what one exact search per probe finds.
#[test]
fn batched_exact_search_finds_every_match() {
    let population = population(500, 51);
    let threshold = threshold(&population);
    let dirs = Dirs::new();
    let engine = open(&dirs, hnsw_config());
    engine.enroll(&records(&population), &[]).expect("enrol");
    let probes: Vec<Embedding> = (0..7).map(|i| embedding(population.probe(i))).collect();
    let batch = engine.match_exact(&probes, threshold).expect("batch").per_probe;
    assert_eq!(batch.len(), probes.len());
    let mut total = 0;
    for (probe, hits) in probes.iter().zip(&batch) {
        let query = Query { min_score: Some(threshold), index: IndexUse::Exact, ..Query::new(probe, 1000) };
        let one = engine.search(&query).expect("search");
        assert_eq!(one.index, "exact");
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), one.hits.iter().map(|h| h.id).collect::<Vec<_>>());
        total += hits.len();
    }
    assert!(total >= probes.len(), "the selfies match their people ({total} hits)");
    assert!(engine.match_exact(&probes, 1.5).is_err(), "a threshold above 1 is refused");
}

/// Over gRPC: the server says which index answered, `exact = true` forces the scan, and `auto`
/// switches to HNSW at its record count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_says_which_index_answered() {
    let (requests, vectors) = crate::harness::seeded(300, 61);
    for (choice, below, above) in [
        (IndexChoice::Hnsw, "hnsw", "hnsw"),
        (IndexChoice::Exact, "exact", "exact"),
        (IndexChoice::Auto, "exact", "hnsw"),
    ] {
        let index = IndexConfig { choice, auto_min_records: 200, ..IndexConfig::default() };
        let server = crate::harness::Server::start_with(
            Dirs::new(),
            std::sync::Arc::new(move |c: &mut oubli::Config| c.index = index),
        )
        .await;
        let mut client = server.client().await;
        let search = |exact: bool| pb::SearchRequest {
            probe: Some(pb::Embedding { values: vectors[0].clone() }),
            k: 5,
            min_score: None,
            exact,
        };
        client.enroll_stream(stream_of(requests[..100].to_vec())).await.expect("enrol");
        let response = client.search(search(false)).await.expect("search").into_inner();
        assert_eq!(response.index, below, "{choice:?} at 100 records");
        client.enroll_stream(stream_of(requests[100..].to_vec())).await.expect("enrol");
        let response = client.search(search(false)).await.expect("search").into_inner();
        assert_eq!(response.index, above, "{choice:?} at 300 records");
        assert!((response.hits[0].score - 1.0).abs() < 1e-5, "a record's own vector finds it first");
        let stats = client.stats(pb::StatsRequest {}).await.expect("stats").into_inner();
        assert_eq!(stats.index, above);
        let forced = client.search(search(true)).await.expect("search").into_inner();
        assert_eq!((forced.index.as_str(), forced.candidates), ("exact", 300));
        assert_eq!(forced.hits[0].record_id, response.hits[0].record_id);
        server.stop().await;
    }
}

/// Searches run while enrolments link records into the graph: every search answers, from the
/// graph, with hits sorted and scored like the exact scan scores them.
#[test]
fn searches_run_alongside_enrolments() {
    let population = population(400, 71);
    let dirs = Dirs::new();
    let engine = open(&dirs, hnsw_config());
    let records = records(&population);
    engine.enroll(&records[..100], &[]).expect("enrol");
    let probes: Vec<Embedding> = (0..50).map(|i| embedding(population.probe(i))).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for chunk in records[100..].chunks(50) {
                engine.enroll(chunk, &[]).expect("enrol");
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                for probe in probes.iter().cycle().take(150) {
                    let result = engine.search(&Query::new(probe, K)).expect("search");
                    assert_eq!(result.index, "hnsw");
                    assert!(result.hits.windows(2).all(|w| w[0].score >= w[1].score), "hits sorted");
                    for hit in &result.hits {
                        let record = engine.get(hit.id).expect("a returned record exists");
                        assert!((record.embedding.similarity(probe) - hit.score).abs() < 1e-5);
                    }
                }
            });
        }
    });
    assert_eq!(engine.stats().expect("stats").record_count, records.len() as u64);
}
