//! A shard's read replicas, seen from the workflows: the primary sends its ciphertexts and
//! records what a replica disclosed; a replica runs its rounds and sends its disclosures to
//! the primary, so that the shard keeps one recipients log, the one its access and erasure
//! requests read.
use std::sync::Arc;

use super::{Error, Rights};
use crate::{
    engine::replica::{ReplicaState, Round},
    record::RecordId,
    store::{self, SealedCopy},
};

/// Where a read replica records what it discloses: its shard's primary (reached by the gRPC
/// layer). Returns, for each call, the records whose rows were written (those not erased).
pub trait DisclosureLog: Send + Sync {
    fn record(&self, calls: &[store::Disclosed]) -> Result<Vec<Vec<RecordId>>, Error>;
}

impl Rights {
    /// Makes this a read replica's workflows: every disclosure is recorded at `primary`
    /// before the answer leaves, or the answer is refused.
    pub fn with_primary(mut self, primary: Arc<dyn DisclosureLog>) -> Rights {
        self.primary = Some(primary);
        self
    }

    /// Whether this node is a read replica.
    pub fn is_replica(&self) -> bool {
        self.primary.is_some()
    }

    /// The primary's side: `ids`' ciphertexts as stored.
    pub fn sealed_rows(&self, ids: &[RecordId]) -> Result<Vec<SealedCopy>, Error> {
        Ok(self.engine.sealed_rows(ids)?)
    }

    /// The primary's side: a replica's disclosures, written to this shard's recipients log now
    /// (one synced write); for each call, the records written.
    pub fn record_replica_disclosures(&self, calls: Vec<store::Disclosed>) -> Result<Vec<Vec<RecordId>>, Error> {
        let now = self.now();
        let calls: Vec<store::Disclosed> = calls.into_iter().map(|c| store::Disclosed { at: now, ..c }).collect();
        Ok(self.engine.records().record_disclosures(&calls)?)
    }

    /// A replica's round (see [`crate::engine::Engine::replicate`]).
    pub fn replicate(
        &self,
        replica: u32,
        endpoint: &str,
        state: &mut ReplicaState,
        fetch: &mut crate::engine::replica::Fetch<'_>,
    ) -> Result<Round, Error> {
        Ok(self.engine.replicate(replica, endpoint, state, fetch)?)
    }
}
