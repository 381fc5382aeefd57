//! Keep-alive for every MQTT connection of a listener from one sweeper
//! task, instead of a timer in each connection's task: a tokio `Sleep` is
//! 112 bytes of every idle connection's state, a slot here is 16. A
//! connection records when it last read (`ConnStats::last_read_ms`, on this
//! module's clock); the sweeper looks every [`SWEEP`] and asks those silent
//! for longer than one and a half times their keep alive to close
//! (MQTT-3.1.2-22), through the registry like any other close request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use warren_core::registry::ConnectionInfo;

/// The close reason of a connection silent past its keep alive.
pub const KEEP_ALIVE_TIMEOUT: &str = "keep-alive timeout";
/// How often the sweeper looks: a connection is closed at most this late.
const SWEEP: Duration = Duration::from_millis(250);
/// `last_read_ms` of a connection that is not read on purpose (an alarm
/// blocks its publishing): never silent for too long.
const PAUSED: u64 = u64::MAX;

/// A watched connection.
struct Slot {
    info: Arc<ConnectionInfo>,
    limit_ms: u64,
}

/// The watched connections of a listener.
pub struct KeepAlive {
    epoch: Instant,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    live: Vec<Option<Slot>>,
    free: Vec<u32>,
}

/// A connection's place in the sweeper, given back at [`KeepAlive::unwatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch(u32);

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            epoch: Instant::now(),
            slots: Mutex::default(),
        }
    }
}

impl KeepAlive {
    /// Milliseconds on the sweeper's clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Close `info`'s connection once it has read nothing for `limit`.
    pub fn watch(&self, info: &Arc<ConnectionInfo>, limit: Duration) -> Watch {
        self.touch(info);
        let slot = Slot {
            info: info.clone(),
            limit_ms: limit.as_millis() as u64,
        };
        let mut s = self.slots.lock();
        match s.free.pop() {
            Some(i) => {
                s.live[i as usize] = Some(slot);
                Watch(i)
            }
            None => {
                s.live.push(Some(slot));
                Watch(s.live.len() as u32 - 1)
            }
        }
    }

    /// Stop watching.
    pub fn unwatch(&self, w: Watch) {
        let mut s = self.slots.lock();
        if let Some(slot) = s.live.get_mut(w.0 as usize) {
            if slot.take().is_some() {
                s.free.push(w.0);
            }
        }
    }

    /// The connection has just read.
    pub fn touch(&self, info: &ConnectionInfo) {
        info.stats
            .last_read_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// The connection is not read for a while on purpose; [`touch`]
    /// (Self::touch) ends that.
    pub fn pause(&self, info: &ConnectionInfo) {
        info.stats.last_read_ms.store(PAUSED, Ordering::Relaxed);
    }

    /// Ask every connection silent past its limit to close; they leave the
    /// sweeper here (their sessions unwatch an empty slot).
    fn sweep_once(&self) {
        let now = self.now_ms();
        let mut expired = Vec::new();
        {
            let mut s = self.slots.lock();
            let Slots { live, free } = &mut *s;
            for (i, slot) in live.iter_mut().enumerate() {
                let late = slot.as_ref().is_some_and(|sl| {
                    let last = sl.info.stats.last_read_ms.load(Ordering::Relaxed);
                    last != PAUSED && now.saturating_sub(last) > sl.limit_ms
                });
                if late {
                    expired.extend(slot.take().map(|sl| sl.info));
                    free.push(i as u32);
                }
            }
        }
        for info in expired {
            info.request_close(KEEP_ALIVE_TIMEOUT);
        }
    }

    /// Sweep until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep_once(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Arc<ConnectionInfo> {
        let addr = "127.0.0.1:1883".parse().unwrap();
        Arc::new(ConnectionInfo::new(
            1,
            "MQTT 5.0",
            (addr, addr),
            Arc::from("guest"),
            Arc::from("/"),
            "c".into(),
        ))
    }

    #[test]
    fn silent_connections_are_asked_to_close_and_paused_ones_are_not() {
        let k = KeepAlive::default();
        let (a, b, c) = (info(), info(), info());
        let _wa = k.watch(&a, Duration::ZERO);
        let wb = k.watch(&b, Duration::from_secs(3600));
        let _wc = k.watch(&c, Duration::ZERO);
        k.pause(&c);
        std::thread::sleep(Duration::from_millis(5));
        k.sweep_once();
        assert!(a.close_was_requested());
        assert!(!b.close_was_requested());
        assert!(!c.close_was_requested());
        // a's slot was freed by the sweep and is reused.
        k.unwatch(wb);
        let again = k.watch(&info(), Duration::from_secs(1));
        assert!(again == wb || again == _wa);
    }
}
