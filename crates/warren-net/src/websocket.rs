//! WebSocket as a byte-stream [`Transport`]: the HTTP upgrade (path and
//! subprotocol checked), then binary messages read as one byte stream and
//! written from it. A protocol packet may span messages and a message may
//! carry several packets, so the session above frames bytes exactly as it
//! does over TCP (MQTT 5.0 section 6.0 asks for this).
//!
//! The stream (tokio-tungstenite's [`WebSocketStream`]) is shared by the
//! read half (the session loop) and the write half (the outbox's writer
//! task) under a mutex held only while polling. Pings are answered by
//! tungstenite while the read half is polled; a close frame from the peer
//! reads as end of stream; a text frame is a protocol error, closed with
//! 1003. [`WsCloser`] sends the final close frame once the session is over.
//!
//! Generic over the underlying stream, so TLS (wss) can come in under it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Sink as _, Stream as _};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::transport::{Kind, Opened, Transport};

/// How long a client has to complete the HTTP upgrade.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the final close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest WebSocket message written: larger outbox batches are cut into
/// several messages (clients with a message size limit still cope).
pub const MAX_WRITE_MESSAGE: usize = 64 * 1024;

/// tungstenite's read buffer per connection (its default, 128 KiB, would
/// dwarf an idle session).
const READ_BUFFER: usize = 4096;

/// What an endpoint accepts in the HTTP upgrade.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Names the listener in logs ("MQTT WebSocket").
    pub what: &'static str,
    /// The only path served (e.g. `/ws`); others get 404.
    pub path: &'static str,
    /// Accepted subprotocols start with this (`mqtt`: `mqtt`, `mqttv3.1`);
    /// the first one offered is echoed. None offered: 400.
    pub protocol_prefix: &'static str,
    /// Largest message (and frame) accepted; larger ones close with 1009.
    pub max_message: usize,
}

/// The stream both halves poll, and the close code to end with.
struct Shared<S> {
    ws: WebSocketStream<S>,
    /// Sent in the final close frame (set by the read half on a violation;
    /// normal closure otherwise).
    close: Option<(CloseCode, &'static str)>,
    /// The close frame was queued.
    close_sent: bool,
}

type Lock<S> = Arc<Mutex<Shared<S>>>;

/// An upgraded WebSocket connection, before the session splits it.
pub struct WsTransport<S> {
    shared: Lock<S>,
    local: Option<SocketAddr>,
    cert_name: Option<String>,
    tls: bool,
}

/// The read half: binary messages as a byte stream.
pub struct WsReader<S> {
    shared: Lock<S>,
    /// The rest of the last binary message.
    pending: Bytes,
}

/// The write half: bytes written go out as binary messages.
pub struct WsWriter<S> {
    shared: Lock<S>,
}

/// Sends the close frame once the session has ended.
pub struct WsCloser<S> {
    shared: Lock<S>,
}

/// Upgrade `stream` (within [`UPGRADE_TIMEOUT`]); refusals are answered
/// (404 wrong path, 400 no acceptable subprotocol) and logged. `local` is
/// the address the client connected to.
pub async fn accept<S>(
    stream: S,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    ep: &Endpoint,
) -> Option<(WsTransport<S>, WsCloser<S>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Written at once: the outbox already batches.
        .write_buffer_size(0)
        .max_message_size(Some(ep.max_message))
        .max_frame_size(Some(ep.max_message));
    let check = Check { peer, ep };
    // Boxed: the handshake's state is freed once the upgrade is done.
    let upgrade = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        check,
        Some(config),
    ));
    let ws = match tokio::time::timeout(UPGRADE_TIMEOUT, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::info!(peer = %peer, "{}: WebSocket upgrade failed: {e}", ep.what);
            return None;
        }
        Err(_) => {
            tracing::info!(peer = %peer, "{}: no WebSocket upgrade within {} s; closing", ep.what, UPGRADE_TIMEOUT.as_secs());
            return None;
        }
    };
    Some(WsTransport::new(ws, local))
}

impl<S> WsTransport<S> {
    /// Wrap an upgraded stream of either role (warren-bench uses a
    /// client's); the closer sends the final close frame.
    pub fn new(ws: WebSocketStream<S>, local: Option<SocketAddr>) -> (Self, WsCloser<S>) {
        let shared = Arc::new(Mutex::new(Shared {
            ws,
            close: None,
            close_sent: false,
        }));
        let closer = WsCloser {
            shared: shared.clone(),
        };
        let ws = WsTransport {
            shared,
            local,
            cert_name: None,
            tls: false,
        };
        (ws, closer)
    }

    /// The upgrade ran over TLS (wss); `cert_name` is the verified client
    /// certificate's subject CN, if any.
    pub fn over_tls(mut self, cert_name: Option<String>) -> Self {
        self.cert_name = cert_name;
        self.tls = true;
        self
    }
}

/// The upgrade request's checks: the path, then the subprotocol (echoed).
struct Check<'a> {
    peer: SocketAddr,
    ep: &'a Endpoint,
}

impl Callback for Check<'_> {
    fn on_request(self, req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
        check_upgrade(req, resp, self.peer, self.ep)
    }
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature
fn check_upgrade(
    req: &Request,
    mut resp: Response,
    peer: SocketAddr,
    ep: &Endpoint,
) -> Result<Response, ErrorResponse> {
    let path = req.uri().path();
    if path != ep.path {
        tracing::warn!(peer = %peer, "{}: no endpoint at path '{path}' (only '{}'); answered 404", ep.what, ep.path);
        return Err(refusal(StatusCode::NOT_FOUND, "Not Found"));
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let chosen = offered.iter().find(|p| p.starts_with(ep.protocol_prefix));
    let Some(chosen) = chosen.and_then(|p| HeaderValue::from_str(p).ok()) else {
        tracing::warn!(peer = %peer, "{}: no '{}' subprotocol offered ({offered:?}); answered 400", ep.what, ep.protocol_prefix);
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "no MQTT WebSocket subprotocol offered",
        ));
    };
    resp.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, chosen);
    Ok(resp)
}

fn refusal(status: StatusCode, body: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(body.to_string()));
    *r.status_mut() = status;
    r
}

impl<S> Transport for WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Reader = WsReader<S>;

    fn open(self) -> Opened<WsReader<S>> {
        let wr = WsWriter {
            shared: self.shared.clone(),
        };
        Opened {
            rd: WsReader {
                shared: self.shared,
                pending: Bytes::new(),
            },
            wr: Box::new(wr),
            local: self.local,
            kind: Kind::WebSocket,
            cert_name: self.cert_name,
            tls: self.tls,
        }
    }
}

/// What a read error closes with, and as which I/O error it surfaces.
fn read_error(e: WsError) -> ((CloseCode, &'static str), io::Error) {
    let code = match &e {
        WsError::Capacity(_) => (CloseCode::Size, "message too big"),
        WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
        _ => (CloseCode::Protocol, "WebSocket protocol error"),
    };
    let kind = match e {
        WsError::Io(e) => return (code, e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::ConnectionReset,
        _ => io::ErrorKind::InvalidData,
    };
    (code, io::Error::new(kind, format!("WebSocket: {e}")))
}

impl<S> AsyncRead for WsReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut shared = self.shared.lock();
            let next = ready!(Pin::new(&mut shared.ws).poll_next(cx));
            match next {
                Some(Ok(Message::Binary(data))) => {
                    drop(shared);
                    self.pending = data;
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // The peer closed (tungstenite queued the reply): end of stream.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(_))) => {
                    shared.close = Some((CloseCode::Unsupported, "MQTT needs binary frames"));
                    let e = io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text frame (MQTT travels in binary frames)",
                    );
                    return Poll::Ready(Err(e));
                }
                Some(Err(e)) => {
                    let (code, e) = read_error(e);
                    shared.close.get_or_insert(code);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

/// tungstenite's errors as I/O errors (the outbox only logs them).
fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl<S> AsyncWrite for WsWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.lock();
        let mut ws = Pin::new(&mut shared.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(io_error)?;
        let n = buf.len().min(MAX_WRITE_MESSAGE);
        let msg = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
        ws.start_send(msg).map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.lock();
        Pin::new(&mut shared.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.lock();
        poll_close(&mut shared, cx).map_err(io_error)
    }
}

/// Send the close frame (once) and flush it.
fn poll_close<S>(shared: &mut Shared<S>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !shared.close_sent {
        let (code, reason) = shared.close.unwrap_or((CloseCode::Normal, ""));
        let mut ws = Pin::new(&mut shared.ws);
        ready!(ws.as_mut().poll_ready(cx))?;
        shared.close_sent = true;
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // After the peer's close this only flushes tungstenite's reply.
        Pin::new(&mut shared.ws).start_send(Message::Close(Some(frame)))?;
    }
    Pin::new(&mut shared.ws).poll_close(cx)
}

impl<S> WsCloser<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// After the session: send the close frame (normal closure unless the
    /// read half found a violation), unless the peer or the writer already
    /// closed, then drop the connection.
    pub async fn close(self) {
        let closing = std::future::poll_fn(|cx| {
            let mut shared = self.shared.lock();
            poll_close(&mut shared, cx)
        });
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}

#[cfg(test)]
mod tests;
