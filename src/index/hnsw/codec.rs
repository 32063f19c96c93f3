//! The graph's persistence: encoded rows, opaque bytes to the store.
//!
//! The graph (ids, levels, neighbour lists, entry point; never vectors) changes node by node.
//! Every change marks its slot dirty; `take_changes` hands the engine the encoded rows of the
//! slots changed since the last call, which it stores; `from_stored` loads them back, checking
//! every field (a corrupt or foreign graph is an error, and the engine rebuilds), and the
//! engine refills the vectors from the encrypted store with `set_vector`.
//!
//! A node's row: id (16 bytes), level (1), then per layer a `u16` count and that many `u32`
//! neighbour slots, little-endian. The metadata row: version 1, then `u32`s m, ef_construction,
//! dimension, slot count and entry slot, then the entry level (1 byte): 22 bytes.
use std::sync::atomic::Ordering::Relaxed;

use super::{HnswError, HnswIndex, HnswParams, MAX_LEVEL, NONE, build::LevelDraw};
use crate::record::RecordId;

/// Encoded graph rows changed since the last [`HnswIndex::take_changes`]: what the store
/// writes. Rows hold ids, levels and neighbour slots, never vectors.
#[derive(Debug, Default, Clone)]
pub struct GraphChanges {
    /// Slot → encoded node (id, level, neighbours per layer).
    pub upserts: Vec<(u32, Vec<u8>)>,
    /// Slots that became free.
    pub removed: Vec<u32>,
    /// Encoded parameters and entry point; always written.
    pub meta: Vec<u8>,
}

impl GraphChanges {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }
}

impl HnswIndex {
    /// Marks `slot` as changed since the last `take_changes`.
    pub(super) fn mark_dirty(&self, slot: u32) {
        if !self.slots.node(slot).dirty.swap(true, Relaxed) {
            self.dirty.lock().push(slot);
        }
    }

    /// The encoded rows changed since the last call, and the current metadata.
    pub fn take_changes(&mut self) -> GraphChanges {
        let slots = std::mem::take(self.dirty.get_mut());
        let mut changes = GraphChanges { meta: self.encode_meta(), ..Default::default() };
        for slot in slots {
            let node = self.slots.node(slot);
            node.dirty.store(false, Relaxed);
            match node.id {
                Some(_) => changes.upserts.push((slot, self.encode_node(slot))),
                None => changes.removed.push(slot),
            }
        }
        changes
    }

    /// Marks `changes` as not yet written (their write failed): the next `take_changes`
    /// includes them again, with the slots' current contents.
    pub fn restore_changes(&mut self, changes: &GraphChanges) {
        for &slot in changes.upserts.iter().map(|(s, _)| s).chain(&changes.removed) {
            if (slot as usize) < self.slots.len() {
                self.mark_dirty(slot);
            }
        }
    }

    fn encode_meta(&self) -> Vec<u8> {
        let (slot, level) = self.entry();
        let mut out = vec![1u8];
        for v in [self.params.m as u32, self.params.ef_construction as u32, self.dimension as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.slots.len() as u32).to_le_bytes());
        out.extend_from_slice(&slot.to_le_bytes());
        out.push(level as u8);
        out
    }

    fn encode_node(&self, slot: u32) -> Vec<u8> {
        let node = self.slots.node(slot);
        let id = node.id.expect("only live nodes are encoded");
        let mut out = Vec::with_capacity(17 + (node.level as usize + 2) * 2 + self.slots.cap(0) * 4);
        out.extend_from_slice(id.as_bytes());
        out.push(node.level);
        for layer in 0..=node.level as usize {
            let links = self.read_links(slot, layer);
            out.extend_from_slice(&(links.len() as u16).to_le_bytes());
            for l in links {
                out.extend_from_slice(&l.to_le_bytes());
            }
        }
        out
    }

    /// Rebuilds the graph from stored rows (vectors all zero: fill them with `set_vector`,
    /// then remove the ids the store no longer has).
    pub fn from_stored<'a>(
        dimension: usize,
        params: HnswParams,
        meta: &[u8],
        rows: impl IntoIterator<Item = (u32, &'a [u8])>,
    ) -> Result<Self, HnswError> {
        let corrupt = |what: &str| HnswError::Corrupt(what.to_string());
        let mut index = HnswIndex::new(dimension, params)?;
        let u32_at = |b: &[u8], at: usize| -> Result<u32, HnswError> {
            b.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes"))).ok_or(corrupt("short row"))
        };
        if meta.len() != 22 || meta[0] != 1 {
            return Err(corrupt("metadata"));
        }
        let (m, ef_c, dim) = (u32_at(meta, 1)? as usize, u32_at(meta, 5)? as usize, u32_at(meta, 9)? as usize);
        if m != params.m || ef_c != params.ef_construction || dim != dimension {
            return Err(HnswError::Mismatch(format!("m {m}, ef_construction {ef_c}, dimension {dim}")));
        }
        let slots = u32_at(meta, 13)? as usize;
        let (entry_slot, entry_level) = (u32_at(meta, 17)?, meta[21] as usize);
        if slots >= NONE as usize {
            return Err(corrupt("slot count"));
        }
        index.slots.grow(slots);
        let mut lists: Vec<(u32, usize, Vec<u32>)> = Vec::new();
        for (slot, row) in rows {
            if slot as usize >= slots || index.slots.node(slot).id.is_some() {
                return Err(corrupt("slot out of range or repeated"));
            }
            let (id, rest) = row.split_first_chunk::<16>().ok_or(corrupt("short row"))?;
            let (&level, mut rest) = rest.split_first().ok_or(corrupt("short row"))?;
            if level as usize > MAX_LEVEL {
                return Err(corrupt("level"));
            }
            for layer in 0..=level as usize {
                let (count, tail) = rest.split_first_chunk::<2>().ok_or(corrupt("short row"))?;
                let count = u16::from_le_bytes(*count) as usize;
                if count > index.slots.cap(layer) || tail.len() < count * 4 {
                    return Err(corrupt("neighbour count"));
                }
                let links: Vec<u32> = tail[..count * 4]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                lists.push((slot, layer, links));
                rest = &tail[count * 4..];
            }
            if !rest.is_empty() {
                return Err(corrupt("trailing bytes"));
            }
            let id = RecordId::from_bytes(*id);
            if index.positions.insert(id, slot).is_some() {
                return Err(corrupt("repeated id"));
            }
            index.slots.assign(slot, id, level);
        }
        for (slot, layer, links) in lists {
            for &t in &links {
                let target = index.slots.nodes().get(t as usize).ok_or(corrupt("neighbour out of range"))?;
                if target.id.is_none() || (target.level as usize) < layer || t == slot {
                    return Err(corrupt("edge to a missing node"));
                }
                index.slots.inbound_mut(t).push(slot);
            }
            let l = index.slots.list(slot, layer);
            for (i, &t) in links.iter().enumerate() {
                l[1 + i].store(t, Relaxed);
            }
            l[0].store(links.len() as u32, Relaxed);
        }
        if index.positions.is_empty() {
            if entry_slot != NONE {
                return Err(corrupt("entry point of an empty graph"));
            }
        } else {
            let node = index.slots.nodes().get(entry_slot as usize).ok_or(corrupt("entry point"))?;
            if node.id.is_none() || node.level as usize != entry_level {
                return Err(corrupt("entry point"));
            }
            index.set_entry(entry_slot, entry_level);
        }
        index.free = (0..slots as u32).rev().filter(|&s| index.slots.node(s).id.is_none()).collect();
        index.levels = LevelDraw::after_load(&params, slots);
        index.dirty.get_mut().clear();
        Ok(index)
    }

    /// Puts `id`'s vector back after `from_stored`. False if the graph does not hold `id`.
    pub fn set_vector(&mut self, id: RecordId, values: &[f32]) -> bool {
        assert_eq!(values.len(), self.dimension, "vector dimension is the index's");
        match self.positions.get(&id) {
            Some(&slot) => {
                self.slots.write_vector(slot, values);
                true
            }
            None => false,
        }
    }
}
