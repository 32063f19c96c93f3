//! `oubli load --bench`: one operation's throughput and latency, against Oubli (gRPC) or a
//! Chroma server (its HTTP API, `--chroma URL --collection ID`), measured by the same client.
//!
//! Requests are built before the clock starts; each client is a closed loop of calls on its own
//! connection and keeps its latencies in its own vector; a warm-up, then calls per second and
//! nearest-rank percentiles over the measured seconds. No shared ledger, no consistency check.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use oubli::grpc::{
    AuthChannel,
    pb::{self, templates_service_client::TemplatesServiceClient},
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{
    Args, Op,
    chroma::{ChromaConn, ChromaTarget, chroma_add_body, chroma_hits, chroma_query_body},
    ms, parse_mix, start_embedded, unit,
};

/// The provenance every benchmark enrolment carries (what the lawful policy admits), and the
/// same fields as a Chroma record's metadata.
fn bench_provenance(source_uri: String) -> pb::Provenance {
    pb::Provenance {
        source_uri,
        collected_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
        source_kind: pb::SourceKind::ConsentedEnrolment.into(),
        legal_basis: pb::LegalBasis::Consent.into(),
        jurisdiction: "FR".into(),
    }
}

fn bench_metadata(source_uri: &str) -> serde_json::Value {
    serde_json::json!({
        "source_uri": source_uri,
        "collected_at": "2023-11-14T22:13:20Z",
        "source_kind": "consented_enrolment",
        "legal_basis": "consent",
        "jurisdiction": "FR",
    })
}

/// One client's connection, to the system measured.
enum Conn {
    Oubli(TemplatesServiceClient<AuthChannel>),
    Chroma(ChromaConn),
}

/// How one call ended.
enum Outcome {
    Ok,
    /// Oubli's RESOURCE_EXHAUSTED, Chroma's 429: the server's limits, reported apart.
    Throttled,
    Failed(String),
}

/// What every client shares, built before the clock starts.
struct Plan {
    op: Op,
    k: u32,
    /// Oubli: one search request per probe.
    searches: Vec<pb::SearchRequest>,
    /// Chroma: one query body per probe.
    queries: Vec<hyper::body::Bytes>,
    /// This run's id, in every source (Oubli) or id (Chroma) it enrols.
    run: String,
    dimension: usize,
}

/// What one client measured: the latencies of its calls that ended inside the measured window
/// (after the warm-up, by the deadline), and how many of those were throttled or failed.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    throttled: usize,
    errors: usize,
    samples: Vec<String>,
}

impl Conn {
    /// Call number `i` of client `c`: probe `i` (in turn) for a search, a fresh record for an
    /// enrolment.
    async fn call(&mut self, plan: &Plan, c: usize, i: usize, rng: &mut ChaCha8Rng) -> Outcome {
        match (self, plan.op) {
            (Conn::Oubli(client), Op::Search) => {
                let request = plan.searches[i % plan.searches.len()].clone();
                status_outcome(client.search(request).await.map(drop))
            }
            (Conn::Oubli(client), _) => {
                let request = pb::EnrollRequest {
                    embedding: Some(pb::Embedding { values: unit(rng, plan.dimension) }),
                    provenance: Some(bench_provenance(format!("https://bench.example/{}/{c}/{i}.jpg", plan.run))),
                    idempotency_key: String::new(),
                };
                status_outcome(client.enroll(request).await.map(drop))
            }
            (Conn::Chroma(conn), op) => {
                let target = conn.target.clone();
                let (path, body) = if op == Op::Search {
                    (target.query_path.as_str(), plan.queries[i % plan.queries.len()].clone())
                } else {
                    let source = format!("https://bench.example/{}/{c}/{i}.jpg", plan.run);
                    let body = chroma_add_body(
                        &format!("bench-{}-{c}-{i}", plan.run),
                        &unit(rng, plan.dimension),
                        &bench_metadata(&source),
                    );
                    (target.add_path.as_str(), hyper::body::Bytes::from(body))
                };
                match conn.post(path, body).await {
                    Ok((200..=299, _)) => Outcome::Ok,
                    Ok((429, _)) => Outcome::Throttled,
                    Ok((status, body)) => Outcome::Failed(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    )),
                    Err(e) => Outcome::Failed(format!("{e:#}")),
                }
            }
        }
    }

    /// Searches probe `row` once and returns its hits as one JSON line.
    async fn hits(&mut self, plan: &Plan, row: usize) -> Result<serde_json::Value> {
        match self {
            Conn::Oubli(client) => {
                let answer = client.search(plan.searches[row].clone()).await.map_err(crate::status_error)?.into_inner();
                let ids: Vec<&str> = answer.hits.iter().map(|h| h.record_id.as_str()).collect();
                let scores: Vec<f32> = answer.hits.iter().map(|h| h.score).collect();
                Ok(serde_json::json!({ "row": row, "ids": ids, "scores": scores }))
            }
            Conn::Chroma(conn) => {
                let target = conn.target.clone();
                let (status, body) = conn.post(&target.query_path, plan.queries[row].clone()).await?;
                if status != 200 {
                    bail!("Chroma answered HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
                }
                let (ids, distances) = chroma_hits(&body)?;
                Ok(serde_json::json!({ "row": row, "ids": ids, "distances": distances }))
            }
        }
    }
}

fn status_outcome(result: Result<(), tonic::Status>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(e) if e.code() == tonic::Code::ResourceExhausted => Outcome::Throttled,
        Err(e) => Outcome::Failed(format!("{:?}: {}", e.code(), e.message())),
    }
}

/// The one operation a --bench mix names.
fn bench_op(mix: &[(Op, u32)]) -> Result<Op> {
    let ops: Vec<Op> = mix.iter().filter(|(_, w)| *w > 0).map(|(op, _)| *op).collect();
    match ops.as_slice() {
        [op @ (Op::Search | Op::Enroll)] => Ok(*op),
        _ => bail!("--bench measures one operation: give --mix search:1 or --mix enroll:1"),
    }
}

/// The percentile `p` (0 to 1) of sorted latencies, in milliseconds (nearest rank).
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    ms(&sorted[rank - 1])
}

pub(super) async fn run(args: Args, server: &str, json: bool) -> Result<()> {
    let op = bench_op(&parse_mix(&args.mix)?)?;
    if args.warmup > 600 {
        bail!("use 0 to 600 seconds of warm-up");
    }
    if args.chroma.is_some() && args.embedded {
        bail!("--chroma and --embedded go to different servers: give one");
    }
    if args.results.is_some() && op != Op::Search {
        bail!("--results writes search hits: use it with --mix search:1");
    }
    if !(1..=1000).contains(&args.k) {
        bail!("-k is {}; use 1 to 1000", args.k);
    }
    let probes: Vec<Vec<f32>> = match &args.probes {
        Some(path) => {
            let m = oubli::synth::files::read_matrix(path)?;
            if m.ncols() != args.dimension || m.nrows() == 0 {
                bail!(
                    "{} holds {} probes of {} numbers; the server takes {}",
                    path.display(),
                    m.nrows(),
                    m.ncols(),
                    args.dimension
                );
            }
            m.rows().into_iter().map(|r| r.to_vec()).collect()
        }
        None => {
            let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
            (0..1000).map(|_| unit(&mut rng, args.dimension)).collect()
        }
    };
    let run = {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).context("no randomness for the run's id")?;
        hex::encode(nonce)
    };
    let chroma = match (&args.chroma, &args.collection) {
        (Some(url), Some(collection)) => Some(Arc::new(ChromaTarget::new(url, collection)?)),
        _ => None,
    };
    let plan = Arc::new(Plan {
        op,
        k: args.k,
        searches: if chroma.is_none() {
            probes
                .iter()
                .map(|p| pb::SearchRequest {
                    probe: Some(pb::Embedding { values: p.clone() }),
                    k: args.k,
                    min_score: None,
                    exact: false,
                })
                .collect()
        } else {
            Vec::new()
        },
        queries: if chroma.is_some() {
            probes.iter().map(|p| hyper::body::Bytes::from(chroma_query_body(p, args.k))).collect()
        } else {
            Vec::new()
        },
        run,
        dimension: args.dimension,
    });
    drop(probes);
    let (embedded, _tmp) = if args.embedded {
        let (server, token, tmp) = start_embedded(args.dimension).await?;
        (Some((server, token)), Some(tmp))
    } else {
        (None, None)
    };
    let address = embedded.as_ref().map_or_else(|| server.to_string(), |(s, _)| s.addr.to_string());
    let mut conns = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        conns.push(match &chroma {
            Some(target) => Conn::Chroma(ChromaConn::connect(target.clone()).await?),
            None => Conn::Oubli(TemplatesServiceClient::new(match &embedded {
                Some((_, token)) => crate::channel_with(&address, Some(token)).await?,
                None => crate::channel(&address).await?,
            })),
        });
    }
    let system = if chroma.is_some() { "chroma" } else { "oubli" };
    let target = args.chroma.clone().unwrap_or_else(|| address.clone());

    if let Some(path) = &args.results {
        // Every probe once, shared among the clients; the hits in row order.
        let rows = plan.searches.len().max(plan.queries.len());
        let mut tasks = Vec::new();
        for (c, mut conn) in conns.into_iter().enumerate() {
            let (plan, clients) = (plan.clone(), args.clients);
            tasks.push(tokio::spawn(async move {
                let mut lines = Vec::new();
                for row in (c..rows).step_by(clients) {
                    lines.push((row, conn.hits(&plan, row).await?));
                }
                Ok::<_, anyhow::Error>((conn, lines))
            }));
        }
        let (mut lines, mut back) = (Vec::with_capacity(rows), Vec::new());
        for t in tasks {
            let (conn, l) = t.await??;
            back.push(conn);
            lines.extend(l);
        }
        conns = back;
        lines.sort_by_key(|(row, _)| *row);
        let mut text = String::new();
        for (_, line) in lines {
            text.push_str(&line.to_string());
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("hits of {rows} probes: {}", path.display());
    }

    eprintln!(
        "{}: {} clients, {} s warm-up + {} s on {system} at {target}",
        op.name(),
        args.clients,
        args.warmup,
        args.duration
    );
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup);
    let deadline = measure_from + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let plan = plan.clone();
        let seed = args.seed.wrapping_mul(1000).wrapping_add(c as u64);
        // Clients start at different probes, so concurrent calls differ.
        let first = c * plan.searches.len().max(plan.queries.len()).max(1) / args.clients;
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut tally = Tally { latencies: Vec::with_capacity(1 << 16), ..Tally::default() };
            let mut i = first;
            loop {
                let begun = Instant::now();
                if begun >= deadline {
                    break;
                }
                let outcome = conn.call(&plan, c, i, &mut rng).await;
                let ended = Instant::now();
                i += 1;
                // Calls that end in the window count (so none is lost at its edges, and the
                // calls per second are completions per second); no call starts after it.
                if ended < measure_from || ended > deadline {
                    continue;
                }
                match outcome {
                    Outcome::Ok => tally.latencies.push(ended - begun),
                    Outcome::Throttled => tally.throttled += 1,
                    Outcome::Failed(e) => {
                        tally.errors += 1;
                        if tally.samples.len() < 3 {
                            tally.samples.push(e);
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let tally = t.await?;
        all.latencies.extend(tally.latencies);
        all.throttled += tally.throttled;
        all.errors += tally.errors;
        all.samples.extend(tally.samples.into_iter().take(3usize.saturating_sub(all.samples.len())));
    }
    all.latencies.sort_unstable();
    let calls = all.latencies.len();
    let wall = args.duration as f64;
    let mean = if calls == 0 { 0.0 } else { all.latencies.iter().map(ms).sum::<f64>() / calls as f64 };
    let (p50, p99, p999) =
        (percentile_ms(&all.latencies, 0.5), percentile_ms(&all.latencies, 0.99), percentile_ms(&all.latencies, 0.999));
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "system": system,
                "op": op.name(),
                "clients": args.clients,
                "k": plan.k,
                "warmup_s": args.warmup,
                "duration_s": args.duration,
                "calls": calls,
                "calls_per_s": calls as f64 / wall,
                "mean_ms": mean,
                "p50_ms": p50,
                "p99_ms": p99,
                "p999_ms": p999,
                "throttled": all.throttled,
                "errors": all.errors,
                "error_samples": all.samples,
            })
        );
    } else {
        outln!(
            "{:<8} {:<7} {:>7} {:>8} {:>9} {:>10} {:>10} {:>10} {:>9} {:>7}",
            "system",
            "op",
            "clients",
            "count",
            "per s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "throttled",
            "errors"
        );
        outln!(
            "{:<8} {:<7} {:>7} {:>8} {:>9.1} {:>10.2} {:>10.2} {:>10.2} {:>9} {:>7}",
            system,
            op.name(),
            args.clients,
            calls,
            calls as f64 / wall,
            p50,
            p99,
            p999,
            all.throttled,
            all.errors
        );
        for e in &all.samples {
            eprintln!("  error: {e}");
        }
    }
    if let Some((server, _)) = embedded {
        server.stop().await?;
    }
    if all.errors > 0 {
        bail!("{} calls failed", all.errors);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroma_bodies_are_what_its_api_takes() {
        let query: serde_json::Value = serde_json::from_slice(&chroma_query_body(&[0.5, -0.25], 10)).unwrap();
        assert_eq!(
            query,
            serde_json::json!({"query_embeddings": [[0.5, -0.25]], "n_results": 10, "include": ["metadatas", "distances"]})
        );
        let add: serde_json::Value =
            serde_json::from_slice(&chroma_add_body("r1", &[1.0, -2.0], &bench_metadata("https://x.example/1.jpg")))
                .unwrap();
        // base64 of the little-endian float32 bytes, as chromadb's pack_embedding_safely sends it.
        assert_eq!(add["embeddings"], serde_json::json!(["AACAPwAAAMA="]));
        assert_eq!(add["ids"], serde_json::json!(["r1"]));
        assert_eq!(add["metadatas"][0]["jurisdiction"], "FR");
    }

    #[test]
    fn chroma_answers_are_read_in_order() {
        let body = br#"{"ids": [["7", "3"]], "distances": [[0.25, 0.5]], "metadatas": [[null, null]], "include": ["metadatas", "distances"]}"#;
        let (ids, distances) = chroma_hits(body).unwrap();
        assert_eq!(ids, ["7", "3"]);
        assert_eq!(distances, [0.25, 0.5]);
        assert!(chroma_hits(br#"{"ids": [["7"]], "distances": [[]], "include": []}"#).is_err());
        assert!(ChromaTarget::new("https://h:1", "c").is_err());
        let t = ChromaTarget::new("http://127.0.0.1:8000", "0b7c-11").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.query_path.as_str()),
            ("127.0.0.1:8000", "/api/v2/tenants/default_tenant/databases/default_database/collections/0b7c-11/query")
        );
    }

    #[test]
    fn a_bench_measures_one_operation_and_percentiles_are_nearest_rank() {
        assert_eq!(bench_op(&parse_mix("search:1").unwrap()).unwrap(), Op::Search);
        assert_eq!(bench_op(&parse_mix("enroll:3,search:0").unwrap()).unwrap(), Op::Enroll);
        assert!(bench_op(&parse_mix("enroll:1,search:1").unwrap()).is_err());
        assert!(bench_op(&parse_mix("erase:1").unwrap()).is_err());
        let l: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!((percentile_ms(&l, 0.5), percentile_ms(&l, 0.99), percentile_ms(&[], 0.5)), (50.0, 99.0, 0.0));
    }
}
