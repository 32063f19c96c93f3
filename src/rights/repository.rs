//! The request repository: the one place where rights requests are read and written (sealed
//! JSON rows in the store), the lock that serialises their state changes (worker, privacy desk,
//! submissions), and the change counter callers wait on. Workflows load a request, move it on,
//! and save it (or save it with its log entry in one write); they never touch rows themselves.
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::{
    Error,
    request::{Request, RequestId, Stored},
};
use crate::{engine::Engine, transparency::event::Logged};

pub struct Repository {
    engine: Arc<Engine>,
    /// Serialises request state changes.
    lock: Mutex<()>,
    /// Bumped after every request change, for callers waiting on one.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Repository {
    pub fn new(engine: Arc<Engine>) -> Repository {
        Repository { engine, lock: Mutex::default(), changes: tokio::sync::watch::Sender::new(0) }
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
