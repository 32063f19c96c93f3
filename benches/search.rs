//! Exact search over 100,000 synthetic 512-d templates: one probe at a time, k = 10.
//! Reports queries per second; multiply by 100,000 × 2,048 bytes for the bandwidth used.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oubli::{
    embedding::Embedding,
    index::{ExactIndex, Index},
    record::RecordId,
    synth::Synth,
};

const RECORDS: usize = 100_000;
const DIMENSION: usize = 512;

fn exact_search(c: &mut Criterion) {
    let mut synth = Synth::new(5, DIMENSION);
    let mut index = ExactIndex::with_capacity(DIMENSION, RECORDS);
    for _ in 0..RECORDS {
        let v = Embedding::new(synth.unit_vector(), DIMENSION).expect("unit vector");
        index.insert(RecordId::random(), &v);
    }
    let probes: Vec<Embedding> =
        (0..64).map(|_| Embedding::new(synth.unit_vector(), DIMENSION).expect("unit vector")).collect();

    let mut group = c.benchmark_group("exact_search_100k_512d");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    let mut n = 0;
    group.bench_function("k10", |b| {
        b.iter(|| {
            n = (n + 1) % probes.len();
            index.search(&probes[n], 10, None)
        })
    });
    group.finish();
}

criterion_group!(benches, exact_search);
criterion_main!(benches);
