//! The broker's durable definitions: the snapshot the store keeps (vhosts,
//! users, permissions, exchanges, queues, bindings, limits) and the
//! rebuild from it at start-up, definitions first, then messages.

use std::sync::atomic::Ordering;

use warren_store::{
    BindingDef, Definitions, ExchangeDef, PermissionDef, QueueDef, Recovery, UserDef,
};

use crate::retained::RETAINED_QUEUE;
use crate::session_ids::SESSION_IDS_QUEUE;
use crate::{auth, vhost, Broker};

impl Broker {
    /// Everything durable except messages, as the store keeps it.
    pub fn definitions(&self) -> Definitions {
        let mut d = Definitions::default();
        for v in self.vhosts() {
            d.vhosts.push(v.name.to_string());
            let (xs, qs, bs) = v.durable_definitions();
            d.exchanges.extend(xs);
            d.queues.extend(qs);
            d.bindings.extend(bs);
        }
        d.exchanges.extend(self.orphans.lock().iter().cloned());
        d.bindings
            .extend(self.orphan_bindings.lock().iter().cloned());
        d.users = self
            .users
            .list()
            .into_iter()
            .map(|u| UserDef {
                name: u.name,
                password_hash: u.password_hash,
                tags: u.tags,
            })
            .collect();
        d.permissions = Some(
            self.users
                .permissions()
                .into_iter()
                .map(|p| PermissionDef {
                    user: p.user,
                    vhost: p.vhost,
                    configure: p.configure,
                    write: p.write,
                    read: p.read,
                })
                .collect(),
        );
        self.limit_definitions(&mut d);
        d
    }

    /// Write the durable definitions (called after each durable change).
    /// While a committed cluster change is applied, the state machine
    /// saves once per batch instead ([`Broker::flush_definitions`]).
    pub fn save_definitions(&self) {
        if crate::replicate::is_applying() {
            return;
        }
        self.flush_definitions();
    }

    /// Write the durable definitions now (the cluster's state machine, once
    /// per batch of applied changes, before it records them as applied).
    pub fn flush_definitions(&self) {
        let Some(store) = &self.store else { return };
        if self.recovering.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = store.save_definitions(&self.definitions()) {
            tracing::error!("cannot save definitions: {e}");
        }
    }

    /// Rebuild durable state at start-up: definitions first, then messages.
    pub fn recover(&self, defs: &Definitions, mut recovery: Recovery) {
        self.recovering.store(true, Ordering::Release);
        for v in &defs.vhosts {
            self.vhost_or_create(v);
        }
        self.restore_users(defs);
        self.restore_exchanges(&defs.exchanges);
        self.restore_queues(&defs.queues);
        self.restore_bindings(&defs.bindings);
        let queues = recovery.queues.len();
        let messages = self.restore_messages(&mut recovery);
        self.restore_limits(defs);
        self.recovering.store(false, Ordering::Release);
        tracing::info!(
            "recovered {} durable exchanges, {} queues, {} bindings; {messages} messages in {queues} queues from {} log records ({} segments from summaries) in {:.1?}{}",
            defs.exchanges.len(),
            defs.queues.len(),
            defs.bindings.len(),
            recovery.records,
            recovery.summarized,
            recovery.elapsed,
            if recovery.truncated > 0 { format!(" ({} corrupt tail bytes truncated)", recovery.truncated) } else { String::new() }
        );
    }

    /// Users, then their permissions (all of them where the definitions
    /// predate permissions).
    fn restore_users(&self, defs: &Definitions) {
        for u in &defs.users {
            self.users.restore(auth::User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                tags: u.tags.clone(),
            });
        }
        match &defs.permissions {
            Some(perms) => {
                for p in perms {
                    match auth::Permission::new(&p.configure, &p.write, &p.read) {
                        Ok(perm) => self.users.set_permission(&p.vhost, &p.user, perm),
                        Err(e) => tracing::error!(
                            "permission of '{}' in vhost '{}' not restored: {e}",
                            p.user,
                            p.vhost
                        ),
                    }
                }
            }
            None => {
                // Written before permissions existed: keep every user's full access.
                for v in &defs.vhosts {
                    for u in &defs.users {
                        self.users
                            .set_permission(v, &u.name, auth::Permission::all());
                    }
                }
            }
        }
    }

    /// Exchanges; one whose type no loaded plugin provides is kept aside.
    fn restore_exchanges(&self, exchanges: &[ExchangeDef]) {
        for x in exchanges {
            let vh = self.vhost_or_create(&x.vhost).0;
            if self.types.get(&x.kind).is_none() {
                tracing::error!(
                    "exchange '{}' in vhost '{}' has type '{}', which no loaded plugin provides; it stays defined but is not available until the plugin is installed",
                    x.name, x.vhost, x.kind
                );
                self.orphans.lock().push(x.clone());
                continue;
            }
            let d = vhost::exchange_declare_of(x);
            if let Err(e) = vh.declare_exchange(&d) {
                tracing::error!(
                    "cannot restore exchange '{}' in vhost '{}': {e}",
                    x.name,
                    x.vhost
                );
            }
        }
    }

    fn restore_queues(&self, queues: &[QueueDef]) {
        for q in queues {
            let vh = self.vhost_or_create(&q.vhost).0;
            let d = vhost::queue_declare_of(q);
            if let Err(e) = vh.declare_queue(&d, 0) {
                tracing::error!(
                    "cannot restore queue '{}' in vhost '{}': {e}",
                    q.name,
                    q.vhost
                );
            }
        }
    }

    /// Bindings; one from or to an orphaned exchange is kept aside.
    fn restore_bindings(&self, bindings: &[BindingDef]) {
        for b in bindings {
            let orphaned = self.orphans.lock().iter().any(|x| {
                x.vhost == b.vhost
                    && (x.name == b.source
                        || (b.destination_type == "exchange" && x.name == b.destination))
            });
            if orphaned {
                self.orphan_bindings.lock().push(b.clone());
                continue;
            }
            let r = self.vhost_or_create(&b.vhost).0.bind_def(b);
            if let Err(e) = r {
                tracing::warn!(
                    "binding {} -> {} in vhost '{}' not restored: {e}",
                    b.source,
                    b.destination,
                    b.vhost
                );
            }
        }
    }

    /// Stored messages back into their queues (each takes what it held as
    /// a tail read back on demand); those of unknown queues are dropped
    /// from the log. Returns how many were restored.
    fn restore_messages(&self, recovery: &mut Recovery) -> usize {
        let mut messages = 0usize;
        for (key, mut tail) in std::mem::take(&mut recovery.queues) {
            if key.queue == RETAINED_QUEUE || key.queue == SESSION_IDS_QUEUE {
                self.restore_pseudo_queue(&key, tail.read_all());
                continue;
            }
            let q = self
                .vhost(&key.vhost)
                .and_then(|v| v.queue(&key.queue).ok());
            let Some(q) = q.filter(|q| q.store().is_some()) else {
                tracing::warn!(
                    "{} stored messages for unknown queue '{}' in vhost '{}' dropped",
                    tail.len(),
                    key.queue,
                    key.vhost
                );
                if let Some(s) = &self.store {
                    for id in tail.ids() {
                        s.log.append_remove(id, &key);
                    }
                }
                continue;
            };
            messages += tail.len();
            q.restore_tail(tail);
        }
        messages
    }

    /// The retained messages or MQTT session ids of a vhost, back into
    /// its store; those of a vhost that no longer exists are dropped from
    /// the log.
    fn restore_pseudo_queue(
        &self,
        key: &warren_store::QueueKey,
        msgs: Vec<warren_store::Recovered>,
    ) {
        if let Some(v) = self.vhost(&key.vhost) {
            if key.queue == RETAINED_QUEUE {
                let n = v.retained.restore(msgs);
                tracing::info!(vhost = %key.vhost, "{n} retained messages recovered");
            } else {
                let n = v.session_ids.restore(msgs);
                tracing::info!(vhost = %key.vhost, "{n} MQTT session packet ids recovered");
            }
            return;
        }
        tracing::warn!(
            "{} records of '{}' of unknown vhost '{}' dropped",
            msgs.len(),
            key.queue,
            key.vhost
        );
        if let Some(s) = &self.store {
            for m in &msgs {
                s.log.append_remove(m.id, key);
            }
        }
    }
}
