//! The routing core of Warren: vhosts, exchanges, queues, bindings, messages,
//! consumers and acknowledgements. It knows no protocol and no socket; the
//! AMQP and MQTT adapters drive it through [`VHost`] and the [`Consumer`] trait.

#![deny(missing_docs)]

pub mod alarm;
pub mod auth;
pub mod dead_letter;
pub mod error;
pub mod exchange;
pub mod limits;
pub mod message;
pub mod props;
pub mod queue;
pub mod registry;
mod tasks;
pub mod value;
pub mod vhost;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use warren_store::{Definitions, ExchangeDef, PermissionDef, Recovery, Store, UserDef};

pub use error::{CoreError, DecodeError, Result};
pub use exchange::{Exchange, ExchangeRouter, ExchangeType, TypeRegistry};
pub use message::Message;
pub use queue::{Consumer, ConsumerSpec, Delivery, Queue};
pub use value::{Table, Value};
pub use vhost::{RouteScratch, Routed, VHost};
/// How far the store has fsynced; adapters confirm durable publishes by it.
pub use warren_store::SyncState;

/// The broker: every vhost, the users, the exchange types and the store.
pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    /// The user database.
    pub users: auth::Users,
    /// Exchange types, built-in and from plugins.
    pub types: Arc<TypeRegistry>,
    /// Live connections and traffic totals.
    pub registry: Arc<registry::Registry>,
    /// Operator-set limits: node and per-user connection counts, user
    /// limits (vhost limits live in each vhost).
    pub limits: Arc<limits::Limits>,
    /// Memory and disk alarms; adapters block publishers while one is on.
    pub alarms: Arc<alarm::Alarms>,
    next_id: AtomicU64,
    store: Option<Arc<Store>>,
    me: Weak<Broker>,
    /// True while start-up recovery runs: definitions are not re-saved.
    recovering: AtomicBool,
    /// Durable exchanges whose type is not loaded (a missing plugin): kept
    /// in the definitions so that they come back once the plugin does.
    orphans: Mutex<Vec<ExchangeDef>>,
    /// Bindings from or to such exchanges, kept for the same reason.
    orphan_bindings: Mutex<Vec<warren_store::BindingDef>>,
}

impl Broker {
    /// A broker with the built-in exchange types and the default vhost `/`.
    /// With a store, durable definitions and persistent messages are saved.
    pub fn new(store: Option<Arc<Store>>) -> Arc<Broker> {
        let b = Arc::new_cyclic(|me| Broker {
            vhosts: RwLock::new(HashMap::new()),
            users: auth::Users::default(),
            types: Arc::new(TypeRegistry::with_builtins()),
            registry: Arc::default(),
            limits: Arc::default(),
            alarms: Arc::default(),
            next_id: AtomicU64::new(1),
            store,
            me: me.clone(),
            recovering: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            orphan_bindings: Mutex::new(Vec::new()),
        });
        b.vhost_or_create("/");
        b
    }

    /// The store, when the broker persists anything.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Watch the store's fsync progress, so an adapter can confirm a durable
    /// publish once its record is synced; `None` without a store (in memory).
    pub fn sync_watch(&self) -> Option<tokio::sync::watch::Receiver<SyncState>> {
        self.store.as_ref().map(|s| s.log.subscribe())
    }

    fn vhost_or_create(&self, name: &str) -> (Arc<VHost>, bool) {
        let mut vhosts = self.vhosts.write();
        if let Some(v) = vhosts.get(name) {
            return (v.clone(), false);
        }
        let hook: Option<vhost::DefinitionsHook> = self.store.as_ref().map(|_| {
            let me = self.me.clone();
            Arc::new(move || {
                if let Some(b) = me.upgrade() {
                    b.save_definitions();
                }
            }) as vhost::DefinitionsHook
        });
        let log = self.store.as_ref().map(|s| s.log.clone());
        let v = VHost::new_shared(name, self.types.clone(), log, hook);
        vhosts.insert(name.to_string(), v.clone());
        (v, true)
    }

    /// Create a vhost if missing and return it.
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        let (v, created) = self.vhost_or_create(name);
        if created {
            self.save_definitions();
        }
        v
    }

    /// Add or replace a user (password hashed here) and persist it.
    pub fn put_user(&self, name: &str, password: &str, tags: Vec<String>) {
        self.users.put(name, password, tags);
        self.save_definitions();
    }

    /// Add or replace a user with an already hashed password (definitions
    /// import, RabbitMQ's salted SHA-256) and persist it.
    pub fn put_user_hash(&self, name: &str, password_hash: &str, tags: Vec<String>) {
        self.users.restore(auth::User {
            name: name.into(),
            password_hash: password_hash.into(),
            tags,
        });
        self.save_definitions();
    }

    /// Delete a user with its permissions; its connections are closed.
    pub fn delete_user(&self, name: &str) -> bool {
        let found = self.users.delete(name);
        if found {
            self.limits.forget_user(name);
            for c in self.registry.list() {
                if &*c.user == name {
                    c.request_close("user deleted");
                }
            }
            self.save_definitions();
        }
        found
    }

    /// Grant `user` rights in `vhost` and persist them.
    pub fn set_permissions(&self, vhost: &str, user: &str, p: auth::Permission) -> Result<()> {
        if self.vhost(vhost).is_none() {
            return Err(CoreError::NotFound(format!("no vhost '{vhost}'")));
        }
        if self.users.get(user).is_none() {
            return Err(CoreError::NotFound(format!("no user '{user}'")));
        }
        self.users.set_permission(vhost, user, p);
        self.save_definitions();
        Ok(())
    }

    /// Revoke `user`'s rights in `vhost` and persist that.
    pub fn clear_permissions(&self, vhost: &str, user: &str) -> bool {
        let had = self.users.clear_permission(vhost, user);
        if had {
            self.save_definitions();
        }
        had
    }

    /// Delete a vhost with everything in it (queues and their stored
    /// messages); its connections are closed, as RabbitMQ does.
    pub fn delete_vhost(&self, name: &str) -> bool {
        let Some(v) = self.vhosts.write().remove(name) else {
            return false;
        };
        for c in self.registry.list() {
            if &*c.vhost == name {
                c.request_close("vhost deleted");
            }
        }
        for q in v.queues() {
            v.remove_queue(&q);
        }
        self.users.clear_vhost(name);
        self.orphans.lock().retain(|x| x.vhost != name);
        self.orphan_bindings.lock().retain(|b| b.vhost != name);
        tracing::info!(vhost = name, "vhost deleted");
        self.save_definitions();
        true
    }

    /// Look a vhost up.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// All vhosts, sorted by name.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        let mut v: Vec<_> = self.vhosts.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A process-unique id for connections and channels.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

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
    pub fn save_definitions(&self) {
        let Some(store) = &self.store else { return };
        if self.recovering.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = store.save_definitions(&self.definitions()) {
            tracing::error!("cannot save definitions: {e}");
        }
    }

    /// Rebuild durable state at start-up: definitions first, then messages.
    pub fn recover(&self, defs: &Definitions, recovery: Recovery) {
        self.recovering.store(true, Ordering::Release);
        for v in &defs.vhosts {
            self.vhost_or_create(v);
        }
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
        for x in &defs.exchanges {
            let vh = self.vhost_or_create(&x.vhost).0;
            if self.types.get(&x.kind).is_none() {
                tracing::error!(
                    "exchange '{}' in vhost '{}' has type '{}', which no loaded plugin provides; it stays defined but is not available until the plugin is installed",
                    x.name, x.vhost, x.kind
                );
                self.orphans.lock().push(x.clone());
                continue;
            }
            let d = vhost::ExchangeDeclare {
                name: x.name.clone(),
                kind: x.kind.clone(),
                passive: false,
                durable: true,
                auto_delete: x.auto_delete,
                internal: x.internal,
                args: vhost::args_from_b64(&x.arguments),
            };
            if let Err(e) = vh.declare_exchange(&d) {
                tracing::error!(
                    "cannot restore exchange '{}' in vhost '{}': {e}",
                    x.name,
                    x.vhost
                );
            }
        }
        for q in &defs.queues {
            let vh = self.vhost_or_create(&q.vhost).0;
            let d = vhost::QueueDeclare {
                name: q.name.clone(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: q.auto_delete,
                args: vhost::args_from_b64(&q.arguments),
                // Recovered names were accepted once; amq.gen- ones included.
                server_named: true,
            };
            if let Err(e) = vh.declare_queue(&d, 0) {
                tracing::error!(
                    "cannot restore queue '{}' in vhost '{}': {e}",
                    q.name,
                    q.vhost
                );
            }
        }
        for b in &defs.bindings {
            let orphaned = self.orphans.lock().iter().any(|x| {
                x.vhost == b.vhost
                    && (x.name == b.source
                        || (b.destination_type == "exchange" && x.name == b.destination))
            });
            if orphaned {
                self.orphan_bindings.lock().push(b.clone());
                continue;
            }
            let vh = self.vhost_or_create(&b.vhost).0;
            let args = vhost::args_from_b64(&b.arguments);
            let r = if b.destination_type == "exchange" {
                vh.bind_exchange(&b.destination, &b.source, &b.routing_key, &args)
            } else {
                vh.bind_queue(&b.destination, &b.source, &b.routing_key, &args, 0)
            };
            if let Err(e) = r {
                tracing::warn!(
                    "binding {} -> {} in vhost '{}' not restored: {e}",
                    b.source,
                    b.destination,
                    b.vhost
                );
            }
        }
        let mut messages = 0usize;
        let queues = recovery.queues.len();
        for (key, msgs) in recovery.queues {
            let q = self
                .vhost(&key.vhost)
                .and_then(|v| v.queue(&key.queue).ok());
            let Some(q) = q.filter(|q| q.store().is_some()) else {
                tracing::warn!(
                    "{} stored messages for unknown queue '{}' in vhost '{}' dropped",
                    msgs.len(),
                    key.queue,
                    key.vhost
                );
                if let Some(s) = &self.store {
                    for m in &msgs {
                        s.log.append_remove(m.id, &key);
                    }
                }
                continue;
            };
            messages += msgs.len();
            q.restore(msgs.into_iter().filter_map(|m| {
                let mut msg = Message::new(m.exchange, m.meta, m.key_len, m.body).ok()?;
                msg.store_id = m.id;
                Some((msg, m.redelivered))
            }));
        }
        self.restore_limits(defs);
        self.recovering.store(false, Ordering::Release);
        tracing::info!(
            "recovered {} durable exchanges, {} queues, {} bindings; {messages} messages in {queues} queues from {} log records in {:.1?}{}",
            defs.exchanges.len(),
            defs.queues.len(),
            defs.bindings.len(),
            recovery.records,
            recovery.elapsed,
            if recovery.truncated > 0 { format!(" ({} corrupt tail bytes truncated)", recovery.truncated) } else { String::new() }
        );
    }
}
