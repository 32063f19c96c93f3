//! The erasure pipeline's two purges, batched over every request waiting for one (a purge
//! costs the same for one record as for many): phase 1 purges the data keys, phase 2, once the
//! purge window has passed, the rows themselves. Both run through [`Rights::run_phase`]: the
//! store's purge and its checks, then every request of the batch moved on with its log entry
//! in one synced write. The request lock is held to pick a batch and to move it on, not through
//! the store's purge (on etcd, about half a minute): other requests go on meanwhile, and the
//! batch is read again under the lock before it is moved on.
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use tracing::{info, instrument};

use crate::{
    record::RecordId,
    rights::{
        Error, Rights,
        request::{Alert, ErasureRequest, Phase, Request, State, Step},
    },
    store,
    transparency::{
        event::{self, Event, Logged},
        statements,
    },
};

/// Which purge a phase runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purge {
    /// Phase 1: the data keys.
    Keys,
    /// Phase 2: the rows, from the table files.
    Rows,
}

impl Rights {
    /// Phases 1 and 2 for every erasure waiting for them (batched: one purge serves many
    /// requests). Returns whether anything was done.
    #[instrument(skip_all)]
    pub fn purge_due(&self, now_regardless_of_window: bool) -> Result<bool, Error> {
        let _one_purge = self.purging.lock();
        let mut did = false;
        let phase1 = self.waiting_for(Purge::Keys)?;
        if !phase1.is_empty() {
            self.run_phase(Purge::Keys, &phase1)?;
            did = true;
        }

        let now = self.now();
        let phase2 = self.waiting_for(Purge::Rows)?;
        let oldest = phase2.iter().filter_map(|r| r.pipeline.phase1.as_ref().map(|p| p.at)).min();
        let due = |at: Timestamp| at.checked_add(self.purge_window()).is_ok_and(|due| due <= now);
        if oldest.is_some_and(|at| now_regardless_of_window || due(at)) {
            self.run_phase(Purge::Rows, &phase2)?;
            did = true;
        }
        if did {
            self.requests.changed();
        }
        Ok(did)
    }

    /// The erasures waiting for `purge`, read under the request lock: phase 1 once the
    /// post-delete check found nothing at the strict threshold, phase 2 once phase 1 is logged.
    fn waiting_for(&self, purge: Purge) -> Result<Vec<ErasureRequest>, Error> {
        let _guard = self.requests.lock();
        let checked = |r: &ErasureRequest| r.pipeline.post_check.is_some_and(|(_, remaining)| remaining == 0);
        Ok(match purge {
            Purge::Keys => self.erasing()?.filter(|r| checked(r) && r.pipeline.step == Step::Deleted).collect(),
            Purge::Rows => self.erasing()?.filter(|r| r.pipeline.step == Step::KeysPurged).collect(),
        })
    }

    /// `batch` as stored now (under the request lock the caller holds): those of its requests
    /// still waiting for `purge`, so a request moved on meanwhile is not moved twice.
    fn still_waiting(&self, purge: Purge, batch: &[ErasureRequest]) -> Result<Vec<ErasureRequest>, Error> {
        let step = match purge {
            Purge::Keys => Step::Deleted,
            Purge::Rows => Step::KeysPurged,
        };
        let ids: std::collections::BTreeSet<_> = batch.iter().map(|r| r.id).collect();
        Ok(self.erasing()?.filter(|r| ids.contains(&r.id) && r.pipeline.step == step).collect())
    }

    /// One purge for `batch` (outside the request lock), its checks, and each request's next
    /// step logged with them (under it).
    fn run_phase(&self, purge: Purge, batch: &[ErasureRequest]) -> Result<(), Error> {
        let store = self.engine.records();
        let mut evidence = store::Evidence::default();
        for erased in batch.iter().filter_map(|r| r.pipeline.erased.as_ref()) {
            evidence.extend(&erased.store_evidence());
        }
        let started = Instant::now();
        let checked = match purge {
            Purge::Keys => {
                let ids: Vec<RecordId> = batch.iter().flat_map(|r| r.pipeline.plan.iter().copied()).collect();
                store.purge_keys(&ids, &evidence).map(|v| (v, ids.len()))
            }
            Purge::Rows => {
                let targets: Vec<store::Target> = batch
                    .iter()
                    .filter_map(|r| r.pipeline.erased.as_ref())
                    .flat_map(|erased| erased.store_targets())
                    .collect();
                // The shard's replicas too: each in step with etcd past the keys' delete.
                store
                    .purge_rows(&targets, &evidence)
                    .and_then(|mut v| {
                        v.extend(store.replica_checks()?);
                        Ok(v)
                    })
                    .map(|v| (v, targets.len()))
            }
        };
        let (verified, purged) = match checked {
            Ok(done) => done,
            Err(store::Error::Unverified(why)) => {
                // A check that failed: nothing is logged, the phase is retried, and every
                // request of the batch shows the alert until it passes.
                let _guard = self.requests.lock();
                let mut batch = self.still_waiting(purge, batch)?;
                self.alert(&mut batch, purge, &why)?;
                self.requests.changed();
                return Err(store::Error::Unverified(why).into());
            }
            Err(e) => return Err(e.into()),
        };
        match purge {
            Purge::Keys => {
                self.metrics.record_step("phase1_purge", started.elapsed());
                crate::failpoint::hit("erase.keys-purged");
            }
            Purge::Rows => {
                self.metrics.record_step("phase2_purge", started.elapsed());
                crate::failpoint::hit("erase.rows-purged");
            }
        }
        let _guard = self.requests.lock();
        let mut batch = self.still_waiting(purge, batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let epoch = store.key_epoch();
        // Each receipt's statements, frozen now and committed in its entry.
        let entries: Vec<Logged> = batch
            .iter()
            .map(|r| {
                let commitment = event::request_commitment(&r.salt(), r.id.as_bytes());
                let time = now.round(jiff::Unit::Second).unwrap_or(now);
                let mut facts = self.facts(&r.pipeline);
                // The records this erasure deleted (a planned one already gone is not counted),
                // as the statements say.
                let records = u32::try_from(facts.records).unwrap_or(u32::MAX);
                match purge {
                    Purge::Keys => {
                        facts.key_epoch = epoch;
                        facts.epoch_destroyed = false;
                        let due = statements::Phase2::Due(now.checked_add(self.purge_window()).ok());
                        let said = statements::erasure_phase1(&facts, &verified, due);
                        Logged::new(time, Event::ErasureKeysPurged { commitment, records, epoch }, &said)
                    }
                    Purge::Rows => {
                        let said = statements::erasure_phase2(&facts, &verified);
                        Logged::new(time, Event::ErasureTemplatesPurged { commitment, records }, &said)
                    }
                }
            })
            .collect();
        self.requests.save_all_logged(&mut batch, &entries, |r, leaf| {
            let phase = Some(Phase { at: now, leaf, verified: verified.clone() });
            r.pipeline.alert = None;
            match purge {
                Purge::Keys => {
                    r.pipeline.step = Step::KeysPurged;
                    r.pipeline.key_epoch = epoch;
                    r.pipeline.phase1 = phase;
                }
                Purge::Rows => {
                    r.pipeline.step = Step::TemplatesPurged;
                    r.pipeline.phase2 = phase;
                    r.receipt_leaf = Some(leaf);
                    r.advance(State::Completed, now);
                }
            }
        })?;
        match purge {
            Purge::Keys => {
                info!(requests = batch.len(), records = purged, "erasure phase 1: data keys purged and checked");
                crate::failpoint::hit("erase.phase1-logged");
            }
            Purge::Rows => info!(requests = batch.len(), ranges = purged, "erasure phase 2: rows purged and checked"),
        }
        Ok(())
    }

    /// Records on each request of `batch` that `purge`'s check failed (saved in one write).
    fn alert(&self, batch: &mut [ErasureRequest], purge: Purge, why: &str) -> Result<(), Error> {
        let now = self.now();
        let step = match purge {
            Purge::Keys => "phase 1 (data keys purged and checked)",
            Purge::Rows => "phase 2 (rows purged and checked)",
        };
        for r in batch.iter_mut() {
            let before = r.pipeline.alert.take();
            r.pipeline.alert = Some(Alert {
                step: step.into(),
                detail: why.into(),
                attempts: before.as_ref().map_or(0, |a| a.attempts) + 1,
                since: before.map_or(now, |a| a.since),
            });
        }
        for r in batch.iter() {
            self.requests.save(r)?;
        }
        tracing::warn!(requests = batch.len(), step, "an erasure check failed; retried");
        Ok(())
    }

    /// When the worker next has timed work: phase 2 at the end of the purge window, a key
    /// rotation when due, or soon for a step that failed (a purge check, a write) and is retried.
    pub fn next_purge_at(&self) -> Result<Option<Timestamp>, Error> {
        let erasing: Vec<ErasureRequest> = self.erasing()?.collect();
        // Work that failed (a purge check, a write): retried soon.
        let retry = erasing
            .iter()
            .any(|r| r.pipeline.step == Step::Deleted)
            .then(|| self.now().checked_add(SignedDuration::from_secs(10)).ok())
            .flatten();
        let window = erasing
            .iter()
            .filter_map(|r| r.pipeline.phase1.as_ref().map(|p| p.at))
            .min()
            .and_then(|at| at.checked_add(self.purge_window()).ok());
        Ok(retry.into_iter().chain(window).chain(self.next_rotation_at()?).min())
    }

    pub(in crate::rights) fn purge_window(&self) -> SignedDuration {
        SignedDuration::try_from(self.settings.purge_window).unwrap_or(SignedDuration::MAX)
    }

    /// The erasure requests whose pipeline is running.
    fn erasing(&self) -> Result<impl Iterator<Item = ErasureRequest>, Error> {
        Ok(self.requests.load_all()?.into_iter().filter_map(|r| match r {
            Request::Erasure(e) if e.state == State::Erasing => Some(e),
            Request::Erasure(_) | Request::Access(_) => None,
        }))
    }
}
