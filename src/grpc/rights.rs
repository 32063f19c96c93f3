//! `oubli.v1.RightsService` (access requests) and `oubli.v1.AdminService` (audit trail, ingest policy).
//! Roles are checked by the gate; the request secret is checked here, by the workflows.
use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{
    blocking, convert,
    gate::{self, RightsRequestNote},
    pb,
};
use crate::rights::{
    self, RequestView, Rights,
    auth::Role,
    request::{RequestId, State},
    worker::Nudge,
};

/// The longest a `GetRequest` waits for the worker.
const MAX_WAIT_SECONDS: u32 = 30;

pub struct RightsService {
    rights: Arc<Rights>,
    worker: Nudge,
}

impl RightsService {
    pub fn new(rights: Arc<Rights>, worker: Nudge) -> Self {
        RightsService { rights, worker }
    }
}

/// The limits of public submissions, checked before any work: the rate per caller address and
/// for everyone, and, for a submission the worker will take (`queue`), room in its queue.
fn admit<T>(rights: &Rights, queue: Option<&Nudge>, request: &Request<T>) -> Result<(), Status> {
    if let Some(queue) = queue {
        queue.has_room()?;
    }
    Ok(rights.admit(request.remote_addr().map(|a| a.ip()))?)
}

fn secret(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn noted<T>(message: T, id: RequestId) -> Response<T> {
    let mut response = Response::new(message);
    response.extensions_mut().insert(RightsRequestNote(id.to_string()));
    response
}

pub fn status_to_pb(v: &RequestView) -> pb::RequestStatus {
    pb::RequestStatus {
        request_id: v.id.to_string(),
        kind: v.kind.name().into(),
        state: v.state.name().into(),
        received_at: Some(convert::timestamp_to_pb(v.received_at)),
        due_at: Some(convert::timestamp_to_pb(v.due_at)),
        overdue: v.overdue,
        extension_months: v.extension.as_ref().map_or(0, |e| u32::from(e.months)),
        extension_reason: v.extension.as_ref().map(|e| e.reason.clone()).unwrap_or_default(),
        matched: v.matched as u32,
        withheld: v.withheld as u32,
        review_band: v
            .review_band
            .iter()
            .map(|m| pb::ReviewCandidate { record_id: m.record_id.to_string(), score: m.score })
            .collect(),
        denial_reason: v.denial.clone().unwrap_or_default(),
        receipt_leaf_index: v.receipt_leaf,
        contact: v.contact.clone().unwrap_or_default(),
        history: v
            .history
            .iter()
            .map(|(s, at)| pb::StateChange { state: s.name().into(), at: Some(convert::timestamp_to_pb(*at)) })
            .collect(),
        erasure_step: v.erasure_step.map(|s| s.name().to_string()).unwrap_or_default(),
        alert: v.alert.clone().unwrap_or_default(),
        identity: v.identity.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl pb::rights_service_server::RightsService for RightsService {
    #[instrument(skip_all, name = "SubmitAccessRequest")]
    async fn submit_access_request(
        &self,
        request: Request<pb::SubmitAccessRequestRequest>,
    ) -> Result<Response<pb::SubmitAccessRequestResponse>, Status> {
        admit(&self.rights, Some(&self.worker), &request)?;
        let req = request.into_inner();
        let capture = convert::capture(req.capture, &req.probes)?;
        let probes = convert::probes(req.probes, self.rights.engine().dimension())?;
        let rights = self.rights.clone();
        let claim = Some(req.jurisdiction_claim);
        let submitted =
            blocking(move || rights.submit_access(probes, req.contact, claim, req.include_templates, capture)).await?;
        self.worker.nudge(submitted.id);
        tracing::info!(request_id = %submitted.id, "access request submitted");
        Ok(noted(
            pb::SubmitAccessRequestResponse {
                request_id: submitted.id.to_string(),
                request_secret: submitted.secret.to_hex(),
                status: Some(status_to_pb(&submitted.view)),
            },
            submitted.id,
        ))
    }

    #[instrument(skip_all, name = "GetRequest", fields(request_id))]
    async fn get_request(
        &self,
        request: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::GetRequestResponse>, Status> {
        let desk = gate::caller(&request).has(Role::PrivacyDesk);
        let req = request.into_inner();
        let id = convert::request_id(&req.request_id)?;
        tracing::Span::current().record("request_id", tracing::field::display(id));
        let wait = Duration::from_secs(u64::from(req.wait_seconds.min(MAX_WAIT_SECONDS)));
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.rights.subscribe();
        loop {
            let rights = self.rights.clone();
            let s = req.request_secret.clone();
            let view = blocking(move || rights.request(id, secret(&s), desk)).await?;
            if !view.worker_busy || tokio::time::Instant::now() >= deadline {
                return Ok(noted(pb::GetRequestResponse { status: Some(status_to_pb(&view)) }, id));
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                continue; // one last read at the deadline
            }
        }
    }

    #[instrument(skip_all, name = "GetAccessReport", fields(request_id))]
    async fn get_access_report(
        &self,
        request: Request<pb::GetAccessReportRequest>,
    ) -> Result<Response<pb::GetAccessReportResponse>, Status> {
        let desk = gate::caller(&request).has(Role::PrivacyDesk);
        let req = request.into_inner();
        let id = convert::request_id(&req.request_id)?;
        tracing::Span::current().record("request_id", tracing::field::display(id));
        let rights = self.rights.clone();
        let (view, report, receipt) = blocking(move || rights.report_of(id, secret(&req.request_secret), desk)).await?;
        Ok(noted(
            pb::GetAccessReportResponse {
                status: Some(status_to_pb(&view)),
                report_json: report.unwrap_or_default(),
                receipt_json: receipt.map(|r| r.to_json()).unwrap_or_default(),
            },
            id,
        ))
    }

    #[instrument(skip_all, name = "ListRequests")]
    async fn list_requests(
        &self,
        request: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        let req = request.into_inner();
        let state = convert::state_filter(&req.state)?;
        let rights = self.rights.clone();
        let views = blocking(move || rights.list(state, req.overdue_only)).await?;
        Ok(Response::new(pb::ListRequestsResponse { requests: views.iter().map(status_to_pb).collect() }))
    }

    #[instrument(skip_all, name = "ReviewRequest", fields(request_id))]
    async fn review_request(
        &self,
        request: Request<pb::ReviewRequestRequest>,
    ) -> Result<Response<pb::ReviewRequestResponse>, Status> {
        let caller = gate::caller(&request);
        let req = request.into_inner();
        let id = convert::request_id(&req.request_id)?;
        let approved = convert::record_ids(&req.approved_record_ids)?;
        let rights = self.rights.clone();
        let view = blocking(move || rights.review(&caller, id, approved, req.note)).await?;
        if view.state == State::Erasing {
            self.worker.nudge(id);
        }
        Ok(noted(pb::ReviewRequestResponse { status: Some(status_to_pb(&view)) }, id))
    }

    #[instrument(skip_all, name = "DenyRequest", fields(request_id))]
    async fn deny_request(
        &self,
        request: Request<pb::DenyRequestRequest>,
    ) -> Result<Response<pb::DenyRequestResponse>, Status> {
        let req = request.into_inner();
        let id = convert::request_id(&req.request_id)?;
        let rights = self.rights.clone();
        let view = blocking(move || rights.deny(id, req.reason)).await?;
        Ok(noted(pb::DenyRequestResponse { status: Some(status_to_pb(&view)) }, id))
    }

    #[instrument(skip_all, name = "ExtendRequest", fields(request_id))]
    async fn extend_request(
        &self,
        request: Request<pb::ExtendRequestRequest>,
    ) -> Result<Response<pb::ExtendRequestResponse>, Status> {
        let req = request.into_inner();
        let id = convert::request_id(&req.request_id)?;
        let months = u8::try_from(req.months).unwrap_or(u8::MAX);
        let rights = self.rights.clone();
        let view = blocking(move || rights.extend(id, months, req.reason)).await?;
        Ok(noted(pb::ExtendRequestResponse { status: Some(status_to_pb(&view)) }, id))
    }

    #[instrument(skip_all, name = "SubmitErasureRequest")]
    async fn submit_erasure_request(
        &self,
        request: Request<pb::SubmitErasureRequestRequest>,
    ) -> Result<Response<pb::SubmitErasureRequestResponse>, Status> {
        admit(&self.rights, Some(&self.worker), &request)?;
        let mut req = request.into_inner();
        let capture = convert::capture(req.capture.take(), &req.probes)?;
        let target = convert::erasure_target(&mut req, self.rights.engine().dimension())?;
        let rights = self.rights.clone();
        let claim = Some(req.jurisdiction_claim);
        let keep = req.never_enrol_again;
        let submitted = blocking(move || rights.submit_erasure(target, req.contact, claim, keep, capture)).await?;
        self.worker.nudge(submitted.id);
        tracing::info!(request_id = %submitted.id, "erasure request submitted");
        Ok(noted(
            pb::SubmitErasureRequestResponse {
                request_id: submitted.id.to_string(),
                request_secret: submitted.secret.to_hex(),
                status: Some(status_to_pb(&submitted.view)),
            },
            submitted.id,
        ))
    }

    #[instrument(skip_all, name = "GetErasureReceipts", fields(request_id))]
    async fn get_erasure_receipts(
        &self,
        request: Request<pb::GetErasureReceiptsRequest>,
    ) -> Result<Response<pb::GetErasureReceiptsResponse>, Status> {
        let desk = gate::caller(&request).has(Role::PrivacyDesk);
        let req = request.into_inner();
        let id = convert::request_id(&req.request_id)?;
        tracing::Span::current().record("request_id", tracing::field::display(id));
        let rights = self.rights.clone();
        let (view, (status, phase1, phase2)) = blocking(move || {
            let s = secret(&req.request_secret);
            Ok::<_, rights::Error>((rights.request(id, s, desk)?, rights.erasure_receipts(id, s, desk)?))
        })
        .await?;
        Ok(noted(
            pb::GetErasureReceiptsResponse {
                status: Some(status_to_pb(&view)),
                erasure_json: serde_json::to_string_pretty(&status).expect("a status serialises"),
                phase1_receipt_json: phase1.map(|r| r.to_json()).unwrap_or_default(),
                phase2_receipt_json: phase2.map(|r| r.to_json()).unwrap_or_default(),
            },
            id,
        ))
    }

    #[instrument(skip_all, name = "AttestNoMatch", fields(request_id))]
    async fn attest_no_match(
        &self,
        request: Request<pb::AttestNoMatchRequest>,
    ) -> Result<Response<pb::AttestNoMatchResponse>, Status> {
        admit(&self.rights, None, &request)?;
        let req = request.into_inner();
        let id = convert::request_id(&req.request_id)?;
        let rights = self.rights.clone();
        let a = blocking(move || rights.attest_no_match(id, &req.request_secret)).await?;
        Ok(noted(
            pb::AttestNoMatchResponse {
                leaf_index: a.leaf,
                receipt_json: a.receipt.to_json(),
                salt: a.salt,
                compared: a.compared,
                review_band: a.review_band as u32,
                remaining: a.remaining,
            },
            id,
        ))
    }

    #[instrument(skip_all, name = "BeginCapture")]
    async fn begin_capture(
        &self,
        request: Request<pb::BeginCaptureRequest>,
    ) -> Result<Response<pb::BeginCaptureResponse>, Status> {
        admit(&self.rights, None, &request)?;
        let (challenge, expires) = self.rights.begin_capture()?;
        Ok(Response::new(pb::BeginCaptureResponse {
            challenge: challenge.to_vec(),
            expires_at: Some(convert::timestamp_to_pb(expires)),
        }))
    }

    #[instrument(skip_all, name = "VerifyIdentity", fields(request_id))]
    async fn verify_identity(
        &self,
        request: Request<pb::VerifyIdentityRequest>,
    ) -> Result<Response<pb::VerifyIdentityResponse>, Status> {
        let caller = gate::caller(&request);
        let req = request.into_inner();
        let id = convert::request_id(&req.request_id)?;
        tracing::Span::current().record("request_id", tracing::field::display(id));
        let method = convert::identity_method(&req.method)?;
        let rights = self.rights.clone();
        let view = blocking(move || rights.verify_identity(&caller, id, method, req.note)).await?;
        self.worker.nudge(id);
        Ok(noted(pb::VerifyIdentityResponse { status: Some(status_to_pb(&view)) }, id))
    }
}

pub struct AdminService {
    rights: Arc<Rights>,
    worker: Nudge,
}

impl AdminService {
    pub fn new(rights: Arc<Rights>, worker: Nudge) -> Self {
        AdminService { rights, worker }
    }

    fn policy_response(&self, policy: &rights::policy::Policy) -> pb::PolicyStatus {
        pb::PolicyStatus {
            name: policy.name().into(),
            toml: policy.to_toml(),
            refusals: self.rights.refusals().into_iter().map(|(rule, n)| (rule.to_string(), n)).collect(),
        }
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminService {
    #[instrument(skip_all, name = "ListAuditEvents")]
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let req = request.into_inner();
        let limit = convert::audit_limit(req.limit)?;
        let rights = self.rights.clone();
        let events = blocking(move || rights.audit_events(req.after, limit)).await?;
        let head = self.rights.engine().requests().audit_head();
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::AuditEvent {
                    seq: e.seq,
                    at: Some(convert::timestamp_to_pb(e.at)),
                    call_id: e.call_id,
                    caller: e.caller,
                    roles: e.roles,
                    method: e.method,
                    code: e.code,
                    rights_request: e.rights_request.unwrap_or_default(),
                })
                .collect(),
            head,
        }))
    }

    #[instrument(skip_all, name = "GetPolicy")]
    async fn get_policy(
        &self,
        _request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        Ok(Response::new(pb::GetPolicyResponse { policy: Some(self.policy_response(&self.rights.policy())) }))
    }

    #[instrument(skip_all, name = "ReloadPolicy")]
    async fn reload_policy(
        &self,
        _request: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        let rights = self.rights.clone();
        let policy = blocking(move || rights.reload_policy()).await?;
        Ok(Response::new(pb::ReloadPolicyResponse { policy: Some(self.policy_response(&policy)) }))
    }

    #[instrument(skip_all, name = "SweepPolicy")]
    async fn sweep_policy(
        &self,
        request: Request<pb::SweepPolicyRequest>,
    ) -> Result<Response<pb::SweepPolicyResponse>, Status> {
        let req = request.into_inner();
        let rule = convert::sweep_rule(&req.rule)?;
        let rights = self.rights.clone();
        let (matched, ids) = blocking(move || rights.sweep(&rule, req.dry_run)).await?;
        for id in &ids {
            self.worker.nudge(*id);
        }
        Ok(Response::new(pb::SweepPolicyResponse {
            matched: matched as u64,
            request_ids: ids.iter().map(|id| id.to_string()).collect(),
        }))
    }

    #[instrument(skip_all, name = "RotateKeys")]
    async fn rotate_keys(
        &self,
        _request: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        let rights = self.rights.clone();
        let (rotation, receipt) = blocking(move || {
            let rotation = rights.rotate_keys()?;
            rights.engine().log().wait_published(rotation.leaf + 1, rights::RECEIPT_WAIT);
            let receipt = rights.engine().log().receipt(rotation.leaf).map_err(rights::Error::from)?;
            Ok::<_, rights::Error>((rotation, receipt))
        })
        .await?;
        Ok(Response::new(pb::RotateKeysResponse {
            epoch: rotation.epoch,
            rewrapped: rotation.rewrapped,
            leaf_index: rotation.leaf,
            receipt_json: receipt.to_json(),
        }))
    }

    #[instrument(skip_all, name = "RunPurge")]
    async fn run_purge(
        &self,
        _request: Request<pb::RunPurgeRequest>,
    ) -> Result<Response<pb::RunPurgeResponse>, Status> {
        let rights = self.rights.clone();
        let purged = blocking(move || rights.purge_due(true)).await?;
        Ok(Response::new(pb::RunPurgeResponse { purged }))
    }
}

/// `oubli.v1.NotificationsService`: each operator reads and acknowledges its own notices.
pub struct NotificationsService {
    rights: Arc<Rights>,
}

impl NotificationsService {
    pub fn new(rights: Arc<Rights>) -> Self {
        NotificationsService { rights }
    }
}

#[tonic::async_trait]
impl pb::notifications_service_server::NotificationsService for NotificationsService {
    #[instrument(skip_all, name = "ListNotifications")]
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let client = gate::caller(&request).client;
        let rights = self.rights.clone();
        let list = blocking(move || rights.notifications(&client)).await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: list.into_iter().map(|(id, body_json)| pb::Notification { id, body_json }).collect(),
        }))
    }

    #[instrument(skip_all, name = "AckNotification")]
    async fn ack_notification(
        &self,
        request: Request<pb::AckNotificationRequest>,
    ) -> Result<Response<pb::AckNotificationResponse>, Status> {
        let client = gate::caller(&request).client;
        let id = request.into_inner().id;
        let rights = self.rights.clone();
        blocking(move || rights.ack_notification(&client, &id)).await?;
        Ok(Response::new(pb::AckNotificationResponse {}))
    }
}
