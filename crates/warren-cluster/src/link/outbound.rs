//! The dialing side of the message link: one connection from this node to
//! another, carrying what this node's proxies send to the queues homed
//! there (publishes, subscriptions, credit, settlements, gets) and what
//! comes back (confirms, deliveries, answers, counters).
//!
//! Publishes are numbered in outbox order, so the home's "confirmed up to"
//! covers exactly what it has. When the connection drops, every publish not
//! yet confirmed is nacked (the home may or may not have it, as for a lost
//! store write), the home requeues what it had delivered, and proxies
//! subscribe again once the link is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::{Mutex, RwLock};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use warren_core::message::Message;
use warren_core::queue::{Delivery, Queue};
use warren_core::remote::{Forwarded, Home, RemoteSeq, Settle};
use warren_core::{CoreError, SyncState};
use warren_net::outbox::Outbox;

use super::frame::{self, how, Frame, Kind};
use super::Links;
use crate::error::ClusterError;
use crate::handshake;
use crate::wire::{write_frame, Request};

/// Buffered bytes beyond which publishers through this link are slowed.
const SOFT_LIMIT: usize = 4 << 20;
/// Buffered bytes beyond which publishes are refused (nacked): the home
/// is far slower than the publishers, and memory stays bounded.
const HARD_LIMIT: usize = 64 << 20;
/// How long a basic.get or purge waits for the home.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between attempts to reach the home.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// An answer to a request that waits for one.
enum Answer {
    Got(Option<(Delivery, u32)>),
    Purged(Option<u32>),
}

/// A subscription, as this side tracks it.
struct Sub {
    queue: Weak<Queue>,
    /// Unsubscribed: deliveries still on the way go back to the home.
    closing: bool,
}

/// The link to one other node.
pub struct Outbound {
    node: String,
    index: u16,
    links: Weak<Links>,
    /// The open connection's outbox (none while the home is unreachable).
    out: RwLock<Option<Arc<Outbox>>>,
    /// Last publish sequence issued.
    issued: AtomicU64,
    /// Confirmed by the home up to this.
    confirmed: AtomicU64,
    /// Lost (nacked) up to this.
    failed: AtomicU64,
    next_id: AtomicU32,
    subs: Mutex<HashMap<u32, Sub>>,
    answers: Mutex<HashMap<u32, mpsc::SyncSender<Answer>>>,
    /// Proxies to subscribe again when the link is back.
    resume: Mutex<Vec<Weak<Queue>>>,
}

impl Outbound {
    /// The link to `node`, not yet connected.
    pub(super) fn new(node: &str, index: u16, links: Weak<Links>) -> Outbound {
        Outbound {
            node: node.to_string(),
            index,
            links,
            out: RwLock::new(None),
            issued: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            next_id: AtomicU32::new(1),
            subs: Mutex::new(HashMap::new()),
            answers: Mutex::new(HashMap::new()),
            resume: Mutex::new(Vec::new()),
        }
    }

    /// Confirm progress, as the store's sync progress is told.
    pub(super) fn sync_state(&self) -> SyncState {
        SyncState {
            synced: self.confirmed.load(Ordering::Acquire),
            failed: self.failed.load(Ordering::Acquire),
        }
    }

    fn outbox(&self) -> Option<Arc<Outbox>> {
        self.out.read().clone()
    }

    fn id(&self) -> u32 {
        // 0 means "none" to the proxies.
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Connect, serve, and reconnect until the cluster goes away.
    pub(super) async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(links) = self.links.upgrade() else {
                return;
            };
            match self.connect(&links).await {
                Ok(rd) => {
                    drop(links);
                    backoff = Duration::from_millis(50);
                    tracing::info!(home = %self.node, "message link up");
                    self.resume_proxies();
                    let e = self.read_loop(rd).await;
                    tracing::warn!(home = %self.node, "message link down: {e}");
                    self.lost();
                }
                Err(e) => {
                    drop(links);
                    tracing::debug!(home = %self.node, "message link: {e}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Dial the home, prove the secret, switch the connection to the link.
    async fn connect(&self, links: &Links) -> Result<tokio::net::tcp::OwnedReadHalf, ClusterError> {
        let addr = links
            .addr_of(&self.node)
            .ok_or(ClusterError::Link("home node not in the membership"))?;
        let dial = async {
            let mut s = TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            handshake::dial(&mut s, &links.secret()).await?;
            write_frame(&mut s, &Request::Link(links.node_name().to_string())).await?;
            Ok::<_, ClusterError>(s)
        };
        let s = tokio::time::timeout(Duration::from_secs(5), dial)
            .await
            .unwrap_or(Err(ClusterError::Timeout("message link connect")))?;
        let (rd, wr) = s.into_split();
        let out = Outbox::new(Box::new(wr), Arc::new(Mutex::new(None)), |_| {});
        *self.out.write() = Some(out);
        Ok(rd)
    }

    /// The connection dropped: nack what was not confirmed, forget the
    /// subscriptions (the home requeues their deliveries), fail waiting gets.
    fn lost(&self) {
        if let Some(out) = self.out.write().take() {
            out.close();
        }
        self.failed
            .fetch_max(self.issued.load(Ordering::Acquire), Ordering::AcqRel);
        if let Some(l) = self.links.upgrade() {
            l.confirmed();
        }
        let subs: Vec<Sub> = self.subs.lock().drain().map(|(_, s)| s).collect();
        let mut again = Vec::new();
        for s in subs.into_iter().filter(|s| !s.closing) {
            if let Some(q) = s.queue.upgrade() {
                q.remote_lost();
                again.push(Arc::downgrade(&q));
            }
        }
        self.resume.lock().extend(again);
        self.answers.lock().clear();
    }

    fn resume_proxies(&self) {
        let waiting = std::mem::take(&mut *self.resume.lock());
        for q in waiting.iter().filter_map(Weak::upgrade) {
            q.remote_resume();
        }
    }

    async fn read_loop(&self, mut rd: tokio::net::tcp::OwnedReadHalf) -> ClusterError {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            match rd.read_buf(&mut buf).await {
                Ok(0) => return ClusterError::Link("closed by the home"),
                Ok(_) => {}
                Err(e) => return e.into(),
            }
            let mut confirmed = false;
            loop {
                let f = match frame::split(&mut buf) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return e,
                };
                match frame::decode(f).and_then(|f| self.handle(f)) {
                    Ok(c) => confirmed |= c,
                    Err(e) => return e,
                }
            }
            if confirmed {
                if let Some(l) = self.links.upgrade() {
                    l.confirmed();
                }
            }
            if buf.capacity() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
        }
    }

    /// Act on one frame from the home; true when it confirmed or nacked.
    fn handle(&self, f: Frame) -> Result<bool, ClusterError> {
        match f {
            Frame::Confirm { upto } => {
                self.confirmed.fetch_max(upto, Ordering::AcqRel);
                return Ok(true);
            }
            Frame::Nack { seq } => {
                self.failed.fetch_max(seq, Ordering::AcqRel);
                return Ok(true);
            }
            Frame::Deliver {
                sub,
                seq,
                redelivered,
                msg,
            } => self.delivered(
                sub,
                Delivery::from_home(frame::message(msg)?, seq, redelivered),
            ),
            Frame::Got { req, got } => {
                let got = match got {
                    None => None,
                    Some((seq, redelivered, remaining, m)) => Some((
                        Delivery::from_home(frame::message(m)?, seq, redelivered),
                        remaining,
                    )),
                };
                self.answer(req, Answer::Got(got));
            }
            Frame::Purged { req, count } => self.answer(req, Answer::Purged(count)),
            Frame::Stats {
                vhost,
                queue,
                counters: c,
            } => {
                let q = self
                    .links
                    .upgrade()
                    .and_then(|l| l.queue(frame::name(&vhost).ok()?, frame::name(&queue).ok()?));
                if let Some(q) = q {
                    q.remote_stats(c.into());
                }
            }
            Frame::Ended { sub } => {
                self.subs.lock().remove(&sub);
            }
            _ => return Err(ClusterError::Link("a dialer's frame from the home")),
        }
        Ok(false)
    }

    /// A delivery for `sub`: to its proxy, or back to the home when the
    /// proxy has unsubscribed since.
    fn delivered(&self, sub: u32, d: Delivery) {
        let (queue, closing) = match self.subs.lock().get(&sub) {
            Some(s) => (s.queue.upgrade(), s.closing),
            None => (None, true),
        };
        let Some(q) = queue else { return };
        if closing {
            self.settle(&q, Settle::Requeue, &[d.seq]);
        } else {
            q.remote_delivered(d);
        }
    }

    fn answer(&self, req: u32, a: Answer) {
        if let Some(tx) = self.answers.lock().remove(&req) {
            let _ = tx.try_send(a);
        }
    }

    /// Send a request and wait (off the async workers) for its answer.
    fn ask(&self, kind: Kind, q: &Queue, no_ack: bool) -> Result<Answer, CoreError> {
        let out = self.outbox().ok_or_else(|| self.unreachable())?;
        let req = self.id();
        let (tx, rx) = mpsc::sync_channel(1);
        self.answers.lock().insert(req, tx);
        out.push(|b| frame::request(b, kind, req, no_ack, &q.vhost, &q.name));
        let wait = || rx.recv_timeout(ANSWER_TIMEOUT);
        let got = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        self.answers.lock().remove(&req);
        got.map_err(|_| self.unreachable())
    }

    fn unreachable(&self) -> CoreError {
        CoreError::Unavailable(format!(
            "the queue's home node '{}' is not reachable",
            self.node
        ))
    }
}

impl Home for Outbound {
    fn index(&self) -> u16 {
        self.index
    }

    fn publish(&self, queue: &Queue, msg: &Message) -> Forwarded {
        let Some(out) = self.outbox() else {
            return Forwarded::Refused;
        };
        let (mut seq, mut buffered) = (0, 0);
        // One lock: the limit is checked and the publish numbered under
        // the outbox's lock, so sequence order is wire order.
        out.push(|b| {
            buffered = b.len();
            if buffered <= HARD_LIMIT {
                seq = self.issued.fetch_add(1, Ordering::AcqRel) + 1;
                frame::publish(b, seq, &queue.vhost, &queue.name, msg);
            }
        });
        if seq == 0 {
            return Forwarded::Refused;
        }
        let s = RemoteSeq {
            link: self.index,
            seq,
        };
        if buffered > SOFT_LIMIT {
            Forwarded::Backlogged(s)
        } else {
            Forwarded::Sent(s)
        }
    }

    fn subscribe(&self, queue: &Arc<Queue>, credit: u32) -> u32 {
        let Some(out) = self.outbox() else {
            self.resume.lock().push(Arc::downgrade(queue));
            return 0;
        };
        let sub = self.id();
        self.subs.lock().insert(
            sub,
            Sub {
                queue: Arc::downgrade(queue),
                closing: false,
            },
        );
        out.push(|b| frame::subscribe(b, sub, credit, &queue.vhost, &queue.name));
        sub
    }

    fn unsubscribe(&self, sub: u32) {
        if let Some(s) = self.subs.lock().get_mut(&sub) {
            s.closing = true;
        }
        if let Some(out) = self.outbox() {
            out.push(|b| frame::sub_only(b, Kind::Unsubscribe, sub));
        }
    }

    fn credit(&self, sub: u32, n: u32) {
        if let Some(out) = self.outbox() {
            out.push(|b| frame::credit(b, sub, n));
        }
    }

    fn settle(&self, queue: &Queue, how: Settle, seqs: &[u64]) {
        let how = match how {
            Settle::Ack => how::ACK,
            Settle::Requeue => how::REQUEUE,
            Settle::Reject => how::REJECT,
        };
        // Down: the home requeued everything it had delivered.
        if let Some(out) = self.outbox() {
            out.push(|b| frame::settle(b, how, &queue.vhost, &queue.name, seqs));
        }
    }

    fn get(&self, queue: &Queue, no_ack: bool) -> warren_core::Result<Option<(Delivery, u32)>> {
        match self.ask(Kind::Get, queue, no_ack)? {
            Answer::Got(g) => Ok(g),
            Answer::Purged(_) => Err(self.unreachable()),
        }
    }

    fn purge(&self, queue: &Queue) -> warren_core::Result<u32> {
        match self.ask(Kind::Purge, queue, false)? {
            Answer::Purged(Some(n)) => Ok(n),
            Answer::Purged(None) => Err(CoreError::NotFound(format!(
                "no queue '{}' in vhost '{}'",
                queue.name, queue.vhost
            ))),
            Answer::Got(_) => Err(self.unreachable()),
        }
    }
}
