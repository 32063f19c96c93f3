//! `oubli load --chroma`: the calls chromadb's Python client makes to a Chroma server (HTTP API
//! v2, the default tenant and database), on one HTTP/1.1 keep-alive connection per client.
use std::sync::Arc;

use anyhow::{Context, Result, bail};

/// Chroma's default tenant and database, where `chromadb.HttpClient()` puts a collection.
const CHROMA_PREFIX: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

/// The body of a Chroma query for one probe, as its Python client sends it (the floats as a
/// JSON array), asking for what an Oubli search answers: each hit's metadata and distance.
pub(super) fn chroma_query_body(probe: &[f32], k: u32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "query_embeddings": [probe],
        "n_results": k,
        "include": ["metadatas", "distances"],
    }))
    .expect("a query serialises")
}

/// The body of a Chroma add of one record, as its Python client sends it: the vector as
/// base64 of its little-endian float32 bytes, and the record's metadata.
pub(super) fn chroma_add_body(id: &str, values: &[f32], metadata: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    serde_json::to_vec(&serde_json::json!({
        "ids": [id],
        "embeddings": [base64::engine::general_purpose::STANDARD.encode(bytes)],
        "metadatas": [metadata],
    }))
    .expect("an add serialises")
}

/// The ids and distances of a Chroma query's answer for its one probe.
pub(super) fn chroma_hits(body: &[u8]) -> Result<(Vec<String>, Vec<f32>)> {
    #[derive(serde::Deserialize)]
    struct Answer {
        ids: Vec<Vec<String>>,
        #[serde(default)]
        distances: Option<Vec<Vec<Option<f32>>>>,
    }
    let answer: Answer = serde_json::from_slice(body).context("Chroma's query answer is not what its API says")?;
    let ids = answer.ids.into_iter().next().unwrap_or_default();
    let distances: Vec<f32> = answer
        .distances
        .and_then(|d| d.into_iter().next())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.unwrap_or(f32::NAN))
        .collect();
    if distances.len() != ids.len() {
        bail!("Chroma answered {} ids but {} distances", ids.len(), distances.len());
    }
    Ok((ids, distances))
}

/// Where --chroma sends its calls.
pub(super) struct ChromaTarget {
    /// host:port, for connecting and for the Host header.
    pub(super) authority: String,
    pub(super) query_path: String,
    pub(super) add_path: String,
}

impl ChromaTarget {
    pub(super) fn new(url: &str, collection: &str) -> Result<ChromaTarget> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("--chroma {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--chroma takes an http:// URL (http://127.0.0.1:8000)");
        }
        let authority = uri.authority().context("--chroma has no host")?;
        let authority = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        if collection.is_empty() || !collection.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("--collection takes the collection's id (a UUID), not {collection:?}");
        }
        let base = format!("{}{CHROMA_PREFIX}/{collection}", uri.path().trim_end_matches('/'));
        Ok(ChromaTarget { authority, query_path: format!("{base}/query"), add_path: format!("{base}/add") })
    }
}

/// One client's HTTP/1.1 keep-alive connection to Chroma (a new one after a failure).
pub(super) struct ChromaConn {
    pub(super) target: Arc<ChromaTarget>,
    sender: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>>,
}

impl ChromaConn {
    pub(super) async fn connect(target: Arc<ChromaTarget>) -> Result<ChromaConn> {
        let mut conn = ChromaConn { target, sender: None };
        conn.sender = Some(conn.open().await?);
        Ok(conn)
    }

    async fn open(&self) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&self.target.authority)
            .await
            .with_context(|| format!("cannot reach Chroma at {}", self.target.authority))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // Ends when the sender is dropped or the server closes the connection.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// POSTs `body` to `path`; returns the status and the answer's bytes.
    pub(super) async fn post(&mut self, path: &str, body: hyper::body::Bytes) -> Result<(u16, hyper::body::Bytes)> {
        use http_body_util::BodyExt as _;
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            _ => self.sender.insert(self.open().await?),
        };
        sender.ready().await?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.target.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(body))?;
        let outcome = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        }
        .await;
        if outcome.is_err() {
            self.sender = None;
        }
        outcome
    }
}
