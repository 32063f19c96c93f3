//! A shard's read replicas over gRPC: `oubli.v1.ReplicationService` at the primary, and at a
//! replica (`oubli-server --replica R --primary URL`) the client of that service: the
//! recipients log it writes through, and the rounds that keep its copies in step with etcd
//! (`Engine::replicate`).
use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{AuthChannel, Bearer, blocking, pb};
use crate::{
    engine::replica::{FETCH_BATCH, ReplicaState},
    record::RecordId,
    rights::{self, Rights, replica::DisclosureLog},
    store::{self, SealedCopy},
};

/// How often a replica runs a round when nothing changed (its only latency between a key's
/// change in etcd and its copies following).
pub const ROUND_EVERY: Duration = Duration::from_millis(500);
/// How long one call to the primary may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Which replica this node is, and its shard's primary.
#[derive(Clone, Debug)]
pub struct ReplicaOf {
    /// 1 or more (0 is the primary itself).
    pub replica: u32,
    /// The primary's gRPC URL (loopback).
    pub primary: String,
    /// A token with the replica role at the primary.
    pub token: String,
}

fn id_of(bytes: &[u8]) -> Result<RecordId, Status> {
    let id: [u8; 16] = bytes
        .try_into()
        .map_err(|_| Status::invalid_argument(format!("a record id is 16 bytes, not {}", bytes.len())))?;
    Ok(RecordId::from_bytes(id))
}

fn ids_of(list: &[Vec<u8>], at_most: usize) -> Result<Vec<RecordId>, Status> {
    if list.len() > at_most {
        return Err(Status::invalid_argument(format!("at most {at_most} record ids a call, not {}", list.len())));
    }
    list.iter().map(|b| id_of(b)).collect()
}

/// The primary's side.
pub struct ReplicationService {
    rights: Arc<Rights>,
}

impl ReplicationService {
    pub fn new(rights: Arc<Rights>) -> Self {
        ReplicationService { rights }
    }
}

#[tonic::async_trait]
impl pb::replication_service_server::ReplicationService for ReplicationService {
    #[instrument(skip_all, name = "FetchSealed", fields(ids))]
    async fn fetch_sealed(
        &self,
        request: Request<pb::FetchSealedRequest>,
    ) -> Result<Response<pb::FetchSealedResponse>, Status> {
        let ids = ids_of(&request.into_inner().record_ids, FETCH_BATCH)?;
        tracing::Span::current().record("ids", ids.len());
        let rights = self.rights.clone();
        let rows = blocking(move || rights.sealed_rows(&ids)).await?;
        let records = rows
            .into_iter()
            .map(|r| pb::SealedRecord {
                record_id: r.id.as_bytes().to_vec(),
                sealed: r.sealed,
                quarantine_rule: r.quarantine,
            })
            .collect();
        Ok(Response::new(pb::FetchSealedResponse { records }))
    }

    #[instrument(skip_all, name = "RecordDisclosures", fields(calls))]
    async fn record_disclosures(
        &self,
        request: Request<pb::RecordDisclosuresRequest>,
    ) -> Result<Response<pb::RecordDisclosuresResponse>, Status> {
        let calls = request.into_inner().calls;
        tracing::Span::current().record("calls", calls.len());
        let now = jiff::Timestamp::now();
        let calls = calls
            .into_iter()
            .map(|c| {
                if c.client.is_empty() {
                    return Err(Status::invalid_argument("a disclosure names its recipient (client)"));
                }
                Ok(store::Disclosed {
                    records: ids_of(&c.record_ids, crate::engine::MAX_K)?,
                    client: c.client,
                    at: now,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let rights = self.rights.clone();
        let written = blocking(move || rights.record_replica_disclosures(calls)).await?;
        let written = written
            .into_iter()
            .map(|ids| pb::WrittenRecords { record_ids: ids.iter().map(|id| id.as_bytes().to_vec()).collect() })
            .collect();
        Ok(Response::new(pb::RecordDisclosuresResponse { written }))
    }
}

type Client = pb::replication_service_client::ReplicationServiceClient<AuthChannel>;

/// A replica's connection to its primary (lazy: the replica starts, and serves nothing that
/// needs the primary, while the primary is down).
#[derive(Clone)]
pub struct Primary {
    client: Client,
    url: String,
    handle: tokio::runtime::Handle,
}

impl Primary {
    pub fn connect(of: &ReplicaOf) -> Result<Primary, Status> {
        let endpoint = tonic::transport::Endpoint::from_shared(of.primary.clone())
            .map_err(|e| Status::invalid_argument(format!("the primary's URL {:?}: {e}", of.primary)))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let bearer = Bearer::new(Some(&of.token))
            .map_err(|_| Status::invalid_argument("the replica token is not a valid header value"))?;
        let client =
            pb::replication_service_client::ReplicationServiceClient::with_interceptor(endpoint.connect_lazy(), bearer)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
        Ok(Primary { client, url: of.primary.clone(), handle: tokio::runtime::Handle::current() })
    }

    /// From blocking code (a `spawn_blocking` thread): `ids`' ciphertexts.
    fn fetch(&self, ids: &[RecordId]) -> Result<Vec<SealedCopy>, String> {
        let mut client = self.client.clone();
        let request = pb::FetchSealedRequest { record_ids: ids.iter().map(|id| id.as_bytes().to_vec()).collect() };
        let answer = self
            .handle
            .block_on(client.fetch_sealed(request))
            .map_err(|s| format!("the primary at {} answered {:?}: {}", self.url, s.code(), s.message()))?;
        answer
            .into_inner()
            .records
            .into_iter()
            .map(|r| {
                Ok(SealedCopy {
                    id: id_of(&r.record_id).map_err(|s| s.message().to_string())?,
                    sealed: r.sealed,
                    quarantine: r.quarantine_rule,
                })
            })
            .collect()
    }
}

impl DisclosureLog for Primary {
    fn record(&self, calls: &[store::Disclosed]) -> Result<Vec<Vec<RecordId>>, rights::Error> {
        let mut client = self.client.clone();
        let request = pb::RecordDisclosuresRequest {
            calls: calls
                .iter()
                .map(|c| pb::DisclosureCall {
                    record_ids: c.records.iter().map(|id| id.as_bytes().to_vec()).collect(),
                    client: c.client.clone(),
                })
                .collect(),
        };
        let refused = |why: String| {
            rights::Error::PrimaryUnavailable(format!(
                "this read replica records every answer in its shard's recipients log at the primary ({}) before \
                 sending it, and {why}: nothing was answered; retry, or search through the primary",
                self.url
            ))
        };
        let answer = self
            .handle
            .block_on(client.record_disclosures(request))
            .map_err(|s| refused(format!("the primary answered {:?}: {}", s.code(), s.message())))?
            .into_inner();
        if answer.written.len() != calls.len() {
            return Err(refused("the primary answered for a different number of calls".into()));
        }
        answer
            .written
            .iter()
            .map(|w| w.record_ids.iter().map(|b| id_of(b).map_err(|s| refused(s.message().to_string()))).collect())
            .collect()
    }
}

/// A replica's rounds until `stop` is set: one at start, then every [`ROUND_EVERY`]. A
/// round's error is logged and the next round tries again.
pub async fn follow(
    rights: Arc<Rights>,
    primary: Primary,
    replica: u32,
    endpoint: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut state = ReplicaState::default();
    loop {
        let (rights, primary, endpoint) = (rights.clone(), primary.clone(), endpoint.clone());
        let mut kept = std::mem::take(&mut state);
        let round = tokio::task::spawn_blocking(move || {
            let result = rights.replicate(replica, &endpoint, &mut kept, &mut |ids| primary.fetch(ids));
            (result, kept)
        })
        .await;
        match round {
            Ok((Ok(round), kept)) => {
                state = kept;
                if round.removed + round.added > 0 {
                    tracing::info!(removed = round.removed, added = round.added, "replica round");
                }
            }
            Ok((Err(e), kept)) => {
                state = kept;
                tracing::warn!(error = %e, "a replica round failed; retried");
            }
            Err(e) => tracing::error!(error = %e, "a replica round panicked; retried"),
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
