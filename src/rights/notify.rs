//! Recipients' notices (GDPR Art. 19): each operator that received an erased record reads the
//! notice to erase its copies, and acknowledges it. The notices are written with the delete.
use super::{Error, Rights};

impl Rights {
    /// Notifications waiting for `client` (JSON bodies).
    pub fn notifications(&self, client: &str) -> Result<Vec<(String, String)>, Error> {
        Ok(self
            .engine
            .records()
            .notices(client)?
            .into_iter()
            .map(|n| (n.id, String::from_utf8_lossy(&n.body).into_owned()))
            .collect())
    }

    pub fn ack_notification(&self, client: &str, id: &str) -> Result<(), Error> {
        if self.engine.records().ack_notice(client, id)? {
            Ok(())
        } else {
            Err(Error::NoNotification(id.chars().take(40).collect()))
        }
    }
}
