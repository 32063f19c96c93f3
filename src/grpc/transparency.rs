//! `oubli.v1.TransparencyService`: the public, read-only face of the transparency log.
//!
//! Anyone may read it, so anonymous reads are throttled per client address
//! (`Settings::transparency_reads_per_minute`, [`crate::rights::limits`]): a proof costs the
//! server far more than the asking costs a scraper. A caller with a token (an auditor's
//! witness, say) is not throttled.
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{blocking, convert, gate, pb};
use crate::{engine::Engine, rights::Rights};

pub struct TransparencyService {
    engine: Arc<Engine>,
    rights: Arc<Rights>,
}

impl TransparencyService {
    pub fn new(engine: Arc<Engine>, rights: Arc<Rights>) -> Self {
        TransparencyService { engine, rights }
    }

    /// The read limit of an anonymous caller's address, checked before any work.
    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if !gate::caller(request).is_anonymous() {
            return Ok(());
        }
        Ok(self.rights.admit_read(request.remote_addr().map(|a| a.ip()))?)
    }
}

/// 0 on the wire means "the latest".
fn latest_if_zero(size: u64) -> Option<u64> {
    (size != 0).then_some(size)
}

#[tonic::async_trait]
impl pb::transparency_service_server::TransparencyService for TransparencyService {
    #[instrument(skip_all, name = "GetCheckpoint")]
    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        self.admit(&request)?;
        Ok(Response::new(pb::GetCheckpointResponse { checkpoint: self.engine.log().checkpoint() }))
    }

    #[instrument(skip_all, name = "GetVerifierKey")]
    async fn get_verifier_key(
        &self,
        request: Request<pb::GetVerifierKeyRequest>,
    ) -> Result<Response<pb::GetVerifierKeyResponse>, Status> {
        self.admit(&request)?;
        Ok(Response::new(pb::GetVerifierKeyResponse { verifier_key: self.engine.log().verifier_key() }))
    }

    #[instrument(skip_all, name = "GetInclusionProof", fields(leaf_index, tree_size))]
    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        tracing::Span::current().record("leaf_index", req.leaf_index).record("tree_size", req.tree_size);
        let engine = self.engine.clone();
        let (size, hashes) = blocking(move || {
            engine
                .log()
                .inclusion_proof(req.leaf_index, latest_if_zero(req.tree_size))
                .map_err(crate::engine::Error::from)
        })
        .await?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            leaf_index: req.leaf_index,
            tree_size: size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    #[instrument(skip_all, name = "GetConsistencyProof", fields(from_size, to_size))]
    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        tracing::Span::current().record("from_size", req.from_size).record("to_size", req.to_size);
        convert::consistency_from(req.from_size)?;
        let engine = self.engine.clone();
        let (to, hashes) = blocking(move || {
            engine
                .log()
                .consistency_proof(req.from_size, latest_if_zero(req.to_size))
                .map_err(crate::engine::Error::from)
        })
        .await?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            from_size: req.from_size,
            to_size: to,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    #[instrument(skip_all, name = "GetEntries", fields(start, end))]
    async fn get_entries(
        &self,
        request: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        tracing::Span::current().record("start", req.start).record("end", req.end);
        convert::entry_range(req.start, req.end)?;
        let engine = self.engine.clone();
        let entries =
            blocking(move || engine.log().entries(req.start, req.end).map_err(crate::engine::Error::from)).await?;
        Ok(Response::new(pb::GetEntriesResponse {
            entries: entries.into_iter().map(|(index, data)| pb::LogEntry { index, data }).collect(),
        }))
    }

    #[instrument(skip_all, name = "GetReceipt", fields(leaf_index))]
    async fn get_receipt(
        &self,
        request: Request<pb::GetReceiptRequest>,
    ) -> Result<Response<pb::GetReceiptResponse>, Status> {
        self.admit(&request)?;
        let index = request.into_inner().leaf_index;
        tracing::Span::current().record("leaf_index", index);
        let engine = self.engine.clone();
        let receipt = blocking(move || engine.log().receipt(index).map_err(crate::engine::Error::from)).await?;
        Ok(Response::new(pb::GetReceiptResponse { receipt: receipt.to_json() }))
    }
}
