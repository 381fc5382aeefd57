//! The adapter between a real tungstenite client and server over an
//! in-memory pipe: messages read as one byte stream, writes cut into
//! bounded binary messages, text frames and wrong paths refused.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::*;

const EP: Endpoint = Endpoint {
    what: "test",
    path: "/ws",
    protocol_prefix: "mqtt",
    max_message: 1 << 20,
};

fn peer() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

/// A client upgraded on `path` offering `protocol`, and the server side.
async fn pair(
    path: &str,
    protocol: &str,
) -> (
    Result<WebSocketStream<DuplexStream>, WsError>,
    Option<(WsTransport<DuplexStream>, WsCloser<DuplexStream>)>,
) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut req = format!("ws://localhost{path}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(protocol).unwrap(),
    );
    let client = async {
        tokio_tungstenite::client_async(req, a)
            .await
            .map(|(ws, _)| ws)
    };
    tokio::join!(client, accept(b, peer(), None, &EP))
}

#[tokio::test]
async fn messages_are_one_byte_stream_and_writes_are_bounded_messages() {
    let (client, server) = pair("/ws", "chat, mqttv3.1").await;
    let mut client = client.unwrap();
    let (transport, _closer) = server.unwrap();
    let Opened { mut rd, mut wr, .. } = transport.open();
    for part in [&b"ab"[..], b"", b"cdef"] {
        client.send(Message::binary(part.to_vec())).await.unwrap();
    }
    client.send(Message::Ping("p".into())).await.unwrap();
    let mut got = [0u8; 6];
    rd.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"abcdef");
    let big = vec![7u8; MAX_WRITE_MESSAGE + 100];
    wr.write_all(&big).await.unwrap();
    wr.flush().await.unwrap();
    let mut sizes = Vec::new();
    while sizes.iter().sum::<usize>() < big.len() {
        match client.next().await.unwrap().unwrap() {
            Message::Binary(b) => sizes.push(b.len()),
            Message::Pong(p) => assert_eq!(&p[..], b"p"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sizes, [MAX_WRITE_MESSAGE, 100]);
}

#[tokio::test]
async fn text_frame_is_an_error_closed_with_1003() {
    let (client, server) = pair("/ws", "mqtt").await;
    let mut client = client.unwrap();
    let (transport, closer) = server.unwrap();
    let mut rd = transport.open().rd;
    client.send(Message::text("hi")).await.unwrap();
    let mut buf = [0u8; 8];
    let e = rd.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    closer.close().await;
    match client.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Unsupported),
        other => panic!("expected close, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_path_and_subprotocol_are_refused() {
    let (client, server) = pair("/mqtt", "mqtt").await;
    assert!(server.is_none());
    match client {
        Err(WsError::Http(r)) => assert_eq!(r.status(), StatusCode::NOT_FOUND),
        other => panic!("expected 404, got {other:?}"),
    }
    let (client, server) = pair("/ws", "chat").await;
    assert!(server.is_none());
    match client {
        Err(WsError::Http(r)) => assert_eq!(r.status(), StatusCode::BAD_REQUEST),
        other => panic!("expected 400, got {other:?}"),
    }
}
