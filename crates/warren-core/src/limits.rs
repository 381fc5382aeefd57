//! Limits an operator sets, as RabbitMQ's: per-vhost `max-connections` and
//! `max-queues` (vhost limits), per-user `max-connections` and
//! `max-channels` (user limits) and the node-wide `connection_max`.
//!
//! A limit is one atomic and a count is one atomic taken with a
//! compare-and-swap against its limit, at connect, channel open and close
//! only: the publish path never touches them and no lock is shared by
//! connections (the per-user table is locked at connect, to find the user's
//! counters). See [`admission`] for connections and channels and
//! [`operator`] for setting, listing and persisting limits.

pub mod admission;
pub mod operator;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use thiserror::Error;

pub use admission::{ChannelLease, ConnectionLease, Limits};

use crate::CoreError;

/// RabbitMQ's name of the connection limit (vhost and user limits).
pub const MAX_CONNECTIONS: &str = "max-connections";
/// RabbitMQ's name of the vhost queue limit.
pub const MAX_QUEUES: &str = "max-queues";
/// RabbitMQ's name of the user channel limit.
pub const MAX_CHANNELS: &str = "max-channels";
/// RabbitMQ's runtime-parameter component of vhost limits (definitions).
pub const VHOST_LIMITS: &str = "vhost-limits";
/// RabbitMQ's parameter name under that component.
pub const VHOST_LIMITS_NAME: &str = "limits";
/// RabbitMQ's validation name of user limits (in errors).
pub const USER_LIMITS: &str = "user-limits";

/// Limits by RabbitMQ's names, as configured (a negative value: no limit).
pub type LimitMap = BTreeMap<String, i64>;

/// A refusal by a limit; the texts are RabbitMQ 3.10's (rabbit_reader.erl,
/// and rabbit_reader.erl of 3.13 for the node limit).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitError {
    /// The node-wide `connection_max` is reached.
    #[error("connection refused: node connection limit ({0}) is reached")]
    Node(u64),
    /// The vhost's `max-connections` is reached.
    #[error("access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached")]
    VhostConnections {
        /// The vhost.
        vhost: String,
        /// Who tried to connect.
        user: String,
        /// The limit.
        limit: u64,
    },
    /// The user's `max-connections` is reached.
    #[error("connection refused for user '{user}': user connection limit ({limit}) is reached")]
    UserConnections {
        /// The user.
        user: String,
        /// The limit.
        limit: u64,
    },
    /// The user's `max-channels` is reached.
    #[error("number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})")]
    UserChannels {
        /// The user.
        user: String,
        /// The limit.
        limit: u64,
    },
    /// A limit name that the component does not have.
    #[error("Unrecognised terms [{name}] in {component}")]
    Unknown {
        /// The name given.
        name: String,
        /// `vhost-limits` or `user-limits`.
        component: &'static str,
    },
}

impl From<LimitError> for CoreError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Unknown { .. } => CoreError::PreconditionFailed(e.to_string()),
            _ => CoreError::NotAllowed(e.to_string()),
        }
    }
}

/// One configured limit. Unset and negative both mean "no limit"; the
/// difference is kept because RabbitMQ lists (and exports) a negative
/// value as given.
#[derive(Debug)]
pub struct Limit(AtomicI64);

impl Limit {
    const UNSET: i64 = i64::MIN;

    /// Set or unset the limit.
    pub fn set(&self, value: Option<i64>) {
        let v = value.map_or(Self::UNSET, |v| v.max(Self::UNSET + 1));
        self.0.store(v, Ordering::Release);
    }

    /// The value as configured, negative ones included.
    pub fn configured(&self) -> Option<i64> {
        let v = self.0.load(Ordering::Acquire);
        (v != Self::UNSET).then_some(v)
    }

    /// The effective maximum; None when there is no limit.
    pub fn max(&self) -> Option<u64> {
        self.configured().and_then(|v| u64::try_from(v).ok())
    }
}

impl Default for Limit {
    fn default() -> Self {
        Limit(AtomicI64::new(Self::UNSET))
    }
}

/// How many live things (connections, channels) are counted against a
/// limit.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Count one more unless `max` is already reached (RabbitMQ refuses
    /// when count >= limit, so 0 refuses everything); `Err(max)` then.
    pub fn take(&self, max: Option<u64>) -> Result<(), u64> {
        let Some(m) = max else {
            self.0.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        };
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < m).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| m)
    }

    /// One counted thing ended.
    pub fn give_back(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }

    /// The current count.
    pub fn live(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A set of limits addressed by RabbitMQ's names, so that the API, the CLI
/// and the definitions share one validation.
pub trait NamedLimits {
    /// RabbitMQ's component name, for errors.
    const COMPONENT: &'static str;

    /// Every limit with its name.
    fn named(&self) -> [(&'static str, &Limit); 2];

    /// The limit called `name`.
    fn limit(&self, name: &str) -> Result<&Limit, LimitError> {
        self.named()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| l)
            .ok_or_else(|| LimitError::Unknown {
                name: name.to_string(),
                component: Self::COMPONENT,
            })
    }

    /// The configured limits (empty when none is set).
    fn to_map(&self) -> LimitMap {
        self.named()
            .into_iter()
            .filter_map(|(n, l)| l.configured().map(|v| (n.to_string(), v)))
            .collect()
    }

    /// Set the limits in `m`, leaving the others (RabbitMQ's
    /// set_user_limits and PUT of one limit); nothing changes when a name
    /// is unknown.
    fn merge(&self, m: &LimitMap) -> Result<(), LimitError> {
        for name in m.keys() {
            self.limit(name)?;
        }
        for (name, v) in m {
            self.limit(name)?.set(Some(*v));
        }
        Ok(())
    }

    /// Unset every limit.
    fn clear(&self) {
        for (_, l) in self.named() {
            l.set(None);
        }
    }

    /// Make `m` the whole set (RabbitMQ's set_vhost_limits).
    fn replace(&self, m: &LimitMap) -> Result<(), LimitError> {
        for name in m.keys() {
            self.limit(name)?;
        }
        for (name, l) in self.named() {
            l.set(m.get(name).copied());
        }
        Ok(())
    }
}

/// The limits of one vhost and its connection count.
#[derive(Debug, Default)]
pub struct VhostLimits {
    /// `max-connections`.
    pub max_connections: Limit,
    /// `max-queues`.
    pub max_queues: Limit,
    /// Connections (AMQP and MQTT) open in the vhost.
    pub connections: Gauge,
}

impl VhostLimits {
    /// `Err(limit)` when one more queue beside the `existing` ones would
    /// pass `max-queues`; `existing` is only counted when a limit is set.
    pub fn check_new_queue(&self, existing: impl FnOnce() -> usize) -> Result<(), u64> {
        match self.max_queues.max() {
            Some(m) if existing() as u64 >= m => Err(m),
            _ => Ok(()),
        }
    }
}

impl NamedLimits for VhostLimits {
    const COMPONENT: &'static str = VHOST_LIMITS;

    fn named(&self) -> [(&'static str, &Limit); 2] {
        [
            (MAX_CONNECTIONS, &self.max_connections),
            (MAX_QUEUES, &self.max_queues),
        ]
    }
}

/// The limits of one user and its connection and channel counts.
#[derive(Debug, Default)]
pub struct UserLimits {
    /// `max-connections`.
    pub max_connections: Limit,
    /// `max-channels` (over all of the user's connections).
    pub max_channels: Limit,
    /// Connections open by the user.
    pub connections: Gauge,
    /// AMQP channels open by the user.
    pub channels: Gauge,
}

impl UserLimits {
    /// Check that every name in `m` is a user limit, before a user is
    /// created or changed with them.
    pub fn validate(m: &LimitMap) -> Result<(), LimitError> {
        Self::default().merge(m)
    }
}

impl NamedLimits for UserLimits {
    const COMPONENT: &'static str = USER_LIMITS;

    fn named(&self) -> [(&'static str, &Limit); 2] {
        [
            (MAX_CONNECTIONS, &self.max_connections),
            (MAX_CHANNELS, &self.max_channels),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_refuses_at_the_limit_and_zero_refuses_all() {
        let g = Gauge::default();
        assert_eq!(g.take(Some(2)), Ok(()));
        assert_eq!(g.take(Some(2)), Ok(()));
        assert_eq!(g.take(Some(2)), Err(2));
        assert_eq!(g.live(), 2);
        g.give_back();
        assert_eq!(g.take(Some(2)), Ok(()));
        assert_eq!(g.take(None), Ok(()), "no limit never refuses");
        assert_eq!(Gauge::default().take(Some(0)), Err(0));
    }

    #[test]
    fn negative_limits_are_kept_but_do_not_limit() {
        let l = Limit::default();
        assert_eq!((l.configured(), l.max()), (None, None));
        l.set(Some(-1));
        assert_eq!((l.configured(), l.max()), (Some(-1), None));
        l.set(Some(5));
        assert_eq!(l.max(), Some(5));
        l.set(None);
        assert_eq!(l.configured(), None);
    }

    #[test]
    fn names_are_checked_before_anything_changes() {
        let v = VhostLimits::default();
        let bad: LimitMap = [("max-connections".into(), 1), ("max-foo".into(), 2)].into();
        let e = v.merge(&bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Unrecognised terms [max-foo] in vhost-limits"
        );
        assert!(v.to_map().is_empty());
        v.merge(&[("max-queues".into(), 3)].into()).unwrap();
        v.merge(&[("max-connections".into(), 1)].into()).unwrap();
        assert_eq!(v.to_map().len(), 2, "merge keeps the others");
        v.replace(&[("max-connections".into(), 4)].into()).unwrap();
        assert_eq!(v.to_map(), [("max-connections".to_string(), 4)].into());
        assert!(UserLimits::default().limit(MAX_QUEUES).is_err());
    }

    #[test]
    fn queue_limit_counts_only_when_set() {
        let v = VhostLimits::default();
        assert_eq!(
            v.check_new_queue(|| unreachable!("no limit, no count")),
            Ok(())
        );
        v.max_queues.set(Some(2));
        assert_eq!(v.check_new_queue(|| 1), Ok(()));
        assert_eq!(v.check_new_queue(|| 2), Err(2));
    }
}
