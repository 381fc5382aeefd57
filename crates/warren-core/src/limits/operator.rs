//! The operator's side of limits: set, clear and list vhost and user
//! limits (management API, warrenctl, definitions import), persisted in
//! the definitions like every other durable setting.

use warren_store::Definitions;

use super::{LimitMap, NamedLimits, UserLimits};
use crate::replicate::{proposer, Change, Replicate};
use crate::{Broker, CoreError, Result};

/// The name that clears every limit of a user, as RabbitMQ's
/// `clear_user_limits USER all`.
pub const ALL: &str = "all";

impl Broker {
    fn vhost_or_404(&self, vhost: &str) -> Result<std::sync::Arc<crate::VHost>> {
        self.vhost(vhost)
            .ok_or_else(|| CoreError::NotFound(format!("no vhost '{vhost}'")))
    }

    fn user_or_404(&self, user: &str) -> Result<()> {
        match self.users.get(user) {
            Some(_) => Ok(()),
            None => Err(CoreError::NotFound(format!("no user '{user}'"))),
        }
    }

    /// Every vhost with a configured limit, sorted by vhost.
    pub fn vhost_limits(&self) -> Vec<(String, LimitMap)> {
        self.vhosts()
            .iter()
            .map(|v| (v.name.to_string(), v.limits.to_map()))
            .filter(|(_, m)| !m.is_empty())
            .collect()
    }

    /// Set the limits in `m` on `vhost`, keeping its others (PUT of one
    /// limit in the management API).
    pub fn merge_vhost_limits(&self, vhost: &str, m: &LimitMap) -> Result<()> {
        let v = self.vhost_or_404(vhost)?;
        if let Some(r) = proposer(&self.replicator) {
            let mut all = v.limits.to_map();
            all.extend(m.iter().map(|(k, n)| (k.clone(), *n)));
            return self.propose_vhost_limits(r.as_ref(), vhost, all);
        }
        v.limits.merge(m)?;
        tracing::info!(vhost, "vhost limits set: {m:?}");
        self.save_definitions();
        Ok(())
    }

    /// Make `m` the whole set of `vhost`'s limits (rabbitmqctl
    /// set_vhost_limits, definitions import).
    pub fn replace_vhost_limits(&self, vhost: &str, m: &LimitMap) -> Result<()> {
        let v = self.vhost_or_404(vhost)?;
        if let Some(r) = proposer(&self.replicator) {
            return self.propose_vhost_limits(r.as_ref(), vhost, m.clone());
        }
        v.limits.replace(m)?;
        tracing::info!(vhost, "vhost limits replaced: {m:?}");
        self.save_definitions();
        Ok(())
    }

    /// Clear one limit of `vhost`; a name it does not have is no error,
    /// as in RabbitMQ.
    pub fn clear_vhost_limit(&self, vhost: &str, name: &str) -> Result<()> {
        let v = self.vhost_or_404(vhost)?;
        if let Some(r) = proposer(&self.replicator) {
            let mut all = v.limits.to_map();
            all.remove(name);
            return self.propose_vhost_limits(r.as_ref(), vhost, all);
        }
        if let Ok(l) = v.limits.limit(name) {
            l.set(None);
            tracing::info!(vhost, "vhost limit {name} cleared");
            self.save_definitions();
        }
        Ok(())
    }

    /// In a cluster: the vhost's whole limit set, checked here, replicated.
    fn propose_vhost_limits(&self, r: &dyn Replicate, vhost: &str, limits: LimitMap) -> Result<()> {
        crate::limits::VhostLimits::default().replace(&limits)?;
        r.commit(Change::VhostLimits {
            vhost: vhost.into(),
            limits,
        })
    }

    /// In a cluster: the user's whole limit set, checked here, replicated.
    fn propose_user_limits(&self, r: &dyn Replicate, user: &str, limits: LimitMap) -> Result<()> {
        UserLimits::validate(&limits)?;
        r.commit(Change::UserLimits {
            user: user.into(),
            limits,
        })
    }

    /// Make `m` the whole set of `user`'s limits (a committed cluster change).
    pub(crate) fn replace_user_limits(&self, user: &str, m: &LimitMap) -> Result<()> {
        self.user_or_404(user)?;
        let u = self.limits.user(user);
        u.clear();
        u.merge(m)?;
        tracing::info!(user, "user limits replaced: {m:?}");
        self.save_definitions();
        Ok(())
    }

    /// Every existing user with a configured limit, sorted by name.
    pub fn user_limits(&self) -> Vec<(String, LimitMap)> {
        let mut v = self.limits.users_with_limits();
        v.retain(|(u, _)| self.users.get(u).is_some());
        v
    }

    /// The configured limits of `user` (404 when no such user).
    pub fn limits_of_user(&self, user: &str) -> Result<LimitMap> {
        self.user_or_404(user)?;
        Ok(self.limits.user_map(user))
    }

    /// Set the limits in `m` on `user`, keeping its others (RabbitMQ's
    /// set_user_limits merges).
    pub fn merge_user_limits(&self, user: &str, m: &LimitMap) -> Result<()> {
        self.user_or_404(user)?;
        if let Some(r) = proposer(&self.replicator) {
            let mut all = self.limits.user_map(user);
            all.extend(m.iter().map(|(k, n)| (k.clone(), *n)));
            return self.propose_user_limits(r.as_ref(), user, all);
        }
        self.limits.user(user).merge(m)?;
        tracing::info!(user, "user limits set: {m:?}");
        self.save_definitions();
        Ok(())
    }

    /// Clear one limit of `user`, or every one with [`ALL`].
    pub fn clear_user_limit(&self, user: &str, name: &str) -> Result<()> {
        self.user_or_404(user)?;
        if let Some(r) = proposer(&self.replicator) {
            let mut all = self.limits.user_map(user);
            if name == ALL {
                all.clear();
            } else {
                all.remove(name);
            }
            return self.propose_user_limits(r.as_ref(), user, all);
        }
        let u = self.limits.user(user);
        if name == ALL {
            u.clear();
        } else if let Ok(l) = u.limit(name) {
            l.set(None);
        }
        tracing::info!(user, "user limit {name} cleared");
        self.save_definitions();
        Ok(())
    }

    /// Add the configured limits to durable definitions.
    pub(crate) fn limit_definitions(&self, d: &mut Definitions) {
        d.vhost_limits = self.vhost_limits().into_iter().collect();
        d.user_limits = self.user_limits().into_iter().collect();
    }

    /// Put back the limits of stored definitions (at start-up, after the
    /// queues: recovery is never refused by a queue limit).
    pub(crate) fn restore_limits(&self, d: &Definitions) {
        for (vhost, m) in &d.vhost_limits {
            let r = self
                .vhost_or_404(vhost)
                .and_then(|v| Ok(v.limits.replace(m)?));
            if let Err(e) = r {
                tracing::error!(vhost, "vhost limits not restored: {e}");
            }
        }
        for (user, m) in &d.user_limits {
            if let Err(e) = self.limits.user(user).merge(m) {
                tracing::error!(user, "user limits not restored: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhost::QueueDeclare;

    fn map(k: &str, v: i64) -> LimitMap {
        [(k.to_string(), v)].into()
    }

    #[test]
    fn limits_go_into_definitions_and_come_back() {
        let b = Broker::new(None);
        b.put_user("u", "p", vec![]);
        b.merge_vhost_limits("/", &map("max-queues", 1)).unwrap();
        b.merge_user_limits("u", &map("max-connections", 2))
            .unwrap();
        assert!(b
            .merge_user_limits("nobody", &map("max-connections", 2))
            .is_err());
        let d = b.definitions();
        assert_eq!(d.vhost_limits["/"], map("max-queues", 1));
        assert_eq!(d.user_limits["u"], map("max-connections", 2));
        let again = Broker::new(None);
        let nothing = warren_store::Recovery {
            queues: Default::default(),
            records: 0,
            summarized: 0,
            truncated: 0,
            elapsed: Default::default(),
        };
        again.recover(&d, nothing);
        assert_eq!(
            again.vhost_limits(),
            vec![("/".into(), map("max-queues", 1))]
        );
        assert_eq!(
            again.user_limits(),
            vec![("u".into(), map("max-connections", 2))]
        );
    }

    #[test]
    fn the_queue_limit_refuses_new_queues_only() {
        let b = Broker::new(None);
        let v = b.vhost("/").unwrap();
        let decl = |name: &str| QueueDeclare {
            name: name.into(),
            ..Default::default()
        };
        v.declare_queue(&decl("a"), 0).unwrap();
        b.merge_vhost_limits("/", &map("max-queues", 1)).unwrap();
        v.declare_queue(&decl("a"), 0)
            .expect("redeclare is not a new queue");
        let e = v.declare_queue(&decl("b"), 0).map(|_| ()).unwrap_err();
        assert_eq!(
            e,
            CoreError::LimitReached(
                "cannot declare queue 'b': queue limit in vhost '/' (1) is reached".into()
            )
        );
        b.replace_vhost_limits("/", &map("max-queues", -1)).unwrap();
        v.declare_queue(&decl("b"), 0)
            .expect("negative means no limit");
    }

    #[test]
    fn deleting_a_user_drops_its_limits() {
        let b = Broker::new(None);
        b.put_user("u", "p", vec![]);
        b.merge_user_limits("u", &map("max-channels", 1)).unwrap();
        b.delete_user("u").unwrap();
        b.put_user("u", "p", vec![]);
        assert!(b.user_limits().is_empty());
        b.merge_user_limits("u", &map("max-channels", 1)).unwrap();
        b.clear_user_limit("u", ALL).unwrap();
        assert!(b.limits_of_user("u").unwrap().is_empty());
    }
}
