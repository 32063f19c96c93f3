//! `oubli access`, `oubli requests`, `oubli policy`, `oubli audit`, `oubli tokens`: the rights
//! workflows from the command line.
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use oubli::{
    grpc::pb::{self, admin_service_client::AdminServiceClient, rights_service_client::RightsServiceClient},
    rights::{
        auth::{Role, Tokens},
        policy::{Decision, Policy},
        report::AccessReport,
    },
    synth::files::{ProvenanceLine, read_jsonl},
};

use super::{
    channel,
    secret::{self, RequestSecret},
    status_error, time_text,
};

#[derive(clap::Subcommand, Debug)]
pub enum Access {
    /// Ask for everything held about a face (GDPR Art. 15). Needs no token. Prints the
    /// request id and the secret that alone opens the request: keep it. Nothing is answered
    /// until your identity is established: send a signed capture (`oubli capture`), or the
    /// privacy desk checks it.
    Submit {
        /// A capture file from `oubli capture`: the probes and terms it signed (establishes
        /// your identity now).
        #[arg(long, conflicts_with_all = ["probe", "contact", "jurisdiction", "include_templates"])]
        capture: Option<PathBuf>,
        /// Or probe templates: a .npy matrix, a JSONL file of records, or a JSON array.
        #[arg(long, required_unless_present = "capture")]
        probe: Option<PathBuf>,
        /// Rows of the file to use as probes (comma-separated, from 0).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        rows: Vec<usize>,
        /// How to reach you.
        #[arg(long, required_unless_present = "capture")]
        contact: Option<String>,
        /// Where you live (ISO 3166-1 alpha-2, such as FR).
        #[arg(long)]
        jurisdiction: Option<String>,
        /// Also ask for a copy of each matched template.
        #[arg(long)]
        include_templates: bool,
        /// Wait for the answer (up to 30 s) and print its state.
        #[arg(long)]
        wait: bool,
    },
    /// A request's state and deadline.
    Status {
        request_id: String,
        #[command(flatten)]
        secret: RequestSecret,
        /// Wait up to this many seconds for the worker.
        #[arg(long, default_value_t = 0)]
        wait: u32,
    },
    /// The report, as Markdown (default), HTML-free text for a person, or JSON; with --out,
    /// also writes report.json, report.md and receipt.json into that directory.
    Report {
        request_id: String,
        #[command(flatten)]
        secret: RequestSecret,
        #[arg(long, value_enum, default_value_t = Format::Markdown)]
        format: Format,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Wait up to this many seconds while the report's receipt is pending (its leaf logged,
        /// no published checkpoint covering it yet).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Markdown,
    Json,
}

#[derive(clap::Subcommand, Debug)]
pub enum Requests {
    /// Requests, oldest first (privacy desk or auditor).
    List {
        /// Only past their due date and not final.
        #[arg(long)]
        overdue: bool,
        /// Only in this state (received, verifying, in_progress, needs_review, completed, denied).
        #[arg(long)]
        state: Option<String>,
    },
    /// Decide the review band: approve records as the person's (privacy desk).
    Review {
        request_id: String,
        #[arg(long, value_delimiter = ',')]
        approve: Vec<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Deny a request with a reason (privacy desk).
    Deny { request_id: String, reason: String },
    /// Extend the deadline by 1 or 2 months with a reason (privacy desk).
    Extend { request_id: String, months: u32, reason: String },
    /// Record that you established the requester's identity out of band, how and what you
    /// saw (privacy desk); a request waiting for it is answered or erased at once.
    VerifyIdentity {
        request_id: String,
        /// id-document, video-call, in-person or other.
        #[arg(long)]
        method: String,
        /// What was checked (kept with the request; at most 1000 bytes).
        #[arg(long)]
        note: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// The policy in force, as TOML, with refusals per rule (admin or auditor).
    Show,
    /// Re-read the server's policy file (admin).
    Reload,
    /// Apply a rule to the data already held (admin): each matching record is erased by an
    /// erasure request of its own, with its own receipts.
    Sweep {
        /// FIELD=VALUE with FIELD jurisdiction, source_kind or legal_basis (e.g. jurisdiction=FR).
        rule: String,
        /// Only count the matching records.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a policy file offline; with --provenance, say what it decides for each line.
    Check {
        /// A policy TOML file, or a built-in profile name (lawful, permissive).
        policy: String,
        #[arg(long)]
        provenance: Option<PathBuf>,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum Audit {
    /// The newest audit events (auditor).
    Tail {
        #[arg(short, long, default_value_t = 20)]
        n: u64,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum TokensCommand {
    /// Add a token to a tokens file and print it (the only time it is shown).
    Add {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        client: String,
        /// operator, privacy-desk, auditor, admin, replica (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
}

pub fn print_status(s: &pb::RequestStatus, json: bool) {
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "request_id": s.request_id, "state": s.state, "received_at": time_text(s.received_at.as_ref()),
                "due_at": time_text(s.due_at.as_ref()), "overdue": s.overdue, "matched": s.matched,
                "withheld": s.withheld, "extension_months": s.extension_months,
                "denial_reason": s.denial_reason, "receipt_leaf_index": s.receipt_leaf_index,
                "kind": s.kind, "erasure_step": s.erasure_step,
                "review_band": s.review_band.iter().map(|c| serde_json::json!({"record_id": c.record_id, "score": c.score})).collect::<Vec<_>>(),
            })
        );
        return;
    }
    outln!("request:   {}", s.request_id);
    outln!("state:     {}{}", s.state, if s.overdue { "  (OVERDUE)" } else { "" });
    outln!("received:  {}", time_text(s.received_at.as_ref()));
    outln!("due:       {}", time_text(s.due_at.as_ref()));
    if s.extension_months > 0 {
        outln!("extended:  {} month(s): {}", s.extension_months, s.extension_reason);
    }
    outln!("matched:   {}   withheld for review: {}", s.matched, s.withheld);
    for c in &s.review_band {
        outln!("  review:  {}  score {:.3}", c.record_id, c.score);
    }
    if !s.denial_reason.is_empty() {
        outln!("denied:    {}", s.denial_reason);
    }
    if let Some(leaf) = s.receipt_leaf_index {
        outln!("receipt:   log leaf {leaf}");
    }
}

/// The status a rights call answered with: every answer holds one, so a missing one is the
/// server's fault, reported rather than shown as an empty request.
pub fn answered(status: Option<pb::RequestStatus>) -> Result<pb::RequestStatus> {
    status.context("the server's answer holds no request status")
}

/// A new request's status: as submitted, or (with `wait`) after up to 30 s of the worker.
pub async fn submitted_status(
    client: &mut RightsServiceClient<oubli::grpc::AuthChannel>,
    id: &str,
    secret: &str,
    submitted: Option<pb::RequestStatus>,
    wait: bool,
) -> Result<pb::RequestStatus> {
    if !wait {
        return Ok(submitted.unwrap_or_default());
    }
    let request = pb::GetRequestRequest { request_id: id.into(), request_secret: secret.into(), wait_seconds: 30 };
    answered(client.get_request(request).await.map_err(status_error)?.into_inner().status)
}

pub async fn access(command: Access, server: &str, json: bool) -> Result<()> {
    let mut client = RightsServiceClient::new(channel(server).await?);
    match command {
        Access::Submit { capture, probe, rows, contact, jurisdiction, include_templates, wait } => {
            let request = match (capture, probe) {
                (Some(file), _) => super::capture::Bundle::read(&file)?.into_access_request()?,
                (None, Some(probe)) => pb::SubmitAccessRequestRequest {
                    probes: rows
                        .iter()
                        .map(|&row| super::read_probe(&probe, row).map(|values| pb::Embedding { values }))
                        .collect::<Result<Vec<_>>>()?,
                    contact: contact.unwrap_or_default(),
                    jurisdiction_claim: jurisdiction.unwrap_or_default(),
                    include_templates,
                    capture: None,
                },
                (None, None) => bail!("give --capture FILE, or --probe FILE with --contact"),
            };
            let response = client.submit_access_request(request).await.map_err(status_error)?.into_inner();
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
                    serde_json::json!({"request_id": response.request_id, "request_secret": response.request_secret, "state": status.state})
                );
            } else {
                outln!("request id:     {}", response.request_id);
                outln!("request secret: {}  (keep it: only it opens your request)", response.request_secret);
                outln!("state:          {}", status.state);
                outln!("due:            {}", time_text(status.due_at.as_ref()));
            }
        }
        Access::Status { request_id, secret, wait } => {
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
        }
        Access::Report { request_id, secret, format, out, wait } => {
            let request = pb::GetAccessReportRequest { request_id, request_secret: secret.or_empty()? };
            let r = crate::until_published(wait, || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.get_access_report(request).await }
            })
            .await
            .map_err(status_error)?
            .into_inner();
            if r.report_json.is_empty() {
                let state = r.status.map(|s| s.state).unwrap_or_default();
                bail!("the request is {state}: no report yet (try `oubli access status --wait 30`)");
            }
            let report: AccessReport = serde_json::from_str(&r.report_json).context("the server's report")?;
            if let Some(dir) = &out {
                secret::create_dir(dir)?;
                let pretty = serde_json::to_string_pretty(&report)? + "\n";
                secret::write_private(&dir.join("report.json"), pretty)?;
                secret::write_private(&dir.join("report.md"), report.to_markdown())?;
                if !r.receipt_json.is_empty() {
                    secret::write_private(&dir.join("receipt.json"), &r.receipt_json)?;
                }
            }
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
                Format::Markdown => out!("{}", report.to_markdown()),
            }
        }
    }
    Ok(())
}

pub async fn requests(command: Requests, server: &str, json: bool) -> Result<()> {
    let mut client = RightsServiceClient::new(channel(server).await?);
    match command {
        Requests::List { overdue, state } => {
            let list = client
                .list_requests(pb::ListRequestsRequest { state: state.unwrap_or_default(), overdue_only: overdue })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                for s in &list.requests {
                    print_status(s, true);
                }
            } else {
                outln!("{:<32}  {:<12}  {:<20}  {:<20}  matched  withheld", "request", "state", "received", "due");
                for s in &list.requests {
                    outln!(
                        "{:<32}  {:<12}  {:<20}  {:<20}  {:>7}  {:>8}{}",
                        s.request_id,
                        s.state,
                        time_text(s.received_at.as_ref()),
                        time_text(s.due_at.as_ref()),
                        s.matched,
                        s.withheld,
                        if s.overdue { "  OVERDUE" } else { "" }
                    );
                }
                outln!("{} request(s)", list.requests.len());
            }
        }
        Requests::Review { request_id, approve, note } => {
            let s = client
                .review_request(pb::ReviewRequestRequest { request_id, approved_record_ids: approve, note })
                .await
                .map_err(status_error)?
                .into_inner();
            let s = answered(s.status)?;
            print_status(&s, json);
        }
        Requests::Deny { request_id, reason } => {
            let s = client
                .deny_request(pb::DenyRequestRequest { request_id, reason })
                .await
                .map_err(status_error)?
                .into_inner();
            let s = answered(s.status)?;
            print_status(&s, json);
        }
        Requests::VerifyIdentity { request_id, method, note } => {
            let s = client
                .verify_identity(pb::VerifyIdentityRequest { request_id, method, note })
                .await
                .map_err(status_error)?
                .into_inner();
            let s = answered(s.status)?;
            print_status(&s, json);
        }
        Requests::Extend { request_id, months, reason } => {
            let s = client
                .extend_request(pb::ExtendRequestRequest { request_id, months, reason })
                .await
                .map_err(status_error)?
                .into_inner();
            let s = answered(s.status)?;
            print_status(&s, json);
        }
    }
    Ok(())
}

pub async fn policy(command: PolicyCommand, server: &str) -> Result<()> {
    match command {
        PolicyCommand::Show | PolicyCommand::Reload => {
            let mut client = AdminServiceClient::new(channel(server).await?);
            let p = if matches!(command, PolicyCommand::Show) {
                client.get_policy(pb::GetPolicyRequest {}).await.map(|r| r.into_inner().policy)
            } else {
                client.reload_policy(pb::ReloadPolicyRequest {}).await.map(|r| r.into_inner().policy)
            }
            .map_err(status_error)?
            .context("the server's answer holds no policy")?;
            out!("{}", p.toml);
            let mut refusals: Vec<_> = p.refusals.into_iter().collect();
            refusals.sort();
            outln!(
                "# refusals since start: {}",
                if refusals.is_empty() {
                    "none".into()
                } else {
                    refusals.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
                }
            );
        }
        PolicyCommand::Sweep { rule, dry_run } => {
            let mut client = AdminServiceClient::new(channel(server).await?);
            let r = client
                .sweep_policy(pb::SweepPolicyRequest { rule: rule.clone(), dry_run })
                .await
                .map_err(status_error)?
                .into_inner();
            if dry_run {
                outln!("{} record(s) match {rule}", r.matched);
            } else {
                for id in &r.request_ids {
                    outln!("{id}");
                }
                eprintln!("{} record(s) match {rule}: one erasure request each, queued", r.matched);
            }
        }
        PolicyCommand::Check { policy, provenance } => {
            let path = PathBuf::from(&policy);
            let policy = if path.exists() { Policy::load(&path)? } else { Policy::profile(&policy)? };
            outln!("policy {:?} is valid", policy.name());
            if let Some(file) = provenance {
                let lines: Vec<ProvenanceLine> = read_jsonl(&file)?;
                let now = jiff::Timestamp::now();
                let (mut allowed, mut held, mut refused) = (0, 0, 0);
                for (n, line) in lines.iter().enumerate() {
                    let p = line.to_provenance(now).with_context(|| format!("{} line {}", file.display(), n + 1))?;
                    match policy.decide(&p) {
                        Decision::Allow => allowed += 1,
                        Decision::Quarantine { rule } => {
                            held += 1;
                            outln!("line {}: quarantined by rule {rule}", n + 1);
                        }
                        Decision::Deny { rule, reason } => {
                            refused += 1;
                            outln!("line {}: refused by rule {rule}: {reason}", n + 1);
                        }
                    }
                }
                outln!("{allowed} allowed, {held} quarantined, {refused} refused");
            }
        }
    }
    Ok(())
}

pub async fn audit(command: Audit, server: &str, json: bool) -> Result<()> {
    let mut client = AdminServiceClient::new(channel(server).await?);
    match command {
        Audit::Tail { n } => {
            let head = client
                .list_audit_events(pb::ListAuditEventsRequest { after: u64::MAX - 1, limit: 1 })
                .await
                .map_err(status_error)?
                .into_inner()
                .head;
            let events = client
                .list_audit_events(pb::ListAuditEventsRequest {
                    after: head.saturating_sub(n),
                    limit: n.clamp(1, 1000) as u32,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .events;
            for e in events {
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({"seq": e.seq, "at": time_text(e.at.as_ref()), "call_id": e.call_id,
                            "caller": e.caller, "roles": e.roles, "method": e.method, "code": e.code,
                            "rights_request": e.rights_request})
                    );
                } else {
                    outln!(
                        "{:>6}  {}  {:<18}  {:<40}  {}{}",
                        e.seq,
                        time_text(e.at.as_ref()),
                        e.caller,
                        e.method,
                        e.code,
                        if e.rights_request.is_empty() {
                            String::new()
                        } else {
                            format!("  request {}", e.rights_request)
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

pub fn tokens(command: TokensCommand) -> Result<()> {
    match command {
        TokensCommand::Add { file, client, roles } => {
            let roles = roles
                .iter()
                .map(|r| {
                    Role::from_name(r).ok_or_else(|| {
                        anyhow!("role {r:?} is unknown: use operator, privacy-desk, auditor, admin, replica")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let token = Tokens::add(&file, &client, &roles)?;
            outln!("{token}");
            eprintln!("added {client:?} to {} (restart the server to load it)", file.display());
        }
    }
    Ok(())
}
