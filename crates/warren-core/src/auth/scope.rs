//! OAuth 2 scopes to permissions, as RabbitMQ's `rabbit_oauth2_scope`: a
//! scope `read:VHOST/NAME`, `write:VHOST/NAME` or `configure:VHOST/NAME`
//! (the resource server prefix already removed) grants that right on the
//! resources called NAME in the vhosts called VHOST, both wildcard patterns
//! (`*` any run of characters, the rest percent-decoded, so `%2F` is the
//! vhost `/`). A third segment (a topic routing-key pattern) is accepted and,
//! as for RabbitMQ's resource checks, does not narrow the grant. `tag:NAME`
//! gives the user tag NAME. Anything else is ignored. As RabbitMQ,
//! `{vhost}` in a scope stands for the vhost being checked and `{CLAIM}`
//! for the token's string claim CLAIM (the name itself when there is none).

use crate::auth::{Access, Permission};

/// One granted right: `access` on names matching `name` in vhosts
/// matching `vhost` (both wildcard patterns, already decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Grant {
    access: Access,
    vhost: Vec<String>,
    name: Vec<String>,
}

/// The rights and tags a token's scopes give.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    grants: Vec<Grant>,
    /// Permission scopes naming `{vhost}`: parsed per vhost checked.
    templates: Vec<String>,
    tags: Vec<String>,
}

impl Scopes {
    /// Read scopes that have lost their resource-server prefix already
    /// (and had their claim variables expanded, see [`expand`]).
    pub fn parse<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Scopes {
        let mut out = Scopes::default();
        for s in scopes {
            if let Some(tag) = s.strip_prefix("tag:") {
                if !tag.is_empty() && !out.tags.iter().any(|t| t == tag) {
                    out.tags.push(tag.to_string());
                }
            } else if s.contains(VHOST_VAR) {
                out.templates.push(s.to_string());
            } else if let Some(g) = grant(s) {
                out.grants.push(g);
            }
        }
        out
    }

    /// The grants that apply when `vhost` is checked: the fixed ones and
    /// the `{vhost}` ones with it filled in.
    fn grants_for(&self, vhost: &str) -> Vec<Grant> {
        let mut all = self.grants.clone();
        all.extend(
            self.templates
                .iter()
                .filter_map(|t| grant(&t.replace(VHOST_VAR, vhost))),
        );
        all
    }

    /// The user tags (`administrator`, `management`, ...).
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// May the token enter `vhost` at all? (Any grant whose vhost pattern
    /// matches, as RabbitMQ's `vhost_access`.)
    pub fn vhost_access(&self, vhost: &str) -> bool {
        self.grants_for(vhost)
            .iter()
            .any(|g| matches(&g.vhost, vhost))
    }

    /// The three expressions the grants make in `vhost`: each right is an
    /// anchored alternation of its name patterns (empty: nothing).
    pub fn permission(&self, vhost: &str) -> Permission {
        let grants = self.grants_for(vhost);
        let expr = |access: Access| {
            let alts: Vec<String> = grants
                .iter()
                .filter(|g| g.access == access && matches(&g.vhost, vhost))
                .map(|g| to_regex(&g.name))
                .collect();
            if alts.is_empty() {
                String::new()
            } else {
                format!("^(?:{})$", alts.join("|"))
            }
        };
        let (c, w, r) = (
            expr(Access::Configure),
            expr(Access::Write),
            expr(Access::Read),
        );
        // Every piece is escaped, so the expressions always compile.
        Permission::new(&c, &w, &r).unwrap_or_else(|_| Permission::none())
    }
}

/// The variable a scope may use for the vhost being checked.
const VHOST_VAR: &str = "{vhost}";

/// Expand `{CLAIM}` variables of a scope with `claim(CLAIM)` (RabbitMQ's
/// `parse_scope`): a claim that is not a string leaves its name; `{vhost}`
/// is kept for the check; a `{` without `}` ends the scope there.
pub fn expand<'a>(scope: &str, claim: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(scope.len());
    let mut rest = scope;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            return out;
        };
        let name = &rest[open + 1..open + close];
        match name {
            "vhost" => out.push_str(VHOST_VAR),
            _ => out.push_str(claim(name).unwrap_or(name)),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// `read:V/N`, `write:V/N[/K]`, `configure:V/N` as a grant.
fn grant(scope: &str) -> Option<Grant> {
    let (kind, pattern) = scope.split_once(':')?;
    let access = match kind {
        "read" => Access::Read,
        "write" => Access::Write,
        "configure" => Access::Configure,
        _ => return None,
    };
    let parts: Vec<&str> = pattern.split('/').collect();
    let (vhost, name) = match parts.as_slice() {
        [v, n] | [v, n, _] => (*v, *n),
        _ => return None,
    };
    Some(Grant {
        access,
        vhost: wildcard(vhost)?,
        name: wildcard(name)?,
    })
}

/// A wildcard pattern as its literal pieces between `*`s, each
/// percent-decoded (`+` is a space, as cow_qs:urldecode); None when a
/// piece is not valid percent-encoding.
fn wildcard(pattern: &str) -> Option<Vec<String>> {
    pattern.split('*').map(percent_decode).collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Does `subject` match the pieces (a `*` between each two)?
fn matches(pieces: &[String], subject: &str) -> bool {
    let (first, rest) = match pieces.split_first() {
        Some(p) => p,
        None => return subject.is_empty(),
    };
    let Some(mut tail) = subject.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return tail.is_empty();
    };
    for piece in middle {
        match tail.find(piece.as_str()) {
            Some(at) => tail = &tail[at + piece.len()..],
            None => return false,
        }
    }
    tail.ends_with(last.as_str())
}

/// The pieces as an (unanchored) regular expression.
fn to_regex(pieces: &[String]) -> String {
    pieces
        .iter()
        .map(|p| regex::escape(p))
        .collect::<Vec<_>>()
        .join(".*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_globs() {
        let w = |p: &str| wildcard(p).unwrap();
        assert!(matches(&w("*"), ""));
        assert!(matches(&w("*"), "anything"));
        assert!(matches(&w("q-*"), "q-1"));
        assert!(!matches(&w("q-*"), "xq-1"));
        assert!(matches(&w("*ab"), "abab"));
        assert!(matches(&w("a*b*c"), "a-b-b-c"));
        assert!(!matches(&w("a*b*c"), "a-c-b"));
        assert!(matches(&w("%2F"), "/"));
        assert!(!matches(&w("%2F"), "x"));
        assert!(matches(&w("exact"), "exact"));
        assert!(!matches(&w("exact"), "exactly"));
        assert_eq!(wildcard("%zz"), None);
    }

    #[test]
    fn scopes_become_permissions() {
        let s = Scopes::parse([
            "read:%2F/q-*",
            "write:%2F/amq.default",
            "configure:other/*",
            "write:*/x/rk.*",
            "tag:administrator",
            "tag:administrator",
            "unknown:%2F/q",
            "read:no-slash",
        ]);
        assert_eq!(s.tags(), ["administrator"]);
        assert!(s.vhost_access("/"));
        assert!(s.vhost_access("other"));
        let p = s.permission("/");
        assert!(p.allows(Access::Read, "q-1"));
        assert!(!p.allows(Access::Read, "xq-1"), "anchored");
        assert!(p.allows(Access::Write, "amq.default"));
        assert!(p.allows(Access::Write, "x"));
        assert!(!p.allows(Access::Configure, "q-1"));
        let p = s.permission("other");
        assert!(p.allows(Access::Configure, "anything"));
        assert!(!p.allows(Access::Read, "q-1"));
        // A regex character in a name pattern is literal.
        let s = Scopes::parse(["read:*/a.b"]);
        assert!(!s.permission("v").allows(Access::Read, "axb"));
        assert!(!Scopes::parse(["tag:management"]).vhost_access("/"));
    }

    #[test]
    fn variables_expand_as_rabbitmq() {
        let claim = |n: &str| (n == "client_id").then_some("app-7");
        assert_eq!(
            expand("read:{vhost}/q-{client_id}-{missing}", claim),
            "read:{vhost}/q-app-7-missing"
        );
        assert_eq!(expand("read:*/q-{broken", claim), "read:*/q-");
        let s = Scopes::parse(["read:{vhost}/q-app-7", "configure:fixed/*"]);
        assert!(s.vhost_access("any-vhost"));
        let p = s.permission("team");
        assert!(p.allows(Access::Read, "q-app-7"));
        assert!(!p.allows(Access::Configure, "x"));
        assert!(s.permission("fixed").allows(Access::Configure, "x"));
    }
}
