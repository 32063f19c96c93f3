//! `oubli.v1.TemplatesService`: enrolment, lookup and search.
use std::sync::Arc;

use jiff::Timestamp;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use super::{blocking, convert, gate, gateway::Placement, pb, status};
use crate::rights::Rights;

/// The most items one `EnrollStream` call holds; it is written in one atomic batch.
pub const MAX_STREAM_ITEMS: usize = 20_000;

/// Enrolment passes the ingest policy; every search result and record read is written to the
/// recipients log under the caller's client name.
pub struct TemplatesService {
    rights: Arc<Rights>,
    /// A cluster's shard refuses sources placed on another shard.
    placement: Option<Placement>,
}

impl TemplatesService {
    pub fn new(rights: Arc<Rights>, placement: Option<Placement>) -> Self {
        TemplatesService { rights, placement }
    }

    fn placed_here(&self, record: &crate::record::NewRecord) -> Result<(), Status> {
        match &self.placement {
            Some(p) => p.check(record.provenance.source_uri()),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl pb::templates_service_server::TemplatesService for TemplatesService {
    #[instrument(skip_all, name = "Enroll")]
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let caller = gate::caller(&request);
        let record = convert::new_record(request.into_inner(), self.rights.engine().dimension(), Timestamp::now())?;
        self.placed_here(&record)?;
        let rights = self.rights.clone();
        let enrolled = blocking(move || rights.enroll(&caller, vec![record])).await?;
        let first = enrolled.first().expect("one outcome per enrolled record");
        tracing::debug!(record_id = %first.id, created = first.created, "enrolled");
        Ok(Response::new(pb::EnrollResponse { record_id: first.id.to_string(), created: first.created }))
    }

    #[instrument(skip_all, name = "EnrollStream", fields(items))]
    async fn enroll_stream(
        &self,
        request: Request<Streaming<pb::EnrollStreamRequest>>,
    ) -> Result<Response<pb::EnrollStreamResponse>, Status> {
        let caller = gate::caller(&request);
        let mut stream = request.into_inner();
        let dimension = self.rights.engine().dimension();
        let now = Timestamp::now();
        let mut records = Vec::new();
        // Everything is validated before anything is written: a bad item stores nothing.
        while let Some(item) = stream.message().await? {
            if records.len() == MAX_STREAM_ITEMS {
                return Err(Status::resource_exhausted(format!(
                    "a stream holds at most {MAX_STREAM_ITEMS} items; send the rest in another stream"
                )));
            }
            // An item without its enrolment fails the required-field checks, as an empty Enroll does.
            let record = convert::new_record(item.item.unwrap_or_default(), dimension, now)
                .and_then(|r| self.placed_here(&r).map(|()| r))
                .map_err(|s| status::for_item(records.len(), s))?;
            records.push(record);
        }
        tracing::Span::current().record("items", records.len());
        let rights = self.rights.clone();
        let enrolled = blocking(move || rights.enroll(&caller, records)).await?;
        let created = enrolled.iter().filter(|e| e.created).count() as u64;
        tracing::debug!(items = enrolled.len(), created, "stream enrolled");
        Ok(Response::new(pb::EnrollStreamResponse {
            record_ids: enrolled.iter().map(|e| e.id.to_string()).collect(),
            created,
        }))
    }

    #[instrument(skip_all, name = "Get", fields(record_id))]
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let caller = gate::caller(&request);
        let req = request.into_inner();
        let id = convert::record_id(&req.record_id)?;
        tracing::Span::current().record("record_id", tracing::field::display(id));
        let rights = self.rights.clone();
        let record = blocking(move || {
            crate::failpoint::panic_here("get");
            rights.get(&caller, id)
        })
        .await?;
        Ok(Response::new(pb::GetResponse {
            record: Some(pb::Record {
                record_id: record.id.to_string(),
                provenance: Some(convert::provenance_to_pb(&record.provenance)),
                enrolled_at: Some(convert::timestamp_to_pb(record.enrolled_at)),
                embedding: req
                    .include_embedding
                    .then(|| pb::Embedding { values: record.embedding.as_slice().to_vec() }),
            }),
        }))
    }

    #[instrument(skip_all, name = "Search", fields(k))]
    async fn search(&self, request: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        crate::failpoint::panic_here("search");
        let caller = gate::caller(&request);
        let req = request.into_inner();
        tracing::Span::current().record("k", req.k);
        let probe = convert::embedding(req.probe, "probe", self.rights.engine().dimension())?;
        let rights = self.rights.clone();
        let k = req.k as usize;
        let result = blocking(move || rights.search(&caller, &probe, k, req.min_score, req.exact)).await?;
        tracing::debug!(hits = result.hits.len(), candidates = result.candidates, "searched");
        Ok(Response::new(pb::SearchResponse {
            hits: result
                .hits
                .iter()
                .map(|h| pb::SearchHit {
                    record_id: h.id.to_string(),
                    score: h.score,
                    provenance: Some(convert::provenance_to_pb(&h.provenance)),
                    enrolled_at: Some(convert::timestamp_to_pb(h.enrolled_at)),
                })
                .collect(),
            candidates: result.candidates as u64,
            index: result.index.to_string(),
        }))
    }

    #[instrument(skip_all, name = "Stats")]
    async fn stats(&self, _request: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let engine = self.rights.engine().clone();
        let stats = blocking(move || engine.stats()).await?;
        Ok(Response::new(pb::StatsResponse {
            record_count: stats.record_count,
            dimension: stats.dimension as u32,
            bytes_on_disk: stats.bytes_on_disk,
            sst_file_count: stats.sst_file_count,
            index: stats.index.to_string(),
        }))
    }
}
