//! The synthetic population: determinism, calibration against published matcher figures, the
//! look-alike tail, files numpy can read, and search behaviour that agrees with the statistics.
use oubli::{
    grpc::pb,
    synth::{Population, PopulationConfig, files, stats::Scores},
};

use crate::harness::{Dirs, Server, requests, stream_of};

fn config(seed: u64, identities: usize, samples: usize) -> PopulationConfig {
    PopulationConfig { seed, identities, samples_per_identity: samples, probes_per_identity: 1, ..Default::default() }
}

#[test]
fn the_same_seed_writes_identical_files() {
    let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    for dir in [a.path(), b.path()] {
        files::write(&Population::generate(&config(11, 200, 3)).expect("population"), dir).expect("write");
    }
    let mut names: Vec<_> = std::fs::read_dir(a.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    for name in names {
        let (x, y) =
            (std::fs::read(a.path().join(&name)).expect("read"), std::fs::read(b.path().join(&name)).expect("read"));
        assert_eq!(x, y, "{name:?} differs between two runs with the same seed");
    }
}

/// The same bytes on every machine: a digest of a small population, computed once and fixed
/// here. A change to the generator that alters any bit fails this test.
#[test]
fn a_seed_gives_the_same_bytes_everywhere() {
    use sha2::{Digest, Sha256};
    let population = Population::generate(&config(2021, 50, 3)).expect("population");
    let mut h = Sha256::new();
    for v in population.samples.iter().chain(&population.probes) {
        h.update(v.to_le_bytes());
    }
    for p in &population.provenance {
        h.update(serde_json::to_vec(&files::ProvenanceLine::from(p)).expect("json"));
    }
    assert_eq!(hex::encode(h.finalize()), GOLDEN);
}

const GOLDEN: &str = "8c092fca123d180815b1d15fbce227fb731924517ea0c94aa2f5c78e13549e38";

/// The defaults reproduce published ArcFace-class figures (genuine ≈ 0.70, impostor ≈ 0).
#[test]
fn default_scores_match_a_modern_face_matcher() {
    let population = Population::generate(&config(1, 10_000, 5)).expect("population");
    let scores = Scores::of_population(&population, 1, 1_000_000, 12_000_000).expect("scores");
    let s = scores.summary();
    let within = |what: &str, v: f64, lo: f64, hi: f64| {
        assert!((lo..=hi).contains(&v), "{what} = {v:.4}, expected {lo} to {hi}")
    };
    within("genuine mean", s.genuine.mean, 0.65, 0.75);
    within("genuine std", s.genuine.std, 0.08, 0.12);
    within("impostor mean", s.impostor.mean, -0.01, 0.01);
    within("impostor std", s.impostor.std, 0.065, 0.085);
    let point = |fmr: f64| *s.operating_points.iter().find(|p| p.fmr == fmr).expect("reported rate");
    within("threshold at FMR 1e-2", f64::from(point(1e-2).threshold.expect("measured")), 0.15, 0.21);
    within("threshold at FMR 1e-3", f64::from(point(1e-3).threshold.expect("measured")), 0.22, 0.28);
    within("FNMR at FMR 1e-4", point(1e-4).fnmr.expect("measured"), 0.02, 0.08);
    within("FNMR at FMR 1e-6", point(1e-6).fnmr.expect("measured"), 0.08, 0.20);
}

/// Twins and siblings make the impostor tail heavier than a Gaussian's.
#[test]
fn look_alikes_raise_the_strict_threshold() {
    let with = Population::generate(&config(3, 1000, 5)).expect("population");
    let mut plain = config(3, 1000, 5);
    plain.model.lookalike_share = 0.0;
    let without = Population::generate(&plain).expect("population");
    let t = |p: &Population| {
        Scores::of_population(p, 2, 1000, 5_000_000).expect("scores").threshold_at(1e-4).expect("measured")
    };
    let (t_with, t_without) = (t(&with), t(&without));
    assert!(t_with > t_without + 0.02, "threshold at FMR 1e-4: {t_with} with look-alikes, {t_without} without");
}

#[test]
fn npy_files_follow_the_format_numpy_reads() {
    let dir = tempfile::tempdir().expect("tmp");
    files::write(&Population::generate(&config(5, 7, 3)).expect("population"), dir.path()).expect("write");
    let bytes = std::fs::read(dir.path().join(files::EMBEDDINGS_FILE)).expect("read");
    // NPY 1.0: magic, version, little-endian header length, a dict padded to a multiple of 64.
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("ASCII header");
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    assert!(header.contains("'shape': (21, 512)"), "{header}");
    assert_eq!(bytes.len(), 10 + header_len + 21 * 512 * 4);

    // And numpy itself, where it is installed.
    let has_numpy =
        std::process::Command::new("python3").args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success());
    if has_numpy {
        let script = "import numpy, sys; d = sys.argv[1]; e = numpy.load(d + '/embeddings.npy'); l = numpy.load(d + '/labels.npy'); \
                      assert e.shape == (21, 512) and e.dtype == numpy.float32, (e.shape, e.dtype); \
                      assert l.shape == (21,) and l.dtype == numpy.uint32; \
                      assert abs(float((e * e).sum(axis=1).mean()) - 1.0) < 1e-5; print('ok')";
        let out = std::process::Command::new("python3").args(["-c", script]).arg(dir.path()).output().expect("python3");
        assert!(out.status.success(), "numpy: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Over real gRPC with 10,000 enrolled records: each selfie finds its own person first, and the
/// share of that person's records missed at the FMR 1e-4 threshold is the FNMR the statistics
/// report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_find_their_identity_as_the_statistics_predict() {
    let population = Population::generate(&config(21, 2000, 5)).expect("population");
    let scores = Scores::of_population(&population, 3, 1_000_000, 4_000_000).expect("scores");
    let threshold = scores.threshold_at(1e-4).expect("measured");
    let fnmr = scores.fnmr(threshold);

    let server = Server::start(Dirs::new()).await;
    let mut client = server.client().await;
    let (enrol, _) = requests(&population);
    let mut ids = Vec::new();
    for chunk in enrol.chunks(5000) {
        let response = client.enroll_stream(stream_of(chunk.to_vec())).await.expect("enrol").into_inner();
        ids.extend(response.record_ids);
    }
    let label_of: std::collections::HashMap<&str, u32> =
        ids.iter().map(String::as_str).zip(population.labels.iter().copied()).collect();

    let (mut first_right, mut own_found, mut own_total) = (0usize, 0usize, 0usize);
    for p in 0..population.probe_count() {
        let who = population.probe_labels[p];
        let probe = pb::Embedding { values: population.probe(p).to_vec() };
        let hits = client
            .search(pb::SearchRequest { probe: Some(probe), k: 20, min_score: Some(threshold), exact: false })
            .await
            .expect("search")
            .into_inner()
            .hits;
        first_right += usize::from(hits.first().is_some_and(|h| label_of[h.record_id.as_str()] == who));
        own_found += hits.iter().filter(|h| label_of[h.record_id.as_str()] == who).count();
        own_total += population.labels.iter().filter(|&&l| l == who).count();
    }
    let probes = population.probe_count() as f64;
    let miss = 1.0 - own_found as f64 / own_total as f64;
    eprintln!(
        "selfies: {first_right} of {probes} first right; miss rate {miss:.4} vs FNMR {fnmr:.4} at threshold {threshold:.3}"
    );
    assert!(first_right as f64 / probes > 0.95, "only {first_right} of {probes} selfies found their own person first");
    assert!((miss - fnmr).abs() < 0.015, "miss rate {miss:.4} at threshold {threshold:.3}, stats say FNMR {fnmr:.4}");
    server.stop().await;
}
