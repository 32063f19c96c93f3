//! `oubli erase`, `oubli attest`, `oubli keys`, `oubli notifications`: erasure (GDPR Art. 17,
//! 19) from the command line.
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use oubli::grpc::pb::{
    self, admin_service_client::AdminServiceClient, notifications_service_client::NotificationsServiceClient,
    rights_service_client::RightsServiceClient,
};

use super::{
    channel,
    rights::{answered, print_status, submitted_status},
    secret::{self, AccessSecret, RequestSecret},
    status_error,
};

#[derive(clap::Subcommand, Debug)]
pub enum Erase {
    /// Ask for a face's records to be erased (GDPR Art. 17), by probe templates or by records
    /// from your access report. Needs no token. Prints the request id and its secret.
    Submit {
        /// A capture file from `oubli capture --kind erasure`: the probes and terms it signed
        /// (establishes your identity now; nothing is erased by probes before that).
        #[arg(long, conflicts_with_all = ["probe", "access_request", "contact", "jurisdiction", "never_enrol_again"])]
        capture: Option<PathBuf>,
        /// Or probe templates: a .npy matrix, a JSONL file of records, or a JSON array.
        #[arg(long, conflicts_with = "access_request")]
        probe: Option<PathBuf>,
        /// Rows of the probe file to use (comma-separated, from 0).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        rows: Vec<usize>,
        /// Or: your completed access request's id...
        #[arg(long, requires = "records")]
        access_request: Option<String>,
        #[command(flatten)]
        access_secret: AccessSecret,
        /// ...and the record ids from its report to erase (comma-separated).
        #[arg(long, value_delimiter = ',')]
        records: Vec<String>,
        /// How to reach you.
        #[arg(long, required_unless_present = "capture")]
        contact: Option<String>,
        /// Where you live (ISO 3166-1 alpha-2).
        #[arg(long)]
        jurisdiction: Option<String>,
        /// Consent to keep your probes, sealed, only so that your face is never enrolled again
        /// (needs a signed capture: make it with `oubli capture --never-enrol-again`).
        #[arg(long, requires = "probe")]
        never_enrol_again: bool,
        /// Wait (up to 30 s) for the request to leave the worker's first states.
        #[arg(long)]
        wait: bool,
    },
    /// An erasure's state and pipeline step.
    Status {
        request_id: String,
        #[command(flatten)]
        secret: RequestSecret,
        /// Wait up to this many seconds for the worker.
        #[arg(long, default_value_t = 0)]
        wait: u32,
    },
    /// The erasure's progress and its signed receipts; with --out, writes erasure.json,
    /// receipt-phase1.json and receipt-phase2.json there (check them with `oubli verify`).
    Receipt {
        request_id: String,
        #[command(flatten)]
        secret: RequestSecret,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Wait up to this many seconds while a receipt is pending (its leaf logged, no
        /// published checkpoint covering it yet).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Run the erasure purges now instead of at the end of the purge window (admin).
    Purge,
}

#[derive(clap::Args, Debug)]
pub struct AttestArgs {
    /// Your completed erasure by probes (its secret proves it is yours); its own probes,
    /// kept sealed for this, are compared again.
    #[arg(long)]
    request: String,
    #[command(flatten)]
    secret: RequestSecret,
    /// Write the signed statement here (JSON receipt).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Keys {
    /// A new key-encryption key; every data key re-wrapped; older keys destroyed (admin).
    Rotate,
}

#[derive(clap::Subcommand, Debug)]
pub enum Notifications {
    /// Notices of erased records this client received (operator).
    List,
    /// Acknowledge a notice once its copies are erased (operator).
    Ack { id: String },
}

fn probes(file: &Path, rows: &[usize]) -> Result<Vec<pb::Embedding>> {
    rows.iter().map(|&row| super::read_probe(file, row).map(|values| pb::Embedding { values })).collect()
}

pub async fn erase(command: Erase, server: &str, json: bool) -> Result<()> {
    if let Erase::Purge = command {
        let mut admin = AdminServiceClient::new(channel(server).await?);
        let r = admin.run_purge(pb::RunPurgeRequest {}).await.map_err(status_error)?.into_inner();
        outln!("{}", if r.purged { "erasures moved on" } else { "nothing was waiting" });
        return Ok(());
    }
    let mut client = RightsServiceClient::new(channel(server).await?);
    match command {
        Erase::Submit {
            capture,
            probe,
            rows,
            access_request,
            access_secret,
            records,
            contact,
            jurisdiction,
            never_enrol_again,
            wait,
        } => {
            let request = match (capture, &probe) {
                (Some(file), _) => super::capture::Bundle::read(&file)?.into_erasure_request()?,
                (None, probe) => pb::SubmitErasureRequestRequest {
                    probes: match probe {
                        Some(file) => probes(file, &rows)?,
                        None if access_request.is_some() => Vec::new(),
                        None => bail!(
                            "give --capture FILE, --probe FILE, or --access-request ID --access-secret S --records IDS"
                        ),
                    },
                    access_request_id: access_request.unwrap_or_default(),
                    access_request_secret: access_secret.or_empty()?,
                    record_ids: records,
                    contact: contact.unwrap_or_default(),
                    jurisdiction_claim: jurisdiction.unwrap_or_default(),
                    never_enrol_again,
                    capture: None,
                },
            };
            let response = client.submit_erasure_request(request).await.map_err(status_error)?.into_inner();
            let status = submitted_status(
                &mut client,
                &response.request_id,
                &response.request_secret,
                response.status.clone(),
                wait,
            )
            .await?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"request_id": response.request_id, "request_secret": response.request_secret,
                        "state": status.state, "erasure_step": status.erasure_step})
                );
            } else {
                outln!("request id:     {}", response.request_id);
                outln!("request secret: {}  (keep it: only it opens your request)", response.request_secret);
                outln!("state:          {} {}", status.state, status.erasure_step);
            }
        }
        Erase::Status { request_id, secret, wait } => {
            let s = client
                .get_request(pb::GetRequestRequest {
                    request_id,
                    request_secret: secret.or_empty()?,
                    wait_seconds: wait,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let s = answered(s.status)?;
            print_status(&s, json);
            if !json && !s.erasure_step.is_empty() {
                outln!("step:      {}", s.erasure_step);
            }
        }
        Erase::Receipt { request_id, secret, out, wait } => {
            let request = pb::GetErasureReceiptsRequest { request_id, request_secret: secret.or_empty()? };
            let r = crate::until_published(wait, || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.get_erasure_receipts(request).await }
            })
            .await
            .map_err(status_error)?
            .into_inner();
            if let Some(dir) = &out {
                secret::create_dir(dir)?;
                secret::write_private(&dir.join("erasure.json"), r.erasure_json.clone() + "\n")?;
                for (name, body) in
                    [("receipt-phase1.json", &r.phase1_receipt_json), ("receipt-phase2.json", &r.phase2_receipt_json)]
                {
                    if !body.is_empty() {
                        secret::write_private(&dir.join(name), body)?;
                    }
                }
            }
            if json {
                outln!("{}", r.erasure_json);
                return Ok(());
            }
            outln!("{}", r.erasure_json);
            for (phase, body) in [("phase 1", &r.phase1_receipt_json), ("phase 2", &r.phase2_receipt_json)] {
                if body.is_empty() {
                    outln!("{phase}: not logged yet");
                    continue;
                }
                let receipt: oubli::transparency::receipt::Receipt = serde_json::from_str(body)?;
                let b: oubli::transparency::receipt::Body = serde_json::from_str(&receipt.body)?;
                outln!("{phase}: {} at leaf {} ({})", b.event, b.leaf_index, b.logged_at);
                for d in &b.done {
                    outln!("  done:     {d}");
                }
                for v in &b.verified {
                    outln!("  verified: {v}");
                }
                for p in &b.pending {
                    outln!("  pending:  {} (due: {})", p.what, p.due);
                }
            }
        }
        Erase::Purge => unreachable!("handled above"),
    }
    Ok(())
}

pub async fn attest(args: AttestArgs, server: &str) -> Result<()> {
    let mut client = RightsServiceClient::new(channel(server).await?);
    let r = client
        .attest_no_match(pb::AttestNoMatchRequest { request_id: args.request, request_secret: args.secret.required()? })
        .await
        .map_err(status_error)?
        .into_inner();
    if let Some(out) = &args.out {
        secret::write_private(out, &r.receipt_json)?;
        eprintln!("wrote {} (check it with `oubli verify {}`)", out.display(), out.display());
    }
    let receipt: oubli::transparency::receipt::Receipt = serde_json::from_str(&r.receipt_json)?;
    let body: oubli::transparency::receipt::Body = serde_json::from_str(&receipt.body)?;
    outln!("no-match attestation logged at leaf {}", r.leaf_index);
    for v in body.verified {
        outln!("  verified: {v}");
    }
    outln!("  salt of the entry's commitment to your request: {}", r.salt);
    outln!("  attestations left for this erasure: {}", r.remaining);
    Ok(())
}

pub async fn keys(command: Keys, server: &str) -> Result<()> {
    let mut admin = AdminServiceClient::new(channel(server).await?);
    match command {
        Keys::Rotate => {
            let r = admin.rotate_keys(pb::RotateKeysRequest {}).await.map_err(status_error)?.into_inner();
            outln!(
                "key epoch {}: {} key(s) re-wrapped, older key-encryption keys destroyed; logged at leaf {}",
                r.epoch,
                r.rewrapped,
                r.leaf_index
            );
        }
    }
    Ok(())
}

pub async fn notifications(command: Notifications, server: &str, json: bool) -> Result<()> {
    let mut client = NotificationsServiceClient::new(channel(server).await?);
    match command {
        Notifications::List => {
            let list =
                client.list_notifications(pb::ListNotificationsRequest {}).await.map_err(status_error)?.into_inner();
            for n in &list.notifications {
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({"id": n.id, "body": serde_json::from_str::<serde_json::Value>(&n.body_json).unwrap_or_default()})
                    );
                } else {
                    outln!("{}  {}", n.id, n.body_json);
                }
            }
            if !json {
                outln!("{} notification(s)", list.notifications.len());
            }
        }
        Notifications::Ack { id } => {
            client.ack_notification(pb::AckNotificationRequest { id: id.clone() }).await.map_err(status_error)?;
            outln!("acknowledged {id}");
        }
    }
    Ok(())
}
