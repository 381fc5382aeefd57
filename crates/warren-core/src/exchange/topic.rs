//! Topic routing as RabbitMQ defines it: keys are dot-separated words, `*`
//! matches exactly one word, `#` zero or more, and `#` may stand anywhere.
//! Keys without wildcards are answered from a hash map; the rest from a word
//! trie with dedicated `*` and `#` slots (the shape of nats-server's sublist).
//!
//! The trie is walked as a set of states, one word at a time, so each
//! (node, word position) pair is visited at most once: a binding of a hundred
//! `#` words costs (nodes) x (words), never the exponential walk of a
//! recursive matcher that tries every skip of every `#`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

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

#[derive(Default)]
struct Node {
    children: HashMap<Box<[u8]>, Node>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    ids: Vec<BindingId>,
    /// Reached through a `#` word: it swallows any number of words.
    swallows: bool,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.children.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }

    /// Iterative, so a binding of many words cannot exhaust the stack.
    fn insert(&mut self, words: &[&[u8]], id: BindingId) {
        let mut node = self;
        for w in words {
            node = match *w {
                b"*" => node.star.get_or_insert_with(Default::default),
                b"#" => node.hash.get_or_insert_with(|| {
                    let mut h = Box::<Node>::default();
                    h.swallows = true;
                    h
                }),
                w => node.children.entry(w.into()).or_default(),
            };
        }
        node.ids.push(id);
    }

    fn child(&self, w: &[u8]) -> Option<&Node> {
        match w {
            b"*" => self.star.as_deref(),
            b"#" => self.hash.as_deref(),
            w => self.children.get(w),
        }
    }

    fn child_mut(&mut self, w: &[u8]) -> Option<&mut Node> {
        match w {
            b"*" => self.star.as_deref_mut(),
            b"#" => self.hash.as_deref_mut(),
            w => self.children.get_mut(w),
        }
    }

    fn drop_child(&mut self, w: &[u8]) {
        match w {
            b"*" => self.star = None,
            b"#" => self.hash = None,
            w => {
                self.children.remove(w);
            }
        }
    }

    /// Number of children of any kind.
    fn fanout(&self) -> usize {
        self.children.len() + usize::from(self.star.is_some()) + usize::from(self.hash.is_some())
    }

    /// Remove `id` under `words` and prune the nodes left empty. Two
    /// iterative passes (find the highest prunable node, then cut there), so
    /// a long key cannot exhaust the stack.
    fn remove(&mut self, words: &[&[u8]], id: BindingId) {
        let mut path: Vec<&Node> = Vec::with_capacity(words.len() + 1);
        path.push(self);
        for w in words {
            match path[path.len() - 1].child(w) {
                Some(c) => path.push(c),
                None => return,
            }
        }
        let leaf = path[words.len()];
        let leaf_empties = leaf.fanout() == 0 && leaf.ids.iter().all(|b| *b == id);
        // The shallowest depth from which every node on the path is empty
        // after the removal; the root (depth 0) is never cut.
        let mut cut = None;
        if leaf_empties && !words.is_empty() {
            let mut d = words.len();
            while d > 1 && path[d - 1].ids.is_empty() && path[d - 1].fanout() == 1 {
                d -= 1;
            }
            cut = Some(d);
        }
        let stop = cut.map_or(words.len(), |d| d - 1);
        let mut node = self;
        for w in &words[..stop] {
            node = node.child_mut(w).expect("path was walked above");
        }
        match cut {
            Some(d) => node.drop_child(words[d - 1]),
            None => node.ids.retain(|b| *b != id),
        }
    }
}

/// Dropped iteratively: a trie as deep as a long MQTT filter would
/// otherwise overflow the stack in the recursive default drop.
impl Drop for Node {
    fn drop(&mut self) {
        let mut stack: Vec<Node> = Vec::new();
        take_children(self, &mut stack);
        while let Some(mut n) = stack.pop() {
            take_children(&mut n, &mut stack);
        }
    }
}

fn take_children(n: &mut Node, stack: &mut Vec<Node>) {
    stack.extend(n.children.drain().map(|(_, c)| c));
    stack.extend(n.star.take().map(|b| *b));
    stack.extend(n.hash.take().map(|b| *b));
}

/// `#` states below this many are de-duplicated by a linear scan; beyond
/// it a hash set takes over, so adding a state stays O(1).
const LINEAR_SET: usize = 16;

/// A set of trie states for one word position, reused across publishes.
///
/// Only `#` states need de-duplication: the trie is a tree, so a node other
/// than a `#` node is entered only from its one parent, which is in the set
/// at most once. A `#` node is also entered from itself (swallowing a word)
/// and from the zero-word closure, so those are checked.
struct StateSet {
    nodes: Vec<*const Node>,
    swallowing: Vec<*const Node>,
    /// Membership of `swallowing` once it outgrows [`LINEAR_SET`].
    seen: Option<HashSet<*const Node>>,
}

impl StateSet {
    const fn new() -> Self {
        StateSet {
            nodes: Vec::new(),
            swallowing: Vec::new(),
            seen: None,
        }
    }

    fn clear(&mut self) {
        self.nodes.clear();
        self.swallowing.clear();
        if let Some(seen) = &mut self.seen {
            seen.clear();
        }
    }

    fn insert(&mut self, n: &Node) {
        let p = n as *const Node;
        if n.swallows && !self.first_visit(p) {
            return;
        }
        self.nodes.push(p);
    }

    fn first_visit(&mut self, p: *const Node) -> bool {
        if self.swallowing.len() < LINEAR_SET {
            if self.swallowing.contains(&p) {
                return false;
            }
        } else {
            let seen = self.seen.get_or_insert_with(HashSet::new);
            if seen.is_empty() {
                seen.extend(self.swallowing.iter().copied());
            }
            if !seen.insert(p) {
                return false;
            }
        }
        self.swallowing.push(p);
        true
    }

    /// Add the `#` children of every state (`#` matching zero words),
    /// following chains of `#` to the end.
    fn close(&mut self) {
        let mut i = 0;
        while i < self.nodes.len() {
            // SAFETY: pointers come from `&Node`s borrowed from the trie for
            // the whole match, which holds `&self` of the router.
            let n = unsafe { &*self.nodes[i] };
            if let Some(h) = &n.hash {
                self.insert(h);
            }
            i += 1;
        }
    }
}

thread_local! {
    /// Two state sets (current and next word), so matching allocates
    /// nothing once a thread has routed a few keys.
    static SCRATCH: RefCell<(StateSet, StateSet)> =
        const { RefCell::new((StateSet::new(), StateSet::new())) };
}

/// Append the ids of every binding in `root` that matches `key`. Returns
/// how many states were expanded, which is at most (trie nodes) x (words + 1).
fn trie_match(root: &Node, key: &[u8], out: &mut Vec<BindingId>) -> usize {
    SCRATCH.with(|s| {
        let (cur, next) = &mut *s.borrow_mut();
        cur.clear();
        cur.insert(root);
        cur.close();
        let mut expanded = 0;
        // RabbitMQ treats the empty key as zero words.
        let words = (!key.is_empty()).then(|| key.split(|b| *b == b'.'));
        for w in words.into_iter().flatten() {
            next.clear();
            expanded += cur.nodes.len();
            for &p in &cur.nodes {
                // SAFETY: as in `StateSet::close`.
                let n = unsafe { &*p };
                if let Some(c) = n.children.get(w) {
                    next.insert(c);
                }
                if let Some(st) = &n.star {
                    next.insert(st);
                }
                // A `#` state swallows this word and stays where it is.
                if n.swallows {
                    next.insert(n);
                }
            }
            if next.nodes.is_empty() {
                return expanded;
            }
            next.close();
            std::mem::swap(cur, next);
        }
        for &p in &cur.nodes {
            // SAFETY: as in `StateSet::close`.
            out.extend_from_slice(unsafe { &(*p).ids });
        }
        expanded + cur.nodes.len()
    })
}

#[derive(Default)]
struct TopicRouter {
    exact: HashMap<Box<[u8]>, Vec<BindingId>>,
    trie: Node,
}

fn has_wildcard(key: &str) -> bool {
    key.split('.').any(|w| w == "*" || w == "#")
}

/// Words of a binding key; RabbitMQ treats the empty key as zero words.
/// Runs of `#` are one `#` (zero or more words twice is zero or more), so
/// `#.#.#` costs what `#` costs.
fn words(key: &str) -> Vec<&[u8]> {
    if key.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for w in key.as_bytes().split(|b| *b == b'.') {
        if w == b"#" && out.last() == Some(&&b"#"[..]) {
            continue;
        }
        out.push(w);
    }
    out
}

impl ExchangeRouter for TopicRouter {
    fn bind(&mut self, id: BindingId, key: &str, _args: &Table) -> Result<()> {
        if has_wildcard(key) {
            self.trie.insert(&words(key), id);
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
            self.trie.remove(&words(key), id);
        } else if let Some(v) = self.exact.get_mut(key.as_bytes()) {
            v.retain(|b| *b != id);
            if v.is_empty() {
                self.exact.remove(key.as_bytes());
            }
        }
    }

    fn route(&self, input: &RouteInput<'_>, out: &mut Vec<BindingId>) -> Result<()> {
        if let Some(v) = self.exact.get(input.routing_key) {
            out.extend_from_slice(v);
        }
        // Each binding lives in one trie node and each node is reached at
        // most once, so the trie reports every binding at most once.
        if !self.trie.is_empty() {
            trie_match(&self.trie, input.routing_key, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
