//! `oubli cluster walk` (`make cluster-demo`): two shards whose keys live in a local 3-member
//! etcd, behind a gateway, all served in this process over real gRPC; a person's access and
//! erasure requests, an etcd member paused during the erasure, and every member's disk scanned
//! for the erased keys after each step. Narrated like `oubli demo`.
use std::{collections::HashMap, fs, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use oubli::{
    grpc::{
        AuthChannel, Embedded,
        gateway::EmbeddedGateway,
        pb::{
            self, admin_service_client::AdminServiceClient, rights_service_client::RightsServiceClient,
            templates_service_client::TemplatesServiceClient,
        },
    },
    rights::{
        auth::{Role, Tokens},
        identity::CaptureKeys,
    },
    store::consensus::{ConsensusKeys, SHARDS_PREFIX},
    synth::{Population, PopulationConfig},
};
use rand::{Rng, SeedableRng};

use super::{
    cluster::{Local, show_residue},
    demo::{approve_own, ask_access, ask_erasure},
    rights::answered,
    status_error,
};

const SHARDS: usize = 2;
const CAPTURE_APP: &str = "oubli-cluster-demo-capture";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The demo's directory: the local etcd under `etcd/` (started by `make cluster-demo`), and
    /// the shards' data and key dirs, recreated on each run.
    #[arg(long, default_value = "target/cluster-demo")]
    dir: PathBuf,
    /// People in the synthetic population (three photos each).
    #[arg(long, default_value_t = 200)]
    people: usize,
}

/// One shard's node and the person's clients of it.
struct Shard {
    server: Embedded,
    rights: RightsServiceClient<AuthChannel>,
    desk: RightsServiceClient<AuthChannel>,
    admin: AdminServiceClient<AuthChannel>,
}

fn step(n: u32, title: &str) {
    outln!("\n== {n}. {title}");
}

/// Runs blocking work (the etcd client, the byte scans) off the async threads.
async fn off<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await?
}

pub async fn run(args: Args) -> Result<()> {
    let local = Local { dir: args.dir.join("etcd") };
    let etcd = local.config()?;
    // The counts narrated below are the cluster's: an earlier run's keys would inflate them.
    let earlier = off({
        let etcd = etcd.clone();
        move || Ok(ConsensusKeys::connect(etcd)?.shards()?)
    })
    .await?;
    if let Some(s) = earlier.iter().find(|s| s.records > 0 || s.epoch.is_some()) {
        bail!(
            "the etcd under {} already holds {} ({} records' keys) from an earlier run: start from a fresh cluster \
             (`make cluster-demo` does)",
            local.dir.display(),
            s.namespace,
            s.records
        );
    }
    for s in 0..SHARDS {
        let path = args.dir.join(format!("shard-{s}"));
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("cannot reset {}", path.display()))?;
        }
    }
    let tokens = args.dir.join("tokens.toml");
    if tokens.exists() {
        fs::remove_file(&tokens)?;
    }
    let operator = Tokens::add(&tokens, "police-a", &[Role::Operator])?;
    let desk = Tokens::add(&tokens, "desk", &[Role::PrivacyDesk])?;
    let admin = Tokens::add(&tokens, "admin", &[Role::Admin, Role::Auditor])?;
    let capture_app = SigningKey::from_bytes(&rand_chacha::ChaCha8Rng::seed_from_u64(2021).random());
    let mut trusted = CaptureKeys::default();
    trusted.add(CAPTURE_APP, capture_app.verifying_key()).map_err(anyhow::Error::msg)?;
    let capture_keys = args.dir.join("capture-keys.toml");
    oubli::store::private::replace(&capture_keys, trusted.to_toml().as_bytes())?;

    step(1, "A cluster: 3 etcd members, 2 shards, a gateway");
    let mut shards = Vec::new();
    for s in 0..SHARDS {
        let home = args.dir.join(format!("shard-{s}"));
        let mut config = oubli::Config::new(home.join("data"), home.join("keys"));
        config.tokens_file = Some(tokens.clone());
        config.rights.capture_keys = Some(capture_keys.clone());
        // The population is scraped, as Clearview's was: only the permissive profile takes it.
        config.rights.policy = oubli::rights::PolicySource::Profile("permissive".into());
        config.rights.purge_window = Duration::ZERO;
        let mut cluster = etcd.clone();
        cluster.namespace = format!("{SHARDS_PREFIX}{s}");
        config.cluster = Some(cluster);
        config.placement = Some(oubli::grpc::gateway::Placement::new(s, SHARDS).map_err(anyhow::Error::msg)?);
        let server = Embedded::start(config).await.with_context(|| format!("shard {s} did not start"))?;
        let at = server.addr.to_string();
        shards.push(Shard {
            rights: RightsServiceClient::new(super::channel_with(&at, None).await?),
            desk: RightsServiceClient::new(super::channel_with(&at, Some(&desk)).await?),
            admin: AdminServiceClient::new(super::channel_with(&at, Some(&admin)).await?),
            server,
        });
    }
    let urls: Vec<String> = shards.iter().map(|s| format!("http://{}", s.server.addr)).collect();
    let gateway = EmbeddedGateway::start(urls.clone()).await?;
    let at = gateway.addr.to_string();
    for (s, url) in urls.iter().enumerate() {
        outln!(
            "   shard {s}: a node at {url}: its own RocksDB (ciphertexts), its keys in etcd under {SHARDS_PREFIX}{s}"
        );
    }
    outln!("   gateway at {at}: no data, no key, no token of its own; it passes each caller's token on.");

    step(2, "Enrolment through the gateway, placed on a shard by each photo's source address");
    let population = Population::generate(&PopulationConfig {
        seed: 2021,
        identities: args.people,
        samples_per_identity: 3,
        probes_per_identity: 1,
        ..Default::default()
    })?;
    let mut police = TemplatesServiceClient::new(super::channel_with(&at, Some(&operator)).await?);
    let requests: Vec<pb::EnrollRequest> = (0..population.labels.len())
        .map(|i| pb::EnrollRequest {
            embedding: Some(pb::Embedding { values: population.sample(i).to_vec() }),
            provenance: Some(oubli::grpc::provenance_to_pb(&population.provenance[i])),
            idempotency_key: format!("photo-{i}"),
        })
        .collect();
    // The first photo alone, the rest in one stream the gateway splits by placement.
    let mut ids = vec![police.enroll(requests[0].clone()).await.map_err(status_error)?.into_inner().record_id];
    let stream = tokio_stream::iter(
        requests[1..].iter().map(|r| pb::EnrollStreamRequest { item: Some(r.clone()) }).collect::<Vec<_>>(),
    );
    let streamed = police.enroll_stream(stream).await.map_err(status_error)?.into_inner();
    outln!(
        "   1 Enroll call and 1 EnrollStream of {} photos, split into one atomic part per shard",
        streamed.record_ids.len()
    );
    ids.extend(streamed.record_ids);
    // A shard holds only the sources placed on it, so a source's suppression stays in one place.
    let elsewhere = requests
        .iter()
        .find(|r| r.provenance.as_ref().is_some_and(|p| oubli::grpc::gateway::placement(&p.source_uri, SHARDS) == 1))
        .context("a photo placed on shard 1")?;
    let mut direct = TemplatesServiceClient::new(super::channel_with(&urls[0], Some(&operator)).await?);
    if let Err(refused) = direct.enroll(elsewhere.clone()).await {
        outln!("   Sent straight to shard 0, a photo placed on shard 1 is refused: {}", refused.message());
    } else {
        bail!("shard 0 took a photo placed on shard 1");
    }
    let who: HashMap<String, u32> = ids.iter().cloned().zip(population.labels.iter().copied()).collect();
    let keys = Arc::new(
        off({
            let etcd = etcd.clone();
            move || Ok(ConsensusKeys::connect(etcd)?)
        })
        .await?,
    );
    let held = off({
        let keys = keys.clone();
        move || Ok(keys.shards()?)
    })
    .await?;
    for s in &held {
        outln!("   {}: {} records' keys in etcd", s.namespace, s.records);
    }
    let mut stats = TemplatesServiceClient::new(super::channel_with(&at, Some(&admin)).await?);
    let total = stats.stats(pb::StatsRequest {}).await.map_err(status_error)?.into_inner().record_count;
    outln!("   the gateway's Stats adds the shards': {total} records");

    step(3, "A search by face through the gateway: every shard scanned, the hits merged");
    let person = population.probe_labels[0];
    let probe = population.probe(0).to_vec();
    let search =
        pb::SearchRequest { probe: Some(pb::Embedding { values: probe.clone() }), k: 5, min_score: None, exact: true };
    let found = police.search(search.clone()).await.map_err(status_error)?.into_inner();
    for h in &found.hits {
        let source = h.provenance.as_ref().map(|p| p.source_uri.as_str()).unwrap_or_default();
        let whose = if who.get(&h.record_id) == Some(&person) { "the person's" } else { "someone else's" };
        outln!("   {:.3}  {source}  ({whose})", h.score);
    }
    outln!("   {} records compared across the shards ({} index)", found.candidates, found.index);

    step(4, "The person asks what is held about them (Art. 15), at each shard's node");
    let mut anyone = RightsServiceClient::new(super::channel_with(&at, None).await?);
    if let Err(refused) = anyone.list_requests(pb::ListRequestsRequest::default()).await {
        outln!("   The gateway does not take rights requests: {}", refused.message());
    }
    let mut disclosed = Vec::new();
    for (s, shard) in shards.iter_mut().enumerate() {
        let status = access(shard, &capture_app, &probe, &who, person).await?;
        let report = shard
            .rights
            .get_access_report(pb::GetAccessReportRequest {
                request_id: status.request_id.clone(),
                request_secret: status.secret.clone(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let parsed: oubli::rights::report::AccessReport = serde_json::from_str(&report.report_json)?;
        outln!(
            "   shard {s}: request {} {}: {} record(s) in the report",
            status.request_id,
            status.state,
            parsed.records.len()
        );
        disclosed.extend(parsed.records.into_iter().map(|r| (s, r.record_id)));
    }
    let own = who.values().filter(|&&p| p == person).count();
    outln!("   {} of the person's {own} photos are in the shards' reports.", disclosed.len());

    step(5, "Erasure (Art. 17), phase 1: the data keys deleted in etcd, then purged from every member");
    let control = ids.iter().find(|id| who.get(*id) != Some(&person)).context("someone else's record")?.clone();
    let (erased_prints, control_prints) = off({
        let (keys, etcd) = (keys.clone(), etcd.clone());
        let (disclosed, control) = (disclosed.clone(), control.clone());
        move || {
            let mut erased = Vec::new();
            let mut control_key = None;
            for s in 0..SHARDS {
                let mut namespace = etcd.clone();
                namespace.namespace = format!("{SHARDS_PREFIX}{s}");
                let shard = ConsensusKeys::connect(namespace)?;
                for (on, id) in &disclosed {
                    if *on == s {
                        let key = shard.get(id.parse().context("a record id")?)?.context("the person's key")?;
                        erased.push(key.wrapped);
                    }
                }
                if let Some(k) = shard.get(control.parse().context("a record id")?)? {
                    control_key = Some(k.wrapped);
                }
            }
            let control_key = control_key.context("the control record's key")?;
            Ok((keys.prints_of(erased.iter().map(Vec::as_slice)), keys.prints_of([control_key.as_slice()])))
        }
    })
    .await?;
    outln!("   Before: where the person's {} wrapped keys are on each member's disk:", disclosed.len());
    let (k, p) = (keys.clone(), erased_prints.clone());
    off(move || show_residue(&k, &p, "their keys")).await?;
    outln!("   Member m3 is paused (SIGSTOP) before the person asks.");
    local.signal(3, libc::SIGSTOP)?;
    let paused = etcd.members[2].endpoint.clone();
    let result = erase_with_member_paused(&mut shards, &capture_app, &probe, &who, person, &paused, &keys).await;
    local.signal(3, libc::SIGCONT)?;
    let requests = result?;
    let (k, p) = (keys.clone(), erased_prints.clone());
    outln!("   While m3 is paused, the two members that answer are purged; m3 still holds:");
    off(move || show_residue(&k, &p, "their keys")).await?;
    outln!("   m3 resumed (SIGCONT): it catches up, and the purge retried every 10 s completes.");
    for (s, (id, secret)) in requests.iter().enumerate() {
        let status = until(&mut shards[s].rights, id, secret, 400, |st| st.phase1_done()).await?;
        let receipts = receipts(&mut shards[s].rights, id, secret).await?;
        let body = body(&receipts.phase1_receipt_json)?;
        let per_member = etcd
            .members
            .iter()
            .map(|m| {
                let n = body.verified.iter().filter(|v| v.starts_with(&format!("etcd member {}:", m.endpoint))).count();
                format!("{} {n}", m.endpoint.trim_start_matches("http://"))
            })
            .collect::<Vec<_>>();
        outln!(
            "   shard {s}: {} ({}); phase-1 receipt, checks per member: {}",
            status.state,
            status.erasure_step,
            per_member.join(", ")
        );
    }
    outln!("   After: the erased keys on each member's disk, then the control record's key:");
    let (k, p, c) = (keys.clone(), erased_prints.clone(), control_prints.clone());
    let (left, kept) =
        off(move || Ok((show_residue(&k, &p, "their keys")?, show_residue(&k, &c, "the control key")?))).await?;

    step(6, "Phase 2: the ciphertexts compacted out of each shard's table files and checked");
    for (s, (id, secret)) in requests.iter().enumerate() {
        shards[s].admin.run_purge(pb::RunPurgeRequest {}).await.map_err(status_error)?;
        let status = until(&mut shards[s].rights, id, secret, 120, |st| st.state == "completed").await?;
        let receipts = receipts(&mut shards[s].rights, id, secret).await?;
        let phase2 = body(&receipts.phase2_receipt_json)?;
        outln!(
            "   shard {s}: {}; its phase-2 receipt verified {} statement(s), among them:",
            status.state,
            phase2.verified.len()
        );
        for v in phase2.verified.iter().filter(|v| v.contains("scan")).take(2) {
            outln!("     {v}");
        }
    }
    let after = police.search(search).await.map_err(status_error)?.into_inner();
    let still = after.hits.iter().filter(|h| who.get(&h.record_id) == Some(&person)).count();
    outln!("   The same search through the gateway now returns {still} of the person's records among its top 5.");

    gateway.stop().await?;
    for shard in shards {
        let Shard { server, rights, desk, admin } = shard;
        drop((rights, desk, admin));
        server.stop().await.context("a shard's node failed")?;
    }
    if left > 0 || kept == 0 {
        bail!("the purge is not what the receipts claim: see above");
    }
    outln!("\nDone. Not shown, because not built: more than one replica per shard, and one request through the");
    outln!(
        "gateway for every shard (the person asked each shard's node). ARCHITECTURE.md and docs/scaling.md say more."
    );
    Ok(())
}

/// A submitted request's id, secret and state.
struct Submitted {
    request_id: String,
    secret: String,
    state: String,
}

async fn access(
    shard: &mut Shard,
    app: &SigningKey,
    probe: &[f32],
    who: &HashMap<String, u32>,
    person: u32,
) -> Result<Submitted> {
    let (submitted, status) = ask_access(&mut shard.rights, probe, Some((app, CAPTURE_APP))).await?;
    let status = approve_own(&mut shard.desk, status, who, person).await?;
    Ok(Submitted { request_id: submitted.request_id, secret: submitted.request_secret, state: status.state })
}

/// The person's erasure at every shard while member `paused` does not answer: phase 1 stays
/// pending on each shard, its alert naming the member, and `cluster status`'s pending
/// acknowledgements name it too. The requests' ids and secrets.
async fn erase_with_member_paused(
    shards: &mut [Shard],
    app: &SigningKey,
    probe: &[f32],
    who: &HashMap<String, u32>,
    person: u32,
    paused: &str,
    keys: &Arc<ConsensusKeys>,
) -> Result<Vec<(String, String)>> {
    let mut requests = Vec::new();
    for (s, shard) in shards.iter_mut().enumerate() {
        let (submitted, status) = ask_erasure(&mut shard.rights, probe, (app, CAPTURE_APP)).await?;
        approve_own(&mut shard.desk, status, who, person).await?;
        let (id, secret) = (submitted.request_id, submitted.request_secret);
        let status = until(&mut shard.rights, &id, &secret, 300, |st| st.alert.contains(paused)).await?;
        outln!("   shard {s}: erasure {id} is at `{}`; its alert: {}", status.erasure_step, status.alert);
        requests.push((id, secret));
    }
    let k = keys.clone();
    let held = off(move || Ok(k.shards()?)).await?;
    outln!("   `oubli cluster status` lists what waits for acknowledgements:");
    for s in &held {
        for (name, acks) in &s.pending {
            let who: Vec<&str> = acks.pending.iter().map(|(m, _)| m.trim_start_matches("http://")).collect();
            outln!("     {} {name}: {}: waiting for {}", s.namespace, acks.what, who.join(", "));
        }
    }
    Ok(requests)
}

/// Polls request `id` once a second, at most `polls` times, until `done`.
async fn until(
    rights: &mut RightsServiceClient<AuthChannel>,
    id: &str,
    secret: &str,
    polls: u32,
    done: impl Fn(&pb::RequestStatus) -> bool,
) -> Result<pb::RequestStatus> {
    let mut last = None;
    for _ in 0..polls {
        let got = rights
            .get_request(pb::GetRequestRequest {
                request_id: id.into(),
                request_secret: secret.into(),
                wait_seconds: 0,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let status = answered(got.status)?;
        if done(&status) {
            return Ok(status);
        }
        last = Some(status);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("request {id} did not get there in {polls} s: {last:?}")
}

async fn receipts(
    rights: &mut RightsServiceClient<AuthChannel>,
    id: &str,
    secret: &str,
) -> Result<pb::GetErasureReceiptsResponse> {
    let got = rights
        .get_erasure_receipts(pb::GetErasureReceiptsRequest { request_id: id.into(), request_secret: secret.into() })
        .await
        .map_err(status_error)?;
    Ok(got.into_inner())
}

fn body(receipt_json: &str) -> Result<oubli::transparency::receipt::Body> {
    let r: oubli::transparency::receipt::Receipt = serde_json::from_str(receipt_json).context("a signed receipt")?;
    Ok(serde_json::from_str(&r.body)?)
}

trait Phase1 {
    /// Whether phase 1 is logged (the purge window may have let phase 2 follow at once).
    fn phase1_done(&self) -> bool;
}

impl Phase1 for pb::RequestStatus {
    fn phase1_done(&self) -> bool {
        self.state == "completed" || matches!(self.erasure_step.as_str(), "keys_purged" | "templates_purged")
    }
}
