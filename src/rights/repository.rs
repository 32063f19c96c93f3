//! The request repository: the one place where rights requests are read and written (sealed
//! JSON rows in the store), the lock that serialises their state changes (worker, privacy desk,
//! submissions), and the change counter callers wait on. Workflows load a request, move it on,
//! and save it (or save it with its log entry in one write); they never touch rows themselves.
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use zeroize::Zeroizing;

use super::{
    Error,
    request::{Request, RequestId, Stored},
};
use crate::{
    engine::{
        Engine,
        combine::{self, Combiner},
    },
    transparency::event::Logged,
};

/// A new request's id and row, waiting in [`Repository::save_new`].
type NewRow = ([u8; 16], Zeroizing<Vec<u8>>);

/// The most new requests written in one group.
const MAX_NEW: usize = 64;

pub struct Repository {
    engine: Arc<Engine>,
    /// Serialises request state changes.
    lock: Mutex<()>,
    /// New requests submitted concurrently, written in one synced write ([`Repository::save_new`]).
    new: Combiner<NewRow, Result<(), Error>>,
    /// Bumped after every request change, for callers waiting on one.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Repository {
    pub fn new(engine: Arc<Engine>) -> Repository {
        Repository {
            engine,
            lock: Mutex::default(),
            new: Combiner::new(MAX_NEW),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Held while a request is read, moved on and written.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock()
    }

    /// Tells the subscribers that a request changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that changes after every request change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn load(&self, id: RequestId) -> Result<Request, Error> {
        let json = self.engine.requests().request(id.as_bytes())?.ok_or(Error::NoRequest(id))?;
        serde_json::from_slice(&json).map_err(|e| Error::CorruptRequest(id, e.to_string()))
    }

    pub fn load_all(&self) -> Result<Vec<Request>, Error> {
        self.engine
            .requests()
            .requests()?
            .into_iter()
            .map(|(id, json)| {
                serde_json::from_slice(&json)
                    .map_err(|e| Error::CorruptRequest(RequestId::from_bytes(id), e.to_string()))
            })
            .collect()
    }

    pub fn save(&self, request: &impl Stored) -> Result<(), Error> {
        Ok(self.engine.requests().put_request(request.id().as_bytes(), &request.encode())?)
    }

    /// Writes a request just submitted, in one synced write with the other submissions in
    /// flight; returns once the write holding it is durable. It needs no [`Repository::lock`]:
    /// its id is fresh and random, so no other state change can hold a copy of it. A group
    /// whose write fails is written again request by request, so that one's error is never
    /// another's.
    pub fn save_new(&self, request: &impl Stored) -> Result<(), Error> {
        self.new.run((*request.id().as_bytes(), request.encode()), |rows| {
            let plain: Vec<([u8; 16], &[u8])> = rows.iter().map(|(id, row)| (*id, &row[..])).collect();
            combine::write_all_or_each(&plain, |some| {
                self.engine.requests().put_requests(some)?;
                Ok(vec![(); some.len()])
            })
        })
    }

    /// Writes `request` and appends `entry` in one synced write; `apply` first records the
    /// entry's leaf in the request.
    pub fn save_logged<R: Stored>(
        &self,
        request: &mut R,
        entry: &Logged,
        mut apply: impl FnMut(&mut R, u64),
    ) -> Result<u64, Error> {
        let id = *request.id().as_bytes();
        Ok(self.engine.requests().put_request_logged(&id, entry, &mut |leaf| {
            apply(request, leaf);
            request.encode()
        })?)
    }

    /// Writes each request's next state with its log entry, all in one synced write.
    pub fn save_all_logged<R: Stored>(
        &self,
        requests: &mut [R],
        entries: &[Logged],
        mut apply: impl FnMut(&mut R, u64),
    ) -> Result<(), Error> {
        let ids: Vec<[u8; 16]> = requests.iter().map(|r| *r.id().as_bytes()).collect();
        self.engine.requests().put_requests_logged(&ids, entries, &mut |i, leaf| {
            apply(&mut requests[i], leaf);
            requests[i].encode()
        })?;
        Ok(())
    }
}
