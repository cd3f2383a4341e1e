//! What one client can make the server hold, bounded.
//!
//! - A request message: at most `max_message_bytes` (tonic checks the
//!   length prefix before reading the body, so an oversized message costs
//!   nothing). tonic answers OUT_OF_RANGE; gRPC's status code guide and
//!   Triton say RESOURCE_EXHAUSTED, so [`ResourceExhaustedLayer`] rewrites
//!   that answer, naming the limit and the flag.
//! - A request's headers: at most `max_header_list_bytes` (HTTP/2
//!   `SETTINGS_MAX_HEADER_LIST_SIZE`; hyper resets a stream over it).
//! - Streams per connection: at most `max_concurrent_streams` (HTTP/2
//!   `SETTINGS_MAX_CONCURRENT_STREAMS`).
//! - A call's wall time, reading its body included: `request_timeout`
//!   (the caller's `grpc-timeout` when shorter), so a client that trickles
//!   a body cannot hold a stream for ever.
//! - A connection that sends no HTTP/2 preface within `preface_timeout` is
//!   closed ([`incoming`]; the TLS listener's handshake timeout does the
//!   same there), and idle peers that stop answering HTTP/2 pings are
//!   dropped (`keepalive_interval`, `keepalive_timeout`): a slowloris
//!   client ties up a socket for seconds, not for ever.
//! - Queued inputs per model version: `dynamic_batching.max_queue_bytes`
//!   (the batcher's queue, see [`crate::batcher`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tonic::codegen::http;

/// The HTTP/2 connection preface every client sends first.
const PREFACE_LEN: usize = 24;

/// The server's limits (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request message, bytes.
    pub max_message_bytes: usize,
    /// The largest header list of a request, bytes.
    pub max_header_list_bytes: u32,
    /// Concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// The longest a call may take, its body included.
    pub request_timeout: Duration,
    /// How long a new connection may take to send the HTTP/2 preface.
    pub preface_timeout: Duration,
    /// HTTP/2 ping interval on idle connections.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection closes.
    pub keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            max_header_list_bytes: 64 << 10,
            max_concurrent_streams: 1024,
            request_timeout: Duration::from_secs(120),
            preface_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Rewrites tonic's OUT_OF_RANGE for a request message over the limit to
/// RESOURCE_EXHAUSTED, with a message naming the size, the limit and the
/// flag that raises it.
#[derive(Debug, Clone, Copy)]
pub struct ResourceExhaustedLayer {
    limit: usize,
}

impl ResourceExhaustedLayer {
    /// For a server whose limit is `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> tower::Layer<S> for ResourceExhaustedLayer {
    type Service = ResourceExhausted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResourceExhausted { inner, limit: self.limit }
    }
}

/// The service of [`ResourceExhaustedLayer`].
#[derive(Debug, Clone, Copy)]
pub struct ResourceExhausted<S> {
    inner: S,
    limit: usize,
}

/// tonic's message for a message over the limit (`codec/decode.rs`).
const TONIC_TOO_LARGE: &str = "decoded message length too large: found ";

/// The rewritten status of a trailers-only answer, if it is tonic's
/// "message too large".
fn rewrite(headers: &mut http::HeaderMap, limit: usize) {
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    if !out_of_range {
        return;
    }
    let Some(raw) = headers.get("grpc-message") else { return };
    let message = percent_encoding::percent_decode(raw.as_bytes()).decode_utf8_lossy().into_owned();
    let Some(rest) = message.split_once(TONIC_TOO_LARGE).map(|(_, r)| r) else { return };
    let found = rest.split_whitespace().next().unwrap_or("?").to_string();
    let text = format!(
        "the request message is {found} bytes, over this server's limit of {limit} bytes (--max-message-bytes)"
    );
    headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    if let Ok(value) = http::HeaderValue::from_str(&text) {
        headers.insert("grpc-message", value);
    }
}

/// A response body whose trailers go through [`rewrite`] (tonic sends the
/// status of a failed unary call in trailers after empty headers).
struct RewriteTrailers {
    inner: tonic::body::Body,
    limit: usize,
}

impl http_body::Body for RewriteTrailers {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let limit = this.limit;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    rewrite(&mut trailers, limit);
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for ResourceExhausted<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let limit = self.limit;
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            // Trailers-only answers carry the status in the headers.
            rewrite(response.headers_mut(), limit);
            Ok(response.map(|inner| tonic::body::Body::new(RewriteTrailers { inner, limit })))
        })
    }
}

/// Accepted plaintext connections, each handed on only once it has sent
/// the HTTP/2 preface (within `preface_timeout`; others are closed), each
/// waiting on its own task so a slow one holds up no other.
pub fn incoming(
    listener: TcpListener,
    preface_timeout: Duration,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TcpStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off a little, keep accepting.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(preface_timeout, preface_arrived(&stream)).await {
                    Ok(Ok(true)) => {
                        let _ = stream.set_nodelay(true);
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Ok(false)) | Ok(Err(_)) => {}
                    Err(_) => tracing::debug!(%peer, "no HTTP/2 preface in time: closed"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Waits until the connection has the preface's 24 bytes buffered (or
/// closed: `false`), without consuming them.
async fn preface_arrived(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; PREFACE_LEN];
    loop {
        stream.readable().await?;
        match stream.peek(&mut buf).await? {
            0 => return Ok(false),
            n if n >= PREFACE_LEN => return Ok(true),
            // Part of it: wait for the rest (readable() is already ready).
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tonics_message_too_large_becomes_resource_exhausted() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("11"));
        // As tonic sends it: percent-encoded.
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "Error,%20decoded%20message%20length%20too%20large:%20found%209000%20bytes,%20the%20limit%20is:%204096%20bytes",
            ),
        );
        rewrite(&mut h, 4096);
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(
            h["grpc-message"],
            "the request message is 9000 bytes, over this server's limit of 4096 bytes (--max-message-bytes)"
        );
        let mut other = http::HeaderMap::new();
        other.insert("grpc-status", http::HeaderValue::from_static("11"));
        other.insert("grpc-message", http::HeaderValue::from_static("index out of range"));
        rewrite(&mut other, 4096);
        assert_eq!(other["grpc-status"], "11", "another OUT_OF_RANGE stays");
    }
}
