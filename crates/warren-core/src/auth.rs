//! Users and password checks. Hashes use RabbitMQ's default scheme (4-byte
//! salt, SHA-256 of salt + password, base64), so definitions exported from
//! RabbitMQ keep working and no password is ever kept in clear.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

pub mod login;
pub mod oauth2;
pub mod scope;

/// A broker user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// base64(salt ++ sha256(salt ++ password)).
    pub password_hash: String,
    /// Tags such as `administrator`.
    pub tags: Vec<String>,
}

/// Hash a password with a fresh random salt.
pub fn hash_password(password: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(password.as_bytes());
    let salt = (h.finish() as u32).to_be_bytes();
    hash_with_salt(&salt, password)
}

fn hash_with_salt(salt: &[u8], password: &str) -> String {
    let mut d = Sha256::new();
    d.update(salt);
    d.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&d.finalize());
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// The RabbitMQ name of a stored hash's scheme, told apart by its length:
/// new hashes are SHA-256; SHA-512 ones arrive from RabbitMQ imports.
pub fn hash_algorithm(hash: &str) -> &'static str {
    match base64::engine::general_purpose::STANDARD.decode(hash) {
        Ok(raw) if raw.len() == 4 + 64 => "rabbit_password_hashing_sha512",
        _ => "rabbit_password_hashing_sha256",
    }
}

/// Check a password against a stored hash (RabbitMQ's salted SHA-256 or
/// SHA-512) in constant time.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(hash) else {
        return false;
    };
    let expect = match raw.len() {
        36 => hash_with_salt(&raw[..4], password),
        68 => {
            let mut d = sha2::Sha512::new();
            d.update(&raw[..4]);
            d.update(password.as_bytes());
            let mut out = raw[..4].to_vec();
            out.extend_from_slice(&d.finalize());
            base64::engine::general_purpose::STANDARD.encode(out)
        }
        _ => return false,
    };
    let (a, b) = (expect.as_bytes(), hash.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an operation does to a resource, as RabbitMQ's permission kinds.
/// The discriminant indexes a [`Permission`]'s three expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Create or delete it.
    Configure = 0,
    /// Put messages in (publish to an exchange, bind a queue).
    Write = 1,
    /// Take messages out (consume, get, purge, bind from an exchange).
    Read = 2,
}

/// Which kind of resource a permission check is about (for the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// An exchange; the default exchange is checked as `amq.default`.
    Exchange,
    /// A queue.
    Queue,
}

/// One user's rights in one vhost: three regular expressions over resource
/// names, matched unanchored as RabbitMQ does; an empty one matches nothing.
#[derive(Clone, Debug)]
pub struct Permission {
    /// Source of the configure expression.
    pub configure: String,
    /// Source of the write expression.
    pub write: String,
    /// Source of the read expression.
    pub read: String,
    compiled: [Option<regex::Regex>; 3],
}

impl Permission {
    /// Compile the three expressions; a bad one is a 406-style error.
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission> {
        let compile = |what: &str, src: &str| -> Result<Option<regex::Regex>> {
            if src.is_empty() {
                return Ok(None);
            }
            regex::Regex::new(src).map(Some).map_err(|e| {
                CoreError::PreconditionFailed(format!("invalid {what} expression '{src}': {e}"))
            })
        };
        Ok(Permission {
            compiled: [
                compile("configure", configure)?,
                compile("write", write)?,
                compile("read", read)?,
            ],
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        })
    }

    /// Full rights (`.*` three times), as RabbitMQ gives the default user.
    pub fn all() -> Permission {
        Permission::new(".*", ".*", ".*").expect("valid")
    }

    /// No rights at all (a token with no scope for some right).
    pub fn none() -> Permission {
        Permission::new("", "", "").expect("valid")
    }

    /// Does this permission allow `access` to the resource called `name`?
    pub fn allows(&self, access: Access, name: &str) -> bool {
        self.compiled[access as usize]
            .as_ref()
            .is_some_and(|re| re.is_match(name))
    }
}

/// The live permission of one user in one vhost. Connections hold the slot,
/// so a change made through the management API applies to them at once.
#[derive(Default)]
pub struct PermSlot {
    current: RwLock<Option<Arc<Permission>>>,
    generation: AtomicU64,
}

impl PermSlot {
    /// The permission now in force, if any.
    pub fn get(&self) -> Option<Arc<Permission>> {
        self.current.read().clone()
    }

    /// Bumped on every change, so callers can cache a positive check.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn set(&self, p: Option<Arc<Permission>>) {
        *self.current.write() = p;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A connection's identity and rights in its vhost; every AMQP method and
/// MQTT publish or subscribe goes through [`Guard::check`].
#[derive(Clone)]
pub struct Guard {
    /// The user.
    pub user: Arc<str>,
    /// The vhost.
    pub vhost: Arc<str>,
    slot: Arc<PermSlot>,
    /// The slot is this connection's own, filled from a token's scopes.
    token: bool,
}

impl Guard {
    /// Refuse with RabbitMQ's ACCESS_REFUSED text (and a log line) unless allowed.
    pub fn check(&self, access: Access, kind: Resource, name: &str) -> Result<()> {
        let name = match (kind, name) {
            (Resource::Exchange, "") => "amq.default",
            _ => name,
        };
        if self.slot.get().is_some_and(|p| p.allows(access, name)) {
            return Ok(());
        }
        let what = ["configure", "write", "read"][access as usize];
        let kind = match kind {
            Resource::Exchange => "exchange",
            Resource::Queue => "queue",
        };
        tracing::warn!(user = %self.user, vhost = %self.vhost, "{what} access to {kind} '{name}' refused");
        // RabbitMQ's exact text; the log line above says which right was missing.
        Err(CoreError::AccessRefused(format!(
            "access to {kind} '{name}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )))
    }

    /// The permission slot, for callers that cache checks by generation.
    pub fn generation(&self) -> u64 {
        self.slot.generation()
    }
}

/// One stored permission, as definitions and the API list them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionEntry {
    /// User.
    pub user: String,
    /// Vhost.
    pub vhost: String,
    /// Configure expression.
    pub configure: String,
    /// Write expression.
    pub write: String,
    /// Read expression.
    pub read: String,
}

/// The user database.
#[derive(Default)]
pub struct Users {
    users: RwLock<HashMap<String, User>>,
    /// (vhost, user) -> permission slot.
    perms: RwLock<HashMap<(String, String), Arc<PermSlot>>>,
}

impl Users {
    /// Add or replace a user with a clear-text password (hashed here).
    pub fn put(&self, name: &str, password: &str, tags: Vec<String>) {
        self.users.write().insert(
            name.to_string(),
            User {
                name: name.to_string(),
                password_hash: hash_password(password),
                tags,
            },
        );
    }

    /// Put back a user with its stored hash (recovery, definitions import).
    pub fn restore(&self, user: User) {
        self.users.write().insert(user.name.clone(), user);
    }

    /// Check credentials; the error text never says which part was wrong.
    pub fn authenticate(&self, name: &str, password: &str) -> Result<User> {
        let users = self.users.read();
        match users.get(name) {
            Some(u) if verify_password(&u.password_hash, password) => Ok(u.clone()),
            _ => Err(CoreError::AccessRefused(format!(
                "Login was refused for user '{name}': invalid credentials"
            ))),
        }
    }

    /// All users, sorted.
    pub fn list(&self) -> Vec<User> {
        let mut v: Vec<User> = self.users.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One user.
    pub fn get(&self, name: &str) -> Option<User> {
        self.users.read().get(name).cloned()
    }

    /// Remove a user and every permission it had; false when unknown.
    pub fn delete(&self, name: &str) -> bool {
        let found = self.users.write().remove(name).is_some();
        self.perms.write().retain(|(_, u), slot| {
            if u == name {
                slot.set(None);
                false
            } else {
                true
            }
        });
        found
    }

    /// Grant or replace `user`'s permission in `vhost`.
    pub fn set_permission(&self, vhost: &str, user: &str, p: Permission) {
        let slot = self
            .perms
            .write()
            .entry((vhost.to_string(), user.to_string()))
            .or_default()
            .clone();
        slot.set(Some(Arc::new(p)));
    }

    /// True when `user` has rights in `vhost`.
    pub fn has_permission(&self, vhost: &str, user: &str) -> bool {
        self.perms
            .read()
            .get(&(vhost.to_string(), user.to_string()))
            .is_some_and(|slot| slot.get().is_some())
    }

    /// Revoke `user`'s permission in `vhost`; false when there was none.
    pub fn clear_permission(&self, vhost: &str, user: &str) -> bool {
        match self
            .perms
            .write()
            .remove(&(vhost.to_string(), user.to_string()))
        {
            Some(slot) => {
                let had = slot.get().is_some();
                slot.set(None);
                had
            }
            None => false,
        }
    }

    /// Drop every permission in a deleted vhost.
    pub fn clear_vhost(&self, vhost: &str) {
        self.perms.write().retain(|(v, _), slot| {
            if v == vhost {
                slot.set(None);
                false
            } else {
                true
            }
        });
    }

    /// All permissions, sorted by vhost then user.
    pub fn permissions(&self) -> Vec<PermissionEntry> {
        let mut out: Vec<PermissionEntry> = self
            .perms
            .read()
            .iter()
            .filter_map(|((vhost, user), slot)| {
                let p = slot.get()?;
                Some(PermissionEntry {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    configure: p.configure.clone(),
                    write: p.write.clone(),
                    read: p.read.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.vhost, &a.user).cmp(&(&b.vhost, &b.user)));
        out
    }

    /// The guard for `user` in `vhost`, or 530-style refusal when the user
    /// has no permission there (RabbitMQ: "access to vhost refused").
    pub fn guard(&self, vhost: &str, user: &str) -> Result<Guard> {
        let slot = self
            .perms
            .read()
            .get(&(vhost.to_string(), user.to_string()))
            .cloned();
        match slot {
            Some(slot) if slot.get().is_some() => Ok(Guard {
                user: user.into(),
                vhost: vhost.into(),
                slot,
                token: false,
            }),
            _ => {
                tracing::warn!(user, vhost, "access to vhost refused: no permissions");
                Err(CoreError::NotAllowed(format!(
                    "access to vhost '{vhost}' refused for user '{user}'"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_hash_format() {
        // The worked example from RabbitMQ's password documentation
        // (salt 908DC60A, password "test12").
        let rabbit = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR";
        assert!(verify_password(rabbit, "test12"));
        assert!(!verify_password(rabbit, "test13"));
        let h = hash_password("s3cret");
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "s3cret!"));
        assert!(!verify_password("not base64", "x"));
        // SHA-512 as RabbitMQ's rabbit_password_hashing_sha512 stores it.
        let salt = [1u8, 2, 3, 4];
        let mut d = sha2::Sha512::new();
        d.update(salt);
        d.update(b"pw512");
        let mut raw = salt.to_vec();
        raw.extend_from_slice(&d.finalize());
        let h512 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert!(verify_password(&h512, "pw512"));
        assert!(!verify_password(&h512, "pw513"));
        assert_eq!(hash_algorithm(&h512), "rabbit_password_hashing_sha512");
        assert_eq!(hash_algorithm(&h), "rabbit_password_hashing_sha256");
    }

    #[test]
    fn permissions_match_like_rabbitmq() {
        let users = Users::default();
        users.put("bob", "pw", vec![]);
        assert!(users.guard("/", "bob").is_err());
        users.set_permission("/", "bob", Permission::new("^bob-", "", "amq\\.").unwrap());
        let g = users.guard("/", "bob").unwrap();
        assert!(g.check(Access::Configure, Resource::Queue, "bob-q").is_ok());
        assert!(g
            .check(Access::Configure, Resource::Queue, "alice-q")
            .is_err());
        assert!(
            g.check(Access::Write, Resource::Exchange, "bob-q").is_err(),
            "empty matches nothing"
        );
        // Unanchored: any position matches; the default exchange is amq.default.
        assert!(g.check(Access::Read, Resource::Exchange, "x.amq.y").is_ok());
        assert!(g.check(Access::Read, Resource::Exchange, "").is_ok());
        let gen = g.generation();
        users.clear_permission("/", "bob");
        assert_ne!(g.generation(), gen);
        assert!(g
            .check(Access::Configure, Resource::Queue, "bob-q")
            .is_err());
        assert!(Permission::new("(", "", "").is_err());
    }
}
