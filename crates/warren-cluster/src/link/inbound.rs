//! The home side of the message link: a connection from another node whose
//! proxies publish to, consume from and settle with the queues that live
//! here. Publishes are enqueued as a local publish would be and confirmed
//! back once this node's store has synced them; each subscription is a
//! consumer of the queue whose credit the proxy grants; deliveries out are
//! kept until the proxy settles them, and requeued if the link drops.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use warren_core::queue::{Consumer, ConsumerSpec, Delivery, Queue};
use warren_core::{Broker, SyncState};
use warren_net::outbox::Outbox;

use super::frame::{self, how, Counters, Frame, Kind};
use crate::error::ClusterError;

/// How often the counters of the queues homed here are sent.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Deliveries out to the other node, by queue and sequence.
type Ledger = HashMap<(usize, u64), (Arc<Queue>, Delivery)>;

/// A subscription: its queue, its consumer tag there, its consumer.
type Subscribed = (Arc<Queue>, Arc<str>, Arc<LinkConsumer>);

/// One connection from another node.
struct HomeConn {
    from: String,
    out: Arc<Outbox>,
    /// The consumers' channel id (unique in the broker).
    channel_id: u64,
    ledger: Mutex<Ledger>,
    subs: Mutex<HashMap<u32, Subscribed>>,
}

/// A subscription as a consumer of the home queue.
struct LinkConsumer {
    sub: u32,
    credit: AtomicU32,
    conn: Weak<HomeConn>,
}

impl Consumer for LinkConsumer {
    fn offer(&self, queue: &Arc<Queue>, d: Delivery) -> Result<(), Delivery> {
        let Some(c) = self.conn.upgrade() else {
            return Err(d);
        };
        if self
            .credit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(d);
        }
        let mut sent = false;
        c.out.push(|b| {
            frame::deliver(b, self.sub, d.seq, d.redelivered, &d.message);
            sent = true;
        });
        if !sent {
            return Err(d);
        }
        c.ledger
            .lock()
            .insert((Arc::as_ptr(queue) as usize, d.seq), (queue.clone(), d));
        Ok(())
    }

    fn queue_deleted(&self, _queue: &Arc<Queue>) {
        // The other node deletes its proxy through the same committed change.
    }
}

/// A publish waiting for its confirm: (dialer's sequence, refused, store sequence).
type Pending = VecDeque<(u64, bool, Option<u64>)>;

/// Serve a message link from `from` until it drops; then give back what
/// was out with it.
pub(crate) async fn serve(stream: TcpStream, from: String, broker: Arc<Broker>, node: Arc<str>) {
    let (rd, wr) = stream.into_split();
    let conn = Arc::new(HomeConn {
        from,
        out: Outbox::new(Box::new(wr), Arc::new(Mutex::new(None)), |_| {}),
        channel_id: broker.next_id(),
        ledger: Mutex::new(HashMap::new()),
        subs: Mutex::new(HashMap::new()),
    });
    tracing::info!(peer = %conn.from, "message link from {} accepted", conn.from);
    let e = Serving {
        conn: conn.clone(),
        broker: broker.clone(),
        node,
        cache: HashMap::new(),
        pending: VecDeque::new(),
    }
    .run(rd)
    .await;
    tracing::info!(peer = %conn.from, "message link from {} ended: {e}", conn.from);
    conn.out.close();
    give_back(&conn);
}

/// Remove the link's consumers and requeue what they had out.
fn give_back(conn: &HomeConn) {
    let subs: Vec<_> = conn.subs.lock().drain().map(|(_, s)| s).collect();
    for (q, tag, _) in subs {
        q.remove_consumer(conn.channel_id, &tag);
    }
    let out = std::mem::take(&mut *conn.ledger.lock());
    let mut by_queue: HashMap<usize, (Arc<Queue>, Vec<Delivery>)> = HashMap::new();
    for ((ptr, _), (q, d)) in out {
        by_queue
            .entry(ptr)
            .or_insert_with(|| (q, Vec::new()))
            .1
            .push(d);
    }
    for (_, (q, mut ds)) in by_queue {
        ds.sort_by_key(|d| d.seq);
        q.requeue(ds);
    }
}

struct Serving {
    conn: Arc<HomeConn>,
    broker: Arc<Broker>,
    node: Arc<str>,
    /// Publish targets by (vhost, queue).
    cache: HashMap<(Bytes, Bytes), (Arc<warren_core::VHost>, Arc<Queue>)>,
    pending: Pending,
}

impl Serving {
    async fn run(&mut self, mut rd: OwnedReadHalf) -> ClusterError {
        let mut sync = self.broker.sync_watch();
        let mut tick = tokio::time::interval(STATS_EVERY);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            let waiting = !self.pending.is_empty() && sync.is_some();
            tokio::select! {
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) => return ClusterError::Link("closed by the other node"),
                    Err(e) => return e.into(),
                    Ok(_) => {
                        if let Err(e) = self.frames(&mut buf) {
                            return e;
                        }
                    }
                },
                r = async { sync.as_mut().expect("store").changed().await }, if waiting => {
                    if r.is_err() {
                        sync = None;
                    }
                }
                _ = tick.tick() => self.send_stats(),
            }
            let state = sync.as_ref().map(|s| *s.borrow());
            self.flush_confirms(state);
            if buf.capacity() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
        }
    }

    /// Handle the whole frames in `buf`.
    fn frames(&mut self, buf: &mut BytesMut) -> Result<(), ClusterError> {
        while let Some(f) = frame::split(buf)? {
            let f = frame::decode(f)?;
            self.handle(f)?;
        }
        Ok(())
    }

    fn handle(&mut self, f: Frame) -> Result<(), ClusterError> {
        match f {
            Frame::Publish {
                seq,
                vhost,
                queue,
                msg,
            } => {
                let msg = frame::message(msg)?;
                match self.target(vhost, queue) {
                    Some((v, q)) => {
                        let r = v.deliver(std::slice::from_ref(&q), msg);
                        self.pending.push_back((seq, r.rejected, r.sync_seq));
                    }
                    // Deleted meanwhile: dropped, as a publish to a deleted queue.
                    None => self.pending.push_back((seq, false, None)),
                }
            }
            Frame::Subscribe {
                sub,
                credit,
                vhost,
                queue,
            } => self.subscribe(sub, credit, &vhost, &queue),
            Frame::Unsubscribe { sub } => {
                let s = self.conn.subs.lock().remove(&sub);
                if let Some((q, tag, _)) = s {
                    q.remove_consumer(self.conn.channel_id, &tag);
                }
                self.conn.out.push(|b| frame::sub_only(b, Kind::Ended, sub));
            }
            Frame::Credit { sub, n } => {
                let s = self.conn.subs.lock().get(&sub).cloned();
                if let Some((q, _, c)) = s {
                    c.credit.fetch_add(n, Ordering::AcqRel);
                    q.dispatch();
                }
            }
            Frame::Settle {
                how,
                vhost,
                queue,
                seqs,
            } => self.settle(how, &vhost, &queue, &seqs),
            Frame::Get {
                req,
                no_ack,
                vhost,
                queue,
            } => self.get(req, no_ack, &vhost, &queue),
            Frame::Purge { req, vhost, queue } => {
                let n = self.queue(&vhost, &queue).map(|q| q.purge());
                self.conn.out.push(|b| frame::purged(b, req, n));
            }
            _ => return Err(ClusterError::Link("a home's frame from the dialer")),
        }
        Ok(())
    }

    /// A queue that lives here, by name.
    fn queue(&self, vhost: &[u8], queue: &[u8]) -> Option<Arc<Queue>> {
        let v = self.broker.vhost(std::str::from_utf8(vhost).ok()?)?;
        let q = v.queue(std::str::from_utf8(queue).ok()?).ok()?;
        (!q.is_proxy()).then_some(q)
    }

    /// The queue a publish goes to (cached).
    fn target(
        &mut self,
        vhost: Bytes,
        queue: Bytes,
    ) -> Option<(Arc<warren_core::VHost>, Arc<Queue>)> {
        let key = (vhost, queue);
        if let Some((v, q)) = self.cache.get(&key) {
            if !q.is_deleted() {
                return Some((v.clone(), q.clone()));
            }
        }
        let v = self.broker.vhost(std::str::from_utf8(&key.0).ok()?)?;
        let q = v.queue(std::str::from_utf8(&key.1).ok()?).ok()?;
        if q.is_proxy() {
            return None;
        }
        if self.cache.len() > 4096 {
            self.cache.clear();
        }
        // Own copies of the names: a key must not pin the read buffer.
        let owned = (
            Bytes::copy_from_slice(&key.0),
            Bytes::copy_from_slice(&key.1),
        );
        self.cache.insert(owned, (v.clone(), q.clone()));
        Some((v, q))
    }

    fn subscribe(&mut self, sub: u32, credit: u32, vhost: &[u8], queue: &[u8]) {
        let Some(q) = self.queue(vhost, queue) else {
            self.conn.out.push(|b| frame::sub_only(b, Kind::Ended, sub));
            return;
        };
        let consumer = Arc::new(LinkConsumer {
            sub,
            credit: AtomicU32::new(credit),
            conn: Arc::downgrade(&self.conn),
        });
        let tag: Arc<str> = format!("link:{}:{sub}", self.conn.from).into();
        self.conn
            .subs
            .lock()
            .insert(sub, (q.clone(), tag.clone(), consumer.clone()));
        let spec = ConsumerSpec {
            tag,
            channel_id: self.conn.channel_id,
            no_ack: false,
            exclusive: false,
            priority: 0,
            consumer,
        };
        if let Err(e) = q.add_consumer(spec) {
            tracing::info!(peer = %self.conn.from, queue = %q.name, "remote subscription refused: {e}");
            self.conn.subs.lock().remove(&sub);
            self.conn.out.push(|b| frame::sub_only(b, Kind::Ended, sub));
        }
    }

    fn settle(&mut self, how: u8, vhost: &[u8], queue: &[u8], seqs: &[u64]) {
        let Some(q) = self.queue(vhost, queue) else {
            return;
        };
        let ptr = Arc::as_ptr(&q) as usize;
        let ds: Vec<Delivery> = {
            let mut ledger = self.conn.ledger.lock();
            seqs.iter()
                .filter_map(|s| ledger.remove(&(ptr, *s)).map(|(_, d)| d))
                .collect()
        };
        match how {
            how::ACK => q.settle(&ds),
            how::REQUEUE => q.requeue(ds),
            _ => q.reject(&ds),
        }
    }

    fn get(&mut self, req: u32, no_ack: bool, vhost: &[u8], queue: &[u8]) {
        let got = self.queue(vhost, queue).and_then(|q| {
            let (d, left) = q.get(no_ack)?;
            Some((q, d, left))
        });
        let Some((q, d, left)) = got else {
            self.conn.out.push(|b| frame::got(b, req, None));
            return;
        };
        self.conn
            .out
            .push(|b| frame::got(b, req, Some((d.seq, d.redelivered, left, &d.message))));
        if !no_ack {
            let key = (Arc::as_ptr(&q) as usize, d.seq);
            self.conn.ledger.lock().insert(key, (q, d));
        }
    }

    /// Confirm what the store has synced (or what needs no sync), in order;
    /// nack what a queue refused or the store lost.
    fn flush_confirms(&mut self, sync: Option<SyncState>) {
        let s = sync.unwrap_or(SyncState {
            synced: u64::MAX,
            failed: 0,
        });
        let mut upto = None;
        while let Some(&(seq, refused, stored)) = self.pending.front() {
            let lost = stored.is_some_and(|x| x <= s.failed);
            if refused || lost {
                self.conn.out.push(|b| frame::confirm(b, Kind::Nack, seq));
            } else if stored.is_some_and(|x| x > s.synced) {
                break;
            } else {
                upto = Some(seq);
            }
            self.pending.pop_front();
        }
        if let Some(u) = upto {
            self.conn.out.push(|b| frame::confirm(b, Kind::Confirm, u));
        }
    }

    /// The counters of every queue that lives here, for the other node's
    /// proxies (`/api/queues`, declare-ok counts there).
    fn send_stats(&self) {
        let mut out = Vec::new();
        for v in self.broker.vhosts() {
            for q in v.queues() {
                if q.home_node() != Some(&*self.node) || q.is_proxy() {
                    continue;
                }
                let c = Counters::from(q.stats());
                out.push((v.name.clone(), q.name.clone(), c));
            }
        }
        if out.is_empty() {
            return;
        }
        self.conn.out.push(|b| {
            for (v, q, c) in &out {
                frame::stats(b, v, q, c);
            }
        });
    }
}
