//! How the MQTT generator reaches the broker: a plain TCP socket, or a
//! WebSocket (`ws://ADDR/ws`, subprotocol `mqtt`) through the same adapter
//! the broker uses (warren-net), so both carry the same raw MQTT bytes.

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use warren_net::transport::Transport;
use warren_net::websocket::WsTransport;

/// The read half of a generator connection.
pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
/// The write half; callers flush after each write (a WebSocket sends then).
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// host:port.
    pub addr: String,
    /// MQTT over WebSocket instead of TCP.
    pub ws: bool,
}

impl Target {
    /// "tcp" or "ws", for report rows.
    pub fn via(&self) -> &'static str {
        if self.ws {
            "ws"
        } else {
            "tcp"
        }
    }

    /// Connect and split into halves.
    pub async fn connect(&self) -> Result<(Reader, Writer)> {
        let addr = &self.addr;
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        if !self.ws {
            // Over TLS with --tls-ca.
            return crate::tls::split(s).await;
        }
        let mut req = format!("ws://{addr}/ws").into_client_request()?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let config = WebSocketConfig::default().write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(req, s, Some(config))
            .await
            .with_context(|| format!("WebSocket upgrade at ws://{addr}/ws"))?;
        // The closer is dropped: the generator just closes the socket.
        let (transport, _closer) = WsTransport::new(ws, None);
        let opened = transport.open();
        Ok((Box::new(opened.rd), opened.wr))
    }
}
