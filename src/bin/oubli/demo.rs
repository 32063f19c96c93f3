//! `oubli demo`: an embedded server on a local data dir, driven over real gRPC, narrated.
//!
//! The story is ten steps, one function each. They share a [`Demo`] (the population, its ground
//! truth and the thresholds measured on it) and talk to a [`Live`] server; a step that restarts
//! the server takes the running one and returns the next.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use oubli::{
    grpc::{
        AuthChannel, Embedded,
        pb::{
            self, admin_service_client::AdminServiceClient, notifications_service_client::NotificationsServiceClient,
            rights_service_client::RightsServiceClient, templates_service_client::TemplatesServiceClient,
            transparency_service_client::TransparencyServiceClient,
        },
    },
    rights::{
        Thresholds,
        identity::{CaptureKeys, Terms, sign_capture},
        request::Kind,
    },
    synth::{Population, PopulationConfig, stats::Scores},
};
use rand::{Rng, SeedableRng};

use super::{enroll_all, provenance_line, rights::answered, status_error};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the demo writes its data dir, key dir and artifacts (recreated on each run).
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// A small, quick version for classrooms.
    #[arg(long)]
    fast: bool,
    /// Seed of the synthetic population.
    #[arg(long, default_value_t = 2021)]
    seed: u64,
}

/// Samples per synthetic person: several photos of each face were scraped.
const SAMPLES: usize = 3;
/// The demo's operating point: one stranger in 10,000 wrongly matched.
const FMR: f64 = 1e-4;
/// Rights requests' strict threshold: one in a million.
const STRICT_FMR: f64 = 1e-6;

/// Step 1 reproduces what Clearview did: scraped faces, no legal basis, under the permissive
/// profile (the lawful default would refuse every one of them); step 8 restarts under `lawful`.
const PERMISSIVE: &str = "permissive";
const LAWFUL: &str = "lawful";
/// The capture application's name in the capture-keys file.
const CAPTURE_APP: &str = "oubli-demo-capture";

pub async fn run(args: Args) -> Result<()> {
    prepare(&args.out)?;
    outln!(
        "Oubli demo: every face here is synthetic (seed {}). Data dir: {}",
        args.seed,
        args.out.join("data").display()
    );
    let (demo, mut live) = collection(&args).await?;
    stored_record(&demo, &mut live).await?;
    search_by_face(&demo, &mut live).await?;
    encrypted_at_rest(&demo)?;
    let mut live = durable(&demo, live).await?;
    access_request(&demo, &mut live).await?;
    erasure_request(&demo, &mut live).await?;
    let live = regulator_order(&demo, live).await?;
    let key = public_log(&demo, live).await?;
    restored_backup(&demo, &key).await?;
    outln!("\nDone. Every artifact is in {}. Next: README.md, docs/usage.md, docs/educators.md.", demo.out.display());
    Ok(())
}

/// What every step reads: where the demo writes, the synthetic population with its ground truth
/// (which the service never sees), and the operating points measured on it.
struct Demo {
    out: PathBuf,
    population: Population,
    /// `review` is the search threshold (FMR 1e-4), `strict` the rights requests' (1e-6).
    thresholds: Thresholds,
    /// The enrolled records' ids, in sample order.
    ids: Vec<String>,
    /// Whose photo each record is.
    who: HashMap<String, u32>,
    /// The person the story follows: the one whose selfie is the first probe.
    person: u32,
    /// The capture application the controller trusts (the demo plays it: the synthetic
    /// world's fresh probe stands for a live, checked capture).
    capture_app: SigningKey,
}

impl Demo {
    /// A server on the live data dir under `policy`.
    async fn start(&self, policy: &str) -> Result<Live> {
        Live::start(&self.out, &self.out.join("data"), policy, self.thresholds).await
    }

    /// The auditor's witness, keeping its state in the demo's directory.
    fn witness(&self, key: &str) -> super::log::WitnessArgs {
        super::log::WitnessArgs { state: self.out.join("witness.note"), verifier_key: key.to_string() }
    }

    /// An exact search by `probe` at the search threshold: how many hits are the person's own
    /// records (by the ground truth), and how many are someone else's.
    async fn matches_of(
        &self,
        client: &mut TemplatesServiceClient<AuthChannel>,
        probe: &[f32],
    ) -> Result<(usize, usize)> {
        let hits = client
            .search(pb::SearchRequest {
                probe: Some(pb::Embedding { values: probe.to_vec() }),
                k: 10,
                min_score: Some(self.thresholds.review),
                exact: true,
            })
            .await
            .map_err(status_error)?
            .into_inner()
            .hits;
        let own = hits.iter().filter(|h| self.who.get(h.record_id.as_str()) == Some(&self.person)).count();
        Ok((own, hits.len() - own))
    }

    /// The privacy desk's decision on a request waiting in the review band: a person compares
    /// the photos. The demo plays the desk with the ground truth: it approves the person's own
    /// records and leaves the look-alikes' out. Returns the request's status once the worker
    /// has moved on.
    async fn desk_review(
        &self,
        rights: &mut RightsServiceClient<AuthChannel>,
        status: pb::RequestStatus,
        narrate: bool,
    ) -> Result<pb::RequestStatus> {
        if status.state != "needs_review" {
            return Ok(status);
        }
        let person = self.person;
        if narrate {
            let own = status.review_band.iter().filter(|c| self.who.get(c.record_id.as_str()) == Some(&person)).count();
            outln!(
                "The privacy desk compares the photos of the {} withheld match(es): {own} are person #{person}'s own",
                status.review_band.len(),
            );
            outln!(
                "(approved), {} are someone else's, a look-alike's (never disclosed, never erased).",
                status.review_band.len() - own
            );
        }
        approve_own(rights, status, &self.who, person).await
    }

    /// The capture application's key and its name in the capture-keys file.
    fn app(&self) -> (&SigningKey, &'static str) {
        (&self.capture_app, CAPTURE_APP)
    }
}

/// The privacy desk's decision, through `desk`, on a request waiting in the review band, played
/// with the ground truth (`who`: whose photo each record is): `person`'s own records approved,
/// the look-alikes' left out. The request's status once the worker has moved on; a request not
/// waiting for the desk is returned as it is.
pub(super) async fn approve_own(
    desk: &mut RightsServiceClient<AuthChannel>,
    status: pb::RequestStatus,
    who: &HashMap<String, u32>,
    person: u32,
) -> Result<pb::RequestStatus> {
    if status.state != "needs_review" {
        return Ok(status);
    }
    let id = status.request_id.clone();
    desk.review_request(pb::ReviewRequestRequest {
        request_id: id.clone(),
        approved_record_ids: status
            .review_band
            .iter()
            .filter(|c| who.get(c.record_id.as_str()) == Some(&person))
            .map(|c| c.record_id.clone())
            .collect(),
        note: "compared the photos".into(),
    })
    .await
    .map_err(status_error)?;
    let status = desk.get_request(wait(&id, "")).await.map_err(status_error)?.into_inner();
    answered(status.status)
}

/// A running server and the clients the steps call it with.
struct Live {
    server: Embedded,
    templates: TemplatesServiceClient<AuthChannel>,
    rights: RightsServiceClient<AuthChannel>,
    admin: AdminServiceClient<AuthChannel>,
}

impl Live {
    /// A server on `data` (the live data dir, or a restored copy) with the demo's key dir.
    async fn start(out: &Path, data: &Path, policy: &str, thresholds: Thresholds) -> Result<Live> {
        Live::connect(start_on(out, data, policy, thresholds, false).await?, out).await
    }

    /// The clients of a started server.
    async fn connect(server: Embedded, out: &Path) -> Result<Live> {
        Ok(Live {
            templates: TemplatesServiceClient::new(channel(&server, out).await?),
            rights: RightsServiceClient::new(channel(&server, out).await?),
            admin: AdminServiceClient::new(channel(&server, out).await?),
            server,
        })
    }

    /// Closes the clients' connections, then stops the server.
    async fn stop(self) -> Result<()> {
        let Live { server, templates, rights, admin } = self;
        drop((templates, rights, admin));
        stop(server).await
    }
}

/// The server alone, for a start that may fail.
async fn start_on(out: &Path, data: &Path, policy: &str, thresholds: Thresholds, restore: bool) -> Result<Embedded> {
    let mut config = oubli::Config::new(data.to_path_buf(), out.join("keys"));
    config.restore_from_backup = restore;
    config.rights.policy = oubli::rights::PolicySource::Profile(policy.into());
    config.rights.thresholds = thresholds;
    Embedded::start(config).await.context("the embedded server did not start")
}

/// A connection with the local token the embedded server wrote into the demo's key dir.
async fn channel(server: &Embedded, out: &Path) -> Result<AuthChannel> {
    let path = out.join("keys").join(oubli::grpc::LOCAL_TOKEN_FILE);
    let token = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    super::channel_with(&server.addr.to_string(), Some(token.trim())).await
}

async fn stop(server: Embedded) -> Result<()> {
    server.stop().await.context("embedded server failed")
}

fn step(n: u32, title: &str) {
    outln!("\n== {n}. {title}");
}

/// Empties the demo's directory of a previous run. The demo resets only a directory it made
/// itself (marked), never one it was pointed at.
fn prepare(out: &Path) -> Result<()> {
    let marker = out.join(".oubli-demo");
    if out.exists() && !marker.exists() && fs::read_dir(out)?.next().is_some() {
        anyhow::bail!("{} exists and was not made by `oubli demo`; choose another --out or remove it", out.display());
    }
    for dir in ["data", "keys", "backup"] {
        let path = out.join(dir);
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("cannot reset {}", path.display()))?;
        }
    }
    fs::create_dir_all(out)?;
    fs::write(&marker, "made by `oubli demo`; it deletes data/ and keys/ here when it runs again\n")?;
    Ok(())
}

/// Step 1: a crawler scrapes the synthetic population into a permissive server; the thresholds
/// are measured on the population first.
async fn collection(args: &Args) -> Result<(Demo, Live)> {
    step(1, "Collection");
    let people = if args.fast { 300 } else { 1500 };
    let config = PopulationConfig {
        seed: args.seed,
        identities: people,
        samples_per_identity: SAMPLES,
        probes_per_identity: 1,
        ..Default::default()
    };
    let population = Population::generate(&config)?;
    // The threshold is measured on this very population (it depends on its size: the fewer the
    // people, the larger the share of look-alike relatives among all pairs).
    let scores = Scores::of_population(&population, args.seed, 100_000, 10_000_000)?;
    let threshold = scores.threshold_at(FMR).context("enough impostor pairs to measure the threshold")?;
    // Rights requests use this population's own operating points too: what is the person's at
    // FMR 1e-6, and the review band from the search threshold up.
    let strict = scores.threshold_at(STRICT_FMR).context("enough impostor pairs for FMR 1e-6")?;
    let thresholds = Thresholds { strict, review: threshold };
    let mut live = Live::start(&args.out, &args.out.join("data"), PERMISSIVE, thresholds).await?;
    let summary = scores.summary();
    oubli::synth::plot::det(&args.out, &scores, &summary)?;
    oubli::synth::plot::histogram(&args.out, &scores, &summary)?;
    let requests: Vec<pb::EnrollRequest> = (0..population.len()).map(|i| requests_for(&population, i)).collect();
    outln!(
        "A crawler 'scrapes' {} photos of {people} synthetic people ({SAMPLES} each) from sites under .example,",
        requests.len()
    );
    outln!("turns each face into a 512-number template, and enrols it with where and when it was found.");
    let mut ids = Vec::new();
    enroll_all(&mut live.templates, requests, 1500, true, &mut |batch| {
        ids.extend_from_slice(batch);
        Ok(())
    })
    .await?;
    outln!("Stored {} records. Each got a random 128-bit id that says nothing about the person:", ids.len());
    outln!("  first record: {}", ids[0]);
    outln!(
        "How often a face matcher errs on this population, at every threshold: {} (DET curve), {}.",
        args.out.join("det.png").display(),
        args.out.join("scores.png").display()
    );
    outln!("Measured on it: a search matches from {threshold:.3} (one wrong match in 10,000 pairs); a rights request");
    outln!(
        "hands a record over from {strict:.3} (one in a million) and leaves {threshold:.3} to {strict:.3} to a human."
    );
    // The demo knows who everyone is (the population's ground truth); the service does not.
    let who = ids.iter().cloned().zip(population.labels.iter().copied()).collect();
    let person = population.probe_labels[0];
    // The controller trusts one capture application, listed in the key dir's capture-keys file.
    let capture_app = SigningKey::from_bytes(&rand_chacha::ChaCha8Rng::seed_from_u64(args.seed).random());
    let mut keys = CaptureKeys::default();
    keys.add(CAPTURE_APP, capture_app.verifying_key()).map_err(anyhow::Error::msg)?;
    oubli::store::private::replace(
        &args.out.join("keys").join(oubli::grpc::CAPTURE_KEYS_FILE),
        keys.to_toml().as_bytes(),
    )?;
    Ok((Demo { out: args.out.clone(), population, thresholds, ids, who, person, capture_app }, live))
}

/// Step 2: one record's provenance, and why its template is not returned by default.
async fn stored_record(demo: &Demo, live: &mut Live) -> Result<()> {
    step(2, "What is stored for one record");
    let record = live
        .templates
        .get(pb::GetRequest { record_id: demo.ids[0].clone(), include_embedding: false })
        .await
        .map_err(status_error)?
        .into_inner()
        .record
        .context("no record")?;
    outln!("  {}", provenance_line(record.provenance.as_ref()));
    outln!("The template itself is only returned when a caller asks for it explicitly: it can be");
    outln!("inverted into a recognisable face, so it is as sensitive as the photo.");
    Ok(())
}

/// Step 3: a customer searches a new photo of the person; who the hits really are.
async fn search_by_face(demo: &Demo, live: &mut Live) -> Result<()> {
    step(3, "Search by face");
    let (population, person, threshold) = (&demo.population, demo.person, demo.thresholds.review);
    let family = population.families[person as usize];
    let response = live
        .templates
        .search(pb::SearchRequest {
            probe: Some(pb::Embedding { values: population.probe(0).to_vec() }),
            k: 10,
            min_score: None,
            exact: false,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    outln!("A new photo of person #{person} (never enrolled) is compared with all {} records:", response.candidates);
    let (mut own, mut relatives_matched, mut best_stranger) = (0, 0, f32::MIN);
    for h in &response.hits {
        let label = demo.who.get(h.record_id.as_str()).copied();
        let kind = match label {
            Some(l) if l == person => "the same person",
            Some(l) if population.families[l as usize] == family => "a look-alike relative",
            _ => "a stranger",
        };
        let matched = h.score >= threshold;
        match (kind, matched) {
            ("the same person", true) => own += 1,
            ("a look-alike relative", true) => relatives_matched += 1,
            ("a stranger", _) => best_stranger = best_stranger.max(h.score),
            _ => {}
        }
        outln!("  {:>6.3}  {:<8}  {kind:<21}  {}", h.score, if matched { "MATCH" } else { "no match" }, h.record_id);
    }
    outln!("The threshold, {threshold:.3}, was measured on this population: there, one pair of photos of two");
    outln!("different people in 10,000 is wrongly matched. {own} of person #{person}'s {SAMPLES} photos pass it.");
    if relatives_matched > 0 {
        outln!(
            "{relatives_matched} photo(s) of a look-alike relative pass it too: to a face matcher, close relatives can look like"
        );
        outln!("the same person. That is a false match, and a rights request must not hand over their data.");
    }
    if best_stranger > f32::MIN {
        outln!("The best-scoring stranger among the hits scores {best_stranger:.3}.");
    }
    outln!("Where to put the threshold trades wrong matches against missed ones; with billions of faces,");
    outln!("even a rare wrong match happens many times a day. Every hit handed to a customer is written to");
    outln!("the recipients log (which customer received which record, when): step 6 shows it to the person.");
    Ok(())
}

/// Step 4: the data dir does not hold a source URL in clear.
fn encrypted_at_rest(demo: &Demo) -> Result<()> {
    step(4, "Encrypted at rest");
    let data_dir = demo.out.join("data");
    let first_source = demo.population.provenance[0].source_uri().to_string();
    let (files, found) = scan_for(&data_dir, first_source.as_bytes())?;
    outln!("Scanned {files} files in {} for person #0's source URL: found {} times.", data_dir.display(), found);
    outln!("Each record is sealed under its own random key (XChaCha20-Poly1305), itself wrapped by a key");
    outln!(
        "kept in {}. Destroying a record's key makes every copy unreadable: that is how a later step",
        demo.out.join("keys").display()
    );
    outln!("of this demo will erase a face (crypto-shredding).");
    Ok(())
}

/// Step 5: a restart keeps every record; the operator copies the data dir as a backup, which
/// step 10 comes back to.
async fn durable(demo: &Demo, mut live: Live) -> Result<Live> {
    step(5, "Durable");
    let threshold = demo.thresholds.review;
    let before = live.templates.stats(pb::StatsRequest {}).await.map_err(status_error)?.into_inner();
    live.stop().await?;
    copy_dir(&demo.out.join("data"), &demo.out.join("backup"))?;
    let mut live = demo.start(PERMISSIVE).await?;
    let after = live.templates.stats(pb::StatsRequest {}).await.map_err(status_error)?.into_inner();
    let again = live
        .templates
        .search(pb::SearchRequest {
            probe: Some(pb::Embedding { values: demo.population.probe(0).to_vec() }),
            k: 6,
            min_score: Some(threshold),
            exact: false,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    outln!(
        "Server restarted: {} records before, {} after; {} bytes on disk in {} table files.",
        before.record_count,
        after.record_count,
        after.bytes_on_disk,
        after.sst_file_count
    );
    outln!("The same selfie still finds the same {} records at or above {threshold:.3}.", again.hits.len());
    outln!("The operator also copied the data dir to {}, as a backup.", demo.out.join("backup").display());
    Ok(live)
}

/// Step 6: the person's access request, answered in full, twice the same day.
async fn access_request(demo: &Demo, live: &mut Live) -> Result<()> {
    step(6, "A person asks what is held about them (GDPR Art. 15)");
    let person = demo.person;
    // A stranger first: someone holding a photo of the person (scraped, like the crawler's).
    // Anonymous, as anyone on the internet: no token.
    let mut anyone = RightsServiceClient::new(super::channel_with(&live.server.addr.to_string(), None).await?);
    let photo = demo.population.sample(demo.ids_of_person()[0]).to_vec();
    let (stalker, seen) = ask_access(&mut anyone, &photo, None).await?;
    let unknown_face: Vec<f32> = photo.iter().map(|v| -v).collect();
    let (_, seen_unknown) = ask_access(&mut anyone, &unknown_face, None).await?;
    outln!("A stalker found one of person #{person}'s photos online and sends it as an access request, with no");
    outln!(
        "capture. Request {} is {}: {} record(s), {} withheld, no report, no receipt.",
        stalker.request_id,
        seen.state,
        seen.matched,
        seen.withheld
    );
    let same = without_ids(&seen) == without_ids(&seen_unknown);
    outln!(
        "A face the service does not hold, sent the same way, gets {} answer, field by field: a photo",
        if same { "the same" } else { "a DIFFERENT (unexpected)" }
    );
    outln!("proves nothing about who sends it, so nothing is said until the sender's identity is established.");
    outln!("The request waits for the privacy desk, which would ask for an ID document; unanswered, it is denied.");
    outln!();
    let (submitted, status) = ask_access(&mut live.rights, demo.population.probe(0), Some(demo.app())).await?;
    outln!("Person #{person} uses the capture application the controller trusts: it checks that a live person is");
    outln!("in front of it, then signs the fresh selfie for this request under a one-time challenge.");
    outln!("Request {} is {}: {} record(s) disclosed,", submitted.request_id, status.state, status.matched);
    outln!("{} possible match(es) withheld for the privacy desk: they might be a look-alike's.", status.withheld);
    let reviewed = status.state == "needs_review";
    let status = demo.desk_review(&mut live.rights, status, true).await?;
    if reviewed {
        outln!("The request is {}: {} record(s) in the report.", status.state, status.matched);
    }
    let report = live
        .rights
        .get_access_report(pb::GetAccessReportRequest {
            request_id: submitted.request_id.clone(),
            request_secret: submitted.request_secret.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if !report.report_json.is_empty() {
        let parsed: oubli::rights::report::AccessReport = serde_json::from_str(&report.report_json)?;
        fs::write(demo.out.join("access-report.json"), serde_json::to_string_pretty(&parsed)? + "\n")?;
        fs::write(demo.out.join("access-report.md"), parsed.to_markdown())?;
        for r in parsed.records.iter().take(3) {
            let mut times = std::collections::BTreeMap::<&str, usize>::new();
            for d in &r.recipients {
                *times.entry(d.client.as_str()).or_default() += 1;
            }
            let who: Vec<_> = times.iter().map(|(client, n)| format!("{client} ({n} search results)")).collect();
            outln!("  {:.3}  {}  collected {}  received by: {}", r.score, r.source_uri, r.collected_at, who.join(", "));
        }
        let year_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(365 * 24);
        let recent = parsed
            .records
            .iter()
            .filter(|r| r.collected_at.parse::<jiff::Timestamp>().is_ok_and(|t| t >= year_ago))
            .count();
        outln!("Every source and every recipient. Report: {}", demo.out.join("access-report.md").display());
        outln!("CNIL found that Clearview answered only for the last 12 months, and twice a year: that would have");
        outln!(
            "shown {recent} of these {} records, collected over three years, and refused the next request.",
            parsed.records.len()
        );
    }
    if !report.receipt_json.is_empty() {
        fs::write(demo.out.join("access-receipt.json"), &report.receipt_json)?;
    }
    let (_, again) = ask_access(&mut live.rights, demo.population.probe(0), Some(demo.app())).await?;
    let again = demo.desk_review(&mut live.rights, again, false).await?;
    outln!(
        "The same person asks again the same day: request {} is {}, with the same {} record(s). No cap,",
        again.request_id,
        again.state,
        again.matched
    );
    outln!("no window: the right of access (Art. 15) has neither.");
    Ok(())
}

/// Step 7: the person's erasure, its two phases and receipts, the no-match attestation, the
/// recipients' notices, and the photo refused when scraped again.
async fn erasure_request(demo: &Demo, live: &mut Live) -> Result<()> {
    step(7, "The same person asks to be forgotten (GDPR Art. 17)");
    let (person, threshold) = (demo.person, demo.thresholds.review);
    let (erasure, status) = ask_erasure(&mut live.rights, demo.population.probe(0), demo.app()).await?;
    if status.state == "needs_review" {
        outln!("The erasure matches like the access request, so the same photos wait for the privacy desk:");
    }
    let status = demo.desk_review(&mut live.rights, status, true).await?;
    outln!(
        "Erasure request {} is {} ({}): {} record(s) deleted in one write, removed from the search",
        erasure.request_id,
        status.state,
        status.erasure_step,
        status.matched
    );
    outln!("indexes, and their data keys purged from disk and checked. That is phase 1.");
    live.admin.run_purge(pb::RunPurgeRequest {}).await.map_err(status_error)?;
    let status = live
        .rights
        .get_request(wait(&erasure.request_id, &erasure.request_secret))
        .await
        .map_err(status_error)?
        .into_inner();
    let status = answered(status.status)?;
    outln!("Phase 2 (batched hourly; run now by the administrator): the encrypted templates compacted out of");
    outln!("the table files and checked. The request is {}.", status.state);
    let receipts = live
        .rights
        .get_erasure_receipts(pb::GetErasureReceiptsRequest {
            request_id: erasure.request_id.clone(),
            request_secret: erasure.request_secret.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    fs::write(demo.out.join("erasure.json"), receipts.erasure_json.clone() + "\n")?;
    for (name, json) in [
        ("erasure-receipt-phase1.json", &receipts.phase1_receipt_json),
        ("erasure-receipt-phase2.json", &receipts.phase2_receipt_json),
    ] {
        if !json.is_empty() {
            fs::write(demo.out.join(name), json)?;
        }
    }
    if !receipts.phase1_receipt_json.is_empty() {
        let r: oubli::transparency::receipt::Receipt = serde_json::from_str(&receipts.phase1_receipt_json)?;
        let body: oubli::transparency::receipt::Body = serde_json::from_str(&r.body)?;
        outln!("The phase-1 receipt (signed, in the public log at leaf {}) says:", body.leaf_index);
        for v in &body.verified {
            outln!("  verified: {v}");
        }
        for p in &body.pending {
            outln!("  pending:  {} (due: {})", p.what, p.due);
        }
        outln!("It never says \"forensically erased\": flash remaps blocks and copies outside cannot be checked.");
    }
    let (own_left, others) = demo.matches_of(&mut live.templates, demo.population.probe(0)).await?;
    outln!("The same selfie now finds {own_left} of person #{person}'s records.");
    if others > 0 {
        outln!(
            "({others} look-alike record(s) still score above the search threshold {threshold:.3}: not the person's, and"
        );
        outln!("below the stricter threshold rights requests use.)");
    }
    let attested = live
        .rights
        .attest_no_match(pb::AttestNoMatchRequest {
            request_id: erasure.request_id.clone(),
            request_secret: erasure.request_secret.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    fs::write(demo.out.join("no-match-attestation.json"), &attested.receipt_json)?;
    outln!("The person asks for a signed statement that nothing held matches their face any more. It compares");
    outln!(
        "the erasure's own probes (kept sealed for this, then deleted) with {} records: logged at leaf {},",
        attested.compared,
        attested.leaf_index
    );
    outln!(
        "{} in the review band, saved to {}. It can be asked once: nobody can use it to test other faces.",
        attested.review_band,
        demo.out.join("no-match-attestation.json").display()
    );
    let mut notices = NotificationsServiceClient::new(channel(&live.server, &demo.out).await?);
    let told = notices
        .list_notifications(pb::ListNotificationsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .notifications
        .len();
    outln!("The operator that searched for this face has {told} notice(s) to erase its copies (Art. 19).");
    let status_json: serde_json::Value = serde_json::from_str(&receipts.erasure_json)?;
    let erased: Vec<&str> =
        status_json["records"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    if let Some(i) = demo.ids.iter().position(|id| erased.contains(&id.as_str())) {
        match live.templates.enroll(requests_for(&demo.population, i)).await {
            Err(status) => outln!("Re-scraping one of the erased photos is refused: {}", status.message()),
            Ok(_) => outln!("(the erased source could be enrolled again: unexpected)"),
        }
    }
    Ok(())
}

/// Step 8: the regulator's order. The server restarts under the lawful policy, which refuses
/// the crawler; the administrator sweeps every French record.
async fn regulator_order(demo: &Demo, live: Live) -> Result<Live> {
    step(8, "The regulator's order: stop collecting, erase everyone in France (CNIL, 2021)");
    live.stop().await?;
    let mut live = demo.start(LAWFUL).await?;
    outln!("The operator restarts under the `lawful` policy: consent only, no scraping, unknown jurisdictions");
    outln!("quarantined. The crawler's next photo:");
    match live.templates.enroll(requests_for(&demo.population, demo.population.len() - 1)).await {
        Err(status) => outln!("  refused: {}", status.message()),
        Ok(_) => outln!("  accepted (unexpected under the lawful policy)"),
    }
    let sweep = |dry_run| pb::SweepPolicyRequest { rule: "jurisdiction=FR".into(), dry_run };
    let french = live.admin.sweep_policy(sweep(true)).await.map_err(status_error)?.into_inner().matched;
    let unknown = live
        .admin
        .sweep_policy(pb::SweepPolicyRequest { rule: "jurisdiction=unknown".into(), dry_run: true })
        .await
        .map_err(status_error)?
        .into_inner()
        .matched;
    outln!("CNIL ordered the deletion of the data of people in France. {french} records say their photo was");
    outln!("taken there. The administrator sweeps them: one erasure request per record, each with its receipts.");
    let swept = live.admin.sweep_policy(sweep(false)).await.map_err(status_error)?.into_inner();
    for id in &swept.request_ids {
        // Phase 1 runs batched over all of them; wait for each to reach it.
        live.rights.get_request(wait(id, "")).await.map_err(status_error)?;
    }
    live.admin.run_purge(pb::RunPurgeRequest {}).await.map_err(status_error)?;
    let mut receipted = 0;
    for id in &swept.request_ids {
        let r = live
            .rights
            .get_erasure_receipts(pb::GetErasureReceiptsRequest {
                request_id: id.clone(),
                request_secret: String::new(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        receipted += usize::from(!r.phase1_receipt_json.is_empty() && !r.phase2_receipt_json.is_empty());
    }
    outln!(
        "{} erasure requests; {receipted} have both receipts (phase 1 and phase 2) in the log.",
        swept.request_ids.len()
    );
    outln!("But {unknown} records carry no jurisdiction at all: a face does not say where its owner lives, which is");
    outln!("what Clearview argued. A sweep cannot reach them; only collection rules can (the default `lawful`");
    outln!("policy quarantines them: stored, hidden from searches, found by every access or erasure request).");
    Ok(live)
}

/// Step 9: the public log, a witness's first look at it, and the receipts checked offline once
/// the server is stopped. Returns the log's verifier key.
async fn public_log(demo: &Demo, live: Live) -> Result<String> {
    step(9, "A public log of what was done");
    let mut log = TransparencyServiceClient::new(channel(&live.server, &demo.out).await?);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.map_err(status_error)?.into_inner().verifier_key;
    let checkpoint =
        log.get_checkpoint(pb::GetCheckpointRequest {}).await.map_err(status_error)?.into_inner().checkpoint;
    let receipt =
        log.get_receipt(pb::GetReceiptRequest { leaf_index: 0 }).await.map_err(status_error)?.into_inner().receipt;
    let key_file = demo.out.join("log.vkey");
    fs::write(&key_file, format!("{key}\n"))?;
    fs::write(demo.out.join("checkpoint.note"), &checkpoint)?;
    fs::write(demo.out.join("receipt-leaf-0.json"), &receipt)?;
    outln!("Every enrolment, answer and erasure phase was appended to a Merkle log (RFC 6962) in the same");
    outln!("write as the change itself. A leaf holds a salted commitment, never a record id; the latest");
    outln!("signed checkpoint:");
    for line in checkpoint.lines() {
        outln!("  | {line}");
    }
    let witness = demo.witness(&key);
    let _ = fs::remove_file(&witness.state);
    out!("An auditor's witness fetches it, checks its signature and saves it: ");
    super::log::witness(witness, &live.server.addr.to_string()).await?;
    drop(log);
    live.stop().await?;
    let verifier = oubli::transparency::note::VerifierKey::parse(&key)?;
    outln!("The server is stopped. Anyone can check the receipts offline, with the log's key alone:");
    for (what, name) in [
        ("the first enrolment", "receipt-leaf-0.json"),
        ("the erasure, phase 1", "erasure-receipt-phase1.json"),
        ("the erasure, phase 2", "erasure-receipt-phase2.json"),
        ("the no-match attestation", "no-match-attestation.json"),
    ] {
        let Ok(json) = fs::read_to_string(demo.out.join(name)) else { continue };
        let checks = oubli::transparency::receipt::verify(&json, &verifier, None);
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        let verdict = if failed.is_empty() { "every check passes".to_string() } else { format!("FAILED {failed:?}") };
        outln!("  {what:<26} {:<30} {} checks: {verdict}", name, checks.len());
    }
    outln!(
        "Re-check one yourself: oubli verify {} --verifier-key {}",
        demo.out.join("erasure-receipt-phase1.json").display(),
        key_file.display()
    );
    let page = demo.out.join("verify.html");
    super::page::write_page(&page, &key, &[], 0)?;
    let page = fs::canonicalize(&page).unwrap_or(page);
    outln!("Or in a browser, with nothing installed and no network: open file://{} and drop a", page.display());
    outln!("receipt on it. The page runs the same checks; this copy has the log's key pinned in it.");
    Ok(key)
}

/// Step 10: the step-5 backup, restored in place of the data dir, is refused; restored on
/// purpose, it re-applies every erasure before serving and continues the log (the witness sees
/// growth); rotating the keys makes the backup unreadable.
async fn restored_backup(demo: &Demo, key: &str) -> Result<()> {
    step(10, "A restored backup cannot bring erased faces back, and the log does not rewind");
    let person = demo.person;
    let (data, backup) = (demo.out.join("data"), demo.out.join("backup"));
    outln!("The operator restores the backup from step 5 in place of the data dir. It was copied before");
    outln!("person #{person}'s erasure, so it still holds their records. The server refuses it:");
    fs::remove_dir_all(&data).with_context(|| format!("cannot remove {}", data.display()))?;
    copy_dir(&backup, &data)?;
    match start_on(&demo.out, &data, PERMISSIVE, demo.thresholds, false).await {
        Ok(server) => {
            outln!("  (the restored copy opened: unexpected)");
            stop(server).await?;
        }
        Err(e) => outln!("  {}", e.root_cause()),
    }
    outln!("The key dir, which no backup of the data dir holds, keeps a copy of the log with its last");
    outln!("signed checkpoint, and a journal of every erasure (keyed hashes of the record ids, never the ids).");
    outln!("With --restore-from-backup the server copies the missing log entries back, erases every");
    outln!("journaled record again, purges it, logs each re-application, and only then serves:");
    let server = start_on(&demo.out, &data, PERMISSIVE, demo.thresholds, true).await?;
    let mut live = Live::connect(server, &demo.out).await?;
    let own: Vec<&String> = demo.ids.iter().filter(|id| demo.who.get(id.as_str()) == Some(&person)).collect();
    let mut gone = 0;
    for id in &own {
        let got = live.templates.get(pb::GetRequest { record_id: id.to_string(), include_embedding: false }).await;
        if got.is_err_and(|s| s.code() == tonic::Code::NotFound) {
            gone += 1;
        }
    }
    let (found, _) = demo.matches_of(&mut live.templates, demo.population.probe(0)).await?;
    outln!("  {gone} of person #{person}'s {} records are NOT_FOUND again; their selfie finds {found}.", own.len());
    let mut log = TransparencyServiceClient::new(channel(&live.server, &demo.out).await?);
    let checkpoint = log.get_checkpoint(pb::GetCheckpointRequest {}).await.map_err(status_error)?.into_inner();
    let size = checkpoint.checkpoint.lines().nth(1).and_then(|l| l.parse::<u64>().ok()).unwrap_or(0);
    // The re-applications are the log's last entries.
    let entries = log
        .get_entries(pb::GetEntriesRequest { start: size.saturating_sub(1000), end: size })
        .await
        .map_err(status_error)?
        .into_inner()
        .entries;
    let reapplied: Vec<(u64, u32)> = entries
        .iter()
        .filter_map(|e| match oubli::transparency::event::Entry::decode(&e.data).map(|d| d.event) {
            Ok(oubli::transparency::event::Event::ErasureReapplied { records, .. }) => Some((e.index, records)),
            _ => None,
        })
        .collect();
    if let (Some(first), Some(last)) = (reapplied.first(), reapplied.last()) {
        let total: u64 = reapplied.iter().map(|(_, n)| u64::from(*n)).sum();
        outln!(
            "  log entries {} to {}: {} erasure-reapplied entries (the person's and the regulator's sweep),",
            first.0,
            last.0,
            reapplied.len()
        );
        outln!("  {total} record(s) erased again in all, each entry under its erasure's original commitment.");
    }
    outln!("The auditor's witness, holding the checkpoint it saved in step 9:");
    out!("  ");
    super::log::witness(demo.witness(key), &live.server.addr.to_string()).await?;
    outln!("  the log continued from where it was published: growth, not a rollback.");
    outln!("The backup itself still holds the records' ciphertext. The fix the receipt names: destroy the");
    outln!("key epoch the backup's keys are wrapped under. The administrator rotates the keys:");
    let rotated = live.admin.rotate_keys(pb::RotateKeysRequest {}).await.map_err(status_error)?.into_inner();
    outln!("  key epoch {} destroyed, epoch {} in use.", rotated.epoch.saturating_sub(1), rotated.epoch);
    live.stop().await?;
    match start_on(&demo.out, &backup, PERMISSIVE, demo.thresholds, true).await {
        Ok(server) => {
            outln!("  the backup still opens (unexpected)");
            stop(server).await?;
        }
        Err(e) => {
            outln!("  and the backup no longer opens, even to be restored: its data keys are wrapped under the");
            outln!("  destroyed epoch. (the server says: {})", e.root_cause());
        }
    }
    outln!("(A backup of the key dir would keep old backups readable: keep none, or rotate after restoring.)");
    Ok(())
}

/// Where the person can be reached.
const CONTACT: &str = "person@example.org";

/// An access request by one selfie, signed by the trusted capture application `app` (its key
/// and name) when given (else as anyone could send it), and its status once the worker has
/// moved on.
pub(super) async fn ask_access(
    rights: &mut RightsServiceClient<AuthChannel>,
    probe: &[f32],
    app: Option<(&SigningKey, &str)>,
) -> Result<(pb::SubmitAccessRequestResponse, pb::RequestStatus)> {
    let terms = Terms {
        kind: Kind::Access,
        contact: CONTACT,
        jurisdiction_claim: "FR",
        include_templates: false,
        never_enrol_again: false,
    };
    let capture = match app {
        Some((key, name)) => Some(signed_capture(rights, key, name, &terms, probe).await?),
        None => None,
    };
    let submitted = rights
        .submit_access_request(pb::SubmitAccessRequestRequest {
            probes: vec![pb::Embedding { values: probe.to_vec() }],
            contact: CONTACT.into(),
            jurisdiction_claim: "FR".into(),
            include_templates: false,
            capture,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let status = rights
        .get_request(wait(&submitted.request_id, &submitted.request_secret))
        .await
        .map_err(status_error)?
        .into_inner();
    Ok((submitted, answered(status.status)?))
}

/// A status without what differs between any two requests (id, times).
fn without_ids(s: &pb::RequestStatus) -> pb::RequestStatus {
    let mut s = s.clone();
    s.request_id.clear();
    s.received_at = None;
    s.due_at = None;
    for change in &mut s.history {
        change.at = None;
    }
    s
}

/// What a trusted capture application (`key`, named `name` in the capture-keys file) does: a
/// fresh challenge from the node `rights` reaches, then `probe` signed for `terms`.
pub(super) async fn signed_capture(
    rights: &mut RightsServiceClient<AuthChannel>,
    key: &SigningKey,
    name: &str,
    terms: &Terms<'_>,
    probe: &[f32],
) -> Result<pb::Capture> {
    let begun = rights.begin_capture(pb::BeginCaptureRequest {}).await.map_err(status_error)?.into_inner();
    let challenge: [u8; 32] = begun.challenge.as_slice().try_into().context("a 32-byte challenge")?;
    let c = sign_capture(key, name, challenge, terms, &[probe]);
    Ok(pb::Capture {
        challenge: c.challenge.to_vec(),
        key: c.key,
        signatures: c.signatures.iter().map(|s| s.to_vec()).collect(),
    })
}

/// An erasure request by one selfie, signed by the capture application `app` (its key and
/// name), and its status once the worker has moved on.
pub(super) async fn ask_erasure(
    rights: &mut RightsServiceClient<AuthChannel>,
    probe: &[f32],
    app: (&SigningKey, &str),
) -> Result<(pb::SubmitErasureRequestResponse, pb::RequestStatus)> {
    let terms = Terms {
        kind: Kind::Erasure,
        contact: CONTACT,
        jurisdiction_claim: "FR",
        include_templates: false,
        never_enrol_again: false,
    };
    let capture = signed_capture(rights, app.0, app.1, &terms, probe).await?;
    let submitted = rights
        .submit_erasure_request(pb::SubmitErasureRequestRequest {
            probes: vec![pb::Embedding { values: probe.to_vec() }],
            contact: CONTACT.into(),
            jurisdiction_claim: "FR".into(),
            capture: Some(capture),
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let status = rights
        .get_request(wait(&submitted.request_id, &submitted.request_secret))
        .await
        .map_err(status_error)?
        .into_inner();
    Ok((submitted, answered(status.status)?))
}

impl Demo {
    /// The sample rows of the person's own scraped photos.
    fn ids_of_person(&self) -> Vec<usize> {
        (0..self.ids.len()).filter(|&i| self.population.labels[i] == self.person).collect()
    }
}

/// A status read that waits up to 30 s for the worker.
pub(super) fn wait(id: &str, secret: &str) -> pb::GetRequestRequest {
    pb::GetRequestRequest { request_id: id.into(), request_secret: secret.into(), wait_seconds: 30 }
}

/// Copies a directory tree (the data dir, with the server stopped).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let path = entry?.path();
        let target = to.join(path.file_name().context("a file name")?);
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            fs::copy(&path, &target).with_context(|| format!("cannot copy {}", path.display()))?;
        }
    }
    Ok(())
}

/// Enrolment request for sample `i`, as the crawler sent it.
fn requests_for(population: &Population, i: usize) -> pb::EnrollRequest {
    pb::EnrollRequest {
        embedding: Some(pb::Embedding { values: population.sample(i).to_vec() }),
        provenance: Some(oubli::grpc::provenance_to_pb(&population.provenance[i])),
        idempotency_key: String::new(),
    }
}

/// Counts the files under `dir` and the occurrences of `needle` in them.
fn scan_for(dir: &Path, needle: &[u8]) -> Result<(usize, usize)> {
    let mut files = 0;
    let mut found = 0;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            let (f, n) = scan_for(&path, needle)?;
            files += f;
            found += n;
        } else {
            let bytes = fs::read(&path)?;
            files += 1;
            found += bytes.windows(needle.len()).filter(|w| *w == needle).count();
        }
    }
    Ok((files, found))
}
