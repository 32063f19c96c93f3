//! `oubli-erase-bench`: what an erasure costs as the store grows. Fills a fresh data dir with
//! `--records` random unit templates (exact index only: the HNSW unlink is measured by the
//! criterion `index` bench), then erases `--erasures` records one request at a time by probe,
//! as a person would, timing each step through the real rights workflow:
//! - `process`: matching (the exact scan of every record), plan (logged), the delete write,
//!   unindexing and the post-erasure check scan;
//! - `phase1`: the data-key purge (flush, forced compaction of `data_keys`, checks), logged;
//! - `phase2`: one batched templates purge for all of them (range compactions, checks), logged;
//! - `scan`: the byte scan that ends each purge (every file of the data dir read once), alone.
//!
//! Prints one JSON object. Used by `make bench-erase` (`BENCH_N=1000000` for the 1M run).
use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::{Context, Result};
use clap::Parser;
use jiff::Timestamp;
use oubli::{
    embedding::Embedding,
    engine::{Engine, IndexChoice, IndexConfig, OpenOptions},
    record::{NewRecord, Provenance},
    rights::{
        PolicySource, Rights, Settings,
        auth::{Caller, Role},
        erasure::ErasureTarget,
        identity::Method,
        request::SystemClock,
    },
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Measure erasure phase 1 and phase 2 on a store of a given size (JSON)")]
struct Args {
    /// Records in the store before the erasures.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Erasure requests (one record each).
    #[arg(long, default_value_t = 20)]
    erasures: usize,
    /// Where to build the store (emptied first).
    #[arg(long, default_value = "target/bench-erase")]
    dir: PathBuf,
    #[arg(long, default_value_t = 512)]
    dimension: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    let (data, keys) = (args.dir.join("data"), args.dir.join("keys"));
    let config = IndexConfig { choice: IndexChoice::Exact, ..IndexConfig::default() };
    let options = OpenOptions { dimension: Some(args.dimension), index: config, ..OpenOptions::new(data, keys) };
    let engine = Arc::new(Engine::open(&options)?);
    let settings = Settings { policy: PolicySource::Profile("permissive".into()), ..Settings::default() };
    let rights = Rights::new(engine.clone(), settings, Arc::new(SystemClock))?;
    let operator = Caller { client: "bench".into(), roles: vec![Role::Operator] };
    let desk = Caller { client: "bench-desk".into(), roles: vec![Role::PrivacyDesk] };

    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let now = Timestamp::now();
    let template = |rng: &mut ChaCha8Rng| -> Result<Embedding> {
        let values: Vec<f32> = (0..args.dimension).map(|_| rng.random::<f32>() - 0.5).collect();
        Ok(Embedding::new(values, args.dimension)?)
    };
    let started = Instant::now();
    let mut probes = Vec::new();
    let mut n = 0;
    while n < args.records {
        let batch: Vec<NewRecord> = (n..(n + 5000).min(args.records))
            .map(|i| {
                let embedding = template(&mut rng)?;
                if probes.len() < args.erasures && i % (args.records / args.erasures.max(1)).max(1) == 0 {
                    probes.push(embedding.clone());
                }
                let provenance = Provenance::scraped(format!("https://photos.example/{i}.jpg"), now)?;
                Ok(NewRecord { embedding, provenance, idempotency_key: None })
            })
            .collect::<Result<_>>()?;
        n += batch.len();
        rights.enroll(&operator, batch)?;
    }
    let enrol_s = started.elapsed().as_secs_f64();
    eprintln!("{} records enrolled in {enrol_s:.1} s", args.records);

    let (mut process_ms, mut phase1_ms) = (Vec::new(), Vec::new());
    for probe in probes {
        let submitted =
            rights.submit_erasure(ErasureTarget::Probes(vec![probe]), "bench@example.org".into(), None, false, None)?;
        rights.verify_identity(
            &desk,
            submitted.id,
            Method::IdDocument,
            "benchmark: identity taken as checked".into(),
        )?;
        let t = Instant::now();
        rights.process(submitted.id)?;
        process_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        rights.purge_due(false).context("phase 1")?;
        phase1_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let t = Instant::now();
    rights.purge_due(true).context("phase 2")?;
    let phase2_ms = t.elapsed().as_secs_f64() * 1e3;
    // The byte scan alone, as each purge ends with it (here for one fingerprint).
    let t = Instant::now();
    let prints = oubli::store::scan::Prints { values: 1, prints: vec![0x5eed] };
    let scan = engine.records().scan_data_dir(&prints)?;
    let scan_ms = t.elapsed().as_secs_f64() * 1e3;
    let stats = engine.stats()?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let erasures = process_ms.len();
    println!(
        "{}",
        json!({
            "records": args.records,
            "erasures": erasures,
            "enrol_s": enrol_s,
            "process_ms_median": median(&mut process_ms),
            "phase1_ms_median": median(&mut phase1_ms),
            "phase1_ms_max": phase1_ms.last(),
            "phase2_ms_batch": phase2_ms,
            "phase2_ms_per_erasure": phase2_ms / erasures.max(1) as f64,
            "scan_ms": scan_ms,
            "scan_files": scan.files,
            "scan_bytes": scan.bytes,
            "scan_gb_per_s": scan.bytes as f64 / 1e6 / scan_ms.max(1e-9),
            "bytes_on_disk": stats.bytes_on_disk,
            "sst_files": stats.sst_file_count,
        })
    );
    Ok(())
}
