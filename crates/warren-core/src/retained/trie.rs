//! A trie by topic level: the retained store's index. A walk for a filter
//! visits only the branches the filter can match, so its cost follows the
//! matches, not the number of topics held.
//!
//! Levels are the `.`-separated words of a routing key (an MQTT topic with
//! `/` and `.` swapped, see [`super::key_of`]). In a filter, the word `+`
//! matches one level and a last word `#` the rest, the parent included
//! (MQTT 4.7.1). A filter starting with `+` or `#` does not match topics
//! whose first level starts with `$` (MQTT-4.7.2-1).
//!
//! Walks go in pre-order with children in byte order, and can resume after
//! a given topic: a long match (`#` over a million topics) is taken in
//! chunks without holding the lock in between.

use std::collections::BTreeMap;
use std::ops::Bound;

/// The filter word that matches one level.
pub const ONE: &str = "+";
/// The filter word that matches the remaining levels.
pub const REST: &str = "#";
/// Topics whose first level starts with this are hidden from wildcards.
const SYSTEM: char = '$';

/// One topic level and what hangs below it. The value is boxed: nodes sit
/// inline in their parent's map, whose leaves are then a few times smaller.
struct Node<V> {
    value: Option<Box<V>>,
    children: BTreeMap<Box<str>, Node<V>>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            value: None,
            children: BTreeMap::new(),
        }
    }
}

/// Values by topic.
pub struct Trie<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for Trie<V> {
    fn default() -> Self {
        Trie {
            root: Node::default(),
            len: 0,
        }
    }
}

/// Where a walk goes on after a value: `true` continues.
pub type Go = bool;

impl<V> Trie<V> {
    /// Topics held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no topic is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keep `v` for `topic`; returns the value it replaces.
    pub fn insert(&mut self, topic: &str, v: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('.') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        let old = node.value.replace(Box::new(v));
        if old.is_none() {
            self.len += 1;
        }
        old.map(|b| *b)
    }

    /// The value of `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('.') {
            node = node.children.get(level)?;
        }
        node.value.as_deref()
    }

    /// Take the value of `topic` out, pruning branches left empty.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let levels: Vec<&str> = topic.split('.').collect();
        let v = remove_at(&mut self.root, &levels)?;
        self.len -= 1;
        Some(v)
    }

    /// Take every value out.
    pub fn take_all(&mut self) -> Vec<V> {
        let mut out = Vec::with_capacity(self.len);
        drain(std::mem::take(&mut self.root), &mut out);
        self.len = 0;
        out
    }

    /// Visit the values matching `filter` in order, after the topic `after`
    /// if given, until `f` returns false. `system` lets wildcards match
    /// `$` topics too (for listings, not for subscriptions). Returns false
    /// when `f` stopped the walk.
    pub fn walk<'a>(
        &'a self,
        filter: &str,
        after: Option<&str>,
        system: bool,
        f: &mut impl FnMut(&'a V) -> Go,
    ) -> Go {
        let filter: Vec<&str> = filter.split('.').collect();
        let after: Option<Vec<&str>> = after.map(|a| a.split('.').collect());
        let w = Walk { system, root: true };
        w.node(&self.root, &filter, after.as_deref(), f)
    }
}

/// The fixed settings of one walk.
#[derive(Clone, Copy)]
struct Walk {
    system: bool,
    /// At the root: the `$` rule applies to its children.
    root: bool,
}

impl Walk {
    /// Visit `node` (reached by the levels before `filter`) and below.
    /// `after`: None means no constraint; Some(rest) means the walk resumes
    /// after the topic whose levels below this node are `rest` (empty: this
    /// node itself), so this node's value was visited before.
    fn node<'a, V>(
        self,
        node: &'a Node<V>,
        filter: &[&str],
        after: Option<&[&str]>,
        f: &mut impl FnMut(&'a V) -> Go,
    ) -> Go {
        let Some((&first, rest)) = filter.split_first() else {
            return visit(node, after, f);
        };
        let wild = first == ONE || first == REST;
        let hide = self.root && wild && !self.system;
        let below = Walk {
            system: self.system,
            root: false,
        };
        if first == REST {
            // `#` also matches the parent level.
            if !self.root && !visit(node, after, f) {
                return false;
            }
            return below.children(node, after, hide, f, |child, a, f| {
                below.node(child, filter, a, f)
            });
        }
        if first == ONE {
            return below.children(node, after, hide, f, |child, a, f| {
                below.node(child, rest, a, f)
            });
        }
        let Some(child) = node.children.get(first) else {
            return true;
        };
        let a = match after {
            None => None,
            Some([]) => None,
            Some([a0, more @ ..]) => match first.cmp(a0) {
                std::cmp::Ordering::Less => return true,
                std::cmp::Ordering::Equal => Some(more),
                std::cmp::Ordering::Greater => None,
            },
        };
        below.node(child, rest, a, f)
    }

    /// Call `each` on the children of `node` from the resume point on,
    /// skipping `$` levels when `hide`.
    fn children<'a, V, F: FnMut(&'a V) -> Go>(
        self,
        node: &'a Node<V>,
        after: Option<&[&str]>,
        hide: bool,
        f: &mut F,
        mut each: impl FnMut(&'a Node<V>, Option<&[&str]>, &mut F) -> Go,
    ) -> Go {
        let (range, resume) = match after {
            Some([a0, more @ ..]) => (
                node.children
                    .range::<str, _>((Bound::Included(*a0), Bound::Unbounded)),
                Some((*a0, more)),
            ),
            _ => (node.children.range::<str, _>(..), None),
        };
        for (level, child) in range {
            if hide && level.starts_with(SYSTEM) {
                continue;
            }
            let a = match resume {
                Some((a0, more)) if &**level == a0 => Some(more),
                _ => None,
            };
            if !each(child, a, f) {
                return false;
            }
        }
        true
    }
}

/// Visit the value of `node` unless the walk resumes after it.
fn visit<'a, V>(node: &'a Node<V>, after: Option<&[&str]>, f: &mut impl FnMut(&'a V) -> Go) -> Go {
    match (&node.value, after) {
        (Some(v), None) => f(&**v),
        _ => true,
    }
}

fn remove_at<V>(node: &mut Node<V>, levels: &[&str]) -> Option<V> {
    let Some((first, rest)) = levels.split_first() else {
        return node.value.take().map(|b| *b);
    };
    let child = node.children.get_mut(*first)?;
    let v = remove_at(child, rest)?;
    if child.value.is_none() && child.children.is_empty() {
        node.children.remove(*first);
    }
    Some(v)
}

fn drain<V>(node: Node<V>, out: &mut Vec<V>) {
    out.extend(node.value.map(|b| *b));
    for (_, child) in node.children {
        drain(child, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(topics: &[&str]) -> Trie<String> {
        let mut t = Trie::default();
        for topic in topics {
            t.insert(topic, topic.to_string());
        }
        t
    }

    fn matching(t: &Trie<String>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        t.walk(filter, None, false, &mut |v| {
            out.push(v.clone());
            true
        });
        out
    }

    const TOPICS: &[&str] = &[
        "a", "a.b", "a.b.c", "a.c", "b", "b.b", "$SYS.x", "$SYS", ".a", "a.",
    ];

    #[test]
    fn exact_and_one_level() {
        let t = trie(TOPICS);
        assert_eq!(matching(&t, "a.b"), ["a.b"]);
        assert_eq!(matching(&t, "a.x"), Vec::<String>::new());
        assert_eq!(matching(&t, "a.+"), ["a.", "a.b", "a.c"]);
        assert_eq!(matching(&t, "+.b"), ["a.b", "b.b"]);
        assert_eq!(matching(&t, "+"), ["a", "b"]);
        assert_eq!(matching(&t, "+.+.c"), ["a.b.c"]);
        // An empty first level is an ordinary level.
        assert_eq!(matching(&t, "+.a"), [".a"]);
    }

    #[test]
    fn rest_matches_the_parent_and_everything_below() {
        let t = trie(TOPICS);
        assert_eq!(matching(&t, "a.#"), ["a", "a.", "a.b", "a.b.c", "a.c"]);
        assert_eq!(
            matching(&t, "#"),
            [".a", "a", "a.", "a.b", "a.b.c", "a.c", "b", "b.b"]
        );
        assert_eq!(matching(&t, "+.b.#"), ["a.b", "a.b.c", "b.b"]);
    }

    #[test]
    fn system_topics_hidden_from_leading_wildcards() {
        let t = trie(TOPICS);
        assert!(!matching(&t, "#").iter().any(|m| m.starts_with('$')));
        assert!(matching(&t, "+.x").is_empty());
        assert_eq!(matching(&t, "$SYS.#"), ["$SYS", "$SYS.x"]);
        assert_eq!(matching(&t, "$SYS.+"), ["$SYS.x"]);
        let mut all = 0;
        t.walk("#", None, true, &mut |_| {
            all += 1;
            true
        });
        assert_eq!(all, TOPICS.len());
    }

    #[test]
    fn walk_resumes_after_a_topic_in_chunks() {
        let t = trie(TOPICS);
        for filter in ["#", "a.#", "+.b", "+.+", "a.b", "$SYS.#"] {
            let whole = matching(&t, filter);
            for chunk in 1..4 {
                let mut got: Vec<String> = Vec::new();
                let mut after: Option<String> = None;
                for _ in 0..20 {
                    let mut n = 0;
                    let done = t.walk(filter, after.as_deref(), false, &mut |v| {
                        got.push(v.clone());
                        n += 1;
                        n < chunk
                    });
                    after = got.last().cloned();
                    if done {
                        break;
                    }
                }
                assert_eq!(got, whole, "filter {filter} chunk {chunk}");
            }
        }
    }

    #[test]
    fn resume_point_may_be_gone_or_unmatched() {
        let mut t = trie(TOPICS);
        t.remove("a.b");
        let mut got = Vec::new();
        t.walk("a.#", Some("a.b"), false, &mut |v: &String| {
            got.push(v.clone());
            true
        });
        assert_eq!(got, ["a.b.c", "a.c"]);
        got.clear();
        t.walk("+.b", Some("a.zz"), false, &mut |v| {
            got.push(v.clone());
            true
        });
        assert_eq!(got, ["b.b"]);
    }

    #[test]
    fn insert_replace_remove_prune() {
        let mut t = trie(&["x.y.z"]);
        assert_eq!(t.insert("x.y.z", "new".into()).as_deref(), Some("x.y.z"));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("x.y.z").map(String::as_str), Some("new"));
        assert!(t.get("x.y").is_none());
        assert!(t.remove("x.y").is_none());
        assert_eq!(t.remove("x.y.z").as_deref(), Some("new"));
        assert!(t.is_empty() && t.root.children.is_empty());
        let mut t = trie(TOPICS);
        assert_eq!(t.take_all().len(), TOPICS.len());
        assert!(t.is_empty() && matching(&t, "#").is_empty());
    }

    #[test]
    fn walk_cost_follows_the_matches() {
        let mut t = Trie::default();
        for i in 0..20_000u32 {
            t.insert(&format!("s.{}.{i}", i / 100), i);
        }
        let mut seen = 0;
        t.walk("s.7.777", None, false, &mut |v| {
            assert_eq!(*v, 777);
            seen += 1;
            true
        });
        assert_eq!(seen, 1);
        let mut n = 0;
        t.walk("s.3.+", None, false, &mut |_| {
            n += 1;
            true
        });
        assert_eq!(n, 100);
    }
}
