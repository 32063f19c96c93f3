//! `oubli-bench`: measures Oubli's indexes on a generated population (`oubli synth generate`)
//! and prints one JSON run per line, in the schema `scripts/bench-peers.py` collects: the exact
//! scan (single probes, batches of probes; one thread and all cores) and HNSW (build time, then
//! an ef sweep). Recall is measured against a ground truth: the exact top 10 of each probe, read
//! from `--truth` (as computed by numpy in bench-peers) or computed here by the exact scan.
//!
//! `match_recall`: of the exact top-10 hits scoring at least `--threshold` (the FMR 1e-3
//! threshold), the share the index returns in its own top 10.
use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ndarray::Array2;
use oubli::{
    embedding::Embedding,
    index::{ExactIndex, HnswIndex, HnswParams, Index},
    kernel,
    record::RecordId,
    synth::files,
};
use serde_json::json;

const K: usize = 10;

#[derive(Parser, Debug)]
#[command(about = "Benchmark Oubli's exact and HNSW indexes on a synthetic population (JSON lines)")]
struct Args {
    /// A directory written by `oubli synth generate` (embeddings.npy, probes.npy).
    #[arg(required_unless_present = "bandwidth")]
    data: Option<PathBuf>,
    /// Only measure this machine's single-thread memory read bandwidth and print it.
    #[arg(long)]
    bandwidth: bool,
    /// Exact top-10 row numbers per probe (int64 .npy, probes × 10); computed here if absent.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Scores of those rows (float32 .npy, probes × 10).
    #[arg(long)]
    truth_scores: Option<PathBuf>,
    /// The operating threshold for match recall (FMR 1e-3 of the data).
    #[arg(long, required_unless_present = "bandwidth")]
    threshold: Option<f32>,
    /// Probes to use (the first ones of probes.npy).
    #[arg(long, default_value_t = 1000)]
    probes: usize,
    /// Threads for the multi-threaded runs (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// ef values to sweep.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,96,128,192,256,384")]
    ef: Vec<usize>,
    /// Probes per batch in the batched exact run.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Skip the exact-scan runs.
    #[arg(long)]
    skip_exact: bool,
    /// Skip the HNSW runs.
    #[arg(long)]
    skip_hnsw: bool,
    /// Also build HNSW on one thread (slow at 1M).
    #[arg(long)]
    single_thread_build: bool,
}

fn id(row: usize) -> RecordId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(row as u64).to_be_bytes());
    RecordId::from_bytes(bytes)
}

fn row_of(id: RecordId) -> usize {
    u64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8 bytes")) as usize
}

fn embeddings(matrix: &Array2<f32>) -> Result<Vec<Embedding>> {
    let d = matrix.ncols();
    matrix
        .rows()
        .into_iter()
        .enumerate()
        .map(|(i, r)| Embedding::new(r.to_vec(), d).with_context(|| format!("row {i}")))
        .collect()
}

fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Ground truth: per probe, the exact top 10 rows and their scores.
struct Truth {
    rows: Vec<Vec<usize>>,
    scores: Vec<Vec<f32>>,
}

impl Truth {
    /// recall@10 and match recall of `results` (rows per probe).
    fn recall(&self, results: &[Vec<usize>], threshold: f32) -> (f64, f64) {
        let (mut found, mut total, mut matched, mut matches) = (0usize, 0usize, 0usize, 0usize);
        for ((truth, scores), got) in self.rows.iter().zip(&self.scores).zip(results) {
            for (row, score) in truth.iter().zip(scores) {
                let hit = got.contains(row);
                total += 1;
                found += usize::from(hit);
                if *score >= threshold {
                    matches += 1;
                    matched += usize::from(hit);
                }
            }
        }
        let share = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        (share(found, total), share(matched, matches))
    }
}

/// Runs `search` over every probe on `threads` threads; returns rows per probe and q/s.
fn timed<F>(probes: &[Embedding], threads: usize, search: F) -> (Vec<Vec<usize>>, f64)
where
    F: Fn(&Embedding) -> Vec<usize> + Sync,
{
    let started = Instant::now();
    let mut results = vec![Vec::new(); probes.len()];
    let chunk = probes.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for (out, ps) in results.chunks_mut(chunk).zip(probes.chunks(chunk)) {
            let search = &search;
            s.spawn(move || {
                for (o, p) in out.iter_mut().zip(ps) {
                    *o = search(p);
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    (results, probes.len() as f64 / secs)
}

/// Single-thread memory read bandwidth in GB/s: the best of three passes of each of three
/// readers over 2 GiB (beyond the last-level cache of the servers this runs on): a plain sum
/// over one stream, the same over four streams at once, and the row-major dot-product kernel
/// over two buffers. None of them is the panel scan being measured against it.
fn bandwidth() -> f64 {
    const WORDS: usize = 256 << 20;
    let data: Vec<u64> = (0..WORDS as u64).collect();
    let gbps = |bytes: usize, started: Instant| bytes as f64 / started.elapsed().as_secs_f64() / 1e9;
    let mut best = 0f64;
    let mut sink = 0u64;
    let sum = |words: &[u64]| {
        let mut acc = [0u64; 8];
        for chunk in words.chunks_exact(8) {
            for (a, w) in acc.iter_mut().zip(chunk) {
                *a = a.wrapping_add(*w);
            }
        }
        acc.iter().fold(0u64, |s, a| s.wrapping_add(*a))
    };
    for _ in 0..3 {
        let started = Instant::now();
        sink = sink.wrapping_add(sum(&data));
        best = best.max(gbps(WORDS * 8, started));

        let started = Instant::now();
        let quarter = WORDS / 4;
        let streams: Vec<&[u64]> = data.chunks_exact(quarter).collect();
        let mut acc = [0u64; 4];
        for i in (0..quarter).step_by(8) {
            for (a, s) in acc.iter_mut().zip(&streams) {
                *a = a.wrapping_add(sum(&s[i..i + 8]));
            }
        }
        sink = sink.wrapping_add(acc.iter().sum::<u64>());
        best = best.max(gbps(WORDS * 8, started));
    }
    let (a, b) = (vec![1f32; WORDS], vec![0.5f32; WORDS]);
    let dot = kernel::select();
    let mut dots = 0f32;
    for _ in 0..3 {
        let started = Instant::now();
        dots += dot(&a, &b);
        best = best.max(gbps(WORDS * 8, started));
    }
    assert!(sink > 0 && dots > 0.0, "the readers ran");
    best
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.bandwidth {
        println!("{}", json!({ "mem_read_gbps": bandwidth() }));
        return Ok(());
    }
    let (Some(dir), Some(threshold)) = (&args.data, args.threshold) else {
        bail!("give a population directory and --threshold");
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores);
    // Each search is measured on one thread, then on `threads` when that is more.
    let mut thread_counts = vec![1, threads];
    thread_counts.dedup();
    let data = files::read_matrix(&dir.join(files::EMBEDDINGS_FILE))?;
    let mut probes = embeddings(&files::read_matrix(&dir.join(files::PROBES_FILE))?)?;
    probes.truncate(args.probes);
    let (n, d) = data.dim();
    if probes.is_empty() {
        bail!("no probes in {}", dir.display());
    }
    let rows: Vec<&[f32]> = data.rows().into_iter().map(|r| r.to_slice().expect("row-major .npy")).collect();
    let base_rss = rss_mb();

    let mut exact = ExactIndex::with_capacity(d, n);
    for (i, r) in rows.iter().enumerate() {
        exact.insert(id(i), &Embedding::new(r.to_vec(), d).with_context(|| format!("row {i}"))?);
    }
    let exact_rss = rss_mb().zip(base_rss).map(|(a, b)| a - b);

    let truth = match (&args.truth, &args.truth_scores) {
        (Some(t), Some(s)) => {
            let t: Array2<i64> = ndarray_npy::read_npy(t).with_context(|| format!("{}", t.display()))?;
            let s: Array2<f32> = ndarray_npy::read_npy(s).with_context(|| format!("{}", s.display()))?;
            Truth {
                rows: t.rows().into_iter().map(|r| r.iter().map(|&x| x as usize).collect()).collect(),
                scores: s.rows().into_iter().map(|r| r.to_vec()).collect(),
            }
        }
        (None, None) => {
            let hits = exact.search_batch(&probes, Some(K), None);
            Truth {
                rows: hits.iter().map(|h| h.iter().map(|h| row_of(h.id)).collect()).collect(),
                scores: hits.iter().map(|h| h.iter().map(|h| h.score).collect()).collect(),
            }
        }
        _ => bail!("give both --truth and --truth-scores, or neither"),
    };
    if truth.rows.len() != probes.len() {
        bail!("the truth has {} rows for {} probes", truth.rows.len(), probes.len());
    }
    let emit = |index: &str,
                threads: usize,
                params: serde_json::Value,
                build: Option<f64>,
                qps: f64,
                results: &[Vec<usize>],
                rss: Option<f64>| {
        let (r10, mr) = truth.recall(results, threshold);
        let run = json!({
            "system": "oubli", "index": index, "threads": threads, "n": n, "params": params,
            "build_s": build, "qps": qps, "recall_at_10": r10, "match_recall": mr, "rss_mb": rss,
        });
        println!("{run}");
    };

    if !args.skip_exact {
        for &t in &thread_counts {
            let (results, qps) = timed(&probes, t, |p| exact.search(p, K, None).iter().map(|h| row_of(h.id)).collect());
            emit("exact", t, json!({"mode": "single-probe"}), None, qps, &results, exact_rss);
        }
        // A mid-size batch, and every probe in one call (as numpy and faiss are given them).
        let mut batches = vec![args.batch.max(1), probes.len()];
        batches.dedup();
        // A batch's rows are split over the pool's threads.
        for &t in &thread_counts {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
            for &batch in &batches {
                let started = Instant::now();
                let mut results = Vec::with_capacity(probes.len());
                pool.install(|| {
                    for chunk in probes.chunks(batch) {
                        for hits in exact.search_batch(chunk, Some(K), None) {
                            results.push(hits.iter().map(|h| row_of(h.id)).collect());
                        }
                    }
                });
                let qps = probes.len() as f64 / started.elapsed().as_secs_f64();
                emit("exact", t, json!({"mode": "batched", "batch": batch}), None, qps, &results, exact_rss);
            }
        }
    }

    if !args.skip_hnsw {
        let items: Vec<(RecordId, &[f32])> = rows.iter().enumerate().map(|(i, r)| (id(i), *r)).collect();
        let mut builds = vec![threads];
        if args.single_thread_build && threads > 1 {
            builds.insert(0, 1);
        }
        for build_threads in builds {
            let params = HnswParams { m: args.m, ef_construction: args.ef_construction, ..Default::default() };
            let before = rss_mb();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(build_threads).build()?;
            let started = Instant::now();
            let mut hnsw = HnswIndex::new(d, params)?;
            pool.install(|| hnsw.insert_batch(&items));
            let build = started.elapsed().as_secs_f64();
            let rss = rss_mb().zip(before).map(|(a, b)| a - b);
            eprintln!(
                "hnsw built on {build_threads} thread(s) in {build:.1} s; {:.0} bytes per vector",
                hnsw.memory_bytes() as f64 / n as f64
            );
            for &ef in &args.ef {
                hnsw.set_ef_search(ef.max(K))?;
                for &t in &thread_counts {
                    let (results, qps) =
                        timed(&probes, t, |p| hnsw.search(p, K, None).iter().map(|h| row_of(h.id)).collect());
                    let params = json!({"m": args.m, "ef_construction": args.ef_construction, "ef": ef.max(K),
                        "build_threads": build_threads, "bytes_per_vector": hnsw.memory_bytes() / n.max(1)});
                    emit("hnsw", t, params, Some(build), qps, &results, rss);
                }
            }
        }
    }
    Ok(())
}
