//! Oubli's row of `make compare-deletion` (scripts/compare-deletion.py): a synthetic population
//! into a real store, one person erased through the real rights workflow (by their own templates
//! as probes, identity checked by the privacy desk), then both purges; the bytes to look for on
//! disk are written to a JSON file for the script's byte scan, the same scan as the other stores'.
//!
//! Oubli seals every template under its own data key, so a scan for the plaintext finds nothing
//! whatever happens. The honest question is whether the *stored* forms survive: before the
//! erasure, with the engine closed, the store's test hook [`Store::raw_rows`] reads each of the
//! person's records as RocksDB holds it (the sealed row and the wrapped data key), and a control
//! record of another person, which must still be found after the purges.
//!
//! ```sh
//! scripts/cargo run --release --example compare_deletion_oubli -- --population POP --dir DIR --out needles.json
//! ```
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use jiff::Timestamp;
use oubli::{
    embedding::Embedding,
    engine::{Engine, IndexChoice, IndexConfig, OpenOptions},
    record::{NewRecord, RecordId},
    rights::{
        PolicySource, Rights, Settings,
        auth::{Caller, Role},
        erasure::ErasureTarget,
        identity::Method,
        request::SystemClock,
    },
    store::Store,
    synth::files::{self, ProvenanceLine},
};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Erase one person from a real Oubli store and write the bytes to scan for (JSON)")]
struct Args {
    /// A population from `oubli synth generate`.
    #[arg(long)]
    population: PathBuf,
    /// Where to build the store (data/ and keys/; emptied first).
    #[arg(long)]
    dir: PathBuf,
    /// The JSON file to write.
    #[arg(long)]
    out: PathBuf,
    /// The identity to erase; by default the first whose photos score below the review
    /// threshold against everyone else's, so that the erasure matches exactly their records.
    #[arg(long)]
    person: Option<u32>,
}

/// The engine and rights workflow over `dir`, as the server opens them (HNSW index, so the graph
/// is persisted too).
fn open(dir: &Path) -> Result<(Arc<Engine>, Rights)> {
    let index = IndexConfig { choice: IndexChoice::Hnsw, ..IndexConfig::default() };
    let options = OpenOptions { index, ..OpenOptions::new(dir.join("data"), dir.join("keys")) };
    let engine = Arc::new(Engine::open(&options)?);
    let settings = Settings { policy: PolicySource::Profile("permissive".into()), ..Settings::default() };
    let rights = Rights::new(engine.clone(), settings, Arc::new(SystemClock))?;
    Ok((engine, rights))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The first identity whose every photo scores below `review` against every other person's.
fn pick_person(rows: &[&[f32]], labels: &[u32], review: f32) -> Option<u32> {
    let mut people: Vec<u32> = labels.to_vec();
    people.sort_unstable();
    people.dedup();
    people.into_iter().find(|&p| {
        let mine: Vec<&[f32]> = rows.iter().zip(labels).filter(|(_, l)| **l == p).map(|(r, _)| *r).collect();
        rows.iter().zip(labels).filter(|(_, l)| **l != p).all(|(other, _)| mine.iter().all(|m| dot(m, other) < review))
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let embeddings = files::read_matrix(&args.population.join(files::EMBEDDINGS_FILE))?;
    let labels = files::read_labels(&args.population.join(files::LABELS_FILE))?;
    let provenance: Vec<ProvenanceLine> = files::read_jsonl(&args.population.join(files::PROVENANCE_FILE))?;
    let dimension = embeddings.ncols();
    let rows: Vec<&[f32]> =
        embeddings.rows().into_iter().map(|r| r.to_slice().expect("a standard-layout row")).collect();
    ensure!(rows.len() == labels.len() && rows.len() == provenance.len(), "the population's files disagree in length");
    let review = Settings::default().thresholds.review;
    let person = match args.person {
        Some(p) => p,
        None => pick_person(&rows, &labels, review).context("no person is clear of the review band")?,
    };
    let samples: Vec<usize> = (0..rows.len()).filter(|&i| labels[i] == person).collect();
    let control = (0..rows.len()).find(|&i| labels[i] != person).context("a control record")?;
    ensure!(!samples.is_empty(), "person {person} has no samples");

    let _ = std::fs::remove_dir_all(&args.dir);
    let (engine, rights) = open(&args.dir)?;
    let operator = Caller { client: "compare-deletion".into(), roles: vec![Role::Operator] };
    let desk = Caller { client: "compare-deletion-desk".into(), roles: vec![Role::PrivacyDesk] };
    let now = Timestamp::now();
    let mut ids: Vec<RecordId> = Vec::with_capacity(rows.len());
    for chunk in (0..rows.len()).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|&i| {
                Ok(NewRecord {
                    embedding: Embedding::new(rows[i].to_vec(), dimension)?,
                    provenance: provenance[i].to_provenance(now)?,
                    idempotency_key: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        ids.extend(rights.enroll(&operator, batch)?.into_iter().map(|e| e.id));
    }
    eprintln!("oubli: {} records enrolled; erasing person {person} ({} records)", ids.len(), samples.len());
    drop(rights);
    drop(engine);

    // Test hook, with the engine closed: the rows as RocksDB stores them, before the erasure.
    let stored = |store: &Store, i: usize| -> Result<serde_json::Value> {
        let raw = store.raw_rows(ids[i])?;
        let (Some(sealed), Some(wrapped)) = (raw.sealed, raw.wrapped_key) else {
            bail!("record {} has no stored rows", ids[i]);
        };
        Ok(json!({
            "row": i,
            "record_id": ids[i].to_string(),
            "sealed": hex::encode(sealed),
            "wrapped_key": hex::encode(wrapped),
        }))
    };
    let (records, control_row) = {
        let store = Store::open(&args.dir.join("data"), &args.dir.join("keys"), None, None)?;
        let records = samples.iter().map(|&i| stored(&store, i)).collect::<Result<Vec<_>>>()?;
        (records, stored(&store, control)?)
    };

    // The erasure, as a person would ask it: their photos as probes, the desk checks an ID, the
    // worker's steps, phase 1 (data keys) at once and phase 2 (templates) without the window.
    let (engine, rights) = open(&args.dir)?;
    let probes = samples.iter().map(|&i| Embedding::new(rows[i].to_vec(), dimension)).collect::<Result<Vec<_>, _>>()?;
    let submitted =
        rights.submit_erasure(ErasureTarget::Probes(probes), "person@example.org".into(), None, false, None)?;
    rights.verify_identity(
        &desk,
        submitted.id,
        Method::IdDocument,
        "compare-deletion: identity taken as checked".into(),
    )?;
    rights.process(submitted.id)?;
    let after_process = rights.request(submitted.id, None, true)?;
    ensure!(
        after_process.matched == samples.len() && after_process.review_band.is_empty(),
        "the erasure matched {} record(s) and {} in the review band, not the person's {}",
        after_process.matched,
        after_process.review_band.len(),
        samples.len()
    );
    rights.purge_due(false).context("phase 1")?;
    rights.purge_due(true).context("phase 2")?;
    let view = rights.request(submitted.id, None, true)?;
    eprintln!("oubli: erasure {} ({})", view.state.name(), view.erasure_step.map_or("-", |s| s.name()));
    drop(rights);
    drop(engine);

    let out = json!({
        "person": person,
        "records": records,
        "control": control_row,
        "state": view.state.name(),
        "erasure_step": view.erasure_step.map(|s| s.name()),
        "matched": after_process.matched,
        "data_dir": args.dir.join("data"),
        "key_dir": args.dir.join("keys"),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&out)? + "\n")?;
    Ok(())
}
