//! Retained messages for a new subscription, after its SUBACK: taken from
//! the vhost's retained store in chunks and written at min(message QoS,
//! granted QoS) with RETAIN=1. QoS 1/2 ones take packet ids and in-flight
//! slots within the client's receive maximum, like queue deliveries.
//!
//! The first chunk is written at once, so an exact topic's message goes
//! out before the next packet is read. A longer match (`#` over a million
//! topics) goes on in a task of its own, resuming after the last topic
//! sent: it waits for room in the outbox or for free in-flight slots, so
//! memory stays bounded and the read loop stays responsive.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use warren_core::registry::ConnStats;
use warren_core::retained::Hit;
use warren_core::{Message, VHost};

use super::consumer::{MqttConsumer, RetainedSent, Sent};
use super::Conn;
use crate::codec::{self, Props};
use crate::mapping::amqp_to_props;
use crate::topic::swap;

/// Retained messages taken from the store at a time.
const CHUNK: usize = 256;
/// How long a blocked stream waits before it looks again (and sees the
/// connection gone).
const RECHECK: Duration = Duration::from_secs(1);

/// The retained messages still to send for one subscription.
struct Stream {
    vhost: Arc<VHost>,
    consumer: Arc<MqttConsumer>,
    /// The filter in routing-key form (`/` and `.` swapped).
    filter: String,
    granted: u8,
    /// The subscription's v5 Subscription Identifier.
    id: Option<u32>,
    /// The last topic sent (key form), where the next chunk starts.
    after: Option<String>,
}

/// Where a stream stands after a chunk.
enum Step {
    /// Everything was sent.
    Done,
    /// A chunk was sent and more may follow.
    More,
    /// The outbox is full.
    Room,
    /// Every in-flight slot is taken.
    Slot,
    /// The connection is gone.
    Gone,
}

impl Conn {
    /// Send the retained messages matching `filter`, granted at `granted`
    /// with Subscription Identifier `id`.
    pub(super) fn send_retained(&self, filter: &str, granted: u8, id: Option<u32>) {
        let mut s = Stream {
            vhost: self.vhost.clone(),
            consumer: self.consumer.clone(),
            filter: swap(filter),
            granted,
            id,
            after: None,
        };
        match s.pump() {
            Step::Done | Step::Gone => {}
            Step::More | Step::Room | Step::Slot => {
                tokio::spawn(s.run());
            }
        }
    }
}

impl Stream {
    /// The rest of a long match, until done or the connection goes.
    async fn run(mut self) {
        let freed = self.consumer.inflight.lock().freed();
        loop {
            // Registered before looking, so a slot freed meanwhile wakes us.
            let mut slot = std::pin::pin!(freed.notified());
            slot.as_mut().enable();
            match self.pump() {
                Step::Done | Step::Gone => return,
                Step::More => tokio::task::yield_now().await,
                Step::Room => {
                    let _ = tokio::time::timeout(RECHECK, self.consumer.out.room()).await;
                }
                Step::Slot => {
                    let _ = tokio::time::timeout(RECHECK, slot).await;
                }
            }
        }
    }

    /// Send one chunk, or as much of it as fits.
    fn pump(&mut self) -> Step {
        let chunk = self
            .vhost
            .retained
            .chunk(&self.filter, self.after.as_deref(), CHUNK, false);
        for (i, h) in chunk.hits.iter().enumerate() {
            if let Err(step) = self.send(h) {
                if let Some(prev) = i.checked_sub(1) {
                    self.after = Some(chunk.hits[prev].message.routing_key().to_string());
                }
                return step;
            }
        }
        match chunk.next {
            Some(next) => {
                self.after = Some(next);
                Step::More
            }
            None => Step::Done,
        }
    }

    /// Write one retained message, or say why it cannot go now.
    fn send(&self, h: &Hit) -> Result<(), Step> {
        let c = &self.consumer;
        if !c.active.load(Ordering::Acquire) || c.out.is_closed() {
            return Err(Step::Gone);
        }
        if !c.out.has_room() {
            return Err(Step::Room);
        }
        let qos = h.qos().min(self.granted);
        let m = &h.message;
        let level = c.level;
        let props = (level == 5).then(|| retained_props(m, h.remaining, self.id));
        let mut inf = c.inflight.lock();
        let pkid = if qos > 0 {
            if inf.len() >= c.receive_max {
                return Err(Step::Slot);
            }
            let id = inf.next_id();
            let sent = RetainedSent {
                message: m.clone(),
                qos,
                sub_id: self.id,
            };
            inf.insert(id, Sent::Retained(Box::new(sent)));
            id
        } else {
            0
        };
        let mut fits = true;
        c.out.push(|o| {
            fits = codec::write_delivery(
                o,
                level,
                (false, qos, true),
                m.routing_key(),
                pkid,
                props.as_ref(),
                &m.body,
                c.max_packet,
            );
        });
        if !fits {
            // Larger than the client's Maximum Packet Size: not for it.
            if qos > 0 {
                inf.remove(pkid);
            }
            return Ok(());
        }
        ConnStats::add(&c.stats.delivered, 1);
        Ok(())
    }
}

/// The v5 properties of a retained delivery: the message's, the expiry
/// interval left (MQTT 5 3.3.2.3.3: not the one published) and the
/// subscription's identifier.
pub(super) fn retained_props(m: &Message, remaining: Option<Duration>, id: Option<u32>) -> Props {
    let mut p = amqp_to_props(m);
    p.message_expiry = remaining.map(seconds_up);
    p.subscription_ids.extend(id);
    p
}

/// Whole seconds, rounded up (a message with 0.4 s left still has some).
fn seconds_up(d: Duration) -> u32 {
    let ms = d.as_millis();
    ms.div_ceil(1000).min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_expiry_rounds_up() {
        assert_eq!(seconds_up(Duration::from_millis(0)), 0);
        assert_eq!(seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(seconds_up(Duration::from_millis(8_500)), 9);
        assert_eq!(seconds_up(Duration::from_secs(10)), 10);
    }
}
