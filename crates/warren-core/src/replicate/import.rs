//! Making this node's durable definitions equal to a given set: a cluster
//! snapshot being installed, or the founding leader's definitions. What is
//! missing is made, what differs is made again, what is extra is removed;
//! non-durable things (exclusive queues, transient exchanges) are this
//! node's own and stay.

use std::collections::HashSet;

use warren_store::Definitions;

use super::applying;
use crate::{auth, vhost, Broker};

impl Broker {
    /// Reconcile this node's durable definitions with `target`.
    pub fn apply_import(&self, target: &Definitions) {
        applying(|| self.import(target));
    }

    fn import(&self, target: &Definitions) {
        let current = self.definitions();
        self.import_vhosts(&current, target);
        self.import_users(&current, target);
        self.import_topology(&current, target);
        self.import_limits(&current, target);
        tracing::info!(
            "definitions reconciled with the cluster: {} vhosts, {} users, {} exchanges, {} queues, {} bindings",
            target.vhosts.len(),
            target.users.len(),
            target.exchanges.len(),
            target.queues.len(),
            target.bindings.len()
        );
    }

    fn import_vhosts(&self, current: &Definitions, target: &Definitions) {
        // Applying: these act locally and cannot be refused by the group.
        for v in &target.vhosts {
            let _ = self.add_vhost(v);
        }
        for v in current.vhosts.iter().filter(|v| !target.vhosts.contains(v)) {
            let _ = self.delete_vhost(v);
        }
    }

    fn import_users(&self, current: &Definitions, target: &Definitions) {
        for u in &target.users {
            self.put_user_hash(&u.name, &u.password_hash, u.tags.clone());
        }
        let keep: HashSet<&str> = target.users.iter().map(|u| u.name.as_str()).collect();
        for u in current
            .users
            .iter()
            .filter(|u| !keep.contains(u.name.as_str()))
        {
            let _ = self.delete_user(&u.name);
        }
        let perms = target.permissions.clone().unwrap_or_default();
        for p in &perms {
            match auth::Permission::new(&p.configure, &p.write, &p.read) {
                Ok(perm) => {
                    let _ = self.set_permissions(&p.vhost, &p.user, perm);
                }
                Err(e) => tracing::error!("permission of '{}' not imported: {e}", p.user),
            }
        }
        for p in current.permissions.iter().flatten() {
            if !perms.iter().any(|t| t.vhost == p.vhost && t.user == p.user) {
                let _ = self.clear_permissions(&p.vhost, &p.user);
            }
        }
    }

    fn import_topology(&self, current: &Definitions, target: &Definitions) {
        for b in current
            .bindings
            .iter()
            .filter(|b| !target.bindings.contains(b))
        {
            self.with_vhost(&b.vhost, |v| v.unbind_def(b));
        }
        for q in current.queues.iter().filter(|q| !target.queues.contains(q)) {
            self.with_vhost(&q.vhost, |v| {
                v.delete_queue(&q.name, false, false, 0).map(drop)
            });
        }
        for x in current
            .exchanges
            .iter()
            .filter(|x| !target.exchanges.contains(x))
        {
            self.with_vhost(&x.vhost, |v| v.delete_exchange(&x.name, false));
        }
        for x in &target.exchanges {
            self.with_vhost(&x.vhost, |v| {
                v.declare_exchange(&vhost::exchange_declare_of(x)).map(drop)
            });
        }
        for q in &target.queues {
            self.with_vhost(&q.vhost, |v| {
                v.declare_queue(&vhost::queue_declare_of(q), 0).map(drop)
            });
        }
        for b in target
            .bindings
            .iter()
            .filter(|b| !current.bindings.contains(b))
        {
            self.with_vhost(&b.vhost, |v| v.bind_def(b));
        }
    }

    fn import_limits(&self, current: &Definitions, target: &Definitions) {
        let none = Default::default();
        for v in current
            .vhost_limits
            .keys()
            .chain(target.vhost_limits.keys())
        {
            let m = target.vhost_limits.get(v).unwrap_or(&none);
            if current.vhost_limits.get(v) != Some(m) {
                let _ = self.replace_vhost_limits(v, m);
            }
        }
        for u in current.user_limits.keys().chain(target.user_limits.keys()) {
            let m = target.user_limits.get(u).unwrap_or(&none);
            if current.user_limits.get(u) != Some(m) {
                let _ = self.replace_user_limits(u, m);
            }
        }
    }

    fn with_vhost(&self, name: &str, f: impl FnOnce(&vhost::VHost) -> crate::Result<()>) {
        let Some(v) = self.vhost(name) else { return };
        if let Err(e) = f(&v) {
            tracing::warn!(vhost = name, "definition not imported: {e}");
        }
    }
}
