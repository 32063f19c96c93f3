//! The fuzz targets' checks (fuzz/src/lib.rs), replayed over the committed corpus and the seeds,
//! so every case the fuzzer found stays a regression test. `OUBLI_WRITE_FUZZ_SEEDS=1` writes the
//! seeds into fuzz/corpus/ (make fuzz-seeds).
#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

fn check(target: &str) -> fn(&[u8]) {
    match target {
        "request" => checks::request,
        "note" => checks::note,
        "receipt" => checks::receipt,
        "proof" => checks::proof,
        other => panic!("no fuzz target {other}"),
    }
}

#[test]
fn seeds_pass_and_are_committed() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var_os("OUBLI_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in checks::seeds() {
        check(target)(&bytes);
        let path = corpus.join(target).join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            assert_eq!(std::fs::read(&path).ok(), Some(bytes), "{} is stale: make fuzz-seeds", path.display());
        }
    }
}

#[test]
fn committed_corpus_replays() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for target in ["request", "note", "receipt", "proof"] {
        let dir = corpus.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no corpus", dir.display());
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            let result = std::panic::catch_unwind(|| check(target)(&bytes));
            assert!(result.is_ok(), "{} fails its check", file.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 4);
}
