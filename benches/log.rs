//! The transparency log's tree at 1M leaves: appends per second, proof generation and
//! verification, next to raw SHA-256 over the same entry size for the ratio. And what the log
//! costs an enrolment on disk: one record, and a batch of 100, enrolled through `Store::insert`
//! (a synced RocksDB write holding the record, its key and its leaf, then the log's mirror in the
//! key dir appended and synced).
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use oubli::transparency::{
    merkle::{self, LeafIndex, TreeSize},
    tree::Tree,
};
use oubli::{
    embedding::Embedding,
    record::{NewRecord, Provenance, RecordId},
    store::Store,
};
use sha2::{Digest, Sha256};

const LEAVES: u64 = 1 << 20;
/// About the size of a logged event: a version, a type, a time and a 32-byte commitment.
const ENTRY: usize = 64;

fn entry(n: u64) -> [u8; ENTRY] {
    let mut e = [0u8; ENTRY];
    e[..8].copy_from_slice(&n.to_be_bytes());
    e
}

fn log(c: &mut Criterion) {
    let mut tree = Tree::new();
    for n in 0..LEAVES {
        tree.append(&entry(n));
    }
    let size = tree.size();
    let root = tree.root(size).expect("size");

    let mut group = c.benchmark_group("log_1m");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sha256_of_one_entry", |b| b.iter(|| Sha256::digest(entry(7))));
    // Appends continue from 1M leaves (the tree grows by the iterations criterion runs).
    let mut growing = tree.clone();
    let mut next = LEAVES;
    group.bench_function("append", |b| {
        b.iter(|| {
            next += 1;
            growing.append(&entry(next))
        })
    });
    let mut n = 0u64;
    group.bench_function("inclusion_proof", |b| {
        b.iter(|| {
            n = (n * 7919 + 1) % size.0;
            tree.inclusion_proof(LeafIndex(n), size).expect("proof")
        })
    });
    let index = LeafIndex(123_457);
    let proof = tree.inclusion_proof(index, size).expect("proof");
    let leaf = tree.leaf_hash(index).expect("leaf");
    group.bench_function("verify_inclusion", |b| {
        b.iter(|| merkle::verify_inclusion(&leaf, index, size, &proof, &root).expect("verifies"))
    });
    let old = TreeSize(700_001);
    let old_root = tree.root(old).expect("size");
    group.bench_function("consistency_proof", |b| b.iter(|| tree.consistency_proof(old, size).expect("proof")));
    let proof = tree.consistency_proof(old, size).expect("proof");
    group.bench_function("verify_consistency", |b| {
        b.iter(|| merkle::verify_consistency(old, size, &old_root, &root, &proof).expect("consistent"))
    });
    group.finish();
}

fn record(n: u64) -> NewRecord {
    let mut values = vec![0.0f32; 512];
    values[(n % 512) as usize] = 1.0;
    values[((n + 1) % 512) as usize] = 0.5;
    NewRecord {
        embedding: Embedding::new(values, 512).expect("a valid template"),
        provenance: Provenance::scraped(format!("https://photos.example/{n}.jpg"), Timestamp::now()).expect("a URI"),
        idempotency_key: None,
    }
}

fn enrolment(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("data"), &dir.path().join("keys"), Some(512), None).expect("store");
    let one = record(1);
    let batch: Vec<NewRecord> = (0..100).map(record).collect();
    let mut group = c.benchmark_group("enrolment");
    group.sample_size(30);
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_one", |b| {
        b.iter(|| store.insert(&[(RecordId::random(), &one)], Timestamp::now(), &[]).expect("insert"))
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("insert_100", |b| {
        b.iter(|| {
            let pairs: Vec<(RecordId, &NewRecord)> = batch.iter().map(|r| (RecordId::random(), r)).collect();
            store.insert(&pairs, Timestamp::now(), &[]).expect("insert")
        })
    });
    group.finish();
}

criterion_group!(benches, log, enrolment);
criterion_main!(benches);
