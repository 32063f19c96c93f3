//! The integrator of a log that signs at a cadence, as Tessera integrates: entries are
//! sequenced in the write batch of the change they record, and this task signs a checkpoint of
//! everything sequenced so far at most once per `interval` when something changed (and at
//! least every `max_age`, so witnesses keep cosigning a quiet log), asks each configured
//! witness to cosign it (C2SP tlog-witness), and publishes it with the cosignatures it got.
//! A witness that is down or refuses costs its cosignature, never the publication: the receipt
//! then carries fewer cosignatures, and a holder's `oubli verify --quorum` says so.
use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tracing::{info, warn};

use super::client::{self, AddOutcome};
use crate::{
    engine::Engine,
    transparency::cosign::{self, WitnessKey},
};

/// When the log signs checkpoints, and who cosigns them.
#[derive(Debug, Clone)]
pub struct Cadence {
    /// How often to sign when something was sequenced.
    pub interval: Duration,
    /// Sign (and get cosigned) again after this long even if nothing changed.
    pub max_age: Duration,
    /// The witnesses asked to cosign each checkpoint.
    pub witnesses: Vec<WitnessTarget>,
    /// How long one witness may take to answer.
    pub witness_timeout: Duration,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence {
            interval: Duration::from_secs(1),
            max_age: Duration::from_secs(300),
            witnesses: Vec::new(),
            witness_timeout: Duration::from_secs(5),
        }
    }
}

/// A witness the log pushes its checkpoints to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessTarget {
    /// Its tlog-witness endpoint's base URL (`http://host:port`; `/add-checkpoint` is added).
    pub url: String,
    /// Its cosignature verifier key (`<name>+<key id>+<base64(0x04 ‖ key)>`).
    pub key: String,
}

/// Runs the integrator until `shutdown`, then integrates once more so nothing sequenced is
/// left unpublished by a clean stop.
pub async fn run(engine: Arc<Engine>, cadence: Cadence, shutdown: impl Future<Output = ()>) {
    let mut witnesses = Witnesses::new(&cadence);
    let mut last = Instant::now();
    tokio::pin!(shutdown);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(cadence.interval) => false,
            _ = &mut shutdown => true,
        };
        let refresh = last.elapsed() >= cadence.max_age;
        match integrate(&engine, &mut witnesses, refresh).await {
            Ok(true) => last = Instant::now(),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "publishing a checkpoint failed; retried at the next tick"),
        }
        if stopping {
            break;
        }
    }
}

/// Signs, gets cosigned and publishes a checkpoint if anything was sequenced since the last
/// one (or `refresh`); whether it published.
pub async fn integrate(engine: &Arc<Engine>, witnesses: &mut Witnesses, refresh: bool) -> Result<bool, String> {
    let e = engine.clone();
    let (size, note, published) =
        tokio::task::spawn_blocking(move || e.log().to_sign()).await.map_err(|e| e.to_string())?;
    if size == published && !refresh {
        return Ok(false);
    }
    let note = witnesses.cosign(engine, size, note).await;
    let e = engine.clone();
    tokio::task::spawn_blocking(move || e.log().publish(size, &note))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    info!(size, "checkpoint published");
    Ok(true)
}

/// The witnesses, with the tree size each is known to hold.
pub struct Witnesses {
    targets: Vec<(WitnessTarget, Option<u64>)>,
    timeout: Duration,
}

impl Witnesses {
    pub fn new(cadence: &Cadence) -> Witnesses {
        Witnesses {
            targets: cadence.witnesses.iter().map(|t| (t.clone(), None)).collect(),
            timeout: cadence.witness_timeout,
        }
    }

    /// `note` (the log's checkpoint of `size` leaves) with the cosignature of every witness
    /// that cosigned it. A witness that answers 409 says which size it holds: the push is
    /// retried once from that size. A cosignature that does not verify under the witness's
    /// configured key is dropped and reported.
    async fn cosign(&mut self, engine: &Arc<Engine>, size: u64, note: String) -> String {
        let Ok((text, _)) = cosign::split_note(&note) else { return note };
        let text = text.to_string();
        let mut out = note.clone();
        for (target, known) in &mut self.targets {
            let key = match WitnessKey::parse(&target.key) {
                Ok(key) => key,
                Err(e) => {
                    warn!(witness = %target.url, error = %e, "a configured witness key does not parse");
                    continue;
                }
            };
            let mut old = known.unwrap_or(0);
            for _ in 0..2 {
                let proof = if old == 0 || old >= size {
                    Vec::new()
                } else {
                    let e = engine.clone();
                    match tokio::task::spawn_blocking(move || e.log().consistency_proof_unpublished(old, size)).await {
                        Ok(Ok(proof)) => proof,
                        _ => break,
                    }
                };
                match client::add_checkpoint(&target.url, old, &proof, &note, self.timeout).await {
                    Ok(AddOutcome::Cosigned(lines)) => {
                        let mine: String = lines
                            .lines()
                            .filter(|line| {
                                matches!(cosign::verify_line(line, &text, std::slice::from_ref(&key)), Ok(Some(_)))
                            })
                            .map(|line| format!("{line}\n"))
                            .collect();
                        if mine.is_empty() {
                            warn!(witness = %target.url, "the witness answered without a valid cosignature by its key");
                        } else {
                            match cosign::add_signatures(&out, &mine) {
                                Ok(with) => out = with,
                                Err(e) => warn!(witness = %target.url, error = %e, "a cosignature could not be added"),
                            }
                        }
                        *known = Some(size);
                        break;
                    }
                    Ok(AddOutcome::Conflict { witness_size }) if witness_size > size => {
                        tracing::error!(
                            witness = %target.url, witness_size, size,
                            "the witness holds a larger tree than this log: it will report a rollback"
                        );
                        *known = Some(witness_size);
                        break;
                    }
                    Ok(AddOutcome::Conflict { witness_size }) => {
                        old = witness_size;
                        *known = Some(witness_size);
                    }
                    Err(e) => {
                        warn!(witness = %target.url, error = %e, "the witness did not cosign");
                        break;
                    }
                }
            }
        }
        out
    }
}
