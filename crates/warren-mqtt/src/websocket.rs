//! MQTT over WebSocket, as RabbitMQ's Web MQTT plugin serves it: the
//! upgrade on path `/ws` with subprotocol `mqtt` (or `mqttv3.1`, echoed),
//! then the same session as over TCP, reading binary messages as one byte
//! stream (see `warren_net::websocket`). Both listeners share one session
//! state, so a client id is one session whichever way it connects. With a
//! TLS acceptor the same listener serves WebSocket over TLS (`wss`).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_core::Broker;
use warren_net::tls::{self, TlsAcceptor};
use warren_net::websocket::{self, Endpoint};

use crate::{session, Config};

/// The only path served (RabbitMQ's `web_mqtt.ws_path` default).
pub const PATH: &str = "/ws";

/// Offered subprotocols starting with this are accepted (`mqtt` for 3.1.1
/// and 5.0, `mqttv3.1` from older clients), as RabbitMQ does.
pub const SUBPROTOCOL_PREFIX: &str = "mqtt";

/// Names the listener in logs.
const WHAT: &str = "MQTT WebSocket";
/// Names the TLS listener in logs.
const WHAT_TLS: &str = "MQTT WebSocket TLS";

/// How far a WebSocket message may exceed the MQTT packet limit: room for
/// a too-large packet's fixed header and some bytes of the next packet.
const MESSAGE_HEADROOM: usize = 64 * 1024;

/// The largest WebSocket message accepted for MQTT packets of at most
/// `max_packet` bytes.
fn ws_message_limit(max_packet: usize) -> usize {
    max_packet.saturating_add(MESSAGE_HEADROOM)
}

/// Accept MQTT-over-WebSocket connections (over TLS with `tls`) until
/// `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<TlsAcceptor>>,
    broker: Arc<Broker>,
    cfg: Arc<Config>,
    shared: Arc<session::Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let what = if tls.is_some() { WHAT_TLS } else { WHAT };
    let ep = Arc::new(Endpoint {
        what,
        path: PATH,
        protocol_prefix: SUBPROTOCOL_PREFIX,
        // Above the packet limit, so that a too-large packet in one
        // message reaches the codec and gets DISCONNECT 0x95 as over TCP;
        // only a message far beyond it is refused by WebSocket (1009).
        max_message: ws_message_limit(cfg.max_packet_size),
    });
    warren_net::listener::accept_loop(listener, what, shutdown, |stream, peer, shutdown| {
        let (broker, cfg, shared, ep) = (broker.clone(), cfg.clone(), shared.clone(), ep.clone());
        let tls = tls.clone();
        async move {
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().ok();
            let Some(tls) = tls else {
                let Some((ws, closer)) = websocket::accept(stream, peer, local, &ep).await else {
                    return;
                };
                drop(ep);
                session::handle(ws, peer, broker, cfg, shared, shutdown).await;
                closer.close().await;
                return;
            };
            let Some(stream) = tls.handshake(stream, peer).await else {
                return;
            };
            drop(tls);
            let cert_name = tls::peer_cert_name(&stream);
            let Some((ws, closer)) = websocket::accept(stream, peer, local, &ep).await else {
                return;
            };
            drop(ep);
            let ws = ws.over_tls(cert_name);
            session::handle(ws, peer, broker, cfg, shared, shutdown).await;
            closer.close().await;
        }
    })
    .await;
}
