//! Token login compatible with RabbitMQ's OAuth 2 backend
//! (rabbitmq_auth_backend_oauth2): a JWT given as the password is verified
//! against signing keys from configuration (PEM files, or a JWKS file where
//! the token's `kid` picks the key), its audience must name the resource
//! server, `exp` must lie ahead (and `nbf`, if present, behind), and the
//! scopes that carry the resource server's prefix become the connection's
//! permissions and tags ([`Scopes`]). The user name is the first string
//! among the preferred username claims (default `sub`, then `client_id`).
//! Nothing here runs unless `auth_oauth2` is configured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::scope::{expand, Scopes};

/// RabbitMQ refuses tokens with more scopes than this.
const MAX_SCOPES: usize = 2048;

/// What `auth_oauth2.*` configures (RabbitMQ's key names).
#[derive(Clone, Debug)]
pub struct OAuth2Settings {
    /// This broker's name as a resource server: the audience a token must
    /// carry and, followed by `.`, the prefix of its scopes.
    pub resource_server_id: String,
    /// Key id -> PEM file with a public key (RSA or EC) or certificate.
    pub signing_keys: Vec<(String, PathBuf)>,
    /// A JWKS file (`{"keys": [...]}`); its keys join `signing_keys` by kid.
    pub jwks_file: Option<PathBuf>,
    /// The key for tokens whose header names no `kid`.
    pub default_key: Option<String>,
    /// Claims tried in order for the user name.
    pub preferred_username_claims: Vec<String>,
    /// More claims holding scopes (space-separated, dotted paths), as
    /// RabbitMQ's `additional_scopes_key` (formerly `extra_scopes_source`).
    pub additional_scopes_key: Option<String>,
    /// Check `aud` (RabbitMQ's `verify_aud`, default on).
    pub verify_aud: bool,
}

impl Default for OAuth2Settings {
    fn default() -> Self {
        OAuth2Settings {
            resource_server_id: "rabbitmq".into(),
            signing_keys: Vec::new(),
            jwks_file: None,
            default_key: None,
            preferred_username_claims: vec!["sub".into(), "client_id".into()],
            additional_scopes_key: None,
            verify_aud: true,
        }
    }
}

/// Why the signing keys could not be loaded (at start-up).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds no RSA or EC public key.
    #[error("{0}: not an RSA or EC public key in PEM")]
    NotAKey(PathBuf),
    /// The JWKS file is not a JWK set, or a key in it cannot be used.
    #[error("{file}: {why}")]
    Jwks {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `default_key` names no configured key.
    #[error("default_key '{0}' is not among the signing keys")]
    NoDefaultKey(String),
    /// No key at all: every token would be refused.
    #[error("no signing keys configured (auth_oauth2.signing_keys or auth_oauth2.jwks_file)")]
    NoKeys,
}

/// Why a token was refused; logged, never sent to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header: not a token at all.
    #[error("not a JWT")]
    NotAJwt,
    /// The header names a key id that is not configured.
    #[error("no signing key with id '{0}'")]
    UnknownKey(String),
    /// No `kid` and no `default_key`.
    #[error("token has no kid and no default_key is configured")]
    NoKeyId,
    /// The algorithm does not fit the key (or is symmetric).
    #[error("algorithm {0:?} cannot be used with key '{1}'")]
    Algorithm(Algorithm, String),
    /// The signature does not verify.
    #[error("signature is invalid")]
    Signature,
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` lies ahead.
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    /// `aud` does not name this resource server.
    #[error("audience does not contain '{0}'")]
    Audience(String),
    /// A required claim (`exp`, `aud`) is missing.
    #[error("missing claim '{0}'")]
    MissingClaim(String),
    /// More scopes than RabbitMQ accepts.
    #[error("too many scopes")]
    TooManyScopes,
    /// Anything else the decoder refused.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// A verified token: who, with what rights, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// The user name from the preferred username claims ("unknown" if none).
    pub user: String,
    /// Rights and tags.
    pub scopes: Scopes,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl TokenGrant {
    /// Time left before the token expires (zero once passed).
    pub fn time_left(&self) -> std::time::Duration {
        let now = now_secs();
        std::time::Duration::from_secs(self.expires_at.saturating_sub(now))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
}

struct Key {
    key: DecodingKey,
    family: Family,
}

/// The keys and rules tokens are checked against, built once at start-up.
pub struct TokenVerifier {
    settings: OAuth2Settings,
    keys: HashMap<String, Key>,
    prefix: String,
}

impl TokenVerifier {
    /// Load every configured key; any unreadable one stops start-up.
    pub fn load(settings: OAuth2Settings) -> Result<TokenVerifier, KeyError> {
        let mut keys = HashMap::new();
        for (kid, file) in &settings.signing_keys {
            keys.insert(kid.clone(), pem_key(file)?);
        }
        if let Some(file) = &settings.jwks_file {
            keys.extend(jwks_keys(file)?);
        }
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        if let Some(d) = &settings.default_key {
            if !keys.contains_key(d) {
                return Err(KeyError::NoDefaultKey(d.clone()));
            }
        }
        Ok(TokenVerifier {
            prefix: format!("{}.", settings.resource_server_id),
            settings,
            keys,
        })
    }

    /// Verify `token` and read its user, scopes and expiry.
    pub fn verify(&self, token: &str) -> Result<TokenGrant, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::NotAJwt)?;
        let kid = match (&header.kid, &self.settings.default_key) {
            (Some(k), _) => k,
            (None, Some(d)) => d,
            (None, None) => return Err(TokenError::NoKeyId),
        };
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        if !fits(header.alg, key.family) {
            return Err(TokenError::Algorithm(header.alg, kid.clone()));
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &key.key,
            &self.validation(header.alg),
        )
        .map_err(|e| self.refusal(e.into_kind()))?
        .claims;
        // Checked here rather than by the decoder: a number (RabbitMQ
        // truncates a fractional one), expired once exp =< now.
        let exp = claims.get("exp").and_then(Value::as_f64);
        let expires_at = exp.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        let expires_at = expires_at.max(0.0) as u64;
        if expires_at <= now_secs() {
            return Err(TokenError::Expired);
        }
        let claim = |name: &str| claims.get(name).and_then(Value::as_str);
        let scopes: Vec<String> = self
            .scopes(&claims)?
            .iter()
            .map(|s| expand(s, claim))
            .collect();
        Ok(TokenGrant {
            user: self.user_name(&claims),
            scopes: Scopes::parse(scopes.iter().map(String::as_str)),
            expires_at,
        })
    }

    /// The resource server id (the audience and scope prefix).
    pub fn resource_server_id(&self) -> &str {
        &self.settings.resource_server_id
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = 0;
        v.validate_exp = false;
        v.validate_nbf = true;
        v.validate_aud = self.settings.verify_aud;
        let mut required: Vec<&str> = Vec::new();
        if self.settings.verify_aud {
            v.set_audience(&[&self.settings.resource_server_id]);
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        v
    }

    fn refusal(&self, e: ErrorKind) -> TokenError {
        match e {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidAudience => {
                TokenError::Audience(self.settings.resource_server_id.clone())
            }
            ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c),
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                TokenError::NotAJwt
            }
            other => TokenError::Invalid(format!("{other:?}")),
        }
    }

    /// `scope` (a space-separated string or a list) and the additional
    /// scope claims, keeping those with our prefix, prefix dropped.
    fn scopes(&self, claims: &Map<String, Value>) -> Result<Vec<String>, TokenError> {
        let mut all = Vec::new();
        if let Some(v) = claims.get("scope") {
            scope_list(v, &mut all);
        }
        if let Some(keys) = &self.settings.additional_scopes_key {
            let id = &self.settings.resource_server_id;
            for path in keys.split_whitespace() {
                extra_scopes_in(claims, path, id, &mut all);
            }
        }
        let mut kept: Vec<String> = all
            .iter()
            .filter_map(|s| s.strip_prefix(self.prefix.as_str()))
            .map(str::to_string)
            .collect();
        kept.sort();
        kept.dedup();
        if kept.len() > MAX_SCOPES {
            return Err(TokenError::TooManyScopes);
        }
        Ok(kept)
    }

    fn user_name(&self, claims: &Map<String, Value>) -> String {
        self.settings
            .preferred_username_claims
            .iter()
            .find_map(|c| claims.get(c).and_then(Value::as_str))
            .unwrap_or("unknown")
            .to_string()
    }
}

/// May `alg` be verified with a key of `family`? (No symmetric algorithm:
/// the keys here are public keys.)
fn fits(alg: Algorithm, family: Family) -> bool {
    use Algorithm::*;
    match family {
        Family::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        Family::Ec => matches!(alg, ES256 | ES384),
    }
}

/// A string of space-separated scopes or a list of strings.
fn scope_list(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.extend(s.split_whitespace().map(str::to_string)),
        Value::Array(items) => {
            out.extend(items.iter().filter_map(Value::as_str).map(str::to_string))
        }
        _ => {}
    }
}

/// RabbitMQ's walk of an additional scopes claim: a dotted path through
/// objects (and lists of objects); at the end a string or list is taken as
/// scopes, and an object contributes its `resource_server_id` entry with
/// the prefix added.
fn extra_scopes(v: &Value, path: &str, id: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => extra_scopes_in(m, path, id, out),
        Value::Array(items) => items
            .iter()
            .for_each(|item| extra_scopes(item, path, id, out)),
        _ => {}
    }
}

/// [`extra_scopes`] from an object.
fn extra_scopes_in(m: &Map<String, Value>, path: &str, id: &str, out: &mut Vec<String>) {
    let (key, rest) = match path.split_once('.') {
        Some((k, r)) => (k, Some(r)),
        None => (path, None),
    };
    let Some(next) = m.get(key) else { return };
    match rest {
        Some(rest) => extra_scopes(next, rest, id, out),
        None => leaf_scopes(next, id, out),
    }
}

fn leaf_scopes(v: &Value, id: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let mut unprefixed = Vec::new();
            if let Some(v) = m.get(id) {
                scope_list(v, &mut unprefixed);
            }
            out.extend(unprefixed.into_iter().map(|s| format!("{id}.{s}")));
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            items.iter().for_each(|item| leaf_scopes(item, id, out))
        }
        other => scope_list(other, out),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A PEM public key (or certificate), RSA first, then EC.
fn pem_key(file: &Path) -> Result<Key, KeyError> {
    let pem = std::fs::read(file).map_err(|source| KeyError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(Key {
            key,
            family: Family::Rsa,
        });
    }
    match DecodingKey::from_ec_pem(&pem) {
        Ok(key) => Ok(Key {
            key,
            family: Family::Ec,
        }),
        Err(_) => Err(KeyError::NotAKey(file.to_path_buf())),
    }
}

/// The RSA and EC keys of a JWKS file, by kid.
fn jwks_keys(file: &Path) -> Result<Vec<(String, Key)>, KeyError> {
    let text = std::fs::read(file).map_err(|source| KeyError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let bad = |why: String| KeyError::Jwks {
        file: file.to_path_buf(),
        why,
    };
    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| bad("a key has no kid".into()))?;
        let family = match jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            _ => return Err(bad(format!("key '{kid}' is neither RSA nor EC"))),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key '{kid}': {e}")))?;
        out.push((kid, Key { key, family }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
