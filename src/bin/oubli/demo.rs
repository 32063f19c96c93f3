//! `oubli demo`: an embedded server on a local data dir, driven over real gRPC, narrated.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use oubli::{
    grpc::{
        AuthChannel, Embedded,
        pb::{self, templates_client::TemplatesClient},
    },
    rights::Thresholds,
    synth::{Population, PopulationConfig, stats::Scores},
};

use super::{enroll_all, provenance_line, status_error};

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

/// A server on `data` (the live data dir, or a restored copy) with the demo's key dir.
async fn start_on(out: &Path, data: &Path, policy: &str, thresholds: Thresholds) -> Result<Embedded> {
    let mut config = oubli::Config::new(data.to_path_buf(), out.join("keys"));
    config.rights.policy = oubli::rights::PolicySource::Profile(policy.into());
    config.rights.thresholds = thresholds;
    Embedded::start(config).await.context("the embedded server did not start")
}

/// A client with the local token the embedded server wrote into the demo's key dir.
async fn connect(server: &Embedded, out: &Path) -> Result<TemplatesClient<AuthChannel>> {
    Ok(TemplatesClient::new(channel(server, out).await?))
}

async fn channel(server: &Embedded, out: &Path) -> Result<AuthChannel> {
    let path = out.join("keys").join(oubli::grpc::LOCAL_TOKEN_FILE);
    let token = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    super::channel_with(&server.addr.to_string(), Some(token.trim())).await
}

async fn stop(server: Embedded) -> Result<()> {
    server.stop().await.context("embedded server failed")
}

fn step(n: u32, title: &str) {
    println!("\n== {n}. {title}");
}

pub async fn run(args: Args) -> Result<()> {
    let people = if args.fast { 300 } else { 1500 };
    // The demo resets only a directory it made itself (marked), never one it was pointed at.
    let marker = args.out.join(".oubli-demo");
    if args.out.exists() && !marker.exists() && fs::read_dir(&args.out)?.next().is_some() {
        anyhow::bail!(
            "{} exists and was not made by `oubli demo`; choose another --out or remove it",
            args.out.display()
        );
    }
    for dir in ["data", "keys", "backup"] {
        let path = args.out.join(dir);
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("cannot reset {}", path.display()))?;
        }
    }
    fs::create_dir_all(&args.out)?;
    fs::write(&marker, "made by `oubli demo`; it deletes data/ and keys/ here when it runs again\n")?;
    println!(
        "Oubli demo: every face here is synthetic (seed {}). Data dir: {}",
        args.seed,
        args.out.join("data").display()
    );

    step(1, "Collection");
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
    let live = args.out.join("data");
    let start = |policy: &'static str| start_on(&args.out, &live, policy, thresholds);
    let server = start(PERMISSIVE).await?;
    let mut client = connect(&server, &args.out).await?;
    let summary = scores.summary();
    oubli::synth::plot::det(&args.out, &scores, &summary)?;
    oubli::synth::plot::histogram(&args.out, &scores, &summary)?;
    let first_source = population.provenance[0].source_uri().to_string();
    let requests: Vec<pb::EnrollRequest> = (0..population.len()).map(|i| requests_for(&population, i)).collect();
    println!(
        "A crawler 'scrapes' {} photos of {people} synthetic people ({SAMPLES} each) from sites under .example,",
        requests.len()
    );
    println!("turns each face into a 512-number template, and enrols it with where and when it was found.");
    let mut ids = Vec::new();
    enroll_all(&mut client, requests, 1500, true, &mut |batch| {
        ids.extend_from_slice(batch);
        Ok(())
    })
    .await?;
    println!("Stored {} records. Each got a random 128-bit id that says nothing about the person:", ids.len());
    println!("  first record: {}", ids[0]);
    println!(
        "How often a face matcher errs on this population, at every threshold: {} (DET curve), {}.",
        args.out.join("det.png").display(),
        args.out.join("scores.png").display()
    );
    println!(
        "Measured on it: a search matches from {threshold:.3} (one wrong match in 10,000 pairs); a rights request"
    );
    println!(
        "hands a record over from {strict:.3} (one in a million) and leaves {threshold:.3} to {strict:.3} to a human."
    );

    step(2, "What is stored for one record");
    let record = client
        .get(pb::GetRequest { record_id: ids[0].clone(), include_embedding: false })
        .await
        .map_err(status_error)?
        .into_inner()
        .record
        .context("no record")?;
    println!("  {}", provenance_line(record.provenance.as_ref()));
    println!("The template itself is only returned when a caller asks for it explicitly: it can be");
    println!("inverted into a recognisable face, so it is as sensitive as the photo.");

    step(3, "Search by face");
    // The demo knows who everyone is (the population's ground truth); the service does not.
    let who: std::collections::HashMap<&str, u32> =
        ids.iter().map(String::as_str).zip(population.labels.iter().copied()).collect();
    let person = population.probe_labels[0];
    let family = population.families[person as usize];
    let selfie = population.probe(0).to_vec();
    let response = client
        .search(pb::SearchRequest {
            probe: Some(pb::Embedding { values: selfie.clone() }),
            k: 10,
            min_score: None,
            exact: false,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("A new photo of person #{person} (never enrolled) is compared with all {} records:", response.candidates);
    let (mut own, mut relatives_matched, mut best_stranger) = (0, 0, f32::MIN);
    for h in &response.hits {
        let label = who.get(h.record_id.as_str()).copied();
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
        println!("  {:>6.3}  {:<8}  {kind:<21}  {}", h.score, if matched { "MATCH" } else { "no match" }, h.record_id);
    }
    println!("The threshold, {threshold:.3}, was measured on this population: there, one pair of photos of two");
    println!("different people in 10,000 is wrongly matched. {own} of person #{person}'s {SAMPLES} photos pass it.");
    if relatives_matched > 0 {
        println!(
            "{relatives_matched} photo(s) of a look-alike relative pass it too: to a face matcher, close relatives can look like"
        );
        println!("the same person. That is a false match, and a rights request must not hand over their data.");
    }
    if best_stranger > f32::MIN {
        println!("The best-scoring stranger among the hits scores {best_stranger:.3}.");
    }
    println!("Where to put the threshold trades wrong matches against missed ones; with billions of faces,");
    println!("even a rare wrong match happens many times a day. Every hit handed to a customer is written to");
    println!("the recipients log (which customer received which record, when): step 6 shows it to the person.");

    step(4, "Encrypted at rest");
    let data_dir = args.out.join("data");
    let (files, found) = scan_for(&data_dir, first_source.as_bytes())?;
    println!("Scanned {files} files in {} for person #0's source URL: found {} times.", data_dir.display(), found);
    println!("Each record is sealed under its own random key (XChaCha20-Poly1305), itself wrapped by a key");
    println!(
        "kept in {}. Destroying a record's key makes every copy unreadable: that is how a later step",
        args.out.join("keys").display()
    );
    println!("of this demo will erase a face (crypto-shredding).");

    step(5, "Durable");
    let before = client.stats(pb::StatsRequest {}).await.map_err(status_error)?.into_inner();
    drop(client);
    stop(server).await?;
    // The operator also keeps a backup, as every operator does: step 10 comes back to it.
    copy_dir(&args.out.join("data"), &args.out.join("backup"))?;
    let server = start(PERMISSIVE).await?;
    let mut client = connect(&server, &args.out).await?;
    let after = client.stats(pb::StatsRequest {}).await.map_err(status_error)?.into_inner();
    let again = client
        .search(pb::SearchRequest {
            probe: Some(pb::Embedding { values: selfie }),
            k: 6,
            min_score: Some(threshold),
            exact: false,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "Server restarted: {} records before, {} after; {} bytes on disk in {} table files.",
        before.record_count, after.record_count, after.bytes_on_disk, after.sst_file_count
    );
    println!("The same selfie still finds the same {} records at or above {threshold:.3}.", again.hits.len());
    println!("The operator also copied the data dir to {}, as a backup.", args.out.join("backup").display());

    step(6, "A person asks what is held about them (GDPR Art. 15)");
    let mut rights = pb::rights_client::RightsClient::new(channel(&server, &args.out).await?);
    let (submitted, status) = ask_access(&mut rights, population.probe(0)).await?;
    println!(
        "Person #{person} sends one selfie, with no account. Request {} is {}: {} record(s) disclosed,",
        submitted.request_id, status.state, status.matched
    );
    println!("{} possible match(es) withheld for the privacy desk: they might be a look-alike's.", status.withheld);
    let reviewed = status.state == "needs_review";
    let status = desk_review(&mut rights, status, &who, person, true).await?;
    if reviewed {
        println!("The request is {}: {} record(s) in the report.", status.state, status.matched);
    }
    let report = rights
        .get_access_report(pb::GetAccessReportRequest {
            request_id: submitted.request_id.clone(),
            request_secret: submitted.request_secret.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if !report.report_json.is_empty() {
        let parsed: oubli::rights::report::AccessReport = serde_json::from_str(&report.report_json)?;
        fs::write(args.out.join("access-report.json"), serde_json::to_string_pretty(&parsed)? + "\n")?;
        fs::write(args.out.join("access-report.md"), parsed.to_markdown())?;
        for r in parsed.records.iter().take(3) {
            let mut times = std::collections::BTreeMap::<&str, usize>::new();
            for d in &r.recipients {
                *times.entry(d.client.as_str()).or_default() += 1;
            }
            let who: Vec<_> = times.iter().map(|(client, n)| format!("{client} ({n} search results)")).collect();
            println!(
                "  {:.3}  {}  collected {}  received by: {}",
                r.score,
                r.source_uri,
                r.collected_at,
                who.join(", ")
            );
        }
        let year_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(365 * 24);
        let recent = parsed
            .records
            .iter()
            .filter(|r| r.collected_at.parse::<jiff::Timestamp>().is_ok_and(|t| t >= year_ago))
            .count();
        println!("Every source and every recipient. Report: {}", args.out.join("access-report.md").display());
        println!("CNIL found that Clearview answered only for the last 12 months, and twice a year: that would have");
        println!(
            "shown {recent} of these {} records, collected over three years, and refused the next request.",
            parsed.records.len()
        );
    }
    if !report.receipt_json.is_empty() {
        fs::write(args.out.join("access-receipt.json"), &report.receipt_json)?;
    }
    let (_, again) = ask_access(&mut rights, population.probe(0)).await?;
    let again = desk_review(&mut rights, again, &who, person, false).await?;
    println!(
        "The same person asks again the same day: request {} is {}, with the same {} record(s). No cap,",
        again.request_id, again.state, again.matched
    );
    println!("no window: the right of access (Art. 15) has neither.");

    step(7, "The same person asks to be forgotten (GDPR Art. 17)");
    let erasure = rights
        .submit_erasure_request(pb::SubmitErasureRequestRequest {
            probes: vec![pb::Embedding { values: population.probe(0).to_vec() }],
            contact: "person@example.org".into(),
            jurisdiction_claim: "FR".into(),
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let wait = |id: &str, secret: &str| pb::GetRequestRequest {
        request_id: id.into(),
        request_secret: secret.into(),
        wait_seconds: 30,
    };
    let status = rights
        .get_request(wait(&erasure.request_id, &erasure.request_secret))
        .await
        .map_err(status_error)?
        .into_inner();
    if status.state == "needs_review" {
        println!("The erasure matches like the access request, so the same photos wait for the privacy desk:");
    }
    let status = desk_review(&mut rights, status, &who, person, true).await?;
    println!(
        "Erasure request {} is {} ({}): {} record(s) deleted in one write, removed from the search",
        erasure.request_id, status.state, status.erasure_step, status.matched
    );
    println!("indexes, and their data keys purged from disk and checked. That is phase 1.");
    let mut admin = pb::admin_client::AdminClient::new(channel(&server, &args.out).await?);
    admin.run_purge(pb::RunPurgeRequest {}).await.map_err(status_error)?;
    let status = rights
        .get_request(wait(&erasure.request_id, &erasure.request_secret))
        .await
        .map_err(status_error)?
        .into_inner();
    println!("Phase 2 (batched hourly; run now by the administrator): the encrypted templates compacted out of");
    println!("the table files and checked. The request is {}.", status.state);
    let receipts = rights
        .get_erasure_receipts(pb::GetErasureReceiptsRequest {
            request_id: erasure.request_id.clone(),
            request_secret: erasure.request_secret.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    fs::write(args.out.join("erasure.json"), receipts.erasure_json.clone() + "\n")?;
    for (name, json) in [
        ("erasure-receipt-phase1.json", &receipts.phase1_receipt_json),
        ("erasure-receipt-phase2.json", &receipts.phase2_receipt_json),
    ] {
        if !json.is_empty() {
            fs::write(args.out.join(name), json)?;
        }
    }
    if !receipts.phase1_receipt_json.is_empty() {
        let r: oubli::transparency::receipt::Receipt = serde_json::from_str(&receipts.phase1_receipt_json)?;
        let body: oubli::transparency::receipt::Body = serde_json::from_str(&r.body)?;
        println!("The phase-1 receipt (signed, in the public log at leaf {}) says:", body.leaf_index);
        for v in &body.verified {
            println!("  verified: {v}");
        }
        for p in &body.pending {
            println!("  pending:  {} (due: {})", p.what, p.due);
        }
        println!("It never says \"forensically erased\": flash remaps blocks and copies outside cannot be checked.");
    }
    let (own_left, others) = matches_of(&mut client, population.probe(0), threshold, &who, person).await?;
    println!("The same selfie now finds {own_left} of person #{person}'s records.");
    if others > 0 {
        println!(
            "({others} look-alike record(s) still score above the search threshold {threshold:.3}: not the person's, and"
        );
        println!("below the stricter threshold rights requests use.)");
    }
    let attested = rights
        .attest_no_match(pb::AttestNoMatchRequest {
            request_id: erasure.request_id.clone(),
            request_secret: erasure.request_secret.clone(),
            probes: vec![pb::Embedding { values: population.probe(0).to_vec() }],
        })
        .await
        .map_err(status_error)?
        .into_inner();
    fs::write(args.out.join("no-match-attestation.json"), &attested.receipt_json)?;
    println!("The person asks for a signed statement that nothing held matches their face any more: logged at");
    println!("leaf {}, saved to {}.", attested.leaf_index, args.out.join("no-match-attestation.json").display());
    let mut notices = pb::notifications_client::NotificationsClient::new(channel(&server, &args.out).await?);
    let told = notices
        .list_notifications(pb::ListNotificationsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .notifications
        .len();
    println!("The operator that searched for this face has {told} notice(s) to erase its copies (Art. 19).");
    let status_json: serde_json::Value = serde_json::from_str(&receipts.erasure_json)?;
    let erased: Vec<&str> =
        status_json["records"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    if let Some(i) = ids.iter().position(|id| erased.contains(&id.as_str())) {
        match client.enroll(requests_for(&population, i)).await {
            Err(status) => println!("Re-scraping one of the erased photos is refused: {}", status.message()),
            Ok(_) => println!("(the erased source could be enrolled again: unexpected)"),
        }
    }

    step(8, "The regulator's order: stop collecting, erase everyone in France (CNIL, 2021)");
    drop((client, rights, admin, notices));
    stop(server).await?;
    let server = start(LAWFUL).await?;
    let mut client = connect(&server, &args.out).await?;
    let mut rights = pb::rights_client::RightsClient::new(channel(&server, &args.out).await?);
    let mut admin = pb::admin_client::AdminClient::new(channel(&server, &args.out).await?);
    println!("The operator restarts under the `lawful` policy: consent only, no scraping, unknown jurisdictions");
    println!("quarantined. The crawler's next photo:");
    match client.enroll(requests_for(&population, population.len() - 1)).await {
        Err(status) => println!("  refused: {}", status.message()),
        Ok(_) => println!("  accepted (unexpected under the lawful policy)"),
    }
    let sweep = |dry_run| pb::SweepPolicyRequest { rule: "jurisdiction=FR".into(), dry_run };
    let french = admin.sweep_policy(sweep(true)).await.map_err(status_error)?.into_inner().matched;
    let unknown = admin
        .sweep_policy(pb::SweepPolicyRequest { rule: "jurisdiction=unknown".into(), dry_run: true })
        .await
        .map_err(status_error)?
        .into_inner()
        .matched;
    println!("CNIL ordered the deletion of the data of people in France. {french} records say their photo was");
    println!("taken there. The administrator sweeps them: one erasure request per record, each with its receipts.");
    let swept = admin.sweep_policy(sweep(false)).await.map_err(status_error)?.into_inner();
    for id in &swept.request_ids {
        // Phase 1 runs batched over all of them; wait for each to reach it.
        rights.get_request(wait(id, "")).await.map_err(status_error)?;
    }
    admin.run_purge(pb::RunPurgeRequest {}).await.map_err(status_error)?;
    let mut receipted = 0;
    for id in &swept.request_ids {
        let r = rights
            .get_erasure_receipts(pb::GetErasureReceiptsRequest {
                request_id: id.clone(),
                request_secret: String::new(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        receipted += usize::from(!r.phase1_receipt_json.is_empty() && !r.phase2_receipt_json.is_empty());
    }
    println!(
        "{} erasure requests; {receipted} have both receipts (phase 1 and phase 2) in the log.",
        swept.request_ids.len()
    );
    println!("But {unknown} records carry no jurisdiction at all: a face does not say where its owner lives, which is");
    println!("what Clearview argued. A sweep cannot reach them; only collection rules can (the default `lawful`");
    println!("policy quarantines them: stored, hidden from searches, found by every access or erasure request).");

    step(9, "A public log of what was done");
    let mut log = pb::transparency_client::TransparencyClient::new(channel(&server, &args.out).await?);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.map_err(status_error)?.into_inner().verifier_key;
    let checkpoint =
        log.get_checkpoint(pb::GetCheckpointRequest {}).await.map_err(status_error)?.into_inner().checkpoint;
    let receipt =
        log.get_receipt(pb::GetReceiptRequest { leaf_index: 0 }).await.map_err(status_error)?.into_inner().receipt;
    let key_file = args.out.join("log.vkey");
    fs::write(&key_file, format!("{key}\n"))?;
    fs::write(args.out.join("checkpoint.note"), &checkpoint)?;
    fs::write(args.out.join("receipt-leaf-0.json"), &receipt)?;
    println!("Every enrolment, answer and erasure phase was appended to a Merkle log (RFC 6962) in the same");
    println!("write as the change itself. A leaf holds a salted commitment, never a record id; the latest");
    println!("signed checkpoint:");
    for line in checkpoint.lines() {
        println!("  | {line}");
    }
    let witness_state = args.out.join("witness.note");
    let _ = fs::remove_file(&witness_state);
    let witness = || super::log::WitnessArgs { state: witness_state.clone(), verifier_key: key.clone() };
    print!("An auditor's witness fetches it, checks its signature and saves it: ");
    super::log::witness(witness(), &server.addr.to_string()).await?;
    drop((client, log, rights, admin));
    stop(server).await?;
    let key = oubli::transparency::note::VerifierKey::parse(&key)?;
    println!("The server is stopped. Anyone can check the receipts offline, with the log's key alone:");
    for (what, name) in [
        ("the first enrolment", "receipt-leaf-0.json"),
        ("the erasure, phase 1", "erasure-receipt-phase1.json"),
        ("the erasure, phase 2", "erasure-receipt-phase2.json"),
        ("the no-match attestation", "no-match-attestation.json"),
    ] {
        let Ok(json) = fs::read_to_string(args.out.join(name)) else { continue };
        let checks = oubli::transparency::receipt::verify(&json, &key, None);
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        let verdict = if failed.is_empty() { "every check passes".to_string() } else { format!("FAILED {failed:?}") };
        println!("  {what:<26} {:<30} {} checks: {verdict}", name, checks.len());
    }
    println!(
        "Re-check one yourself: oubli verify {} --verifier-key {}",
        args.out.join("erasure-receipt-phase1.json").display(),
        key_file.display()
    );

    step(10, "A restored backup brings erased faces back, and the witness catches it");
    let backup = args.out.join("backup");
    let server = start_on(&args.out, &backup, PERMISSIVE, thresholds).await?;
    let mut client = connect(&server, &args.out).await?;
    let (resurrected, _) = matches_of(&mut client, population.probe(0), threshold, &who, person).await?;
    println!("The operator quietly restores the backup from step 5. Person #{person}'s erased records are back:");
    println!("the same selfie finds {resurrected} of them again. The erasure receipt listed backups as pending, so it");
    println!("promised nothing false. But the log cannot be restored with the store. The auditor's witness:");
    match super::log::witness(witness(), &server.addr.to_string()).await {
        Ok(()) => println!("  (the witness accepted the restored log: unexpected)"),
        Err(e) => println!("  {e:#}"),
    }
    drop(client);
    stop(server).await?;
    println!("The honest fix is the one the receipt names: destroy the key epoch the backup's keys are wrapped");
    println!("under. The administrator rotates the keys on the live server:");
    let server = start(LAWFUL).await?;
    let mut admin = pb::admin_client::AdminClient::new(channel(&server, &args.out).await?);
    let rotated = admin.rotate_keys(pb::RotateKeysRequest {}).await.map_err(status_error)?.into_inner();
    println!("  key epoch {} destroyed, epoch {} in use.", rotated.epoch.saturating_sub(1), rotated.epoch);
    drop(admin);
    stop(server).await?;
    match start_on(&args.out, &backup, PERMISSIVE, thresholds).await {
        Ok(server) => {
            println!("  the backup still opens (unexpected)");
            stop(server).await?;
        }
        Err(e) => {
            println!("  and the backup no longer opens: its data keys are wrapped under the destroyed epoch.");
            println!("  (the server says: {})", e.root_cause());
        }
    }
    println!("\nDone. Every artifact is in {}. Next: README.md, docs/usage.md, docs/educators.md.", args.out.display());
    Ok(())
}

/// An exact search by `probe` at `threshold`: how many hits are `person`'s own records (by the
/// population's ground truth, which the service never sees), and how many are someone else's.
async fn matches_of(
    client: &mut TemplatesClient<AuthChannel>,
    probe: &[f32],
    threshold: f32,
    who: &std::collections::HashMap<&str, u32>,
    person: u32,
) -> Result<(usize, usize)> {
    let hits = client
        .search(pb::SearchRequest {
            probe: Some(pb::Embedding { values: probe.to_vec() }),
            k: 10,
            min_score: Some(threshold),
            exact: true,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .hits;
    let own = hits.iter().filter(|h| who.get(h.record_id.as_str()) == Some(&person)).count();
    Ok((own, hits.len() - own))
}

/// The person's access request by one selfie, and its status once the worker has answered.
async fn ask_access(
    rights: &mut pb::rights_client::RightsClient<AuthChannel>,
    probe: &[f32],
) -> Result<(pb::SubmitAccessRequestResponse, pb::RequestStatus)> {
    let submitted = rights
        .submit_access_request(pb::SubmitAccessRequestRequest {
            probes: vec![pb::Embedding { values: probe.to_vec() }],
            contact: "person@example.org".into(),
            jurisdiction_claim: "FR".into(),
            include_templates: false,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let status = rights
        .get_request(pb::GetRequestRequest {
            request_id: submitted.request_id.clone(),
            request_secret: submitted.request_secret.clone(),
            wait_seconds: 30,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok((submitted, status))
}

/// The privacy desk's decision on a request waiting in the review band: a person compares the
/// photos. The demo plays the desk with the population's ground truth (which the service never
/// sees): it approves the person's own records and leaves the look-alikes' out. Returns the
/// request's status once the worker has moved on.
async fn desk_review(
    rights: &mut pb::rights_client::RightsClient<AuthChannel>,
    status: pb::RequestStatus,
    who: &std::collections::HashMap<&str, u32>,
    person: u32,
    narrate: bool,
) -> Result<pb::RequestStatus> {
    if status.state != "needs_review" {
        return Ok(status);
    }
    let (own, others): (Vec<_>, Vec<_>) =
        status.review_band.iter().partition(|c| who.get(c.record_id.as_str()) == Some(&person));
    if narrate {
        println!(
            "The privacy desk compares the photos of the {} withheld match(es): {} are person #{person}'s own",
            status.review_band.len(),
            own.len()
        );
        println!("(approved), {} are someone else's, a look-alike's (never disclosed, never erased).", others.len());
    }
    let id = status.request_id.clone();
    rights
        .review_request(pb::ReviewRequestRequest {
            request_id: id.clone(),
            approved_record_ids: own.iter().map(|c| c.record_id.clone()).collect(),
            note: "compared the photos".into(),
        })
        .await
        .map_err(status_error)?;
    let status = rights
        .get_request(pb::GetRequestRequest { request_id: id, request_secret: String::new(), wait_seconds: 30 })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(status)
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
