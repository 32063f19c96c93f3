//! Counters and latency histograms, rendered in the Prometheus text exposition format. The
//! server serves them on a separate port (`--metrics-listen`, off by default): calls and their
//! latency per RPC and status code, the erasure pipeline's step durations, and gauges read at
//! scrape time (pending and overdue requests, records, log size). Names and labels only, never
//! a value a client sent.
//!
//! [`serve`] is the endpoint: plain HTTP/1.1, `GET /metrics` only. It knows nothing of what it
//! serves: the server passes it the function that renders the page.
use std::{collections::BTreeMap, fmt::Write, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::net::TcpListener;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations at or below each bucket's bound (not cumulative; summed when rendered).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in BUCKETS.iter().zip(self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// A gauge read at scrape time: name, help, value.
pub type Gauge = (&'static str, &'static str, f64);

/// The server's metrics (one per server).
#[derive(Debug, Default)]
pub struct Metrics {
    /// (method, code) → calls.
    calls: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// method → latency.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// erasure step → duration.
    steps: Mutex<BTreeMap<&'static str, Histogram>>,
}

impl Metrics {
    /// One call of `method` (a gRPC path) that ended with `code` after `took`.
    pub fn record_call(&self, method: &str, code: &'static str, took: Duration) {
        *self.calls.lock().entry((method.to_string(), code)).or_default() += 1;
        self.latency.lock().entry(method.to_string()).or_default().observe(took.as_secs_f64());
    }

    /// One run of an erasure pipeline step.
    pub fn record_step(&self, step: &'static str, took: Duration) {
        self.steps.lock().entry(step).or_default().observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition (format 0.0.4) of everything, with `gauges`.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        out.push_str("# HELP oubli_rpc_calls_total gRPC calls by method and status code.\n");
        out.push_str("# TYPE oubli_rpc_calls_total counter\n");
        for ((method, code), n) in self.calls.lock().iter() {
            let _ = writeln!(out, "oubli_rpc_calls_total{{method=\"{method}\",code=\"{code}\"}} {n}");
        }
        out.push_str("# HELP oubli_rpc_duration_seconds gRPC call latency by method.\n");
        out.push_str("# TYPE oubli_rpc_duration_seconds histogram\n");
        for (method, h) in self.latency.lock().iter() {
            h.render(&mut out, "oubli_rpc_duration_seconds", &format!("method=\"{method}\""));
        }
        out.push_str("# HELP oubli_erasure_step_duration_seconds Duration of each erasure pipeline step.\n");
        out.push_str("# TYPE oubli_erasure_step_duration_seconds histogram\n");
        for (step, h) in self.steps.lock().iter() {
            h.render(&mut out, "oubli_erasure_step_duration_seconds", &format!("step=\"{step}\""));
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

/// Renders the page (blocking: it may read the store), or the message of why it cannot.
pub type Render = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Answers `GET /metrics` on `listener` with what `render` returns, in the Prometheus text
/// format; anything else is 404. One request per connection: what a scraper needs and nothing
/// more. Runs until the task is aborted.
pub async fn serve(listener: TcpListener, render: Render) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { continue };
        let render = render.clone();
        tokio::spawn(async move {
            let mut head = vec![0u8; 4096];
            let mut n = 0;
            while !head[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < head.len() {
                match conn.read(&mut head[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => n += k,
                }
            }
            let text = String::from_utf8_lossy(&head[..n]);
            let mut words = text.split_whitespace();
            let (status, body) = match (words.next(), words.next()) {
                (Some("GET"), Some("/metrics")) => match tokio::task::spawn_blocking(move || render()).await {
                    Ok(Ok(body)) => ("200 OK", body),
                    Ok(Err(message)) => ("500 Internal Server Error", format!("{message}\n")),
                    Err(e) => {
                        tracing::error!(error = %e, "request handler failed");
                        (
                            "500 Internal Server Error",
                            "the request failed inside the server; it has been logged\n".to_string(),
                        )
                    }
                },
                _ => ("404 Not Found", "metrics are at GET /metrics\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_add_up() {
        let m = Metrics::default();
        m.record_call("/oubli.v1.TemplatesService/Search", "Ok", Duration::from_millis(3));
        m.record_call("/oubli.v1.TemplatesService/Search", "Ok", Duration::from_millis(30));
        m.record_call("/oubli.v1.TemplatesService/Search", "NotFound", Duration::from_secs(20));
        m.record_step("phase1", Duration::from_millis(100));
        let text = m.render(&[("oubli_log_entries", "Leaves in the transparency log.", 7.0)]);
        assert!(text.contains("oubli_rpc_calls_total{method=\"/oubli.v1.TemplatesService/Search\",code=\"Ok\"} 2"));
        assert!(text.contains(
            "oubli_rpc_duration_seconds_bucket{method=\"/oubli.v1.TemplatesService/Search\",le=\"0.005\"} 1"
        ));
        assert!(
            text.contains(
                "oubli_rpc_duration_seconds_bucket{method=\"/oubli.v1.TemplatesService/Search\",le=\"0.05\"} 2"
            )
        );
        assert!(
            text.contains(
                "oubli_rpc_duration_seconds_bucket{method=\"/oubli.v1.TemplatesService/Search\",le=\"+Inf\"} 3"
            )
        );
        assert!(text.contains("oubli_erasure_step_duration_seconds_count{step=\"phase1\"} 1"));
        assert!(text.contains("oubli_log_entries 7"));
    }
}
