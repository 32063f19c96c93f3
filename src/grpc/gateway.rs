//! The gateway role: one address in front of several shards, serving `TemplatesService`.
//!
//! It holds no data, no key and no token. Each call is forwarded with the caller's own
//! `authorization` header, so every shard authenticates the caller, applies its limits and
//! writes its own recipients log and audit trail exactly as it would for a direct call.
//!
//! - `Search` goes to every shard at once. Each returns its own top `k`, and the gateway merges
//!   them by score, highest first, equal scores by record id, as one node orders its hits. With
//!   the exact index this is the same list as one node holding every shard's records. With
//!   HNSW, each shard searches its own graph, so the merged list can differ from one node's
//!   graph in the same way two graphs differ.
//! - `Enroll` goes to one shard, chosen from the source address. A source therefore always
//!   lands on the same shard, where its suppression entry and idempotency keys live.
//! - `EnrollStream` is read whole, split by the same placement (order kept within each part)
//!   and streamed to each shard at once; the ids come back in the call's order. Each shard's
//!   part is one atomic write there, but the parts are not one write: when a shard refuses its
//!   part, the refusal says which shards stored theirs (a retry with idempotency keys stores
//!   each item once; a part whose shard did not answer is said to be of unknown outcome). The
//!   stream is held whole only for a caller with a token, within 20,000 items and 96 MiB.
//! - `Get` returns the record from the shard that holds it, even if another shard refuses.
//! - `Stats` adds the shards' counts.
//!
//! Rights requests, the transparency log and administration are not served here: each
//! shard runs its own workflows and its own log. The refusal says so.
//!
//! Before its first call to a shard, the gateway checks that the node there says (by a health
//! name, [`shard_health_name`]) it is that shard of as many as the gateway has.
//!
//! Every call to a shard is bounded: by the caller's own deadline (`grpc-timeout`, passed on)
//! and at most [`SHARD_CALL_TIMEOUT`]; a shard that stops answering is also found by HTTP/2
//! keep-alive pings. A caller who gives up cancels the calls made for it. A caller's token goes
//! to the shards in the clear (the gateway has no TLS to them yet), so shards must be on
//! loopback.
//!
//! What each shard records stays per shard: a search's recipients rows are written by every
//! shard for its own top `k`, so a shard may record as disclosed a hit the merge then drops (at
//! most `k` per shard beyond those answered: an over-count, never an under-count). And a face
//! kept on a shard's never-enrol-again list is checked only by that shard.
use std::{net::IpAddr, pin::Pin, sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tonic::{Request, Response, Status, metadata::MetadataMap, transport::Channel};
use tracing::{info, warn};

use super::{MAX_MESSAGE_BYTES, MAX_STREAM_ITEMS, pb, pb::templates_service_client::TemplatesServiceClient};

/// The longest a call to one shard may take, whatever the caller's own deadline (an enrolment
/// on etcd is refused after its 30 s write deadline, so this leaves it room to say why).
pub const SHARD_CALL_TIMEOUT: Duration = Duration::from_secs(45);
/// The most bytes of items one EnrollStream call may hold at the gateway, which reads it whole
/// before splitting it: 20,000 templates of 512 dimensions with their provenance take about 45.
pub const MAX_STREAM_BYTES: usize = 96 << 20;
/// How long a connection to a shard may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings to each shard, and how long one may go unanswered before the connection is
/// dropped (a shard paused or gone is then refused at once, not after the call's timeout).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// One shard as the gateway reaches it.
#[derive(Clone)]
struct Shard {
    url: String,
    client: TemplatesServiceClient<Channel>,
    health: tonic_health::pb::health_client::HealthClient<Channel>,
    /// Whether the node has said it is this shard of this many ([`shard_health_name`]).
    verified: Arc<std::sync::atomic::AtomicBool>,
}

/// The health-service name under which a node says which shard of how many it is: served
/// (SERVING) by a node with a [`Placement`], checked by a gateway before it sends it a call.
pub fn shard_health_name(placement: Placement) -> String {
    format!("oubli.v1.Shard/{}-of-{}", placement.shard, placement.of)
}

/// The `TemplatesService` of a gateway over `shards`.
#[derive(Clone)]
pub struct Gateway {
    shards: Arc<[Shard]>,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("a gateway needs at least one shard: --shards http://HOST:PORT,http://HOST:PORT")]
    NoShards,
    #[error("shard address {url:?}: {reason}; write it as http://HOST:PORT")]
    BadShard { url: String, reason: String },
    #[error(
        "shard address {url:?} is not on loopback: a gateway passes each caller's token to the shards in the \
         clear (it has no TLS to them yet), so every shard must be at 127.0.0.1, ::1 or localhost"
    )]
    NotLoopback { url: String },
    #[error("shard address {url:?} is given twice: each shard once, in shard order")]
    Duplicate { url: String },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

impl Gateway {
    /// A gateway over the shards at `urls`, in shard order (connections are made at first use).
    pub fn new(urls: &[String]) -> Result<Gateway, GatewayError> {
        if urls.is_empty() {
            return Err(GatewayError::NoShards);
        }
        let shards = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                if urls[..i].contains(url) {
                    return Err(GatewayError::Duplicate { url: url.clone() });
                }
                let endpoint = Channel::from_shared(url.clone())
                    .map_err(|e| GatewayError::BadShard { url: url.clone(), reason: e.to_string() })?;
                if !on_loopback(endpoint.uri()) {
                    return Err(GatewayError::NotLoopback { url: url.clone() });
                }
                let endpoint = endpoint
                    .tcp_nodelay(true)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(SHARD_CALL_TIMEOUT)
                    .http2_keep_alive_interval(KEEP_ALIVE)
                    .keep_alive_timeout(KEEP_ALIVE)
                    .keep_alive_while_idle(true);
                let channel = endpoint.connect_lazy();
                let client = TemplatesServiceClient::new(channel.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES);
                let health = tonic_health::pb::health_client::HealthClient::new(channel);
                Ok(Shard { url: url.clone(), client, health, verified: Default::default() })
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        Ok(Gateway { shards: shards.into() })
    }

    /// Calls every shard with `message` and the caller's credentials, at once; every answer, in
    /// shard order, or the first refusal, naming its shard.
    async fn on_every_shard<M, T, F, Fut>(&self, metadata: &MetadataMap, message: &M, call: F) -> Result<Vec<T>, Status>
    where
        M: Clone,
        T: Send + 'static,
        F: Fn(TemplatesServiceClient<Channel>, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>> + Send + 'static,
    {
        for i in 0..self.shards.len() {
            self.verify(i).await?;
        }
        let mut calls = JoinSet::new();
        for (i, s) in self.shards.iter().enumerate() {
            let answer = call(s.client.clone(), forwarded(metadata, message.clone()));
            calls.spawn(async move { (i, answer.await) });
        }
        // Dropped with this future, the set cancels the calls still running.
        let mut answers: Vec<Option<Result<Response<T>, Status>>> = (0..self.shards.len()).map(|_| None).collect();
        while let Some(done) = calls.join_next().await {
            let (i, answer) = done.map_err(lost)?;
            answers[i] = Some(answer);
        }
        answers
            .into_iter()
            .zip(self.shards.iter())
            .map(|(answer, shard)| match answer {
                Some(a) => a.map(Response::into_inner).map_err(|e| named(shard, e)),
                None => Err(Status::internal("a shard's call ended without an answer")),
            })
            .collect()
    }
}

impl Gateway {
    /// Makes sure the node at shard `i`'s address says it is shard `i` of as many as the
    /// gateway has (once; a node that does not answer is asked again at the next call). A
    /// gateway given its shards out of order, or fewer or more than there are, is refused:
    /// its searches would pass part of the records off as all of them, and its enrolments
    /// would split a source's suppression across shards.
    async fn verify(&self, i: usize) -> Result<(), Status> {
        use std::sync::atomic::Ordering;
        let shard = &self.shards[i];
        if shard.verified.load(Ordering::Acquire) {
            return Ok(());
        }
        let want = Placement { shard: i, of: self.shards.len() };
        let name = shard_health_name(want);
        let asked = tonic_health::pb::HealthCheckRequest { service: name };
        match shard.health.clone().check(asked).await {
            Ok(answer)
                if answer.get_ref().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 =>
            {
                shard.verified.store(true, Ordering::Release);
                Ok(())
            }
            Ok(_) => Err(named(shard, Status::unavailable("the node is not serving yet; retry"))),
            Err(e) if e.code() == tonic::Code::NotFound => Err(Status::failed_precondition(format!(
                "shard {} does not say it is shard {i} of {}: give the gateway its --shards in shard order, every \
                 shard once, and start each node with --cluster --shard S --shard-count {}",
                shard.url, want.of, want.of
            ))),
            Err(e) => Err(named(shard, e)),
        }
    }

    /// Shard `i`'s refusal of its part of a stream: the item it names given as the call's
    /// own, and which shards stored their parts (those stay).
    fn part_refused(
        &self,
        i: usize,
        status: Status,
        placed: &[(usize, usize)],
        stored: &[Option<pb::EnrollStreamResponse>],
    ) -> Status {
        // A shard names the item of its own part ("item N"): the call's index is clearer.
        let message = renumbered(status.message(), |n| placed.iter().position(|&p| p == (i, n)));
        let kept: Vec<String> = stored
            .iter()
            .zip(self.shards.iter())
            .filter_map(|(a, s)| a.as_ref().map(|a| format!("{} ({} items)", s.url, a.record_ids.len())))
            .collect();
        let kept = if kept.is_empty() {
            "No other shard stored its part.".to_string()
        } else {
            format!(
                "The other shards' parts were stored, as one write on each: {}. A retry stores an item with an \
                 idempotency key once, and one without it again.",
                kept.join(", ")
            )
        };
        // Without an answer, the part may have been stored all the same.
        let what = match status.code() {
            tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unavailable
            | tonic::Code::Unknown => "did not answer for its part of the stream, which it may or may not have stored",
            _ => "refused its part of the stream",
        };
        Status::with_metadata(
            status.code(),
            format!("shard {} {what}: {message}. {kept}", self.shards[i].url),
            status.metadata().clone(),
        )
    }
}

/// `message` with its first "item N" given as `call(N)`'s number, when there is one.
fn renumbered(message: &str, call: impl Fn(usize) -> Option<usize>) -> String {
    let Some(at) = message.find("item ") else { return message.to_string() };
    let digits_from = at + "item ".len();
    let digits = message[digits_from..].bytes().take_while(u8::is_ascii_digit).count();
    let Some(n) = message[digits_from..digits_from + digits].parse().ok().and_then(&call) else {
        return message.to_string();
    };
    format!("{}item {n}{}", &message[..at], &message[digits_from + digits..])
}

/// A shard call's task that panicked or was cancelled: logged, answered without its text.
fn lost(e: tokio::task::JoinError) -> Status {
    warn!(error = %e, "a call to a shard ended abnormally");
    Status::internal("the gateway's call to a shard ended abnormally; retry")
}

/// Whether `uri`'s host is a loopback address or `localhost`.
pub fn on_loopback(uri: &http::Uri) -> bool {
    match uri.host() {
        Some("localhost") => true,
        Some(host) => {
            host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// The name of the index that answered for every shard: the one they share, or, when they
/// differ (each chooses by its own size), the first that is not the exact scan, since then not
/// every record was compared.
fn index_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    names.iter().find(|n| **n != "exact").or(names.first()).map(|n| n.to_string()).unwrap_or_default()
}

/// Which of `shards` holds the records of `source_uri`: a stable hash of the address, as the
/// shards key its suppression (surrounding spaces dropped), so a source erased on one shard is
/// never placed on another.
pub fn placement(source_uri: &str, shards: usize) -> usize {
    let digest = Sha256::digest(source_uri.trim().as_bytes());
    let head = u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"));
    (head % shards.max(1) as u64) as usize
}

/// The shard a node serves, of how many: the node refuses an enrolment whose source
/// [`placement`] puts on another shard, so a gateway given its shards in another order (or
/// another number of them) is refused rather than splitting a source's suppression entry and
/// idempotency keys across shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub shard: usize,
    pub of: usize,
}

impl Placement {
    /// Shard `shard` of `of` (`shard` below `of`).
    pub fn new(shard: usize, of: usize) -> Result<Placement, String> {
        if shard >= of {
            return Err(format!(
                "shard {shard} of {of}: shards are numbered from 0 to {}; give every node the same --shard-count, \
                 the number of shards behind the gateway",
                of.saturating_sub(1)
            ));
        }
        Ok(Placement { shard, of })
    }

    /// Refuses a source this shard does not hold.
    pub fn check(&self, source_uri: &str) -> Result<(), Status> {
        let home = placement(source_uri, self.of);
        if home == self.shard {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "this source belongs on shard {home} of {} (placed by its address) and this node serves shard {}: enrol \
             through the gateway, and give the gateway its --shards in shard order",
            self.of, self.shard
        )))
    }
}

/// `message` with the caller's `authorization` header and deadline (`grpc-timeout`); nothing
/// else of theirs is passed on.
fn forwarded<M>(metadata: &MetadataMap, message: M) -> Request<M> {
    let mut request = Request::new(message);
    for header in ["authorization", "grpc-timeout"] {
        if let Some(value) = metadata.get(header) {
            request.metadata_mut().insert(header, value.clone());
        }
    }
    request
}

/// A shard's refusal, with the same code and metadata (`retry-after`, say), saying which shard
/// refused.
fn named(shard: &Shard, status: Status) -> Status {
    Status::with_metadata(
        status.code(),
        format!("shard {}: {}", shard.url, status.message()),
        status.metadata().clone(),
    )
}

/// Every shard's hits in one list as one node orders them (score, highest first; equal scores
/// by record id), at most `k`.
pub fn merge_hits(per_shard: Vec<Vec<pb::SearchHit>>, k: usize) -> Vec<pb::SearchHit> {
    let mut hits: Vec<pb::SearchHit> = per_shard.into_iter().flatten().collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.record_id.cmp(&b.record_id)));
    hits.truncate(k);
    hits
}

#[tonic::async_trait]
impl pb::templates_service_server::TemplatesService for Gateway {
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let source = message.provenance.as_ref().map(|p| p.source_uri.as_str()).unwrap_or_default();
        let i = placement(source, self.shards.len());
        self.verify(i).await?;
        let shard = &self.shards[i];
        let answer = shard.client.clone().enroll(forwarded(&metadata, message)).await.map_err(|e| named(shard, e))?;
        Ok(Response::new(answer.into_inner()))
    }

    async fn enroll_stream(
        &self,
        request: Request<tonic::Streaming<pb::EnrollStreamRequest>>,
    ) -> Result<Response<pb::EnrollStreamResponse>, Status> {
        let (metadata, _, mut stream) = request.into_parts();
        // The stream is held here before any shard judges the caller: not without a token, and
        // within a bound in bytes as well as in items.
        if metadata.get("authorization").is_none() {
            return Err(Status::unauthenticated(
                "enrolment needs a token with the operator role: send `authorization: Bearer <token>`",
            ));
        }
        // Each part in the call's order, with where each item was in the call.
        let mut parts: Vec<Vec<pb::EnrollStreamRequest>> = vec![Vec::new(); self.shards.len()];
        let mut placed: Vec<(usize, usize)> = Vec::new();
        let mut held = 0usize;
        while let Some(item) = stream.message().await? {
            held += prost::Message::encoded_len(&item);
            if placed.len() == MAX_STREAM_ITEMS || held > MAX_STREAM_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "a stream through the gateway holds at most {MAX_STREAM_ITEMS} items and {} MiB; send the rest \
                     in another stream",
                    MAX_STREAM_BYTES >> 20
                )));
            }
            let source = item.item.as_ref().and_then(|i| i.provenance.as_ref()).map_or("", |p| p.source_uri.as_str());
            let shard = placement(source, self.shards.len());
            placed.push((shard, parts[shard].len()));
            parts[shard].push(item);
        }
        for (i, part) in parts.iter().enumerate() {
            if !part.is_empty() {
                self.verify(i).await?;
            }
        }
        let mut calls = JoinSet::new();
        for (i, part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let mut client = self.shards[i].client.clone();
            let request = forwarded(&metadata, tokio_stream::iter(part));
            calls.spawn(async move { (i, client.enroll_stream(request).await) });
        }
        let mut stored: Vec<Option<pb::EnrollStreamResponse>> = vec![None; self.shards.len()];
        let mut refused: Vec<(usize, Status)> = Vec::new();
        while let Some(done) = calls.join_next().await {
            match done.map_err(lost)? {
                (i, Ok(answer)) => stored[i] = Some(answer.into_inner()),
                (i, Err(e)) => refused.push((i, e)),
            }
        }
        if let Some((i, first)) = refused.into_iter().min_by_key(|(i, _)| *i) {
            return Err(self.part_refused(i, first, &placed, &stored));
        }
        let mut record_ids = Vec::with_capacity(placed.len());
        for (shard, at) in &placed {
            let id = stored[*shard].as_ref().and_then(|a| a.record_ids.get(*at));
            record_ids.push(id.cloned().ok_or_else(|| {
                Status::internal(format!("shard {} answered fewer ids than it was sent items", self.shards[*shard].url))
            })?);
        }
        let created = stored.iter().flatten().map(|a| a.created).sum();
        Ok(Response::new(pb::EnrollStreamResponse { record_ids, created }))
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        // One shard's refusal does not hide the record another holds.
        let answers = self.on_every_shard(&metadata, &message, |mut c, r| async move {
            Ok(Response::new(match c.get(r).await {
                Ok(found) => Ok(Some(found.into_inner())),
                Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
                Err(e) => Err(e),
            }))
        });
        let mut refused = None;
        for (answer, shard) in answers.await?.into_iter().zip(self.shards.iter()) {
            match answer {
                Ok(Some(found)) => return Ok(Response::new(found)),
                Ok(None) => {}
                Err(e) => refused = refused.or(Some(named(shard, e))),
            }
        }
        Err(refused.unwrap_or_else(|| Status::not_found("no shard holds this record")))
    }

    async fn search(&self, request: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let k = message.k as usize;
        let answers = self.on_every_shard(&metadata, &message, |mut c, r| async move { c.search(r).await }).await?;
        let candidates = answers.iter().map(|a| a.candidates).sum();
        let index = index_of(answers.iter().map(|a| a.index.as_str()));
        let hits = merge_hits(answers.into_iter().map(|a| a.hits).collect(), k);
        Ok(Response::new(pb::SearchResponse { hits, candidates, index }))
    }

    async fn stats(&self, request: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let answers = self.on_every_shard(&metadata, &message, |mut c, r| async move { c.stats(r).await }).await?;
        let first = answers.first().cloned().unwrap_or_default();
        if let Some(other) = answers.iter().find(|a| a.dimension != first.dimension) {
            return Err(Status::failed_precondition(format!(
                "the shards hold templates of different dimensions ({} and {}): a gateway serves one dimension",
                first.dimension, other.dimension
            )));
        }
        Ok(Response::new(pb::StatsResponse {
            record_count: answers.iter().map(|a| a.record_count).sum(),
            dimension: first.dimension,
            bytes_on_disk: answers.iter().map(|a| a.bytes_on_disk).sum(),
            sst_file_count: answers.iter().map(|a| a.sst_file_count).sum(),
            index: index_of(answers.iter().map(|a| a.index.as_str())),
        }))
    }
}

/// The refusal of every service a gateway does not serve.
struct NotHere;

impl NotHere {
    const MESSAGE: &'static str = "this address is a gateway: it serves TemplatesService (Enroll, EnrollStream, Get, \
                                   Search, Stats) only. Rights requests, the transparency log and administration go to each shard's \
                                   node (`oubli cluster status` lists the shards)";
}

/// Serves a gateway over `shards` on `listener` until `shutdown` completes.
pub async fn run(
    listener: tokio::net::TcpListener,
    shards: &[String],
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let gateway = Gateway::new(shards)?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<pb::templates_service_server::TemplatesServiceServer<Gateway>>().await;
    let templates =
        pb::templates_service_server::TemplatesServiceServer::new(gateway).max_decoding_message_size(MAX_MESSAGE_BYTES);
    info!(addr = ?listener.local_addr().ok(), shards = shards.len(), "serving oubli.v1 as a gateway");
    tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(|inner| NotHereService { inner }))
        .add_service(health)
        .add_service(templates)
        .serve_with_incoming_shutdown(super::incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// Answers a call to any service but templates and health with [`NotHere`]'s message.
#[derive(Clone)]
struct NotHereService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for NotHereService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let served = path.starts_with("/oubli.v1.TemplatesService/") || path.starts_with("/grpc.health.");
        if !served && path.starts_with("/oubli.v1.") {
            return Box::pin(async { Ok(Status::unimplemented(NotHere::MESSAGE).into_http()) });
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

/// A gateway running in this process on a loopback port: for tests.
pub struct EmbeddedGateway {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), GatewayError>>,
}

impl EmbeddedGateway {
    /// Binds `127.0.0.1:0` and serves a gateway over `shards` there.
    pub async fn start(shards: Vec<String>) -> Result<EmbeddedGateway, GatewayError> {
        Gateway::new(&shards)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run(listener, &shards, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(EmbeddedGateway { addr, stop, task })
    }

    /// Stops it and waits until it has.
    pub async fn stop(self) -> Result<(), GatewayError> {
        let _ = self.stop.send(());
        self.task.await.map_err(|e| GatewayError::Listen(std::io::Error::other(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32) -> pb::SearchHit {
        pb::SearchHit { record_id: id.into(), score, ..Default::default() }
    }

    #[test]
    fn merged_hits_are_ordered_as_one_node_orders_them_and_cut_at_k() {
        let merged =
            merge_hits(vec![vec![hit("0c", 0.9), hit("0a", 0.5)], vec![hit("0b", 0.9), hit("0d", 0.7)], vec![]], 3);
        let order: Vec<(&str, f32)> = merged.iter().map(|h| (h.record_id.as_str(), h.score)).collect();
        assert_eq!(order, [("0b", 0.9), ("0c", 0.9), ("0d", 0.7)]);
    }

    #[test]
    fn a_source_is_always_placed_on_the_same_shard_and_sources_spread() {
        let placed: Vec<usize> = (0..300).map(|i| placement(&format!("https://photos.example/{i}.jpg"), 3)).collect();
        let again: Vec<usize> = (0..300).map(|i| placement(&format!("https://photos.example/{i}.jpg"), 3)).collect();
        assert_eq!(placed, again);
        for shard in 0..3 {
            let n = placed.iter().filter(|&&p| p == shard).count();
            assert!((60..=140).contains(&n), "shard {shard} got {n} of 300");
        }
    }

    #[tokio::test]
    async fn a_gateway_without_shards_or_with_a_bad_address_is_refused_with_how_to_write_it() {
        let none = Gateway::new(&[]).err().expect("no shards").to_string();
        assert!(none.contains("--shards http://"), "{none}");
        let bad = Gateway::new(&["not a url".into()]).err().expect("a bad address").to_string();
        assert!(bad.contains("http://HOST:PORT"), "{bad}");
        let remote = Gateway::new(&["http://10.0.0.7:50061".into()]).err().expect("not loopback").to_string();
        assert!(remote.contains("loopback") && remote.contains("in the clear"), "{remote}");
        let twice = ["http://127.0.0.1:50061".to_string(), "http://127.0.0.1:50061".to_string()];
        let twice = Gateway::new(&twice).err().expect("a duplicate").to_string();
        assert!(twice.contains("given twice"), "{twice}");
        for fine in ["http://127.0.0.1:50061", "http://localhost:50061", "http://[::1]:50061"] {
            assert!(Gateway::new(&[fine.into()]).is_ok(), "{fine}");
        }
    }

    #[test]
    fn a_shard_s_item_number_is_given_as_the_call_s_wherever_it_is_in_the_message() {
        let call = |n: usize| (n < 5).then_some(n + 10);
        assert_eq!(renumbered("item 3: the template has 3 values", call), "item 13: the template has 3 values");
        assert_eq!(
            renumbered("idempotency key of item 2 was already used for a different enrolment", call),
            "idempotency key of item 12 was already used for a different enrolment"
        );
        assert_eq!(renumbered("item 9: not in the part", call), "item 9: not in the part");
        assert_eq!(renumbered("no item number here", call), "no item number here");
        assert_eq!(renumbered("item x", call), "item x");
    }

    #[test]
    fn a_node_refuses_a_source_placed_on_another_shard_and_says_where_it_goes() {
        let zero = Placement::new(0, 2).unwrap();
        let one = Placement::new(1, 2).unwrap();
        for i in 0..40 {
            let uri = format!("https://photos.example/{i}.jpg");
            let (home, away) = if placement(&uri, 2) == 0 { (zero, one) } else { (one, zero) };
            assert!(home.check(&uri).is_ok());
            let refused = away.check(&uri).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
            assert!(refused.message().contains(&format!("belongs on shard {} of 2", home.shard)), "{refused:?}");
        }
        assert!(Placement::new(0, 1).unwrap().check("https://photos.example/any.jpg").is_ok());
        let bad = Placement::new(2, 2).unwrap_err();
        assert!(bad.contains("from 0 to 1") && bad.contains("--shard-count"), "{bad}");
    }

    #[test]
    fn a_source_with_surrounding_spaces_is_placed_where_its_suppression_lives() {
        for i in 0..50 {
            let uri = format!("https://photos.example/{i}.jpg");
            assert_eq!(placement(&format!(" {uri}\t"), 4), placement(&uri, 4));
        }
    }

    #[test]
    fn a_merged_answer_names_the_exact_scan_only_when_every_shard_ran_it() {
        assert_eq!(index_of(["exact", "exact"].into_iter()), "exact");
        assert_eq!(index_of(["exact", "hnsw"].into_iter()), "hnsw");
        assert_eq!(index_of(["hnsw", "exact"].into_iter()), "hnsw");
    }
}
