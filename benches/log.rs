//! The transparency log's tree at 1M leaves: appends per second, proof generation and
//! verification, next to raw SHA-256 over the same entry size for the ratio.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oubli::transparency::{
    merkle::{self, LeafIndex, TreeSize},
    tree::Tree,
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

criterion_group!(benches, log);
criterion_main!(benches);
