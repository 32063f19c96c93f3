//! The log's side of c2sp.org/tlog-witness: push one checkpoint, with the consistency proof from
//! the size the log believes the witness holds, and read back the cosignature or the size the
//! witness actually holds (409). One HTTP/1.1 exchange over a new connection, `http://` only,
//! bounded by a timeout; the caller (the log's integrator) decides what to retry.
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Request,
    body::Bytes,
    header::{CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::transparency::{cosign::AddCheckpoint, merkle::Hash};

/// The longest answer read from a witness.
const MAX_ANSWER: usize = 64 * 1024;

/// What a witness answered to a checkpoint it could judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    /// 200: its signature lines (each `— <name> <base64>` and a newline), to add to the note.
    Cosigned(String),
    /// 409: it last cosigned a tree of this size, not the old size sent.
    Conflict { witness_size: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("witness URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot connect to the witness at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("the witness did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the HTTP exchange with the witness failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the witness refused the checkpoint with status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the witness's answer is malformed: {0}")]
    Malformed(&'static str),
}

/// Pushes `note` (a signed checkpoint) to the witness at `witness_url` (its submission prefix,
/// `http://host:port[/prefix]`), claiming it last cosigned a tree of `old_size` leaves, with the
/// consistency proof from that size. Statuses other than 200 and 409 are errors naming the
/// status and the witness's explanation.
pub async fn add_checkpoint(
    witness_url: &str,
    old_size: u64,
    proof: &[Hash],
    note: &str,
    timeout: Duration,
) -> Result<AddOutcome, ClientError> {
    let bad = |reason| ClientError::Url { url: witness_url.to_string(), reason };
    let uri: hyper::Uri = witness_url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// witnesses are supported"));
    }
    let authority = uri.authority().ok_or(bad("no host"))?.clone();
    let path = format!("{}/add-checkpoint", uri.path().trim_end_matches('/'));
    let body = AddCheckpoint { old_size, proof: proof.to_vec(), checkpoint: note.to_string() }.format();
    let request = Request::post(path)
        .header(HOST, authority.as_str())
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| bad("cannot make a request to it"))?;
    let exchange = async {
        let addr = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        let stream =
            TcpStream::connect(&addr).await.map_err(|source| ClientError::Connect { addr: addr.clone(), source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection is driven beside the request, and dropped with it.
        let driven = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|_| ClientError::Malformed("the answer is too long or cut short"))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        tokio::pin!(connection);
        tokio::select! {
            answer = driven => answer,
            closed = &mut connection => match closed {
                Err(e) => Err(ClientError::Http(e)),
                Ok(()) => Err(ClientError::Malformed("the witness closed the connection without answering")),
            },
        }
    };
    let (status, bytes) =
        tokio::time::timeout(timeout, exchange).await.map_err(|_| ClientError::Timeout(timeout))??;
    let text = std::str::from_utf8(&bytes).map_err(|_| ClientError::Malformed("the answer is not UTF-8"))?;
    match status {
        200 => cosignatures(text).map(|()| AddOutcome::Cosigned(text.to_string())),
        409 => size(text).map(|witness_size| AddOutcome::Conflict { witness_size }),
        status => Err(ClientError::Status { status, body: text.trim_end().chars().take(500).collect() }),
    }
}

/// Checks that `text` is one or more signature lines.
fn cosignatures(text: &str) -> Result<(), ClientError> {
    let body = text.strip_suffix('\n').ok_or(ClientError::Malformed("the cosignatures do not end in a newline"))?;
    if body.is_empty() {
        return Err(ClientError::Malformed("no cosignature in the answer"));
    }
    for line in body.split('\n') {
        let rest = line.strip_prefix("\u{2014} ").ok_or(ClientError::Malformed("a line is not a signature line"))?;
        if rest.split(' ').count() != 2 {
            return Err(ClientError::Malformed("a signature line is not `— <name> <signature>`"));
        }
    }
    Ok(())
}

/// The tree size of a 409 answer (`text/x.tlog.size`): a decimal and a newline.
fn size(text: &str) -> Result<u64, ClientError> {
    let digits = text.strip_suffix('\n').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(ClientError::Malformed("a 409 answer is not a tree size"));
    }
    digits.parse().map_err(|_| ClientError::Malformed("a 409 answer's size does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(size("12\n").unwrap(), 12);
        assert_eq!(size("0\n").unwrap(), 0);
        for bad in ["", "\n", "012\n", "x\n", "18446744073709551616\n"] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
        assert!(cosignatures("\u{2014} w.example/1 AAAA\n\u{2014} w.example/2 BBBB\n").is_ok());
        for bad in ["", "\n", "\u{2014} w AAAA", "w AAAA\n", "\u{2014} w A B\n"] {
            assert!(cosignatures(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn bad_urls_and_absent_witnesses_are_errors() {
        let note = "o\n0\nx\n\n\u{2014} o AAAA\n";
        let t = Duration::from_secs(5);
        assert!(matches!(add_checkpoint("https://127.0.0.1:1", 0, &[], note, t).await, Err(ClientError::Url { .. })));
        assert!(matches!(add_checkpoint("not a url", 0, &[], note, t).await, Err(ClientError::Url { .. })));
        // A port nothing listens on: bound then released, so the refusal is immediate.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        assert!(matches!(add_checkpoint(&url, 0, &[], note, t).await, Err(ClientError::Connect { .. })));
    }
}
