//! The gate every `oubli.v1` call passes: authentication, the role check, and the audit trail.
//!
//! A tower layer in front of all services, so no handler can forget either: it reads the
//! bearer token, finds the caller, checks the method's roles from one table, hands the caller
//! to the handler (request extensions), and appends the call's outcome to the audit trail,
//! whether the gate or the handler decided it. Health and reflection pass untouched. A path
//! that is not in the table is the caller's own text: it is audited and counted under the one
//! label [`UNKNOWN_METHOD`], never as written, so a caller can neither write into the audit
//! trail nor grow the metrics without bound.
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::rights::{
    Rights,
    auth::{Caller, Role, Tokens},
    trail::AuditEvent,
};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a token (a token given must be valid).
    Public,
    /// A token with one of these roles.
    Roles(&'static [Role]),
}

use Role::{Admin, Auditor, Operator, PrivacyDesk, Replica};

/// The role table: every `oubli.v1` method. Rights reads (`GetRequest`, `GetAccessReport`)
/// are public here because the request secret opens them; the handler checks the secret or
/// the privacy-desk role.
pub const METHODS: &[(&str, Access)] = &[
    ("/oubli.v1.TemplatesService/Enroll", Access::Roles(&[Operator])),
    ("/oubli.v1.TemplatesService/EnrollStream", Access::Roles(&[Operator])),
    ("/oubli.v1.TemplatesService/Get", Access::Roles(&[Operator])),
    ("/oubli.v1.TemplatesService/Search", Access::Roles(&[Operator])),
    ("/oubli.v1.TemplatesService/Stats", Access::Roles(&[Auditor, Admin])),
    ("/oubli.v1.TransparencyService/GetCheckpoint", Access::Public),
    ("/oubli.v1.TransparencyService/GetVerifierKey", Access::Public),
    ("/oubli.v1.TransparencyService/GetInclusionProof", Access::Public),
    ("/oubli.v1.TransparencyService/GetConsistencyProof", Access::Public),
    ("/oubli.v1.TransparencyService/GetEntries", Access::Public),
    ("/oubli.v1.TransparencyService/GetReceipt", Access::Public),
    ("/oubli.v1.RightsService/BeginCapture", Access::Public),
    ("/oubli.v1.RightsService/SubmitAccessRequest", Access::Public),
    ("/oubli.v1.RightsService/GetRequest", Access::Public),
    ("/oubli.v1.RightsService/GetAccessReport", Access::Public),
    ("/oubli.v1.RightsService/ListRequests", Access::Roles(&[PrivacyDesk, Auditor])),
    ("/oubli.v1.RightsService/ReviewRequest", Access::Roles(&[PrivacyDesk])),
    ("/oubli.v1.RightsService/DenyRequest", Access::Roles(&[PrivacyDesk])),
    ("/oubli.v1.RightsService/ExtendRequest", Access::Roles(&[PrivacyDesk])),
    ("/oubli.v1.RightsService/VerifyIdentity", Access::Roles(&[PrivacyDesk])),
    ("/oubli.v1.RightsService/SubmitErasureRequest", Access::Public),
    ("/oubli.v1.RightsService/GetErasureReceipts", Access::Public),
    ("/oubli.v1.RightsService/AttestNoMatch", Access::Public),
    ("/oubli.v1.NotificationsService/ListNotifications", Access::Roles(&[Operator])),
    ("/oubli.v1.NotificationsService/AckNotification", Access::Roles(&[Operator])),
    ("/oubli.v1.AdminService/ListAuditEvents", Access::Roles(&[Auditor])),
    ("/oubli.v1.AdminService/GetPolicy", Access::Roles(&[Admin, Auditor])),
    ("/oubli.v1.AdminService/ReloadPolicy", Access::Roles(&[Admin])),
    ("/oubli.v1.AdminService/SweepPolicy", Access::Roles(&[Admin])),
    ("/oubli.v1.AdminService/RotateKeys", Access::Roles(&[Admin])),
    ("/oubli.v1.AdminService/RunPurge", Access::Roles(&[Admin])),
    ("/oubli.v1.ReplicationService/FetchSealed", Access::Roles(&[Replica])),
    ("/oubli.v1.ReplicationService/RecordDisclosures", Access::Roles(&[Replica])),
];

/// What the audit trail and the metrics record for a path not in [`METHODS`].
pub const UNKNOWN_METHOD: &str = "unknown";

/// Services that pass the gate untouched (no token, no audit).
const UNGATED: &[&str] =
    &["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

/// The method's name as recorded (from the table, never the caller's text) and who may call
/// it; `None` for health and reflection.
fn access(path: &str) -> Option<(&'static str, Access)> {
    if UNGATED.iter().any(|prefix| path.starts_with(prefix)) {
        return None;
    }
    // Any other path is let through to be answered Unimplemented, and audited as unknown.
    Some(METHODS.iter().find(|(m, _)| *m == path).map_or((UNKNOWN_METHOD, Access::Public), |(m, a)| (*m, *a)))
}

/// The call's id, in the handler's request extensions and the `x-request-id` response header.
#[derive(Debug, Clone)]
pub struct CallId(pub String);

/// Set by a handler in its response extensions: the rights request the call concerned.
#[derive(Debug, Clone)]
pub struct RightsRequestNote(pub String);

/// The caller a handler runs for (put there by the gate; anonymous if it is missing).
pub fn caller<T>(request: &tonic::Request<T>) -> Caller {
    request.extensions().get::<Caller>().cloned().unwrap_or_else(Caller::anonymous)
}

#[derive(Clone)]
pub struct GateLayer {
    pub tokens: Arc<Tokens>,
    pub rights: Arc<Rights>,
    /// On a read replica: where everything it does not serve goes instead (said in the
    /// refusal).
    pub replica_of: Option<Arc<str>>,
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;
    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner, tokens: self.tokens.clone(), rights: self.rights.clone(), replica_of: self.replica_of.clone() }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    tokens: Arc<Tokens>,
    rights: Arc<Rights>,
    replica_of: Option<Arc<str>>,
}

/// What a read replica serves: reads of its copies. Everything else (enrolment, rights
/// requests, the log, administration) is the shard's primary's.
const REPLICA_SERVES: &[&str] =
    &["/oubli.v1.TemplatesService/Get", "/oubli.v1.TemplatesService/Search", "/oubli.v1.TemplatesService/Stats"];

/// A read replica's refusal of `method`, naming where to send it.
fn replica_refusal(method: &str, primary: &str) -> Option<Status> {
    (!REPLICA_SERVES.contains(&method)).then(|| {
        Status::failed_precondition(format!(
            "this node is a read replica of its shard: it serves only Get, Search and Stats; send {method} to the \
             shard's primary (replica 0) at {primary}, or through the gateway"
        ))
    })
}

fn bearer(headers: &http::HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    Some(value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).ok_or(()))
}

/// Decides a call at the gate: the caller, or the refusal (with whom it refused).
fn admit(tokens: &Tokens, headers: &http::HeaderMap, access: Access, path: &str) -> Result<Caller, (Status, Caller)> {
    let caller = match bearer(headers) {
        None => Caller::anonymous(),
        Some(Err(())) => {
            return Err((
                Status::unauthenticated("the authorization header must be \"Bearer <token>\""),
                Caller::anonymous(),
            ));
        }
        Some(Ok(token)) => tokens.authenticate(token).ok_or_else(|| {
            (Status::unauthenticated("unknown token: ask the server's admin for one"), Caller::anonymous())
        })?,
    };
    match access {
        Access::Public => Ok(caller),
        Access::Roles(roles) if roles.iter().any(|r| caller.has(*r)) => Ok(caller),
        Access::Roles(roles) => {
            let needed = roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(" or ");
            let status = if caller.is_anonymous() {
                Status::unauthenticated(format!(
                    "{path} needs a token with role {needed}: send \"authorization: Bearer <token>\""
                ))
            } else {
                Status::permission_denied(format!(
                    "client {:?} (roles: {}) may not call {path}: it needs role {needed}",
                    caller.client,
                    if caller.roles.is_empty() { "none".into() } else { caller.role_names() }
                ))
            };
            Err((status, caller))
        }
    }
}

fn new_call_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the operating system's random number generator works");
    hex::encode(b)
}

/// The status code's name as the audit trail and the metrics spell it ("Ok", "NotFound", ...).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

impl<S, B> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was made ready serves this call (tower's clone-and-swap idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some((method, access)) = access(request.uri().path()) else {
            return Box::pin(inner.call(request));
        };
        let tokens = self.tokens.clone();
        let rights = self.rights.clone();
        let refused = self.replica_of.as_deref().and_then(|primary| replica_refusal(method, primary));
        Box::pin(async move {
            let started = std::time::Instant::now();
            let call_id = new_call_id();
            let admitted = admit(&tokens, request.headers(), access, method).and_then(|caller| match refused {
                Some(status) => Err((status, caller)),
                None => Ok(caller),
            });
            let (mut response, caller) = match admitted {
                Ok(caller) => {
                    request.extensions_mut().insert(caller.clone());
                    request.extensions_mut().insert(CallId(call_id.clone()));
                    (inner.call(request).await?, caller)
                }
                Err((status, caller)) => (status.into_http(), caller),
            };
            let code = Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code());
            rights.metrics().record_call(method, code_name(code), started.elapsed());
            let event = AuditEvent {
                seq: 0,
                at: rights.now(),
                call_id: call_id.clone(),
                caller: caller.client.clone(),
                roles: caller.role_names(),
                method: method.to_string(),
                code: code_name(code).to_string(),
                rights_request: response.extensions().get::<RightsRequestNote>().map(|n| n.0.clone()),
            };
            // A memtable insert and a buffered write-ahead-log append, grouped with the events of
            // calls ending meanwhile: cheap enough inline.
            if let Err(e) = rights.audit(event) {
                tracing::error!(error = %e, "audit trail append failed");
            }
            if let Ok(value) = http::HeaderValue::from_str(&call_id) {
                response.headers_mut().insert("x-request-id", value);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_table_lists_exactly_the_methods_of_the_api() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(super::super::pb::FILE_DESCRIPTOR_SET).unwrap();
        let mut api: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service.iter().flat_map(move |s| {
                    s.method.iter().map(move |m| format!("/{}.{}/{}", f.package(), s.name(), m.name()))
                })
            })
            .collect();
        let mut table: Vec<String> = METHODS.iter().map(|(m, _)| m.to_string()).collect();
        api.sort();
        table.sort();
        assert_eq!(api, table);
        assert_eq!(access("/grpc.health.v1.Health/Check"), None);
        assert_eq!(access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), None);
        assert_eq!(
            access("/oubli.v1.TemplatesService/Search"),
            Some(("/oubli.v1.TemplatesService/Search", Access::Roles(&[Operator])))
        );
    }

    #[test]
    fn a_path_not_in_the_table_is_recorded_under_one_label() {
        for path in [
            "/oubli.v1.TemplatesService/Nope",
            "/oubli.v1.TemplatesService/Search/../Enroll",
            "/oubli.v2.X/<script>",
            "/grpc.health.v1.HealthX/Check",
            "/evil.Service/Method",
            "/",
        ] {
            assert_eq!(access(path), Some((UNKNOWN_METHOD, Access::Public)), "{path}");
        }
    }
}
