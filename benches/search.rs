//! Exact search over 100,000 synthetic 512-d templates: one probe at a time, k = 10.
//! Reports queries per second; multiply by 100,000 × 2,048 bytes for the bandwidth used.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oubli::{
    embedding::Embedding,
    index::{ExactIndex, Index},
    record::RecordId,
    synth::{Population, PopulationConfig},
};

const RECORDS: usize = 100_000;
const DIMENSION: usize = 512;

fn exact_search(c: &mut Criterion) {
    // 50,000 synthetic people with two photos each; their held-out selfies are the probes.
    let config = PopulationConfig {
        seed: 5,
        identities: RECORDS / 2,
        samples_per_identity: 2,
        probes_per_identity: 1,
        ..Default::default()
    };
    let population = Population::generate(&config).expect("valid population");
    let mut index = ExactIndex::with_capacity(DIMENSION, RECORDS);
    for i in 0..population.len() {
        let v = Embedding::new(population.sample(i).to_vec(), DIMENSION).expect("unit vector");
        index.insert(RecordId::random(), &v);
    }
    let probes: Vec<Embedding> =
        (0..64).map(|i| Embedding::new(population.probe(i).to_vec(), DIMENSION).expect("unit vector")).collect();

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
