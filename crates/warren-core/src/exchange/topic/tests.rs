use super::*;

fn router(bindings: &[&str]) -> TopicRouter {
    let mut r = TopicRouter::default();
    for (i, b) in bindings.iter().enumerate() {
        r.bind(i as BindingId, b, &Table::default()).unwrap();
    }
    r
}

fn route(r: &TopicRouter, key: &str) -> Vec<usize> {
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

fn routes(bindings: &[&str], key: &str) -> Vec<usize> {
    route(&router(bindings), key)
}

/// Number of nodes in the trie, for the bound on matching work.
fn nodes(n: &Node) -> usize {
    1 + n.children.values().map(nodes).sum::<usize>()
        + n.star.as_deref().map_or(0, nodes)
        + n.hash.as_deref().map_or(0, nodes)
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
    r.bind(3, "a.*.#.x", &Table::default()).unwrap();
    r.unbind(3, "a.*.#.x", &Table::default());
    assert_eq!(route(&r, "a.b.c"), vec![1]);
    r.unbind(1, "a.*.#", &Table::default());
    r.unbind(2, "a.b", &Table::default());
    assert!(r.trie.is_empty());
    assert!(r.exact.is_empty());
}

#[test]
fn unbind_keeps_shared_prefixes() {
    let mut r = router(&["a.*.b", "a.*", "a.*.b.#"]);
    r.unbind(2, "a.*.b.#", &Table::default());
    assert_eq!(route(&r, "a.x.b"), vec![0]);
    assert_eq!(route(&r, "a.x"), vec![1]);
    r.unbind(0, "a.*.b", &Table::default());
    assert_eq!(route(&r, "a.x"), vec![1]);
    assert_eq!(route(&r, "a.x.b"), Vec::<usize>::new());
    r.unbind(1, "a.*", &Table::default());
    assert!(r.trie.is_empty());
}

/// Forty `#` words then `z`, against a 60-word key, used to take minutes.
#[test]
fn many_hashes_are_polynomial() {
    let mut binding = vec!["#"; 100].join(".");
    binding.push_str(".z");
    let r = router(&[
        &binding,
        "#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#",
    ]);
    let n = nodes(&r.trie);
    // A 255-byte key of 128 one-letter words.
    let key = vec!["y"; 127].join(".") + ".z";
    assert_eq!(key.len(), 255);
    let mut out = Vec::new();
    let expanded = trie_match(&r.trie, key.as_bytes(), &mut out);
    out.sort();
    assert_eq!(out, vec![0, 1]);
    assert!(expanded <= n * 129, "{expanded} states for {n} nodes");
    let key = vec!["y"; 128].join(".");
    let mut out = Vec::new();
    let expanded = trie_match(&r.trie, key.as_bytes(), &mut out);
    assert_eq!(out, vec![1]);
    assert!(expanded <= n * 129);
}

#[test]
fn alternating_wildcards_are_polynomial() {
    let binding = vec!["#.*"; 60].join(".");
    let r = router(&[&binding]);
    let n = nodes(&r.trie);
    let key = vec!["w"; 120].join(".");
    let mut out = Vec::new();
    let expanded = trie_match(&r.trie, key.as_bytes(), &mut out);
    assert_eq!(out, vec![0]);
    assert!(expanded <= n * 121);
    let key = vec!["w"; 59].join(".");
    let mut out = Vec::new();
    trie_match(&r.trie, key.as_bytes(), &mut out);
    assert!(out.is_empty());
}

#[test]
fn very_long_keys_do_not_overflow_the_stack() {
    // MQTT filters may be far longer than AMQP's 255-byte keys.
    let binding = vec!["*"; 30_000].join(".") + ".#";
    let mut r = router(&[&binding]);
    let key = vec!["k"; 30_001].join(".");
    assert_eq!(route(&r, &key), vec![0]);
    r.unbind(0, &binding, &Table::default());
    assert!(r.trie.is_empty());
}

/// A plain recursive matcher over words: the definition the trie must agree with.
fn reference(binding: &[&str], key: &[&str]) -> bool {
    match binding.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| reference(rest, &key[skip..])),
        Some((&"*", rest)) => !key.is_empty() && reference(rest, &key[1..]),
        Some((w, rest)) => key.first() == Some(w) && reference(rest, &key[1..]),
    }
}

fn split_words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// xorshift64*, so the property test needs no dependency and is repeatable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

fn random_key(rng: &mut Rng, alphabet: &[&str]) -> String {
    let len = rng.below(6);
    (0..len)
        .map(|_| alphabet[rng.below(alphabet.len() as u64)])
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn trie_agrees_with_reference_matcher() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let words = ["a", "b", "", "c"];
    let pattern_words = ["a", "b", "", "*", "#", "#", "*"];
    for round in 0..300 {
        let mut r = TopicRouter::default();
        let bindings: Vec<String> = (0..20)
            .map(|_| random_key(&mut rng, &pattern_words))
            .collect();
        for (i, b) in bindings.iter().enumerate() {
            r.bind(i as BindingId, b, &Table::default()).unwrap();
        }
        // Remove a few again, so pruning is exercised against the reference too.
        let mut live: Vec<bool> = vec![true; bindings.len()];
        for _ in 0..5 {
            let i = rng.below(bindings.len() as u64);
            if live[i] {
                r.unbind(i as BindingId, &bindings[i], &Table::default());
                live[i] = false;
            }
        }
        for _ in 0..30 {
            let key = random_key(&mut rng, &words);
            let kw = split_words(&key);
            let want: Vec<usize> = (0..bindings.len())
                .filter(|&i| live[i] && reference(&split_words(&bindings[i]), &kw))
                .collect();
            assert_eq!(
                route(&r, &key),
                want,
                "round {round} key {key:?} bindings {bindings:?}"
            );
        }
    }
}
