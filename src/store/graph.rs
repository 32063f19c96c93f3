//! The search graph's column family: the HNSW index's structure (record ids, levels, neighbour
//! slots and the entry point), so that a restart loads the graph instead of rebuilding it.
//! Never vectors: those live only sealed in `records`, and come back from there.
//!
//! The rows are opaque bytes to the store (the index encodes them), sealed like every other
//! row ([`crypto::seal_blob`], bound to the row's key): they name record ids, and a copy left
//! in an old table file is then as unreadable as the rest once its key epoch is destroyed. The
//! graph is derived state: it is written after the enrolment it follows, in its own batch, and
//! the engine reconciles it with the records at open (adds what is missing, drops what was
//! erased), so a crash between the two writes costs a little work at the next start, never a
//! wrong answer. A graph stored unsealed (before this format) is dropped at open and rebuilt.
use rayon::prelude::*;
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use super::{CF_GRAPH, Error, Store, crypto};

pub(super) const GRAPH_DOMAIN: &str = "graph";

/// Key of the sealed metadata row (parameters, entry point); node rows are
/// `b'n' ‖ slot (u32 BE)`. `m` held it unsealed, before rows were sealed.
const META: &[u8] = b"s";
const LEGACY_META: &[u8] = b"m";

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
        let sealed: Vec<([u8; 5], Vec<u8>)> = upserts
            .par_iter()
            .map(|(slot, row)| {
                let key = node_key(*slot);
                (key, crypto::seal_blob(&self.keys, GRAPH_DOMAIN, &key, row))
            })
            .collect();
        for (key, blob) in sealed {
            batch.put_cf(cf, key, blob);
        }
        batch.put_cf(cf, META, crypto::seal_blob(&self.keys, GRAPH_DOMAIN, META, meta));
        self.db.write_opt(batch, &WriteOptions::default())?;
        Ok(())
    }

    /// The stored graph, if one was ever written.
    pub fn load_graph(&self) -> Result<Option<StoredGraph>, Error> {
        let cf = self.cf(CF_GRAPH);
        let Some(meta) = self.db.get_cf(cf, META)? else {
            if self.db.get_cf(cf, LEGACY_META)?.is_some() {
                tracing::info!("the stored search graph is unsealed (an older format): rebuilt");
                self.clear_graph()?;
            }
            return Ok(None);
        };
        let meta = crypto::open_blob(&self.keys, GRAPH_DOMAIN, META, &meta)?.to_vec();
        let mut raw = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(b"n", rocksdb::Direction::Forward)) {
            let (key, value) = item?;
            let Some((b'n', slot)) = key.split_first() else { break };
            let slot: [u8; 4] = slot.try_into().map_err(|_| Error::Corrupt("graph key".into()))?;
            raw.push((u32::from_be_bytes(slot), value));
        }
        let nodes = raw
            .into_par_iter()
            .map(|(slot, blob)| {
                let row = crypto::open_blob(&self.keys, GRAPH_DOMAIN, &node_key(slot), &blob)?;
                Ok((slot, row.to_vec()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
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
