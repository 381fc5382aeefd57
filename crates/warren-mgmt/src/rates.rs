//! Message rates: counters are sampled every second and the rate is the
//! difference over the last interval, as RabbitMQ's `*_details.rate`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use warren_core::registry::Totals;

use crate::MgmtState;

/// Sampling interval.
const INTERVAL: Duration = Duration::from_secs(1);

/// Per-second rates of one queue: published, delivered, acked.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueRates {
    /// Messages enqueued per second.
    pub publish: f64,
    /// Messages delivered (or got) per second.
    pub deliver_get: f64,
    /// Acknowledgements per second.
    pub ack: f64,
}

/// Broker-wide and per-connection rates.
#[derive(Clone, Copy, Debug, Default)]
pub struct TotalRates {
    /// Publishes per second.
    pub publish: f64,
    /// Deliveries per second.
    pub deliver_get: f64,
    /// Acks per second.
    pub ack: f64,
    /// Confirms per second.
    pub confirm: f64,
}

#[derive(Default)]
struct Sampled {
    at: Option<Instant>,
    queues: HashMap<(String, String), ([u64; 3], QueueRates)>,
    conns: HashMap<u64, (Totals, TotalRates)>,
    totals: (Totals, TotalRates),
}

/// The latest rates, shared by the handlers.
#[derive(Default)]
pub struct Rates {
    inner: Mutex<Sampled>,
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

fn total_rates(now: Totals, before: Totals, secs: f64) -> TotalRates {
    TotalRates {
        publish: rate(now.published, before.published, secs),
        deliver_get: rate(now.delivered, before.delivered, secs),
        ack: rate(now.acked, before.acked, secs),
        confirm: rate(now.confirmed, before.confirmed, secs),
    }
}

impl Rates {
    /// Rates of one queue (zero until two samples exist).
    pub fn queue(&self, vhost: &str, name: &str) -> QueueRates {
        self.inner
            .lock()
            .queues
            .get(&(vhost.to_string(), name.to_string()))
            .map(|e| e.1)
            .unwrap_or_default()
    }

    /// Rates of one connection.
    pub fn connection(&self, id: u64) -> TotalRates {
        self.inner
            .lock()
            .conns
            .get(&id)
            .map(|e| e.1)
            .unwrap_or_default()
    }

    /// Broker-wide rates.
    pub fn totals(&self) -> TotalRates {
        self.inner.lock().totals.1
    }

    /// Take one sample of every counter.
    pub fn sample(&self, s: &MgmtState) {
        let now = Instant::now();
        let mut queues = Vec::new();
        for v in s.broker.vhosts() {
            for q in v.queues() {
                let st = q.stats();
                queues.push((
                    (v.name.to_string(), q.name.to_string()),
                    [st.published, st.delivered, st.acked],
                ));
            }
        }
        let conns: Vec<(u64, Totals)> = s
            .broker
            .registry
            .list()
            .iter()
            .map(|c| (c.id, c.stats.totals()))
            .collect();
        let totals = s.broker.registry.totals();
        let mut g = self.inner.lock();
        let secs =
            g.at.map_or(0.0, |t| now.duration_since(t).as_secs_f64())
                .max(1e-3);
        let first = g.at.is_none();
        let mut nq = HashMap::with_capacity(queues.len());
        for (key, c) in queues {
            let r = match g.queues.get(&key) {
                Some((before, _)) if !first => QueueRates {
                    publish: rate(c[0], before[0], secs),
                    deliver_get: rate(c[1], before[1], secs),
                    ack: rate(c[2], before[2], secs),
                },
                _ => QueueRates::default(),
            };
            nq.insert(key, (c, r));
        }
        let mut nc = HashMap::with_capacity(conns.len());
        for (id, t) in conns {
            let r = match g.conns.get(&id) {
                Some((before, _)) if !first => total_rates(t, *before, secs),
                _ => TotalRates::default(),
            };
            nc.insert(id, (t, r));
        }
        let tr = if first {
            TotalRates::default()
        } else {
            total_rates(totals, g.totals.0, secs)
        };
        *g = Sampled {
            at: Some(now),
            queues: nq,
            conns: nc,
            totals: (totals, tr),
        };
    }
}

/// Sample every second until shutdown.
pub(crate) async fn run(s: MgmtState, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => s.rates.sample(&s),
            _ = shutdown.changed() => return,
        }
    }
}
