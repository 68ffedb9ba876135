//! A minimal HTTP/1.x responder for `GET /metrics` (and `HEAD`), on tokio,
//! with no HTTP library: one request per connection, then `Connection:
//! close`.
//!
//! Bounds: the request head is read up to `METRICS_REQUEST_BYTES_MAX` bytes
//! (more: 431), the whole exchange takes at most `METRICS_CONN_TIMEOUT_MS`
//! (then the connection is dropped), and at most `METRICS_SCRAPES_MAX`
//! exchanges run at once; past that, up to `METRICS_SCRAPES_MAX` more
//! connections get a 503 (each within `METRICS_DRAIN_MS`), and any further
//! one is closed at once. Anything that is not a well-formed `METHOD TARGET HTTP/1.x`
//! request line gets 400, another method 405, another path 404. After an
//! error answer the rest of what the client sent is read and thrown away
//! (bounded in bytes and time) so that closing does not reset the
//! connection before the client has read the answer.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::Metrics;

/// Longest request head read (request line and headers).
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Bound on one whole exchange.
pub const METRICS_CONN_TIMEOUT_MS: u64 = 5_000;
/// Exchanges served at the same time.
pub const METRICS_SCRAPES_MAX: usize = 4;
/// After an error answer: most bytes read and discarded before closing.
pub const METRICS_DRAIN_BYTES_MAX: usize = 256 * 1024;
/// After an error answer: longest wait for the client to stop sending.
pub const METRICS_DRAIN_MS: u64 = 1_000;
/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

const _: () = assert!(METRICS_SCRAPES_MAX > 0);

/// The running responder.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Bind `addr` and serve `metrics` until `stop`.
    pub async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, metrics, stop_rx));
        tracing::info!(%addr, "metrics listening (GET {METRICS_PATH})");
        Ok(MetricsServer { addr, stop, task })
    }

    /// The bound address (with port 0 asked: the port chosen).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, drop every open exchange, wait for the task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(METRICS_SCRAPES_MAX));
    // Connections refused with a 503 while every scrape slot is taken.
    let refusals = Arc::new(Semaphore::new(METRICS_SCRAPES_MAX));
    let mut exchanges = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(crate::rpc::listener::ACCEPT_RETRY_MS)).await;
                    continue;
                }
            },
            Some(_) = exchanges.join_next() => continue,
            _ = stop.changed() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Busy: a 503, then read what the client sent before closing
            // (closing with it unread would reset the connection before
            // the client reads the answer); beyond the refusal slots, close.
            let Ok(refusal) = refusals.clone().try_acquire_owned() else { continue };
            exchanges.spawn(async move {
                let mut stream = stream;
                let refuse = async {
                    let answer = response(503, "Service Unavailable", "too many scrapes at once\n", false);
                    if stream.write_all(&answer).await.is_ok() && stream.shutdown().await.is_ok() {
                        drain(&mut stream).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(METRICS_DRAIN_MS), refuse).await;
                // The slot first, then the close the client waits for.
                drop(refusal);
                drop(stream);
            });
            continue;
        };
        let metrics = metrics.clone();
        exchanges.spawn(async move {
            let mut stream = stream;
            let wait = Duration::from_millis(METRICS_CONN_TIMEOUT_MS);
            match tokio::time::timeout(wait, exchange(&mut stream, &metrics)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics exchange failed"),
                Err(_) => tracing::debug!(%peer, "metrics client timed out"),
            }
            // The slot first, then the close: a client that saw its answer
            // end can scrape again at once.
            drop(permit);
            drop(stream);
        });
    }
    exchanges.shutdown().await;
}

/// What the request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics { head_only: bool },
    NotFound,
    BadMethod,
    Bad,
    TooLarge,
}

async fn exchange(stream: &mut TcpStream, metrics: &Metrics) -> io::Result<()> {
    let request = read_request(stream).await?;
    let (answer, ok) = match request {
        Request::Metrics { head_only } => {
            let body = super::text::render(metrics);
            (response_typed(200, "OK", super::text::CONTENT_TYPE, &body, head_only), true)
        }
        Request::NotFound => (response(404, "Not Found", "only GET /metrics is served\n", false), false),
        Request::BadMethod => (response(405, "Method Not Allowed", "only GET and HEAD\n", false), false),
        Request::Bad => (response(400, "Bad Request", "not an HTTP/1.x request\n", false), false),
        Request::TooLarge => (response(431, "Request Header Fields Too Large", "request too large\n", false), false),
    };
    stream.write_all(&answer).await?;
    stream.shutdown().await?;
    if !ok {
        drain(stream).await;
    }
    Ok(())
}

/// Read the request head (up to the blank line) and classify it.
async fn read_request(stream: &mut TcpStream) -> io::Result<Request> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            return Ok(classify(head.get(..end).unwrap_or_default()));
        }
        if head.len() >= METRICS_REQUEST_BYTES_MAX {
            return Ok(Request::TooLarge);
        }
        let room = (METRICS_REQUEST_BYTES_MAX - head.len()).min(chunk.len());
        let n = stream.read(chunk.get_mut(..room).unwrap_or_default()).await?;
        if n == 0 {
            // The client stopped sending before the head ended.
            return Ok(Request::Bad);
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Where the head ends (`\r\n\r\n`, or `\n\n` from a lenient client).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn classify(head: &[u8]) -> Request {
    let Ok(head) = std::str::from_utf8(head) else { return Request::Bad };
    let line = head.split('\n').next().unwrap_or_default().trim_end_matches('\r');
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else { return Request::Bad };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') || method.is_empty() {
        return Request::Bad;
    }
    let head_only = match *method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::BadMethod,
    };
    let path = target.split('?').next().unwrap_or_default();
    if path == METRICS_PATH {
        Request::Metrics { head_only }
    } else {
        Request::NotFound
    }
}

fn response(code: u16, reason: &str, body: &str, head_only: bool) -> Vec<u8> {
    response_typed(code, reason, "text/plain; charset=utf-8", body, head_only)
}

fn response_typed(code: u16, reason: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Read and discard what the client still sends, bounded in bytes and time.
async fn drain(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let mut left = METRICS_DRAIN_BYTES_MAX;
    let read_rest = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(METRICS_DRAIN_MS), read_rest).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_classified() {
        assert_eq!(classify(b"GET /metrics HTTP/1.1\r\nHost: x"), Request::Metrics { head_only: false });
        assert_eq!(classify(b"HEAD /metrics?x=1 HTTP/1.0"), Request::Metrics { head_only: true });
        assert_eq!(classify(b"GET / HTTP/1.1"), Request::NotFound);
        assert_eq!(classify(b"POST /metrics HTTP/1.1"), Request::BadMethod);
        assert_eq!(classify(b"GET /metrics HTTP/2"), Request::Bad);
        assert_eq!(classify(b"\x00\xff\x10junk"), Request::Bad);
        assert_eq!(classify(b"GET  /metrics HTTP/1.1"), Request::Bad);
        assert_eq!(classify(b""), Request::Bad);
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
