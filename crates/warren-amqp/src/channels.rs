//! The open channels of one connection, by number. Any number from 1 to
//! 65535 may be used (RabbitMQ 3.10 limits how many channels are open, not
//! their numbers), so channels are kept sorted in a vector sized by how
//! many are open rather than by the highest number: a connection on
//! channel 65535 holds one entry, and a lookup is a binary search over a
//! handful.

use warren_core::limits::ChannelLease;

struct Entry<T> {
    number: u16,
    value: T,
    /// The channel's place in its user's `max-channels` count.
    _lease: Option<ChannelLease>,
}

/// Channels by number, with their limit leases (given back on removal).
pub struct Channels<T> {
    open: Vec<Entry<T>>,
}

impl<T> Default for Channels<T> {
    fn default() -> Self {
        Channels { open: Vec::new() }
    }
}

impl<T> Channels<T> {
    fn find(&self, number: u16) -> Result<usize, usize> {
        self.open.binary_search_by_key(&number, |e| e.number)
    }

    /// The channel with this number.
    pub fn get(&self, number: u16) -> Option<&T> {
        self.find(number).ok().map(|i| &self.open[i].value)
    }

    /// The channel with this number, to change.
    pub fn get_mut(&mut self, number: u16) -> Option<&mut T> {
        self.find(number).ok().map(|i| &mut self.open[i].value)
    }

    /// Add (or replace) the channel `number`, holding `lease` until removed.
    pub fn insert(&mut self, number: u16, value: T, lease: Option<ChannelLease>) {
        let e = Entry {
            number,
            value,
            _lease: lease,
        };
        match self.find(number) {
            Ok(i) => self.open[i] = e,
            Err(i) => self.open.insert(i, e),
        }
    }

    /// Take the channel `number` out; its lease is given back.
    pub fn remove(&mut self, number: u16) -> Option<T> {
        let i = self.find(number).ok()?;
        Some(self.open.remove(i).value)
    }

    /// How many channels are open (closing ones included).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when no channel is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Every open channel, by number.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.open.iter_mut().map(|e| &mut e.value)
    }

    /// Drop every channel and give back their leases.
    pub fn clear(&mut self) {
        self.open.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_numbers_cost_one_entry_and_order_is_kept() {
        let mut c = Channels::default();
        c.insert(65535, "last", None);
        c.insert(1, "first", None);
        c.insert(300, "middle", None);
        assert_eq!(c.len(), 3);
        assert!(c.open.capacity() < 16, "sized by open channels");
        assert_eq!(c.get(65535), Some(&"last"));
        assert_eq!(c.get(2), None);
        assert_eq!(
            c.iter_mut().map(|v| *v).collect::<Vec<_>>(),
            ["first", "middle", "last"]
        );
        assert_eq!(c.remove(300), Some("middle"));
        assert_eq!(c.remove(300), None);
        *c.get_mut(1).unwrap() = "one";
        assert_eq!(c.get(1), Some(&"one"));
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn removing_a_channel_gives_its_lease_back() {
        use std::sync::Arc;
        use warren_core::limits::{Limits, VhostLimits};
        let limits = Arc::new(Limits::default());
        let vhost = Arc::new(VhostLimits::default());
        let conn = limits.admit(("/", &vhost), "guest").unwrap();
        limits.user("guest").max_channels.set(Some(1));
        let mut c = Channels::default();
        c.insert(7, (), Some(conn.open_channel().unwrap()));
        assert!(conn.open_channel().is_err(), "the one channel is taken");
        c.remove(7);
        assert!(conn.open_channel().is_ok());
    }
}
