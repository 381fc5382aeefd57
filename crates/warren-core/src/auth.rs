//! Users and password checks. Hashes use RabbitMQ's default scheme (4-byte
//! salt, SHA-256 of salt + password, base64), so definitions exported from
//! RabbitMQ keep working and no password is ever kept in clear.

use std::collections::HashMap;

use base64::Engine;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

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

/// Check a password against a stored hash in constant time.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(hash) else {
        return false;
    };
    if raw.len() != 4 + 32 {
        return false;
    }
    let expect = hash_with_salt(&raw[..4], password);
    let (a, b) = (expect.as_bytes(), hash.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user database.
#[derive(Default)]
pub struct Users {
    users: RwLock<HashMap<String, User>>,
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
    }
}
