//! The index's building blocks on synthetic 512-d templates: the dot-product kernels, HNSW
//! insert, search and delete (with its repair) on a 20,000-template graph, and the batched
//! exact scan. `make bench-peers` compares whole indexes with other libraries; this measures
//! the pieces.
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use oubli::{
    embedding::Embedding,
    index::{ExactIndex, HnswIndex, HnswParams, Index},
    kernel,
    record::RecordId,
    synth::{Population, PopulationConfig},
};

const RECORDS: usize = 20_000;
const DIMENSION: usize = 512;

fn population() -> Population {
    let config = PopulationConfig {
        seed: 7,
        identities: RECORDS / 2,
        samples_per_identity: 2,
        probes_per_identity: 1,
        ..Default::default()
    };
    Population::generate(&config).expect("valid population")
}

fn kernels(c: &mut Criterion) {
    let population = population();
    let (a, rows) = (
        population.sample(0),
        [population.sample(1), population.sample(2), population.sample(3), population.sample(4)],
    );
    let dot = kernel::select();
    let mut group = c.benchmark_group("kernel_512d");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dot", |b| b.iter(|| dot(std::hint::black_box(a), std::hint::black_box(rows[0]))));
    group.bench_function("dot_portable", |b| {
        b.iter(|| kernel::dot_portable(std::hint::black_box(a), std::hint::black_box(rows[0])))
    });
    // Four panels of 16 rows as the exact index stores them (element-major): population samples.
    let mut panels = vec![0f32; 4 * kernel::PANEL * DIMENSION];
    for (r, row) in (0..4 * kernel::PANEL).map(|r| population.sample(r)).enumerate() {
        let panel = &mut panels[r / kernel::PANEL * kernel::PANEL * DIMENSION..];
        for (k, &x) in row.iter().enumerate() {
            panel[k * kernel::PANEL + r % kernel::PANEL] = x;
        }
    }
    let mut out = [0f32; 4 * kernel::PANEL];
    let scan = kernel::select_panels();
    group.throughput(Throughput::Elements(4 * kernel::PANEL as u64));
    group.bench_function("panels_4x16", |b| {
        b.iter(|| scan(std::hint::black_box(a), std::hint::black_box(&panels), &mut out))
    });
    let block = kernel::select_block();
    let mut packed = vec![0f32; DIMENSION * kernel::BLOCK_PROBES];
    kernel::pack_probes(&[a; kernel::BLOCK_PROBES], DIMENSION, &mut packed);
    let mut scores = [[0f32; kernel::BLOCK_ROWS]; kernel::BLOCK_PROBES];
    group.throughput(Throughput::Elements((kernel::BLOCK_ROWS * kernel::BLOCK_PROBES) as u64));
    group.bench_function("block_8x48", |b| {
        b.iter(|| {
            block(
                std::hint::black_box(&packed),
                std::hint::black_box(&panels[..DIMENSION * kernel::BLOCK_ROWS]),
                &mut scores,
            )
        })
    });
    group.finish();
}

fn hnsw(c: &mut Criterion) {
    let population = population();
    let ids: Vec<RecordId> = (0..population.len()).map(|_| RecordId::random()).collect();
    let items: Vec<(RecordId, &[f32])> = ids.iter().enumerate().map(|(i, id)| (*id, population.sample(i))).collect();
    let mut index = HnswIndex::new(DIMENSION, HnswParams::default()).expect("default parameters");
    index.insert_batch(&items);
    let probes: Vec<Embedding> =
        (0..256).map(|i| Embedding::new(population.probe(i).to_vec(), DIMENSION).expect("unit vector")).collect();
    let samples: Vec<Embedding> =
        (0..256).map(|i| Embedding::new(population.sample(i).to_vec(), DIMENSION).expect("unit vector")).collect();

    let mut group = c.benchmark_group("hnsw_20k_512d");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    let mut n = 0;
    group.bench_function("search_k10_default_ef", |b| {
        b.iter(|| {
            n = (n + 1) % probes.len();
            index.search(&probes[n], 10, None)
        })
    });
    // Remove a record (unlink, repair its in-neighbours, zero its slot), then put it back: the
    // pair keeps the graph's size steady across iterations.
    let mut n = 0;
    group.bench_function("remove_then_insert", |b| {
        b.iter_batched(
            || {
                n = (n + 1) % samples.len();
                n
            },
            |i| {
                index.remove(ids[i]);
                index.insert(ids[i], &samples[i]);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("hnsw_build_512d");
    group.sample_size(10);
    group.throughput(Throughput::Elements(2000));
    group.bench_function("insert_batch_parallel", |b| {
        b.iter(|| {
            let mut index = HnswIndex::new(DIMENSION, HnswParams::default()).expect("default parameters");
            index.insert_batch(&items[..2000]);
            index
        })
    });
    group.throughput(Throughput::Elements(256));
    group.bench_function("insert_one_by_one", |b| {
        b.iter(|| {
            let mut index = HnswIndex::new(DIMENSION, HnswParams::default()).expect("default parameters");
            for (id, e) in ids.iter().zip(&samples).take(256) {
                index.insert(*id, e);
            }
            index
        })
    });
    group.finish();
}

fn exact_batch(c: &mut Criterion) {
    let population = population();
    let mut index = ExactIndex::with_capacity(DIMENSION, RECORDS);
    for i in 0..population.len() {
        index.insert(RecordId::random(), &Embedding::new(population.sample(i).to_vec(), DIMENSION).expect("unit"));
    }
    let probes: Vec<Embedding> =
        (0..16).map(|i| Embedding::new(population.probe(i).to_vec(), DIMENSION).expect("unit vector")).collect();
    let mut group = c.benchmark_group("exact_20k_512d");
    group.sample_size(20);
    group.throughput(Throughput::Elements(16));
    group.bench_function("16_probes_one_by_one", |b| {
        b.iter(|| probes.iter().map(|p| index.search(p, 10, None)).collect::<Vec<_>>())
    });
    group.bench_function("16_probes_batched", |b| b.iter(|| index.search_batch(&probes, Some(10), None)));
    group.finish();

    // The server's micro-batch: up to 64 concurrent searches in one pass over 10,000 records.
    let mut index = ExactIndex::with_capacity(DIMENSION, 10_000);
    for i in 0..10_000 {
        index.insert(RecordId::random(), &Embedding::new(population.sample(i).to_vec(), DIMENSION).expect("unit"));
    }
    let probes: Vec<Embedding> =
        (0..64).map(|i| Embedding::new(population.probe(i).to_vec(), DIMENSION).expect("unit vector")).collect();
    let mut group = c.benchmark_group("exact_10k_512d");
    group.sample_size(20);
    group.throughput(Throughput::Elements(64));
    group.bench_function("64_probes_batched", |b| b.iter(|| index.search_batch(&probes, Some(10), None)));
    group.finish();
}

criterion_group!(benches, kernels, hnsw, exact_batch);
criterion_main!(benches);
