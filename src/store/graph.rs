//! The search graph's column family: the HNSW index's structure (record ids, levels, neighbour
//! slots and the entry point), so that a restart loads the graph instead of rebuilding it.
//! Never vectors: those live only sealed in `records`, and come back from there.
//!
//! The rows are opaque bytes to the store (the index encodes them). The graph is derived
//! state: it is written after the enrolment it follows, in its own batch, and the engine
//! reconciles it with the records at open (adds what is missing, drops what was erased), so a
//! crash between the two writes costs a little work at the next start, never a wrong answer.
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use super::{CF_GRAPH, Error, Store};

/// Key of the metadata row (parameters, entry point); node rows are `b'n' ‖ slot (u32 BE)`.
const META: &[u8] = b"m";

pub(super) fn node_key(slot: u32) -> [u8; 5] {
    let mut key = [b'n'; 5];
    key[1..].copy_from_slice(&slot.to_be_bytes());
    key
}

/// A stored graph: its metadata row and its node rows by slot.
pub struct StoredGraph {
    pub meta: Vec<u8>,
    pub nodes: Vec<(u32, Vec<u8>)>,
}

impl Store {
    /// Writes changed graph rows, removes freed ones and replaces the metadata, in one batch.
    /// Not synced: the records' own synced writes carry it to disk, and the graph is
    /// reconciled at open if its tail was lost.
    pub fn write_graph(&self, upserts: &[(u32, Vec<u8>)], removed: &[u32], meta: &[u8]) -> Result<(), Error> {
        let cf = self.cf(CF_GRAPH);
        let mut batch = WriteBatch::default();
        for slot in removed {
            batch.delete_cf(cf, node_key(*slot));
        }
        for (slot, row) in upserts {
            batch.put_cf(cf, node_key(*slot), row);
        }
        batch.put_cf(cf, META, meta);
        self.db.write_opt(batch, &WriteOptions::default())?;
        Ok(())
    }

    /// The stored graph, if one was ever written.
    pub fn load_graph(&self) -> Result<Option<StoredGraph>, Error> {
        let cf = self.cf(CF_GRAPH);
        let Some(meta) = self.db.get_cf(cf, META)? else {
            return Ok(None);
        };
        let mut nodes = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(b"n", rocksdb::Direction::Forward)) {
            let (key, value) = item?;
            let Some((b'n', slot)) = key.split_first() else { break };
            let slot: [u8; 4] = slot.try_into().map_err(|_| Error::Corrupt("graph key".into()))?;
            nodes.push((u32::from_be_bytes(slot), value.to_vec()));
        }
        Ok(Some(StoredGraph { meta, nodes }))
    }

    /// Deletes the stored graph (the index is no longer kept, or must be rebuilt).
    pub fn clear_graph(&self) -> Result<(), Error> {
        let cf = self.cf(CF_GRAPH);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, b"".as_slice(), b"\xff".as_slice());
        self.db.write_opt(batch, &WriteOptions::default())?;
        Ok(())
    }
}
