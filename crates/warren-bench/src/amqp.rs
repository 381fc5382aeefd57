//! A minimal raw AMQP 0-9-1 client for load generation: the handshake and
//! control methods through amq-protocol, the message path through Warren's
//! hand-written framing, with many frames per write so that the generator is
//! not the bottleneck.

use std::time::Duration;

use amq_protocol::frame::{parse_frame, AMQPFrame};
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{FieldTable, LongString};
use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_amqp::codec;

use crate::mqtt_transport::{Reader, Writer};

/// Frame max we ask for.
pub const FRAME_MAX: usize = 131_072;

/// (class, method) ids of the frames the load loops write or watch for.
pub type MethodId = (u16, u16);
/// The basic class.
const BASIC: u16 = 60;
/// basic.publish.
pub const BASIC_PUBLISH: MethodId = (BASIC, 40);
/// basic.deliver.
pub const BASIC_DELIVER: MethodId = (BASIC, 60);
/// basic.ack (a consumer's, or a publisher confirm).
pub const BASIC_ACK: MethodId = (BASIC, 80);
/// basic.nack (a refused publish).
pub const BASIC_NACK: MethodId = (BASIC, 120);
/// channel.close.
const CHANNEL_CLOSE: MethodId = (20, 40);
/// connection.close.
const CONNECTION_CLOSE: MethodId = (10, 50);

/// An open connection with channel 1 ready.
pub struct Client {
    /// Read side (TCP or TLS).
    pub rd: Reader,
    /// Write side.
    pub wr: Writer,
    /// Unparsed input.
    pub buf: BytesMut,
}

/// Something read from the socket that the load loops care about.
pub enum Event<'a> {
    /// basic.deliver: delivery tag.
    Deliver(u64),
    /// A body frame.
    Body(&'a [u8]),
    /// Anything else.
    Other,
}

impl Client {
    /// Connect and open channel 1 as `user`.
    pub async fn connect(addr: &str, user: &str, pass: &str) -> Result<Client> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        let (rd, wr) = crate::tls::split(s).await?;
        let mut c = Client {
            rd,
            wr,
            buf: BytesMut::with_capacity(256 * 1024),
        };
        c.wr.write_all(codec::PROTOCOL_HEADER).await?;
        c.expect(|m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::Start(_))))
            .await?;
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from(format!("\0{user}\0{pass}")),
                locale: "en_US".into(),
            })),
        )
        .await?;
        c.expect(|m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::Tune(_))))
            .await?;
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 16,
                frame_max: FRAME_MAX as u32,
                heartbeat: 0,
            })),
        )
        .await?;
        c.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        )
        .await?;
        c.expect(|m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))))
            .await?;
        c.send(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await?;
        c.expect(|m| matches!(m, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))))
            .await?;
        Ok(c)
    }

    /// Send one control method.
    pub async fn send(&mut self, ch: u16, m: AMQPClass) -> Result<()> {
        let mut out = BytesMut::new();
        codec::write_method(&mut out, ch, m);
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// Read until a method matching `pred` arrives (30 s limit).
    pub async fn expect(&mut self, pred: impl Fn(&AMQPClass) -> bool) -> Result<AMQPClass> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((rest, f)) = parse_frame(&self.buf[..]) {
                let used = self.buf.len() - rest.len();
                self.buf.advance(used);
                match f {
                    AMQPFrame::Method(_, m) if pred(&m) => return Ok(m),
                    AMQPFrame::Method(
                        _,
                        AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                    ) => {
                        bail!(
                            "connection closed by broker: {} {}",
                            c.reply_code,
                            c.reply_text
                        )
                    }
                    AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
                        bail!(
                            "channel closed by broker: {} {}",
                            c.reply_code,
                            c.reply_text
                        )
                    }
                    _ => continue,
                }
            }
            let n = tokio::time::timeout_at(deadline, self.rd.read_buf(&mut self.buf))
                .await
                .context("timed out waiting for the broker")??;
            if n == 0 {
                bail!("broker closed the connection");
            }
        }
    }

    /// Declare a queue (non-durable unless asked) and purge it.
    pub async fn queue(&mut self, name: &str, durable: bool) -> Result<()> {
        self.declare(name, durable, FieldTable::default()).await?;
        self.send(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                queue: name.into(),
                nowait: false,
            })),
        )
        .await?;
        self.expect(|m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(_))))
            .await?;
        Ok(())
    }

    /// Declare a queue with arguments, keeping what it holds.
    pub async fn declare(
        &mut self,
        name: &str,
        durable: bool,
        arguments: FieldTable,
    ) -> Result<()> {
        self.send(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.into(),
                passive: false,
                durable,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments,
            })),
        )
        .await?;
        self.expect(|m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))))
            .await?;
        Ok(())
    }

    /// Delete a queue.
    pub async fn delete_queue(&mut self, name: &str) -> Result<()> {
        self.send(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: name.into(),
                if_unused: false,
                if_empty: false,
                nowait: false,
            })),
        )
        .await?;
        self.expect(|m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_))))
            .await?;
        Ok(())
    }

    /// Declare an exchange.
    pub async fn exchange(&mut self, name: &str, kind: &str) -> Result<()> {
        self.send(
            1,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: name.into(),
                kind: kind.into(),
                passive: false,
                durable: false,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await?;
        self.expect(|m| matches!(m, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_))))
            .await?;
        Ok(())
    }

    /// Bind a queue.
    pub async fn bind(&mut self, q: &str, x: &str, key: &str) -> Result<()> {
        self.send(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: q.into(),
                exchange: x.into(),
                routing_key: key.into(),
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await?;
        self.expect(|m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::BindOk(_))))
            .await?;
        Ok(())
    }

    /// basic.qos(prefetch) then basic.consume.
    pub async fn consume(&mut self, q: &str, no_ack: bool, prefetch: u16) -> Result<()> {
        if prefetch > 0 {
            self.send(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                    prefetch_count: prefetch,
                    global: false,
                })),
            )
            .await?;
            self.expect(|m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))))
                .await?;
        }
        self.send(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: q.into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await?;
        self.expect(|m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))))
            .await?;
        Ok(())
    }

    /// confirm.select.
    pub async fn confirm_select(&mut self) -> Result<()> {
        self.send(
            1,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await?;
        self.expect(|m| matches!(m, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))))
            .await?;
        Ok(())
    }

    /// Read more input; false at end of stream.
    pub async fn fill(&mut self) -> Result<bool> {
        if self.buf.capacity() - self.buf.len() < 64 * 1024 {
            self.buf.reserve(256 * 1024);
        }
        Ok(self.rd.read_buf(&mut self.buf).await? > 0)
    }

    /// Take the next complete frame from the buffer, if any.
    pub fn next_event(&mut self) -> Result<Option<(Event<'_>, usize)>> {
        let Some(f) =
            codec::peek_frame(&self.buf, FRAME_MAX + 8).map_err(|e| anyhow::anyhow!("{e}"))?
        else {
            return Ok(None);
        };
        let total = f.size + codec::FRAME_OVERHEAD;
        let p = &self.buf[7..7 + f.size];
        let ev = match f.kind {
            codec::FRAME_BODY => Event::Body(p),
            codec::FRAME_METHOD => match codec::method_id(p) {
                Some(BASIC_DELIVER) => {
                    // consumer tag (short string), then the delivery tag.
                    let n = p[4] as usize;
                    let tag = u64::from_be_bytes(p[5 + n..13 + n].try_into()?);
                    Event::Deliver(tag)
                }
                Some(BASIC_NACK) => bail!("broker nacked a publish"),
                Some(CHANNEL_CLOSE | CONNECTION_CLOSE) => {
                    bail!("broker closed the channel or connection")
                }
                _ => Event::Other,
            },
            _ => Event::Other,
        };
        Ok(Some((ev, total)))
    }
}

/// Append one publish (method, header, body) to `out`.
pub fn put_publish(out: &mut BytesMut, exchange: &str, key: &str, body: &[u8], persistent: bool) {
    let start = out.len();
    out.put_u8(codec::FRAME_METHOD);
    out.put_u16(1);
    out.put_u32(0);
    out.put_u16(BASIC_PUBLISH.0);
    out.put_u16(BASIC_PUBLISH.1);
    out.put_u16(0);
    out.put_u8(exchange.len() as u8);
    out.put_slice(exchange.as_bytes());
    out.put_u8(key.len() as u8);
    out.put_slice(key.as_bytes());
    out.put_u8(0);
    let size = (out.len() - start - 7) as u32;
    out[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    out.put_u8(codec::FRAME_END);
    // delivery_mode property only.
    let props: &[u8] = if persistent {
        &[0x10, 0x00, 2]
    } else {
        &[0x10, 0x00, 1]
    };
    codec::write_content(out, 1, props, body, FRAME_MAX);
}

/// Append a basic.ack.
pub fn put_ack(out: &mut BytesMut, tag: u64, multiple: bool) {
    out.put_u8(codec::FRAME_METHOD);
    out.put_u16(1);
    out.put_u32(13);
    out.put_u16(BASIC_ACK.0);
    out.put_u16(BASIC_ACK.1);
    out.put_u64(tag);
    out.put_u8(u8::from(multiple));
    out.put_u8(codec::FRAME_END);
}
