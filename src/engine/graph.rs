//! The search graph at open: loaded from the store and reconciled with the records (what it
//! lacks is linked, what the store no longer holds is unlinked), or built on all cores, in
//! batches that never hold a second copy of every vector.
use std::{collections::HashSet, time::Instant};

use tracing::{info, warn};
use zeroize::{Zeroize, Zeroizing};

use super::{Error, GraphStatus};
use crate::{
    index::{ExactIndex, HnswIndex, HnswParams, Index},
    record::RecordId,
    store::Storage,
};

/// Records waiting to be linked into the graph, with copies of their vectors: allocated once at
/// full size (a growing `Vec` would free copies without zeroing them), zeroed after each link
/// and on drop.
struct LinkBatch {
    dimension: usize,
    ids: Vec<RecordId>,
    vectors: Zeroizing<Vec<f32>>,
}

impl LinkBatch {
    const RECORDS: usize = 1 << 16;

    /// A batch for linking `records` records in all.
    fn new(dimension: usize, records: usize) -> Self {
        let capacity = records.min(Self::RECORDS);
        LinkBatch {
            dimension,
            ids: Vec::with_capacity(capacity),
            vectors: Zeroizing::new(Vec::with_capacity(capacity * dimension)),
        }
    }

    /// Adds a record; returns whether the batch is full.
    fn push(&mut self, id: RecordId, values: &[f32]) -> bool {
        self.ids.push(id);
        self.vectors.extend_from_slice(values);
        self.ids.len() >= Self::RECORDS
    }

    /// Links the batch on all cores and empties it.
    fn link(&mut self, graph: &mut HnswIndex) {
        let items: Vec<(RecordId, &[f32])> =
            self.ids.iter().copied().zip(self.vectors.chunks_exact(self.dimension)).collect();
        graph.insert_batch(&items);
        self.ids.clear();
        self.vectors.zeroize();
    }
}

/// Loads the stored graph and reconciles it with the records in `exact` (links what it lacks,
/// unlinks what the store no longer has), or builds it on all cores when there is none or it
/// cannot be used; then persists what changed.
pub(super) fn open_graph(
    store: &dyn Storage,
    exact: &ExactIndex,
    params: HnswParams,
) -> Result<(HnswIndex, GraphStatus), Error> {
    let started = Instant::now();
    let dimension = store.dimension();
    let loaded = match store.load_graph()? {
        None => None,
        Some(stored) => {
            match HnswIndex::from_stored(
                dimension,
                params,
                &stored.meta,
                stored.nodes.iter().map(|(s, r)| (*s, &r[..])),
            ) {
                Ok(graph) => Some(graph),
                Err(e) => {
                    warn!(error = %e, "stored graph not used");
                    store.clear_graph()?;
                    None
                }
            }
        }
    };
    let mut status = GraphStatus { loaded: loaded.is_some(), ..Default::default() };
    let mut graph = match loaded {
        Some(g) => g,
        None => HnswIndex::new(dimension, params)?,
    };
    let mut missing: HashSet<RecordId> = HashSet::new();
    exact.for_each_vector(|id, values| {
        if !graph.set_vector(id, values) {
            missing.insert(id);
        }
    });
    let gone: Vec<RecordId> = graph.ids().filter(|id| !exact.contains(*id)).collect();
    for id in &gone {
        graph.remove(*id);
    }
    // Linked in slices, so that a full build never holds a second copy of every vector.
    if !missing.is_empty() {
        let mut batch = LinkBatch::new(dimension, missing.len());
        exact.for_each_vector(|id, values| {
            if missing.contains(&id) && batch.push(id, values) {
                batch.link(&mut graph);
            }
        });
        batch.link(&mut graph);
    }
    status.linked = missing.len();
    status.dropped = gone.len();
    let changes = graph.take_changes();
    if !status.loaded || !changes.is_empty() {
        store.write_graph(&changes.upserts, &changes.removed, &changes.meta)?;
    }
    info!(
        loaded = status.loaded,
        linked = status.linked,
        dropped = status.dropped,
        nodes = graph.len(),
        ms = started.elapsed().as_millis() as u64,
        "search graph ready"
    );
    Ok((graph, status))
}
