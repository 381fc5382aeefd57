//! The verifier against tokens signed here with fresh ES256 keys (the
//! Python tests cover RS256, PEM files and JWKS with real clients).

use jsonwebtoken::{encode, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

use super::*;
use crate::auth::Access;

/// A fresh P-256 key: (signing key, verifying key).
fn es256() -> (EncodingKey, DecodingKey) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let public = DecodingKey::from_ec_der(pair.public_key().as_ref());
    (EncodingKey::from_ec_der(pkcs8.as_ref()), public)
}

fn verifier(keys: Vec<(&str, DecodingKey)>, settings: OAuth2Settings) -> TokenVerifier {
    TokenVerifier {
        prefix: format!("{}.", settings.resource_server_id),
        settings,
        keys: keys
            .into_iter()
            .map(|(k, key)| {
                let key = Key {
                    key,
                    family: Family::Ec,
                };
                (k.to_string(), key)
            })
            .collect(),
    }
}

fn sign(key: &EncodingKey, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).unwrap()
}

fn claims(exp_in: i64) -> serde_json::Value {
    let exp = now_secs() as i64 + exp_in;
    json!({"sub": "alice", "aud": ["rabbitmq", "other"], "exp": exp,
           "scope": "rabbitmq.read:*/q-* rabbitmq.tag:management other.write:*/*"})
}

#[test]
fn a_good_token_gives_its_user_scopes_and_expiry() {
    let (sk, pk) = es256();
    let v = verifier(vec![("k1", pk)], OAuth2Settings::default());
    let g = v.verify(&sign(&sk, Some("k1"), &claims(60))).unwrap();
    assert_eq!(g.user, "alice");
    assert_eq!(g.scopes.tags(), ["management"]);
    let p = g.scopes.permission("/");
    assert!(p.allows(Access::Read, "q-1"));
    assert!(
        !p.allows(Access::Write, "q-1"),
        "other.* scopes are not ours"
    );
    assert!(g.time_left().as_secs() > 50);
}

#[test]
fn refusals_say_why() {
    let (sk, pk) = es256();
    let (other_sk, _) = es256();
    let v = verifier(vec![("k1", pk)], OAuth2Settings::default());
    let good = claims(60);
    assert_eq!(v.verify("not a token"), Err(TokenError::NotAJwt));
    assert_eq!(
        v.verify(&sign(&other_sk, Some("k1"), &good)),
        Err(TokenError::Signature)
    );
    assert_eq!(
        v.verify(&sign(&sk, Some("k2"), &good)),
        Err(TokenError::UnknownKey("k2".into()))
    );
    assert_eq!(v.verify(&sign(&sk, None, &good)), Err(TokenError::NoKeyId));
    assert_eq!(
        v.verify(&sign(&sk, Some("k1"), &claims(-5))),
        Err(TokenError::Expired)
    );
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    assert_eq!(
        v.verify(&sign(&sk, Some("k1"), &wrong_aud)),
        Err(TokenError::Audience("rabbitmq".into()))
    );
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        v.verify(&sign(&sk, Some("k1"), &no_aud)),
        Err(TokenError::MissingClaim("aud".into()))
    );
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        v.verify(&sign(&sk, Some("k1"), &no_exp)),
        Err(TokenError::MissingClaim("exp".into()))
    );
    let mut fractional = good.clone();
    fractional["exp"] = json!(now_secs() as f64 + 60.5);
    assert!(v.verify(&sign(&sk, Some("k1"), &fractional)).is_ok());
    let mut early = good.clone();
    early["nbf"] = json!(now_secs() + 30);
    assert_eq!(
        v.verify(&sign(&sk, Some("k1"), &early)),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn default_key_additional_scopes_and_username_claims() {
    let (sk, pk) = es256();
    let settings = OAuth2Settings {
        default_key: Some("k1".into()),
        additional_scopes_key: Some("realm_access.roles extra".into()),
        preferred_username_claims: vec!["user_name".into(), "sub".into()],
        ..Default::default()
    };
    let v = verifier(vec![("k1", pk)], settings);
    let mut c = claims(60);
    c["user_name"] = json!("bob");
    c["realm_access"] = json!({"roles": ["rabbitmq.configure:v/*"]});
    c["extra"] = json!({"rabbitmq": "write:v/x tag:administrator"});
    let g = v.verify(&sign(&sk, None, &c)).unwrap();
    assert_eq!(g.user, "bob");
    let p = g.scopes.permission("v");
    assert!(p.allows(Access::Configure, "anything"));
    assert!(p.allows(Access::Write, "x"));
    assert!(g.scopes.tags().contains(&"administrator".to_string()));
}
