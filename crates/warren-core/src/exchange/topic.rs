//! Topic routing as RabbitMQ defines it: keys are dot-separated words, `*`
//! matches exactly one word, `#` zero or more, and `#` may stand anywhere.
//! Keys without wildcards are answered from a hash map; the rest from a word
//! trie with dedicated `*` and `#` slots (the shape of nats-server's sublist).

use std::collections::HashMap;

use super::{BindingId, ExchangeRouter, ExchangeType, RouteInput};
use crate::error::Result;
use crate::value::Table;

/// The `topic` type.
pub struct Topic;

impl ExchangeType for Topic {
    fn name(&self) -> &str {
        "topic"
    }
    fn routes_by_key_only(&self) -> bool {
        true
    }
    fn create(&self, _args: &Table) -> Result<Box<dyn ExchangeRouter>> {
        Ok(Box::new(TopicRouter::default()))
    }
}

/// Longest possible key is 255 bytes, so at most 256 words.
const MAX_WORDS: usize = 256;

#[derive(Default)]
struct Node {
    children: HashMap<Box<[u8]>, Node>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    ids: Vec<BindingId>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.children.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }

    fn insert(&mut self, words: &[&[u8]], id: BindingId) {
        let Some((first, rest)) = words.split_first() else {
            self.ids.push(id);
            return;
        };
        let child = match *first {
            b"*" => self.star.get_or_insert_with(Default::default),
            b"#" => self.hash.get_or_insert_with(Default::default),
            w => self.children.entry(w.into()).or_default(),
        };
        child.insert(rest, id);
    }

    /// Remove `id` under `words`; prunes nodes left empty.
    fn remove(&mut self, words: &[&[u8]], id: BindingId) {
        let Some((first, rest)) = words.split_first() else {
            self.ids.retain(|b| *b != id);
            return;
        };
        match *first {
            b"*" => prune(&mut self.star, rest, id),
            b"#" => prune(&mut self.hash, rest, id),
            w => {
                if let Some(c) = self.children.get_mut(w) {
                    c.remove(rest, id);
                    if c.is_empty() {
                        self.children.remove(w);
                    }
                }
            }
        }
    }

    fn matches(&self, words: &[&[u8]], out: &mut Vec<BindingId>) {
        if let Some(h) = &self.hash {
            // `#` swallows zero or more words.
            for skip in 0..=words.len() {
                h.matches(&words[skip..], out);
            }
        }
        let Some((first, rest)) = words.split_first() else {
            out.extend_from_slice(&self.ids);
            return;
        };
        if let Some(c) = self.children.get(*first) {
            c.matches(rest, out);
        }
        if let Some(s) = &self.star {
            s.matches(rest, out);
        }
    }
}

fn prune(slot: &mut Option<Box<Node>>, rest: &[&[u8]], id: BindingId) {
    if let Some(n) = slot {
        n.remove(rest, id);
        if n.is_empty() {
            *slot = None;
        }
    }
}

#[derive(Default)]
struct TopicRouter {
    exact: HashMap<Box<[u8]>, Vec<BindingId>>,
    trie: Node,
}

fn has_wildcard(key: &str) -> bool {
    key.split('.').any(|w| w == "*" || w == "#")
}

/// Split into words; RabbitMQ treats the empty key as zero words.
fn split<'a>(key: &'a [u8], words: &mut [&'a [u8]; MAX_WORDS]) -> usize {
    if key.is_empty() {
        return 0;
    }
    let mut n = 0;
    for w in key.split(|b| *b == b'.') {
        if n == MAX_WORDS {
            break;
        }
        words[n] = w;
        n += 1;
    }
    n
}

impl ExchangeRouter for TopicRouter {
    fn bind(&mut self, id: BindingId, key: &str, _args: &Table) -> Result<()> {
        if has_wildcard(key) {
            let mut words = [&b""[..]; MAX_WORDS];
            let n = split(key.as_bytes(), &mut words);
            self.trie.insert(&words[..n], id);
        } else {
            self.exact
                .entry(key.as_bytes().into())
                .or_default()
                .push(id);
        }
        Ok(())
    }

    fn unbind(&mut self, id: BindingId, key: &str, _args: &Table) {
        if has_wildcard(key) {
            let mut words = [&b""[..]; MAX_WORDS];
            let n = split(key.as_bytes(), &mut words);
            self.trie.remove(&words[..n], id);
        } else if let Some(v) = self.exact.get_mut(key.as_bytes()) {
            v.retain(|b| *b != id);
            if v.is_empty() {
                self.exact.remove(key.as_bytes());
            }
        }
    }

    fn route(&self, input: &RouteInput<'_>, out: &mut Vec<BindingId>) -> Result<()> {
        let start = out.len();
        if let Some(v) = self.exact.get(input.routing_key) {
            out.extend_from_slice(v);
        }
        if !self.trie.is_empty() {
            let mut words = [&b""[..]; MAX_WORDS];
            let n = split(input.routing_key, &mut words);
            self.trie.matches(&words[..n], out);
            // Several `#` paths can reach one binding; report it once.
            if out.len() - start > 1 {
                out[start..].sort_unstable();
                let mut w = start + 1;
                for r in start + 1..out.len() {
                    if out[r] != out[w - 1] {
                        out[w] = out[r];
                        w += 1;
                    }
                }
                out.truncate(w);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(bindings: &[&str], key: &str) -> Vec<usize> {
        let mut r = TopicRouter::default();
        for (i, b) in bindings.iter().enumerate() {
            r.bind(i as BindingId, b, &Table::default()).unwrap();
        }
        let mut out = Vec::new();
        let input = RouteInput {
            routing_key: key.as_bytes(),
            message: None,
        };
        r.route(&input, &mut out).unwrap();
        let mut v: Vec<usize> = out.into_iter().map(|x| x as usize).collect();
        v.sort();
        v
    }

    #[test]
    fn rabbitmq_topic_semantics() {
        let b = [
            "a.b.c", "a.*.c", "a.#", "#", "*.b.*", "a.#.c", "#.c", "*", "", "a..c", "a.*.#", "#.#",
        ];
        assert_eq!(routes(&b, "a.b.c"), vec![0, 1, 2, 3, 4, 5, 6, 10, 11]);
        assert_eq!(routes(&b, "a"), vec![2, 3, 7, 11]);
        assert_eq!(routes(&b, ""), vec![3, 8, 11]);
        assert_eq!(routes(&b, "a..c"), vec![1, 2, 3, 5, 6, 9, 10, 11]);
        assert_eq!(routes(&b, "c"), vec![3, 6, 7, 11]);
        assert_eq!(routes(&b, "x.b.y"), vec![3, 4, 11]);
        assert_eq!(routes(&b, "a.x.y.c"), vec![2, 3, 5, 6, 10, 11]);
    }

    #[test]
    fn unbind_prunes() {
        let mut r = TopicRouter::default();
        r.bind(1, "a.*.#", &Table::default()).unwrap();
        r.bind(2, "a.b", &Table::default()).unwrap();
        r.unbind(1, "a.*.#", &Table::default());
        r.unbind(2, "a.b", &Table::default());
        assert!(r.trie.is_empty());
        assert!(r.exact.is_empty());
    }
}
