//! Wire types to domain types and back. Validation happens here, through the domain
//! constructors, so nothing below this module ever sees an unchecked value.
use jiff::Timestamp;
use tonic::Status;

use super::pb;
use crate::{
    embedding::Embedding,
    record::{IdempotencyKey, LegalBasis, NewRecord, Provenance, RecordError, RecordId, SourceKind},
    rights::{
        erasure::{ErasureTarget, SweepRule},
        identity::{Capture, Method, Signed},
        request::{RequestId, State},
    },
};

pub fn embedding(e: Option<pb::Embedding>, field: &str, dimension: usize) -> Result<Embedding, Status> {
    let values = e.map(|e| e.values).unwrap_or_default();
    Embedding::new(values, dimension).map_err(|err| Status::invalid_argument(format!("{field}: {err}")))
}

pub fn record_id(id: &str) -> Result<RecordId, Status> {
    Ok(id.parse::<RecordId>()?)
}

pub fn record_ids(ids: &[String]) -> Result<Vec<RecordId>, Status> {
    ids.iter().map(|r| record_id(r)).collect()
}

pub fn request_id(id: &str) -> Result<RequestId, Status> {
    id.parse().map_err(|e: String| Status::invalid_argument(format!("request_id: {e}")))
}

pub fn probes(list: Vec<pb::Embedding>, dimension: usize) -> Result<Vec<Embedding>, Status> {
    list.into_iter().enumerate().map(|(i, p)| embedding(Some(p), &format!("probes[{i}]"), dimension)).collect()
}

/// A request's signed capture, with the probes' values as sent (what was signed).
pub fn capture(capture: Option<pb::Capture>, probes: &[pb::Embedding]) -> Result<Option<Signed>, Status> {
    let Some(c) = capture else { return Ok(None) };
    let challenge: [u8; 32] = c
        .challenge
        .as_slice()
        .try_into()
        .map_err(|_| Status::invalid_argument("capture.challenge: 32 bytes, as BeginCapture returned it"))?;
    let signatures = c
        .signatures
        .iter()
        .enumerate()
        .map(|(i, s)| {
            <[u8; 64]>::try_from(s.as_slice()).map_err(|_| {
                Status::invalid_argument(format!("capture.signatures[{i}]: an Ed25519 signature is 64 bytes"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if c.key.is_empty() || c.key.len() > 64 {
        return Err(Status::invalid_argument("capture.key: the capture key's name (1 to 64 bytes)"));
    }
    let sent = probes.iter().map(|p| p.values.clone()).collect();
    Ok(Some(Signed { capture: Capture { challenge, key: c.key, signatures }, sent }))
}

/// How the privacy desk checked an identity, by name.
pub fn identity_method(name: &str) -> Result<Method, Status> {
    Method::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
        Status::invalid_argument(format!("method {name:?} is unknown; use one of {}", names.join(", ")))
    })
}

/// A request-state filter by name; empty: any state.
pub fn state_filter(name: &str) -> Result<Option<State>, Status> {
    if name.is_empty() {
        return Ok(None);
    }
    State::from_name(name).map(Some).ok_or_else(|| {
        let names: Vec<_> = State::ALL.iter().map(|s| s.name()).collect();
        Status::invalid_argument(format!("state {name:?} is unknown; use one of {}", names.join(", ")))
    })
}

/// How many audit events one call returns: 1 to 1000, 0 for the default of 100.
pub fn audit_limit(limit: u32) -> Result<usize, Status> {
    match limit {
        0 => Ok(100),
        n @ 1..=1000 => Ok(n as usize),
        n => Err(Status::invalid_argument(format!("limit is {n}; ask for 1 to 1000 events"))),
    }
}

/// The older size of a consistency proof: a proof from the empty tree proves nothing.
pub fn consistency_from(from_size: u64) -> Result<u64, Status> {
    match from_size {
        0 => Err(Status::invalid_argument("from_size is 0: a proof from the empty tree proves nothing")),
        n => Ok(n),
    }
}

/// The most log entries one call returns.
pub const MAX_ENTRIES: u64 = 1000;

/// A range of log entries, `start..end`, of 1 to [`MAX_ENTRIES`].
pub fn entry_range(start: u64, end: u64) -> Result<(), Status> {
    if end <= start || end - start > MAX_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "ask for 1 to {MAX_ENTRIES} entries: start {start} must be below end {end}"
        )));
    }
    Ok(())
}

pub fn sweep_rule(rule: &str) -> Result<SweepRule, Status> {
    rule.parse().map_err(|e: String| Status::invalid_argument(e))
}

/// What an erasure request asks to erase: probe faces, or records from an access report.
pub fn erasure_target(req: &mut pb::SubmitErasureRequestRequest, dimension: usize) -> Result<ErasureTarget, Status> {
    match (req.probes.is_empty(), req.access_request_id.is_empty()) {
        (false, true) => Ok(ErasureTarget::Probes(probes(std::mem::take(&mut req.probes), dimension)?)),
        (true, false) => Ok(ErasureTarget::Records {
            access_request: request_id(&req.access_request_id)?,
            secret: std::mem::take(&mut req.access_request_secret),
            records: record_ids(&req.record_ids)?,
        }),
        _ => Err(Status::invalid_argument(
            "give either probes, or access_request_id with its secret and record_ids from its report",
        )),
    }
}

fn source_kind(value: i32) -> Result<SourceKind, RecordError> {
    use pb::SourceKind as P;
    match P::try_from(value) {
        Ok(P::Unspecified) => Err(RecordError::UnspecifiedSourceKind),
        Ok(P::PublicWebScrape) => Ok(SourceKind::PublicWebScrape),
        Ok(P::SocialMediaScrape) => Ok(SourceKind::SocialMediaScrape),
        Ok(P::UserUpload) => Ok(SourceKind::UserUpload),
        Ok(P::ConsentedEnrolment) => Ok(SourceKind::ConsentedEnrolment),
        Ok(P::ThirdPartyTransfer) => Ok(SourceKind::ThirdPartyTransfer),
        Err(_) => Err(RecordError::UnknownEnumValue { field: "provenance.source_kind", value }),
    }
}

fn source_kind_to_pb(kind: SourceKind) -> pb::SourceKind {
    use pb::SourceKind as P;
    match kind {
        SourceKind::PublicWebScrape => P::PublicWebScrape,
        SourceKind::SocialMediaScrape => P::SocialMediaScrape,
        SourceKind::UserUpload => P::UserUpload,
        SourceKind::ConsentedEnrolment => P::ConsentedEnrolment,
        SourceKind::ThirdPartyTransfer => P::ThirdPartyTransfer,
    }
}

fn legal_basis(value: i32) -> Result<LegalBasis, RecordError> {
    use pb::LegalBasis as P;
    match P::try_from(value) {
        Ok(P::Unspecified) => Err(RecordError::UnspecifiedLegalBasis),
        Ok(P::Consent) => Ok(LegalBasis::Consent),
        Ok(P::Contract) => Ok(LegalBasis::Contract),
        Ok(P::LegalObligation) => Ok(LegalBasis::LegalObligation),
        Ok(P::VitalInterests) => Ok(LegalBasis::VitalInterests),
        Ok(P::PublicTask) => Ok(LegalBasis::PublicTask),
        Ok(P::LegitimateInterests) => Ok(LegalBasis::LegitimateInterests),
        Ok(P::NoneDeclared) => Ok(LegalBasis::NoneDeclared),
        Err(_) => Err(RecordError::UnknownEnumValue { field: "provenance.legal_basis", value }),
    }
}

fn legal_basis_to_pb(basis: LegalBasis) -> pb::LegalBasis {
    use pb::LegalBasis as P;
    match basis {
        LegalBasis::Consent => P::Consent,
        LegalBasis::Contract => P::Contract,
        LegalBasis::LegalObligation => P::LegalObligation,
        LegalBasis::VitalInterests => P::VitalInterests,
        LegalBasis::PublicTask => P::PublicTask,
        LegalBasis::LegitimateInterests => P::LegitimateInterests,
        LegalBasis::NoneDeclared => P::NoneDeclared,
    }
}

/// Validates wire provenance against the clock `now`.
pub fn provenance_from_pb(p: Option<pb::Provenance>, now: Timestamp) -> Result<Provenance, RecordError> {
    let p = p.ok_or(RecordError::MissingProvenance)?;
    let at = p.collected_at.ok_or(RecordError::MissingCollectedAt)?;
    // google.protobuf.Timestamp requires nanos in 0..1e9 whatever the sign of seconds.
    if !(0..1_000_000_000).contains(&at.nanos) {
        return Err(RecordError::InvalidCollectedAt(format!("nanos {} is outside 0..=999999999", at.nanos)));
    }
    let collected_at =
        Timestamp::new(at.seconds, at.nanos).map_err(|e| RecordError::InvalidCollectedAt(e.to_string()))?;
    let jurisdiction = if p.jurisdiction.is_empty() {
        return Err(RecordError::InvalidJurisdiction(String::new()));
    } else {
        p.jurisdiction.parse()?
    };
    Provenance::new(
        p.source_uri,
        collected_at,
        source_kind(p.source_kind)?,
        legal_basis(p.legal_basis)?,
        jurisdiction,
        now,
    )
}

pub fn provenance_to_pb(p: &Provenance) -> pb::Provenance {
    pb::Provenance {
        source_uri: p.source_uri().to_string(),
        collected_at: Some(timestamp_to_pb(p.collected_at())),
        source_kind: source_kind_to_pb(p.source_kind()).into(),
        legal_basis: legal_basis_to_pb(p.legal_basis()).into(),
        jurisdiction: p.jurisdiction().to_string(),
    }
}

pub fn timestamp_to_pb(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() }
}

pub fn new_record(req: pb::EnrollRequest, dimension: usize, now: Timestamp) -> Result<NewRecord, Status> {
    let embedding = embedding(req.embedding, "embedding", dimension)?;
    let provenance = provenance_from_pb(req.provenance, now)?;
    let idempotency_key = IdempotencyKey::parse(req.idempotency_key)?;
    Ok(NewRecord { embedding, provenance, idempotency_key })
}

/// Debug for wire messages that carry templates or sources: never their content.
impl std::fmt::Debug for pb::Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Embedding({} values, redacted)", self.values.len())
    }
}

impl std::fmt::Debug for pb::Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provenance")
            .field("source_uri", &"<redacted>")
            .field("source_kind", &self.source_kind)
            .field("legal_basis", &self.legal_basis)
            .field("jurisdiction", &self.jurisdiction)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for pb::EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("embedding", &self.embedding)
            .field("provenance", &self.provenance)
            .field("idempotency_key", &if self.idempotency_key.is_empty() { "" } else { "<redacted>" })
            .finish()
    }
}

impl std::fmt::Debug for pb::SubmitAccessRequestRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitAccessRequestRequest")
            .field("probes", &self.probes.len())
            .field("contact", &"<redacted>")
            .field("jurisdiction_claim", &self.jurisdiction_claim)
            .field("include_templates", &self.include_templates)
            .finish()
    }
}

impl std::fmt::Debug for pb::SubmitAccessRequestResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitAccessRequestResponse")
            .field("request_id", &self.request_id)
            .field("request_secret", &"<redacted>")
            .field("status", &self.status)
            .finish()
    }
}

impl std::fmt::Debug for pb::GetRequestRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetRequestRequest")
            .field("request_id", &self.request_id)
            .field("request_secret", &"<redacted>")
            .field("wait_seconds", &self.wait_seconds)
            .finish()
    }
}

impl std::fmt::Debug for pb::GetAccessReportRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetAccessReportRequest")
            .field("request_id", &self.request_id)
            .field("request_secret", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for pb::GetAccessReportResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetAccessReportResponse")
            .field("status", &self.status)
            .field("report_json", &format_args!("<{} bytes, redacted>", self.report_json.len()))
            .field("receipt_json", &format_args!("<{} bytes>", self.receipt_json.len()))
            .finish()
    }
}

impl std::fmt::Debug for pb::RequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStatus")
            .field("request_id", &self.request_id)
            .field("state", &self.state)
            .field("matched", &self.matched)
            .field("withheld", &self.withheld)
            .field("contact", &"<redacted>")
            .finish_non_exhaustive()
    }
}
