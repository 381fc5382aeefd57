//! Will messages: published when a connection ends abnormally, at once or
//! after the v5 will delay (bounded by the session expiry), unless the
//! client id reconnects within the delay.

use std::sync::Arc;
use std::time::Duration;

use warren_core::{RouteScratch, VHost};

use crate::codec::{Publish, Will};
use crate::mapping;
use crate::session::Shared;
use crate::takeover::Key;
use crate::topic::valid_topic;
use crate::Config;

/// What a will needs from the connection that ended.
pub struct Owner {
    /// The session's vhost.
    pub vhost: Arc<VHost>,
    /// The client id (for the log line).
    pub client_id: String,
    /// The session expiry (None: never).
    pub expiry: Option<Duration>,
    /// The takeover key and epoch of the connection.
    pub key: Key,
    /// See `key`.
    pub epoch: u64,
}

/// The connection of `owner` ended abnormally: publish its will now, or
/// start a timer for it. True when a timer was started; it forgets the
/// takeover entry itself when done.
pub fn on_abnormal_end(
    w: Box<Will>,
    owner: Owner,
    cfg: &Arc<Config>,
    shared: &Arc<Shared>,
) -> bool {
    // v5 will delay, bounded by the session's expiry; a reconnect of the
    // same client id within the delay cancels the will.
    let mut delay = Duration::from_secs(u64::from(w.props.session().will_delay.unwrap_or(0)));
    if let Some(e) = owner.expiry {
        delay = delay.min(e);
    }
    if delay.is_zero() {
        publish(&owner.vhost, cfg, &owner.client_id, &w);
        return false;
    }
    let (cfg, shared) = (cfg.clone(), shared.clone());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if shared.takeover.is_latest(&owner.key, owner.epoch) {
            publish(&owner.vhost, &cfg, &owner.client_id, &w);
        }
        shared.takeover.forget(&owner.key, owner.epoch);
    });
    true
}

/// Publish a will message (now, or from a will-delay timer).
fn publish(vhost: &VHost, cfg: &Config, client_id: &str, w: &Will) {
    let p = Publish {
        dup: false,
        qos: w.qos,
        retain: w.retain,
        topic: w.topic.clone(),
        pkid: 0,
        props: w.props.clone(),
        payload: w.payload.clone(),
    };
    if !valid_topic(&p.topic) {
        return;
    }
    // A will topic over 255 bytes was refused at CONNECT.
    let Ok(msg) = mapping::message(Arc::from(cfg.exchange.as_str()), &p, None) else {
        return;
    };
    if p.retain {
        vhost.retained.put(msg.clone());
    }
    let routed = vhost
        .exchange(&cfg.exchange)
        .and_then(|x| vhost.publish(&x, msg, &mut RouteScratch::default()));
    match routed {
        Ok(_) => tracing::info!(client_id, topic = %p.topic, "MQTT will published"),
        Err(e) => tracing::warn!(client_id, "MQTT will not published: {e}"),
    }
}
