//! Server-to-client topic aliases (MQTT 5.0 section 3.3.2.3.4): within the
//! Topic Alias Maximum the client announced in CONNECT, the first PUBLISH
//! of a topic carries the topic and a new alias, later ones the alias and
//! an empty topic. Aliases are never reassigned; once all are taken, new
//! topics are sent in full. The map is per connection and starts empty, as
//! the specification requires of a new network connection.

use std::collections::HashMap;

/// How a delivery names its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Alias {
    /// No alias: the topic in full.
    None,
    /// The topic in full, and this alias newly set for it.
    New(u16),
    /// This alias, with an empty topic.
    Known(u16),
}

/// The aliases given to one client, keyed by routing key.
#[derive(Debug)]
pub(super) struct OutAliases {
    max: u16,
    /// The highest alias assigned.
    assigned: u16,
    by_key: HashMap<Box<str>, u16>,
}

impl OutAliases {
    /// Aliases for a client that accepts up to `max` of them.
    pub(super) fn new(max: u16) -> Self {
        OutAliases {
            max,
            assigned: 0,
            by_key: HashMap::new(),
        }
    }

    /// The alias for `key`, assigning the next free one while any is left.
    pub(super) fn lookup(&mut self, key: &str) -> Alias {
        if let Some(&a) = self.by_key.get(key) {
            return Alias::Known(a);
        }
        if self.assigned >= self.max {
            return Alias::None;
        }
        self.assigned += 1;
        self.by_key.insert(key.into(), self.assigned);
        Alias::New(self.assigned)
    }

    /// Take back the alias the last [`lookup`](Self::lookup) assigned, for
    /// a PUBLISH that was not sent after all: the client never learnt it.
    /// (The caller holds the lock from lookup to send, so it is the last.)
    pub(super) fn unassign(&mut self, key: &str, alias: Alias) {
        if alias == Alias::New(self.assigned) {
            self.by_key.remove(key);
            self.assigned -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_assigned_up_to_the_maximum_and_then_reused() {
        let mut a = OutAliases::new(2);
        assert_eq!(a.lookup("x"), Alias::New(1));
        assert_eq!(a.lookup("x"), Alias::Known(1));
        let y = a.lookup("y");
        assert_eq!(y, Alias::New(2));
        a.unassign("y", y);
        assert_eq!(a.lookup("z"), Alias::New(2));
        assert_eq!(a.lookup("y"), Alias::None);
        assert_eq!(a.lookup("z"), Alias::Known(2));
    }
}
