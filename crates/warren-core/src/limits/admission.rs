//! Admitting connections and channels against the limits: a connection
//! holds a [`ConnectionLease`] from its open to its end, an AMQP channel a
//! [`ChannelLease`]; dropping one gives its counts back, so no path of
//! ending (close, error, kill, takeover) can leak a count.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Gauge, Limit, LimitError, LimitMap, NamedLimits, UserLimits, VhostLimits};

/// The broker's limits: the node-wide connection limit and count, and each
/// user's limits and counts (vhost limits live in their vhost).
#[derive(Debug, Default)]
pub struct Limits {
    /// The node-wide connection limit (`limits.connection_max`).
    pub connection_max: Limit,
    connections: Gauge,
    /// Per user, made on first use; entries stay (they are small and
    /// bounded by the users there are), so a lease never outlives its slot.
    users: Mutex<HashMap<String, Arc<UserLimits>>>,
}

impl Limits {
    /// The limits and counts of `user` (made if missing).
    pub fn user(&self, user: &str) -> Arc<UserLimits> {
        let mut users = self.users.lock();
        if let Some(u) = users.get(user) {
            return u.clone();
        }
        let u = Arc::new(UserLimits::default());
        users.insert(user.to_string(), u.clone());
        u
    }

    /// The configured limits of `user` (empty when none).
    pub fn user_map(&self, user: &str) -> LimitMap {
        self.users
            .lock()
            .get(user)
            .map(|u| u.to_map())
            .unwrap_or_default()
    }

    /// Every user with a configured limit, sorted by name.
    pub fn users_with_limits(&self) -> Vec<(String, LimitMap)> {
        let users = self.users.lock();
        let mut v: Vec<_> = users
            .iter()
            .map(|(n, u)| (n.clone(), u.to_map()))
            .filter(|(_, m)| !m.is_empty())
            .collect();
        v.sort();
        v
    }

    /// A deleted user's limits go with it (its counts stay until its
    /// connections end).
    pub fn forget_user(&self, user: &str) {
        if let Some(u) = self.users.lock().get(user) {
            u.clear();
        }
    }

    /// Connections open on the node.
    pub fn connections(&self) -> u64 {
        self.connections.live()
    }

    /// Admit a connection of `user` to the vhost `vhost` with `limits`:
    /// the node limit first, then the vhost's, then the user's, as
    /// RabbitMQ checks them at connection.open.
    pub fn admit(
        self: &Arc<Self>,
        (vhost, limits): (&str, &Arc<VhostLimits>),
        user: &str,
    ) -> Result<ConnectionLease, LimitError> {
        self.connections
            .take(self.connection_max.max())
            .map_err(LimitError::Node)?;
        // From here on, dropping the lease gives back what it took.
        let mut lease = ConnectionLease {
            node: self.clone(),
            vhost: None,
            user: None,
            user_name: user.into(),
        };
        limits
            .connections
            .take(limits.max_connections.max())
            .map_err(|limit| LimitError::VhostConnections {
                vhost: vhost.into(),
                user: user.into(),
                limit,
            })?;
        lease.vhost = Some(limits.clone());
        let u = self.user(user);
        u.connections
            .take(u.max_connections.max())
            .map_err(|limit| LimitError::UserConnections {
                user: user.into(),
                limit,
            })?;
        lease.user = Some(u);
        Ok(lease)
    }
}

/// One admitted connection's place in the counts, given back on drop.
#[derive(Debug)]
pub struct ConnectionLease {
    node: Arc<Limits>,
    vhost: Option<Arc<VhostLimits>>,
    user: Option<Arc<UserLimits>>,
    user_name: Arc<str>,
}

impl ConnectionLease {
    /// Admit one more channel of this connection's user (`max-channels`).
    pub fn open_channel(&self) -> Result<ChannelLease, LimitError> {
        let u = self.user.as_ref().expect("an admitted lease has its user");
        u.channels
            .take(u.max_channels.max())
            .map_err(|limit| LimitError::UserChannels {
                user: self.user_name.to_string(),
                limit,
            })?;
        Ok(ChannelLease(u.clone()))
    }
}

impl Drop for ConnectionLease {
    fn drop(&mut self) {
        self.node.connections.give_back();
        if let Some(v) = &self.vhost {
            v.connections.give_back();
        }
        if let Some(u) = &self.user {
            u.connections.give_back();
        }
    }
}

/// One open channel's place in its user's channel count.
#[derive(Debug)]
pub struct ChannelLease(Arc<UserLimits>);

impl Drop for ChannelLease {
    fn drop(&mut self) {
        self.0.channels.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vhost(max: Option<i64>) -> Arc<VhostLimits> {
        let v = Arc::new(VhostLimits::default());
        v.max_connections.set(max);
        v
    }

    #[test]
    fn each_limit_refuses_with_rabbitmq_text_and_gives_back_the_others() {
        let l = Arc::new(Limits::default());
        let v = vhost(Some(1));
        let first = l.admit(("/", &v), "guest").unwrap();
        let e = l.admit(("/", &v), "guest").unwrap_err();
        assert_eq!(
            e.to_string(),
            "access to vhost '/' refused for user 'guest': connection limit (1) is reached"
        );
        assert_eq!(
            l.connections(),
            1,
            "the refused one gave its node count back"
        );
        l.user("bob").max_connections.set(Some(0));
        let other = vhost(None);
        let e = l.admit(("other", &other), "bob").unwrap_err();
        assert_eq!(
            e.to_string(),
            "connection refused for user 'bob': user connection limit (0) is reached"
        );
        assert_eq!((l.connections(), other.connections.live()), (1, 0));
        l.connection_max.set(Some(1));
        let e = l.admit(("other", &other), "guest").unwrap_err();
        assert_eq!(e, LimitError::Node(1));
        drop(first);
        assert_eq!((l.connections(), v.connections.live()), (0, 0));
        assert_eq!(l.user("guest").connections.live(), 0);
    }

    #[test]
    fn channels_count_per_user_across_connections() {
        let l = Arc::new(Limits::default());
        let v = vhost(None);
        l.user("guest").max_channels.set(Some(2));
        let (a, b) = (
            l.admit(("/", &v), "guest").unwrap(),
            l.admit(("/", &v), "guest").unwrap(),
        );
        let c1 = a.open_channel().unwrap();
        let _c2 = b.open_channel().unwrap();
        let e = a.open_channel().unwrap_err();
        assert_eq!(
            e.to_string(),
            "number of channels opened for user 'guest' has reached the maximum allowed user limit of (2)"
        );
        drop(c1);
        let _c3 = b.open_channel().unwrap();
    }

    #[test]
    fn a_forgotten_user_keeps_counts_but_loses_limits() {
        let l = Arc::new(Limits::default());
        let v = vhost(None);
        l.user("u").max_connections.set(Some(1));
        let lease = l.admit(("/", &v), "u").unwrap();
        assert_eq!(l.users_with_limits().len(), 1);
        l.forget_user("u");
        assert!(l.users_with_limits().is_empty());
        assert_eq!(l.user("u").connections.live(), 1);
        drop(lease);
        assert_eq!(l.user("u").connections.live(), 0);
    }
}
