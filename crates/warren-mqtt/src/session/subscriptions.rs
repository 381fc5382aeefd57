//! The delivery options of a session's subscriptions: the QoS each was
//! granted, its v5 Subscription Identifier and retain-as-published. A
//! delivery takes the options of the subscriptions its topic matches
//! (MQTT 5.0 section 3.3.4): the highest granted QoS among them, all their
//! identifiers. A topic starting with `$` is delivered only when such a
//! subscription matches by MQTT's rules, since AMQP's `#` would match it
//! (MQTT-4.7.2-1).
//!
//! The options also ride on the subscription's binding as arguments, so a
//! persistent session finds them again after a reconnect or a restart.

use warren_core::{Table, Value};

use crate::codec::Filter;
use crate::mapping::{GRANTED_QOS, RETAIN_AS_PUBLISHED, SUBSCRIPTION_ID};
use crate::topic::{key_to_filter, matches_key, shared_rest};

/// One granted subscription.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Sub {
    /// The filter as subscribed (with `$share/group/` for a shared one).
    pub(super) filter: Box<str>,
    /// The granted QoS.
    pub(super) qos: u8,
    /// The v5 Subscription Identifier.
    pub(super) id: Option<u32>,
    /// Keep RETAIN=1 on forwarded retained publishes.
    pub(super) retain_as_published: bool,
    /// The group's queue, for a shared subscription.
    pub(super) shared_queue: Option<Box<str>>,
}

impl Sub {
    /// The subscription a SUBSCRIBE entry was granted as.
    pub(super) fn granted(f: &Filter, qos: u8, id: Option<u32>) -> Sub {
        Sub {
            filter: f.filter.as_str().into(),
            qos,
            id,
            retain_as_published: f.retain_as_published && shared_rest(&f.filter).is_none(),
            shared_queue: None,
        }
    }

    /// The subscription a session queue's binding stands for.
    pub(super) fn from_binding(key: &str, args: &Table) -> Sub {
        let int = |name| args.get(name).and_then(|v: &Value| v.as_i64());
        Sub {
            filter: key_to_filter(key).into(),
            // Bindings made before the QoS was kept on them meant QoS 1.
            qos: int(GRANTED_QOS).map_or(1, |v| v.clamp(0, 2) as u8),
            id: int(SUBSCRIPTION_ID).and_then(|v| u32::try_from(v).ok()),
            retain_as_published: matches!(args.get(RETAIN_AS_PUBLISHED), Some(Value::Bool(true))),
            shared_queue: None,
        }
    }

    /// The binding arguments that keep this subscription's options.
    pub(super) fn binding_args(&self) -> Table {
        let mut args = Table::default();
        args.insert(GRANTED_QOS, Value::U8(self.qos));
        if let Some(id) = self.id {
            args.insert(SUBSCRIPTION_ID, Value::I64(i64::from(id)));
        }
        if self.retain_as_published {
            args.insert(RETAIN_AS_PUBLISHED, Value::Bool(true));
        }
        args
    }

    /// The filter a topic is matched against (a shared one without its
    /// `$share/group/` prefix).
    fn topic_filter(&self) -> &str {
        shared_rest(&self.filter)
            .and_then(|r| r.split_once('/'))
            .map_or(&self.filter, |(_, f)| f)
    }
}

/// What one delivery is sent with.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Options {
    /// The highest QoS granted to a matching subscription.
    pub(super) qos: u8,
    /// A matching subscription has retain-as-published.
    pub(super) retain_as_published: bool,
}

/// A session's subscriptions.
#[derive(Debug, Default)]
pub(super) struct Subs {
    list: Vec<Sub>,
    /// No identifiers, no retain-as-published and one granted QoS: then
    /// every delivery of the session queue is sent alike, without matching.
    uniform: Option<u8>,
}

impl Subs {
    /// Add `sub`, replacing a subscription to the same filter.
    pub(super) fn set(&mut self, sub: Sub) {
        self.list.retain(|s| s.filter != sub.filter);
        self.list.push(sub);
        self.summarise();
    }

    /// Forget the subscription to `filter`; true if there was one.
    pub(super) fn remove(&mut self, filter: &str) -> bool {
        let before = self.list.len();
        self.list.retain(|s| &*s.filter != filter);
        self.summarise();
        self.list.len() != before
    }

    /// A subscription to exactly `filter` exists.
    pub(super) fn contains(&self, filter: &str) -> bool {
        self.list.iter().any(|s| &*s.filter == filter)
    }

    /// The subscription to exactly `filter`.
    pub(super) fn get(&self, filter: &str) -> Option<&Sub> {
        self.list.iter().find(|s| &*s.filter == filter)
    }

    fn summarise(&mut self) {
        let ordinary = || {
            self.list
                .iter()
                .filter(|s| shared_rest(&s.filter).is_none())
        };
        let first = ordinary().next().map(|s| s.qos);
        let alike =
            ordinary().all(|s| Some(s.qos) == first && s.id.is_none() && !s.retain_as_published);
        self.uniform = if alike { first } else { None };
    }

    /// The options of a delivery from the session queue of a message with
    /// routing key `key`, and the identifiers of the matching subscriptions
    /// added to `ids`; None when no subscription matches by MQTT's rules
    /// (a `$` topic under a wildcard, or a subscription since removed).
    pub(super) fn for_session(&self, key: &str, ids: &mut Vec<u32>) -> Option<Options> {
        if let Some(qos) = self.uniform.filter(|_| !key.starts_with('$')) {
            return Some(Options {
                qos,
                retain_as_published: false,
            });
        }
        let ordinary = self
            .list
            .iter()
            .filter(|s| shared_rest(&s.filter).is_none());
        self.fold(ordinary, key, ids)
    }

    /// The options of a delivery from the shared group queue `queue`.
    pub(super) fn for_shared_queue(
        &self,
        queue: &str,
        key: &str,
        ids: &mut Vec<u32>,
    ) -> Option<Options> {
        let subs = self
            .list
            .iter()
            .filter(|s| s.shared_queue.as_deref() == Some(queue));
        self.fold(subs, key, ids)
    }

    fn fold<'a>(
        &self,
        subs: impl Iterator<Item = &'a Sub>,
        key: &str,
        ids: &mut Vec<u32>,
    ) -> Option<Options> {
        let mut found: Option<Options> = None;
        for s in subs.filter(|s| matches_key(s.topic_filter(), key)) {
            let o = found.get_or_insert_with(Options::default);
            o.qos = o.qos.max(s.qos);
            o.retain_as_published |= s.retain_as_published;
            ids.extend(s.id);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{filter_to_key, swap};

    fn sub(filter: &str, qos: u8, id: Option<u32>) -> Sub {
        Sub {
            filter: filter.into(),
            qos,
            id,
            retain_as_published: false,
            shared_queue: None,
        }
    }

    #[test]
    fn uniform_subscriptions_skip_matching_but_not_for_dollar_topics() {
        let mut s = Subs::default();
        s.set(sub("#", 1, None));
        let mut ids = Vec::new();
        assert_eq!(s.for_session(&swap("a/b"), &mut ids).unwrap().qos, 1);
        assert_eq!(s.for_session(&swap("$SYS/x"), &mut ids), None);
        s.set(sub("$SYS/#", 0, None));
        assert_eq!(s.for_session(&swap("$SYS/x"), &mut ids).unwrap().qos, 0);
        assert!(ids.is_empty());
    }

    #[test]
    fn a_delivery_takes_the_highest_qos_and_every_identifier_of_its_matches() {
        let mut s = Subs::default();
        s.set(sub("a/#", 0, Some(1)));
        s.set(sub("a/+", 2, Some(7)));
        s.set(sub("b/#", 1, None));
        let mut ids = Vec::new();
        let o = s.for_session(&swap("a/x"), &mut ids).unwrap();
        assert_eq!((o.qos, ids.as_slice()), (2, &[1, 7][..]));
        ids.clear();
        let o = s.for_session(&swap("a/x/y"), &mut ids).unwrap();
        assert_eq!((o.qos, ids.as_slice()), (0, &[1][..]));
        ids.clear();
        assert_eq!(s.for_session(&swap("b/z"), &mut ids).unwrap().qos, 1);
        assert!(ids.is_empty());
        assert!(s.remove("b/#") && !s.remove("b/#"));
        assert_eq!(s.for_session(&swap("b/z"), &mut ids), None);
    }

    #[test]
    fn shared_subscriptions_match_their_own_filter_only() {
        let mut s = Subs::default();
        let mut shared = sub("$share/g/t/+", 1, Some(3));
        shared.shared_queue = Some("mqtt-shared-g-t/+".into());
        s.set(shared);
        s.set(sub("t/#", 0, None));
        let mut ids = Vec::new();
        let o = s
            .for_shared_queue("mqtt-shared-g-t/+", &swap("t/1"), &mut ids)
            .unwrap();
        assert_eq!((o.qos, ids.as_slice()), (1, &[3][..]));
        ids.clear();
        assert_eq!(s.for_session(&swap("t/1"), &mut ids).unwrap().qos, 0);
        assert!(ids.is_empty());
    }

    #[test]
    fn options_round_trip_through_binding_arguments() {
        let mut a = sub("sensors/+/temp", 2, Some(268_435_455));
        a.retain_as_published = true;
        let back = Sub::from_binding(&filter_to_key(&a.filter), &a.binding_args());
        assert_eq!(back, a);
        let old = Sub::from_binding("x.y", &Table::default());
        assert_eq!((old.qos, old.id), (1, None));
    }
}
