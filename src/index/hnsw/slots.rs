//! Per-slot storage of the graph: the one place a slot is created, filled and emptied.
//!
//! A slot is a graph row. Its node ([`Node`]: id, level, upper-layer lists, in-edges, writer
//! mutex, dirty flag), its layer-0 list, its vector and its int8 codes are all created in
//! [`Slots::grow`] and nowhere else, so they cannot fall out of step. The vectors (the zeroed,
//! hand-grown [`Matrix`]), the codes and the layer-0 lists stay in their own contiguous arrays
//! rather than in `Node`: the search's hot loop reads one of them for every neighbour it scores
//! or every candidate it expands, and a pointer per node would add a cache miss to each.
use std::sync::atomic::{AtomicBool, AtomicU32};

use parking_lot::Mutex;

use super::{NONE, codes::Codes};
use crate::{index::matrix::Matrix, record::RecordId};

/// One slot's graph state besides its hot arrays.
pub(super) struct Node {
    /// `None`: a free slot (its vector and codes are zero and it has no edges).
    pub(super) id: Option<RecordId>,
    pub(super) level: u8,
    /// Layers 1..=level: `level × [count, neighbour × m]` (layer 0 is in [`Slots`]).
    upper: Box<[AtomicU32]>,
    /// Serialises writers of this node's lists.
    pub(super) lock: Mutex<()>,
    /// The slots whose lists contain this one (one entry per layer they link on).
    pub(super) inbound: Mutex<Vec<u32>>,
    /// Changed since the last `take_changes` (then also in the index's dirty list).
    pub(super) dirty: AtomicBool,
}

impl Node {
    fn free() -> Self {
        Node {
            id: None,
            level: 0,
            upper: Box::new([]),
            lock: Mutex::new(()),
            inbound: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(false),
        }
    }
}

/// Every slot of the graph, free ones included.
pub(super) struct Slots {
    /// Neighbours per list on layers 1 and up.
    m: usize,
    /// Neighbours per list on layer 0.
    m0: usize,
    nodes: Vec<Node>,
    /// Layer 0: per slot, `[count, neighbour × m0]`.
    links0: Vec<AtomicU32>,
    vectors: Matrix,
    codes: Codes,
}

/// `layers` empty lists of `cap` places: count 0 and `NONE` in every place, so a reader that
/// loaded a stale count never finds a real slot in an unused tail.
fn empty_lists(layers: usize, cap: usize) -> impl Iterator<Item = AtomicU32> {
    (0..layers * (1 + cap)).map(move |i| AtomicU32::new(if i % (1 + cap) == 0 { 0 } else { NONE }))
}

impl Slots {
    pub(super) fn new(dimension: usize, m: usize) -> Self {
        Slots {
            m,
            m0: 2 * m,
            nodes: Vec::new(),
            links0: Vec::new(),
            vectors: Matrix::new(dimension),
            codes: Codes::new(dimension),
        }
    }

    /// Slots, free ones included.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Neighbours a list on `layer` holds at most.
    pub(super) fn cap(&self, layer: usize) -> usize {
        if layer == 0 { self.m0 } else { self.m }
    }

    /// Makes room for the vectors and codes of `rows` slots without creating any: a batch
    /// reserves its whole size at once, since growing slot by slot would double past it.
    pub(super) fn reserve(&mut self, rows: usize) {
        self.vectors.ensure_rows(rows);
        self.codes.ensure_rows(rows);
    }

    /// Appends free slots up to `len` (zero vector and codes, empty lists, no in-edges).
    pub(super) fn grow(&mut self, len: usize) {
        assert!(len <= NONE as usize, "fewer than 2^32 - 1 nodes");
        let new = len.saturating_sub(self.nodes.len());
        if new == 0 {
            return;
        }
        self.reserve(len);
        self.nodes.extend((0..new).map(|_| Node::free()));
        self.links0.extend(empty_lists(new, self.m0));
    }

    /// Gives a free slot to `id` at `level`, with empty lists on each of its layers. Its
    /// vector is zero until [`Slots::write_vector`].
    pub(super) fn assign(&mut self, slot: u32, id: RecordId, level: u8) {
        let upper = empty_lists(level as usize, self.m).collect();
        let node = &mut self.nodes[slot as usize];
        node.id = Some(id);
        node.level = level;
        node.upper = upper;
    }

    /// Frees a slot whose lists and in-edges are already empty, overwriting its vector and
    /// codes with zeros.
    pub(super) fn vacate(&mut self, slot: u32) {
        self.vectors.zero_row(slot as usize);
        self.codes.zero_row(slot as usize);
        let node = &mut self.nodes[slot as usize];
        node.id = None;
        node.level = 0;
        node.upper = Box::new([]);
    }

    /// Writes a slot's vector and its int8 codes.
    pub(super) fn write_vector(&mut self, slot: u32, values: &[f32]) {
        self.vectors.set_row(slot as usize, values);
        self.codes.set_row(slot as usize, values);
    }

    #[inline]
    pub(super) fn node(&self, slot: u32) -> &Node {
        &self.nodes[slot as usize]
    }

    /// Every node, by slot.
    pub(super) fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// `slot`'s in-edges, without locking (the caller has `&mut` of the graph).
    pub(super) fn inbound_mut(&mut self, slot: u32) -> &mut Vec<u32> {
        self.nodes[slot as usize].inbound.get_mut()
    }

    /// `slot`'s list on `layer`: `[count, neighbour × cap]`.
    #[inline]
    pub(super) fn list(&self, slot: u32, layer: usize) -> &[AtomicU32] {
        if layer == 0 {
            let w = 1 + self.m0;
            &self.links0[slot as usize * w..(slot as usize + 1) * w]
        } else {
            let w = 1 + self.m;
            &self.nodes[slot as usize].upper[(layer - 1) * w..layer * w]
        }
    }

    /// `slot`'s vector, padded with zeros to [`Slots::width`].
    #[inline]
    pub(super) fn row(&self, slot: u32) -> &[f32] {
        self.vectors.row(slot as usize)
    }

    /// `slot`'s int8 codes and their scale.
    #[inline]
    pub(super) fn codes_row(&self, slot: u32) -> (&[i8], f32) {
        self.codes.row(slot as usize)
    }

    /// Floats per (padded) vector row.
    pub(super) fn width(&self) -> usize {
        self.vectors.width()
    }

    /// The vectors' memory, spare rows included.
    pub(super) fn vector_memory(&self) -> &[u8] {
        self.vectors.bytes()
    }

    /// The codes' memory, spare rows included.
    pub(super) fn code_memory(&self) -> &[i8] {
        self.codes.codes()
    }

    /// Bytes held by every slot: vectors, codes, lists, in-edges and the nodes themselves.
    pub(super) fn memory_bytes(&self) -> usize {
        let per_node: usize = self.nodes.iter().map(|n| n.upper.len() * 4 + n.inbound.lock().capacity() * 4).sum();
        self.vectors.bytes().len()
            + self.codes.memory_bytes()
            + self.links0.len() * 4
            + self.nodes.len() * std::mem::size_of::<Node>()
            + per_node
    }
}
