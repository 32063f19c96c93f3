//! `oubli capture-keys` (the admin's list of trusted capture applications) and `oubli capture`
//! (playing such an application for the synthetic world): a fresh challenge from the server,
//! the person's probes signed for one request, written as a capture file that `oubli access
//! submit --capture` or `oubli erase submit --capture` sends.
use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use oubli::{
    grpc::pb::{self, rights_service_client::RightsServiceClient},
    rights::{
        identity::{CaptureKeys, Terms, sign_capture},
        request::Kind,
    },
};
use serde::{Deserialize, Serialize};

use super::{channel, status_error};

#[derive(clap::Subcommand, Debug)]
pub enum CaptureKeysCommand {
    /// Trust a capture application's key (offline; the server reads the file at each capture).
    Add {
        /// The capture-keys file (created if missing).
        #[arg(long, env = "OUBLI_CAPTURE_KEYS", default_value = "./oubli-keys/capture-keys.toml")]
        file: PathBuf,
        /// The application's name, as its captures will carry it.
        #[arg(long)]
        name: String,
        /// Its Ed25519 public key (64 hex digits)...
        #[arg(long, conflicts_with = "generate", required_unless_present = "generate")]
        public_key: Option<String>,
        /// ...or generate a new key pair, its private key written to this file (0600).
        #[arg(long)]
        generate: Option<PathBuf>,
    },
    /// The trusted capture applications.
    List {
        #[arg(long, env = "OUBLI_CAPTURE_KEYS", default_value = "./oubli-keys/capture-keys.toml")]
        file: PathBuf,
    },
}

/// A capture application's private key file.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    name: String,
    /// The Ed25519 seed, 64 hex digits.
    secret_key: String,
}

#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// The capture application's private key file (from `oubli capture-keys add --generate`).
    #[arg(long)]
    key: PathBuf,
    /// What the request asks.
    #[arg(long, value_enum, default_value_t = CaptureKind::Access)]
    kind: CaptureKind,
    /// The person's probes: a .npy matrix, a JSONL file of records, or a JSON array. Here the
    /// synthetic world's fresh samples stand for a live capture.
    #[arg(long)]
    probe: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "0")]
    rows: Vec<usize>,
    /// How to reach the person (signed: the answer cannot be redirected).
    #[arg(long)]
    contact: String,
    #[arg(long)]
    jurisdiction: Option<String>,
    /// Access: ask for copies of the templates.
    #[arg(long)]
    include_templates: bool,
    /// Erasure: consent to keep the matching probes, sealed, so the face is never enrolled again.
    #[arg(long)]
    never_enrol_again: bool,
    /// Where to write the capture file (0600).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureKind {
    Access,
    Erasure,
}

/// A signed capture, as `oubli capture` writes it: the request's terms, the probes as sent and
/// one signature per probe.
#[derive(Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub kind: String,
    pub key: String,
    /// Hex.
    pub challenge: String,
    pub contact: String,
    pub jurisdiction: String,
    pub include_templates: bool,
    pub never_enrol_again: bool,
    pub probes: Vec<Vec<f32>>,
    /// Hex, one per probe.
    pub signatures: Vec<String>,
}

const FORMAT: &str = "oubli-capture/v1";

impl Bundle {
    pub fn read(path: &Path) -> Result<Bundle> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let bundle: Bundle =
            serde_json::from_str(&text).with_context(|| format!("{} is not a capture file", path.display()))?;
        if bundle.format != FORMAT {
            bail!("{} is {:?}, not {FORMAT}", path.display(), bundle.format);
        }
        Ok(bundle)
    }

    /// The access request this capture was signed for.
    pub fn into_access_request(self) -> Result<pb::SubmitAccessRequestRequest> {
        let (contact, jurisdiction_claim, include_templates) =
            (self.contact.clone(), self.jurisdiction.clone(), self.include_templates);
        let (probes, capture) = self.into_pb("access")?;
        Ok(pb::SubmitAccessRequestRequest {
            probes,
            contact,
            jurisdiction_claim,
            include_templates,
            capture: Some(capture),
        })
    }

    /// The erasure request this capture was signed for.
    pub fn into_erasure_request(self) -> Result<pb::SubmitErasureRequestRequest> {
        let (contact, jurisdiction_claim, never_enrol_again) =
            (self.contact.clone(), self.jurisdiction.clone(), self.never_enrol_again);
        let (probes, capture) = self.into_pb("erasure")?;
        Ok(pb::SubmitErasureRequestRequest {
            probes,
            contact,
            jurisdiction_claim,
            never_enrol_again,
            capture: Some(capture),
            ..Default::default()
        })
    }

    /// The probes and the capture as the API takes them; refuses a bundle made for `kind`'s
    /// other workflow.
    fn into_pb(self, kind: &str) -> Result<(Vec<pb::Embedding>, pb::Capture)> {
        if self.kind != kind {
            bail!("this capture was signed for an {} request, not an {kind} request", self.kind);
        }
        let hex = |h: &str, what: &str| hex::decode(h).with_context(|| format!("{what} is not hex"));
        let capture = pb::Capture {
            challenge: hex(&self.challenge, "challenge")?,
            key: self.key,
            signatures: self.signatures.iter().map(|s| hex(s, "signature")).collect::<Result<_>>()?,
        };
        Ok((self.probes.into_iter().map(|values| pb::Embedding { values }).collect(), capture))
    }
}

/// Writes `bytes` to a new file only its owner can read; never through a symlink.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A capture application: its name and signing key.
pub struct App {
    pub name: String,
    key: SigningKey,
}

impl App {
    /// The application whose private key file is `path`.
    pub fn load(path: &Path) -> Result<App> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: KeyFile =
            toml::from_str(&text).with_context(|| format!("{} is not a capture key", path.display()))?;
        let seed: [u8; 32] = hex::decode(&file.secret_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("{}: secret_key is not 64 hex digits", path.display()))?;
        Ok(App { name: file.name, key: SigningKey::from_bytes(&seed) })
    }

    /// A new application, trusted from now on by the capture-keys file `keys` (created).
    pub fn trusted_by(keys: &Path, name: &str) -> Result<App> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let app = App { name: name.into(), key: SigningKey::from_bytes(&seed) };
        let mut list = CaptureKeys::load(keys)?;
        list.add(name, app.key.verifying_key()).map_err(anyhow::Error::msg)?;
        oubli::store::private::replace(keys, list.to_toml().as_bytes())
            .with_context(|| format!("cannot write {}", keys.display()))?;
        Ok(app)
    }

    /// A fresh challenge from the server, then `probes` signed for `terms` under it.
    pub async fn sign(
        &self,
        client: &mut RightsServiceClient<oubli::grpc::AuthChannel>,
        terms: &Terms<'_>,
        probes: &[pb::Embedding],
    ) -> Result<(pb::Capture, Option<prost_types::Timestamp>)> {
        // The status stays inside the error (for `oubli load` to tell throttling apart).
        let begun = client
            .begin_capture(pb::BeginCaptureRequest {})
            .await
            .map_err(|s| anyhow::Error::new(s.clone()).context(status_error(s).to_string()))?
            .into_inner();
        let challenge: [u8; 32] =
            begun.challenge.as_slice().try_into().context("the server's challenge is not 32 bytes")?;
        let slices: Vec<&[f32]> = probes.iter().map(|p| p.values.as_slice()).collect();
        let c = sign_capture(&self.key, &self.name, challenge, terms, &slices);
        let capture = pb::Capture {
            challenge: c.challenge.to_vec(),
            key: c.key,
            signatures: c.signatures.iter().map(|s| s.to_vec()).collect(),
        };
        Ok((capture, begun.expires_at))
    }
}

pub fn capture_keys(command: CaptureKeysCommand) -> Result<()> {
    match command {
        CaptureKeysCommand::Add { file, name, public_key, generate } => {
            let mut keys = CaptureKeys::load(&file)?;
            let public = match (&public_key, &generate) {
                (Some(hex_key), _) => {
                    let bytes: [u8; 32] = hex::decode(hex_key)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .context("--public-key: 64 hex digits (an Ed25519 public key)")?;
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes).context("--public-key: not an Ed25519 key")?
                }
                (None, Some(out)) => {
                    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
                    getrandom::fill(seed.as_mut()).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
                    let key = SigningKey::from_bytes(&seed);
                    let text = toml::to_string(&KeyFile { name: name.clone(), secret_key: hex::encode(*seed) })?;
                    write_private(out, text.as_bytes())?;
                    eprintln!("wrote the private key of capture application {name:?} to {}", out.display());
                    key.verifying_key()
                }
                (None, None) => bail!("give --public-key HEX or --generate KEYFILE"),
            };
            keys.add(&name, public).map_err(anyhow::Error::msg)?;
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let tmp = file.with_extension("toml.new");
            let _ = std::fs::remove_file(&tmp);
            write_private(&tmp, keys.to_toml().as_bytes())?;
            std::fs::rename(&tmp, &file).with_context(|| format!("cannot replace {}", file.display()))?;
            outln!("{name}\t{}", hex::encode(public.as_bytes()));
            eprintln!("{} now trusts {} capture application(s)", file.display(), keys.len());
        }
        CaptureKeysCommand::List { file } => {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let keys = CaptureKeys::parse(&text).map_err(anyhow::Error::msg)?;
            out!("{}", keys.to_toml());
        }
    }
    Ok(())
}

pub async fn capture(args: CaptureArgs, server: &str) -> Result<()> {
    let app = App::load(&args.key)?;
    let probes = args.rows.iter().map(|&row| super::read_probe(&args.probe, row)).collect::<Result<Vec<Vec<f32>>>>()?;
    let (kind, include_templates, never_enrol_again) = match args.kind {
        CaptureKind::Access if args.never_enrol_again => bail!("--never-enrol-again is for an erasure"),
        CaptureKind::Erasure if args.include_templates => bail!("--include-templates is for an access request"),
        CaptureKind::Access => (Kind::Access, args.include_templates, false),
        CaptureKind::Erasure => (Kind::Erasure, false, args.never_enrol_again),
    };
    let jurisdiction = args.jurisdiction.unwrap_or_default();
    let terms =
        Terms { kind, contact: &args.contact, jurisdiction_claim: &jurisdiction, include_templates, never_enrol_again };
    let mut client = RightsServiceClient::new(channel(server).await?);
    let wire: Vec<pb::Embedding> = probes.iter().map(|values| pb::Embedding { values: values.clone() }).collect();
    let (capture, expires) = app.sign(&mut client, &terms, &wire).await?;
    let bundle = Bundle {
        format: FORMAT.into(),
        kind: kind.name().into(),
        key: capture.key,
        challenge: hex::encode(&capture.challenge),
        contact: args.contact,
        jurisdiction,
        include_templates,
        never_enrol_again,
        probes,
        signatures: capture.signatures.iter().map(hex::encode).collect(),
    };
    write_private(&args.out, serde_json::to_string_pretty(&bundle)?.as_bytes())?;
    eprintln!(
        "signed {} probe(s) as capture application {:?}; the challenge expires at {}; wrote {}",
        bundle.probes.len(),
        bundle.key,
        super::time_text(expires.as_ref()),
        args.out.display()
    );
    Ok(())
}
