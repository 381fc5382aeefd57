//! The routing core of Warren: vhosts, exchanges, queues, bindings, messages,
//! consumers and acknowledgements. It knows no protocol and no socket; the
//! AMQP and MQTT adapters drive it through [`VHost`] and the [`Consumer`] trait.

#![deny(missing_docs)]

pub mod alarm;
pub mod auth;
pub mod dead_letter;
mod definitions;
pub mod error;
pub mod exchange;
pub mod limits;
pub mod message;
pub mod props;
pub mod queue;
pub mod registry;
pub mod remote;
pub mod replicate;
pub mod retained;
pub mod session_ids;
mod tasks;
#[cfg(test)]
mod test_support;
pub mod value;
pub mod vhost;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use replicate::Change;
use warren_store::{ExchangeDef, PermissionDef, Store, UserDef};

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
    /// Token login, when `auth_oauth2` is configured (set once at start-up;
    /// unset, a login costs one atomic load more).
    oauth2: std::sync::OnceLock<auth::login::OAuth2Backend>,
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
    /// The cluster's consensus group, when clustered: definitions changes
    /// go through it (see [`replicate`]).
    replicator: replicate::Slot,
    /// The cluster's message link to queues homed elsewhere ([`remote`]).
    link: remote::LinkSlot,
    /// Notices from other cluster members (see [`replicate::Notice`]).
    notices: tokio::sync::broadcast::Sender<replicate::Notice>,
}

/// Refuse a vhost, exchange or queue name longer than an AMQP short string
/// (255 bytes): an AMQP client could not be sent it. AMQP and MQTT cannot
/// carry one; the HTTP API checks with this before it declares. Recovery
/// does not, so a name accepted by an older version still comes back.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.len() <= message::MAX_KEY {
        return Ok(());
    }
    Err(CoreError::PreconditionFailed(format!(
        "{kind} name of {} bytes is longer than 255",
        name.len()
    )))
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
            oauth2: std::sync::OnceLock::new(),
            next_id: AtomicU64::new(1),
            store,
            me: me.clone(),
            recovering: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            orphan_bindings: Mutex::new(Vec::new()),
            replicator: replicate::Slot::default(),
            link: remote::LinkSlot::default(),
            notices: tokio::sync::broadcast::channel(1024).0,
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
        let pages = self.store.as_ref().map(|s| s.pages.clone());
        let v = VHost::new_shared(name, self.types.clone(), log, pages, hook);
        v.set_replicator_slot(self.replicator.clone());
        v.set_link_slot(self.link.clone());
        vhosts.insert(name.to_string(), v.clone());
        (v, true)
    }

    /// Create a vhost if missing and return it. In a cluster it is made
    /// through the group; the error says why it was not (no quorum).
    pub fn add_vhost(&self, name: &str) -> Result<Arc<VHost>> {
        if let Some(v) = self.vhost(name) {
            return Ok(v);
        }
        if let Some(r) = replicate::proposer(&self.replicator) {
            r.commit(Change::AddVhost(name.into()))?;
            return Ok(self.vhost_or_create(name).0);
        }
        let (v, created) = self.vhost_or_create(name);
        if created {
            self.save_definitions();
        }
        Ok(v)
    }

    /// Add or replace a user (password hashed here) and persist it.
    pub fn put_user(&self, name: &str, password: &str, tags: Vec<String>) {
        self.put_user_hash(name, &auth::hash_password(password), tags);
    }

    /// Add or replace a user with an already hashed password (definitions
    /// import, RabbitMQ's salted SHA-256) and persist it.
    pub fn put_user_hash(&self, name: &str, password_hash: &str, tags: Vec<String>) {
        if let Err(e) = self.try_put_user_hash(name, password_hash, tags) {
            tracing::error!(user = name, "user not saved: {e}");
        }
    }

    /// [`Broker::put_user_hash`], with the cluster's refusal as an error.
    pub fn try_put_user_hash(&self, name: &str, hash: &str, tags: Vec<String>) -> Result<()> {
        let user = auth::User {
            name: name.into(),
            password_hash: hash.into(),
            tags,
        };
        if let Some(r) = replicate::proposer(&self.replicator) {
            return r.commit(Change::PutUser(UserDef {
                name: user.name,
                password_hash: user.password_hash,
                tags: user.tags,
            }));
        }
        self.users.restore(user);
        self.save_definitions();
        Ok(())
    }

    /// Delete a user with its permissions; its connections are closed.
    /// False when there was no such user.
    pub fn delete_user(&self, name: &str) -> Result<bool> {
        let found = self.users.get(name).is_some();
        if let Some(r) = replicate::proposer(&self.replicator) {
            if found {
                r.commit(Change::DeleteUser(name.into()))?;
            }
            return Ok(found);
        }
        if self.users.delete(name) {
            self.limits.forget_user(name);
            for c in self.registry.list() {
                if &*c.user == name {
                    c.request_close("user deleted");
                }
            }
            self.save_definitions();
        }
        Ok(found)
    }

    /// Grant `user` rights in `vhost` and persist them.
    pub fn set_permissions(&self, vhost: &str, user: &str, p: auth::Permission) -> Result<()> {
        if self.vhost(vhost).is_none() {
            return Err(CoreError::NotFound(format!("no vhost '{vhost}'")));
        }
        if self.users.get(user).is_none() {
            return Err(CoreError::NotFound(format!("no user '{user}'")));
        }
        if let Some(r) = replicate::proposer(&self.replicator) {
            return r.commit(Change::SetPermission(PermissionDef {
                user: user.into(),
                vhost: vhost.into(),
                configure: p.configure,
                write: p.write,
                read: p.read,
            }));
        }
        self.users.set_permission(vhost, user, p);
        self.save_definitions();
        Ok(())
    }

    /// Revoke `user`'s rights in `vhost` and persist that; false when it
    /// had none.
    pub fn clear_permissions(&self, vhost: &str, user: &str) -> Result<bool> {
        if let Some(r) = replicate::proposer(&self.replicator) {
            let had = self.users.has_permission(vhost, user);
            if had {
                let (vhost, user) = (vhost.into(), user.into());
                r.commit(Change::ClearPermission { vhost, user })?;
            }
            return Ok(had);
        }
        let had = self.users.clear_permission(vhost, user);
        if had {
            self.save_definitions();
        }
        Ok(had)
    }

    /// Delete a vhost with everything in it (queues and their stored
    /// messages); its connections are closed, as RabbitMQ does.
    /// False when there was no such vhost.
    pub fn delete_vhost(&self, name: &str) -> Result<bool> {
        if let Some(r) = replicate::proposer(&self.replicator) {
            let found = self.vhost(name).is_some();
            if found {
                r.commit(Change::DeleteVhost(name.into()))?;
            }
            return Ok(found);
        }
        let Some(v) = self.vhosts.write().remove(name) else {
            return Ok(false);
        };
        for c in self.registry.list() {
            if &*c.vhost == name {
                c.request_close("vhost deleted");
            }
        }
        for q in v.queues() {
            v.remove_queue(&q);
        }
        v.retained.drop_all();
        v.session_ids.drop_all();
        self.users.clear_vhost(name);
        self.orphans.lock().retain(|x| x.vhost != name);
        self.orphan_bindings.lock().retain(|b| b.vhost != name);
        tracing::info!(vhost = name, "vhost deleted");
        self.save_definitions();
        Ok(true)
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
}
