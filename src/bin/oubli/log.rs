//! `oubli log ...` reads the public transparency log; `oubli verify` checks a receipt offline.
use std::{fs, path::PathBuf};

use anyhow::{Context, Result, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use oubli::grpc::pb::{self, transparency_service_client::TransparencyServiceClient};
use oubli::transparency::{
    cosign::{CosignerKey, WitnessKey},
    merkle::Hash,
    note::VerifierKey,
    receipt::{self, Newer},
};

use super::{channel, status_error};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print the latest signed checkpoint exactly as served.
    Checkpoint,
    /// Print the log's verifier key.
    VerifierKey,
    /// Print entries start..end as JSON lines (index, base64 data, decoded event).
    Entries {
        #[arg(long)]
        start: u64,
        #[arg(long)]
        end: u64,
    },
    /// Print the inclusion proof of a leaf as JSON.
    Proof {
        #[arg(long)]
        leaf: u64,
        /// Tree size (default: the latest checkpoint's).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Print the consistency proof between two tree sizes as JSON.
    Consistency {
        #[arg(long)]
        from: u64,
        /// Newer size (default: the latest checkpoint's).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Write the published log as C2SP tlog-tiles static files (checkpoint, tiles, entry
    /// bundles) under DIR, rebuilt from its entries and checked against its checkpoint: the
    /// same bytes `oubli-server --tiles-listen` serves, for any web server to serve.
    Export { dir: PathBuf },
    /// Print the signed receipt of a leaf.
    Receipt {
        #[arg(long)]
        leaf: u64,
        /// Wait up to this many seconds while the receipt is pending (the log signs
        /// checkpoints at a cadence: a new leaf's receipt is ready once one covers it).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The receipt (JSON) to check.
    #[arg(required_unless_present = "html")]
    receipt: Option<PathBuf>,
    /// The log's verifier key, or a file holding it (from `oubli log verifier-key`).
    #[arg(long)]
    verifier_key: String,
    /// A newer checkpoint (a file, as printed by `oubli log checkpoint`): also check that the
    /// log only grew since the receipt's. Needs the consistency proof, fetched with --server.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Also open the leaf's commitment: your erasure status (erasure.json from `oubli erase
    /// receipt --out`), whose request id and plan salt open every leaf of the erasure and whose
    /// record ids recompute the plan's digest (on the plan's leaf).
    #[arg(long, conflicts_with_all = ["request_id", "record_id"])]
    erasure_status: Option<PathBuf>,
    /// Or: your request's id (an access report's `request_id`)...
    #[arg(long, requires = "salt", conflicts_with = "record_id")]
    request_id: Option<String>,
    /// ...or a record's id (a report's `record_id`, for its enrolment leaf)...
    #[arg(long, requires = "salt")]
    record_id: Option<String>,
    /// ...and the salt that opens it (`answer_log.salt`, `enrolment_log.salt`).
    #[arg(long)]
    salt: Option<String>,
    /// Write the receipt page (docs/verify/index.html) to this file, with --verifier-key pinned
    /// in it, for people to check their receipts in a browser; no receipt needed.
    #[arg(long)]
    html: Option<PathBuf>,
    /// A witness's verifier key, or a file holding it (repeat for each): the receipt's
    /// checkpoint must carry valid cosignatures by --quorum distinct ones of them.
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned the checkpoint (default: all).
    #[arg(long, requires = "witnesses")]
    quorum: Option<usize>,
}

/// What opens a receipt's commitment, from the command line.
struct Holder {
    id: [u8; 16],
    salt: [u8; 16],
    plan: Option<Vec<oubli::record::RecordId>>,
}

/// The id, salt and plan that open a receipt's commitment, from the command line.
fn opening(args: &VerifyArgs) -> Result<Option<Holder>> {
    let bytes = |text: &str, what: &str| -> Result<[u8; 16]> {
        hex::decode(text).ok().and_then(|b| b.try_into().ok()).with_context(|| format!("{what} is 32 hex digits"))
    };
    let salt = |text: &str| bytes(text, "a salt");
    let id = |text: &str| bytes(text, "an id");
    if let Some(path) = &args.erasure_status {
        let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let status: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not an erasure status", path.display()))?;
        let field = |name: &str| status[name].as_str().with_context(|| format!("{}: no {name}", path.display()));
        let records = status["records"]
            .as_array()
            .with_context(|| format!("{}: no records", path.display()))?
            .iter()
            .map(|r| Ok(r.as_str().unwrap_or_default().parse::<oubli::record::RecordId>()?))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Some(Holder {
            id: id(field("request_id")?)?,
            salt: salt(field("plan_salt")?)?,
            plan: Some(records),
        }));
    }
    match (&args.request_id, &args.record_id, &args.salt) {
        (Some(i), _, Some(s)) | (None, Some(i), Some(s)) => Ok(Some(Holder { id: id(i)?, salt: salt(s)?, plan: None })),
        _ => Ok(None),
    }
}

async fn client(server: &str) -> Result<TransparencyServiceClient<oubli::grpc::AuthChannel>> {
    Ok(TransparencyServiceClient::new(channel(server).await?))
}

/// The consistency proof between two tree sizes, from the server.
async fn consistency_proof(
    log: &mut TransparencyServiceClient<oubli::grpc::AuthChannel>,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>> {
    let r = log
        .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: from, to_size: to })
        .await
        .map_err(status_error)?
        .into_inner();
    r.hashes.into_iter().map(|h| h.try_into().map_err(|_| anyhow::anyhow!("a proof hash is not 32 bytes"))).collect()
}

fn b64(hashes: &[Vec<u8>]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

pub async fn run(command: Command, server: &str) -> Result<()> {
    let mut log = client(server).await?;
    match command {
        Command::Checkpoint => {
            let r = log.get_checkpoint(pb::GetCheckpointRequest {}).await.map_err(status_error)?.into_inner();
            out!("{}", r.checkpoint);
        }
        Command::VerifierKey => {
            let r = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.map_err(status_error)?.into_inner();
            outln!("{}", r.verifier_key);
        }
        Command::Entries { start, end } => {
            let r = log.get_entries(pb::GetEntriesRequest { start, end }).await.map_err(status_error)?.into_inner();
            for e in r.entries {
                let decoded = oubli::transparency::event::Entry::decode(&e.data)
                    .map(|d| format!("{} at {}", d.event.name(), d.time))
                    .unwrap_or_else(|err| format!("undecodable: {err}"));
                outln!(
                    "{}",
                    serde_json::json!({ "index": e.index, "data": STANDARD.encode(&e.data), "event": decoded })
                );
            }
        }
        Command::Proof { leaf, size } => {
            let r = log
                .get_inclusion_proof(pb::GetInclusionProofRequest { leaf_index: leaf, tree_size: size.unwrap_or(0) })
                .await
                .map_err(status_error)?
                .into_inner();
            let json =
                serde_json::json!({ "leaf_index": r.leaf_index, "tree_size": r.tree_size, "hashes": b64(&r.hashes) });
            outln!("{json}");
        }
        Command::Consistency { from, to } => {
            let r = log
                .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: from, to_size: to.unwrap_or(0) })
                .await
                .map_err(status_error)?
                .into_inner();
            let json = serde_json::json!({ "from_size": r.from_size, "to_size": r.to_size, "hashes": b64(&r.hashes) });
            outln!("{json}");
        }
        Command::Export { dir } => super::export::export(&mut log, &dir).await?,
        Command::Receipt { leaf, wait } => {
            let r = super::until_published(wait, || {
                let mut log = log.clone();
                async move { log.get_receipt(pb::GetReceiptRequest { leaf_index: leaf }).await }
            })
            .await
            .map_err(status_error)?
            .into_inner();
            out!("{}", r.receipt);
        }
    }
    Ok(())
}

/// Reads a verifier key given inline or in a file.
fn verifier_key(value: &str) -> Result<VerifierKey> {
    if let Ok(key) = VerifierKey::parse(value) {
        return Ok(key);
    }
    let text = fs::read_to_string(value).with_context(|| format!("{value:?} is neither a verifier key nor a file"))?;
    VerifierKey::parse(text.trim()).with_context(|| format!("{value}: not a verifier key"))
}

/// Reads a witness's verifier key given inline or in a file.
fn witness_key(value: &str) -> Result<WitnessKey> {
    let err = match WitnessKey::parse(value) {
        Ok(key) => return Ok(key),
        Err(e) => e,
    };
    let text = fs::read_to_string(value)
        .with_context(|| format!("--witness {value:?} is neither a witness key ({err}) nor a file"))?;
    WitnessKey::parse(text.trim()).with_context(|| format!("{value}: not a witness key"))
}

/// `oubli verify`: offline, except for fetching a consistency proof for a newer checkpoint.
/// Prints every check; fails unless all pass.
pub async fn verify(args: VerifyArgs, server: &str) -> Result<()> {
    let key = verifier_key(&args.verifier_key)?;
    let witnesses = args.witnesses.iter().map(|w| witness_key(w)).collect::<Result<Vec<_>>>()?;
    let needed = args.quorum.unwrap_or(witnesses.len());
    if !witnesses.is_empty() && (needed == 0 || needed > witnesses.len()) {
        bail!("--quorum {needed}: give a number from 1 to the {} --witness key(s)", witnesses.len());
    }
    if let Some(out) = &args.html {
        let pinned: Vec<String> = witnesses.iter().map(ToString::to_string).collect();
        super::page::write_page(out, &key.to_string(), &pinned, if pinned.is_empty() { 0 } else { needed })?;
        outln!("wrote {} (sha256 {})", out.display(), super::page::sha256_hex(&fs::read_to_string(out)?));
    }
    let Some(receipt_path) = &args.receipt else { return Ok(()) };
    let receipt_json =
        fs::read_to_string(receipt_path).with_context(|| format!("cannot read {}", receipt_path.display()))?;
    let newer_note = match &args.checkpoint {
        Some(path) => Some(fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?),
        None => None,
    };
    let mut proof: Vec<Hash> = Vec::new();
    if let Some(note) = &newer_note {
        let from = receipt_tree_size(&receipt_json, &key)?;
        let to = receipt::open_checkpoint(note, &key).map_err(anyhow::Error::msg).context("newer checkpoint")?.size;
        if from < to {
            let mut log = client(server).await.context("the consistency proof is fetched from --server")?;
            proof = consistency_proof(&mut log, from, to).await?;
        }
    }
    let quorum = (!witnesses.is_empty()).then_some(receipt::Quorum { witnesses: &witnesses, needed });
    let newer = newer_note.as_deref().map(|note| Newer { note, proof: &proof });
    let mut checks = receipt::verify_witnessed(&receipt_json, &key, quorum, newer);
    if let Some(h) = opening(&args)? {
        let opening = receipt::Opening { id: h.id, salt: h.salt, plan: h.plan.as_deref() };
        checks.extend(receipt::verify_opening(&receipt_json, &opening));
    }
    for c in &checks {
        outln!("{} {:<40} {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
    }
    if checks.is_empty() || checks.iter().any(|c| !c.ok) {
        bail!("the receipt does not verify");
    }
    outln!("every check passed");
    Ok(())
}

/// The tree size of the checkpoint inside a receipt (read before the full check).
fn receipt_tree_size(receipt_json: &str, key: &VerifierKey) -> Result<u64> {
    let receipt: receipt::Receipt = serde_json::from_str(receipt_json).context("not a receipt")?;
    let body: receipt::Body = serde_json::from_str(&receipt.body).context("receipt body")?;
    Ok(receipt::open_checkpoint(&body.checkpoint, key).map_err(anyhow::Error::msg).context("receipt checkpoint")?.size)
}

#[derive(clap::Subcommand, Debug)]
pub enum WitnessCommand {
    /// Monitor the log: check the latest checkpoint extends the last one verified (saved in
    /// --state); report a rollback or a fork loudly, with a non-zero exit.
    Check(WitnessArgs),
    /// Serve c2sp.org/tlog-witness (`POST /add-checkpoint`): cosign each checkpoint a log
    /// pushes that extends the last one cosigned for it; refuse rollbacks and forks.
    Serve(ServeArgs),
    /// Make a witness key: write it to a new owner-only file, print its verifier key.
    Key {
        /// The witness's name (a schema-less URL such as witness.example/w1).
        #[arg(long)]
        name: String,
        /// The key file to create (it must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:7380")]
    listen: std::net::SocketAddr,
    /// The witness's key file (from `oubli witness key`), owner-only.
    #[arg(long)]
    key_file: PathBuf,
    /// Where the latest cosigned checkpoint of each log is kept (created if missing).
    #[arg(long)]
    state_dir: PathBuf,
    /// The verifier key of a log to witness, or a file holding it (repeat for each log).
    #[arg(long = "log", required = true)]
    logs: Vec<String>,
}

pub async fn witness_command(command: WitnessCommand, server: &str) -> Result<()> {
    match command {
        WitnessCommand::Check(args) => witness(args, server).await,
        WitnessCommand::Serve(args) => {
            let logs = args.logs.iter().map(|l| verifier_key(l)).collect::<Result<Vec<_>>>()?;
            let config = oubli::http::witness::WitnessConfig::load(&args.key_file, args.state_dir, logs)?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            outln!("witness {} serving on http://{}", config.key.verifier(), listener.local_addr()?);
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            oubli::http::witness::serve(listener, config, shutdown).await?;
            Ok(())
        }
        WitnessCommand::Key { name, out } => {
            let key = CosignerKey::generate(&name)?;
            oubli::http::witness::create_key_file(&out, &key)?;
            outln!("{}", key.verifier());
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct WitnessArgs {
    /// Where the witness keeps the last checkpoint it verified (created on first run).
    #[arg(long)]
    pub state: PathBuf,
    /// The log's verifier key, or a file holding it.
    #[arg(long)]
    pub verifier_key: String,
}

/// `oubli witness check`: fetch the latest checkpoint, check it extends the one saved, save it.
/// Exits non-zero, saving nothing, on a bad signature, a rollback or a fork.
pub async fn witness(args: WitnessArgs, server: &str) -> Result<()> {
    use oubli::transparency::witness::{self, Verdict};
    let key = verifier_key(&args.verifier_key)?;
    let saved = match fs::read_to_string(&args.state) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", args.state.display())),
    };
    let mut log = client(server).await?;
    let latest = log.get_checkpoint(pb::GetCheckpointRequest {}).await.map_err(status_error)?.into_inner().checkpoint;
    let mut proof: Vec<Hash> = Vec::new();
    if let Some((from, to)) = witness::proof_needed(saved.as_deref(), &latest, &key)? {
        proof = consistency_proof(&mut log, from, to).await?;
    }
    let verdict = witness::check(saved.as_deref(), &latest, &key, &proof).map_err(anyhow::Error::new)?;
    let tmp = args.state.with_extension("tmp");
    fs::write(&tmp, &latest).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &args.state).with_context(|| format!("cannot write {}", args.state.display()))?;
    match verdict {
        Verdict::First { size } => outln!("first checkpoint: {size} leaves, trusted on first use and saved"),
        Verdict::Unchanged { size } => outln!("unchanged: {size} leaves"),
        Verdict::Grew { from, to } => outln!("consistent: the log grew from {from} to {to} leaves"),
    }
    Ok(())
}
