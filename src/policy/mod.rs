//! "May you": pure access decisions, no I/O.
//!
//! A caller's `Grants` (loaded once per authentication by `auth`) and what the metadata says
//! about a repository's namespace go in; the set of actions allowed on that repository comes
//! out. Roles are lists of rules `{resources, verbs, names}` shaped like Kubernetes RBAC;
//! bindings give a role to a subject within a scope (an organization, a namespace, or a
//! repository glob).
//!
//! Invariant: a binding made in organization A never grants anything in a namespace that A does
//! not own.

mod action;
pub mod scope;

pub use action::{Action, Actions};

use serde::{Deserialize, Serialize};

/// One rule of a role, as in Kubernetes RBAC: which verbs on which resources, optionally only
/// for names matching one of `names` (globs; empty means all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// The resource kinds rules speak of.
pub const RESOURCES: [&str; 6] = [
    "repositories",
    "robots",
    "credentials",
    "roles",
    "bindings",
    "audit",
];

impl Rule {
    fn allows(&self, resource: &str, verb: &str, name: &str) -> bool {
        let any = |v: &[String], x: &str| v.iter().any(|s| s == "*" || s == x);
        any(&self.resources, resource)
            && any(&self.verbs, verb)
            && (self.names.is_empty() || self.names.iter().any(|g| glob_match(g, name)))
    }

    /// Checks that every resource and verb is one berth knows.
    pub fn validate(&self) -> Result<(), String> {
        for r in &self.resources {
            if r != "*" && !RESOURCES.contains(&r.as_str()) {
                return Err(format!(
                    "unknown resource {r:?} (known: {})",
                    RESOURCES.join(", ")
                ));
            }
        }
        for v in &self.verbs {
            if v != "*" && !VERBS.contains(&v.as_str()) {
                return Err(format!("unknown verb {v:?}"));
            }
        }
        if self.resources.is_empty() || self.verbs.is_empty() {
            return Err("a rule needs at least one resource and one verb".into());
        }
        // A verb must mean something on one of the rule's resources: `create` on repositories
        // or `pull` on robots would be stored and never grant anything.
        let takes = |r: &str, v: &str| {
            if r == "repositories" {
                REPOSITORY_VERBS.contains(&v)
            } else {
                !["pull", "push"].contains(&v)
            }
        };
        for v in self.verbs.iter().filter(|v| *v != "*") {
            let meaningful = self.resources.iter().any(|r| r == "*" || takes(r, v));
            if !meaningful {
                return Err(format!(
                    "verb {v:?} means nothing on {} (repositories take {}; robots, credentials, roles and bindings take list, get, create, update, delete)",
                    self.resources.join(", "),
                    REPOSITORY_VERBS.join(", ")
                ));
            }
        }
        for n in &self.names {
            check_glob(n)?;
        }
        Ok(())
    }
}

/// The built-in roles: Reader (pull, list), Writer (Reader + push), Manager (Writer + delete +
/// manage robots, credentials, roles and bindings in scope).
pub fn builtin_role(name: &str) -> Option<Vec<Rule>> {
    let rule = |resources: &[&str], verbs: &[&str]| Rule {
        resources: resources.iter().map(|s| (*s).to_owned()).collect(),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        names: Vec::new(),
    };
    match name {
        "Reader" => Some(vec![rule(&["repositories"], &["pull", "list"])]),
        "Writer" => Some(vec![rule(&["repositories"], &["pull", "list", "push"])]),
        "Manager" => Some(vec![
            rule(&["repositories"], &["pull", "list", "push", "delete"]),
            rule(&["robots", "credentials", "roles", "bindings"], &["*"]),
        ]),
        _ => None,
    }
}

pub const BUILTIN_ROLES: [&str; 3] = ["Reader", "Writer", "Manager"];

/// Where a binding applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingScope {
    /// Every namespace the organization owns.
    Org,
    Namespace(String),
    /// Repositories whose full name matches the glob.
    Repository(String),
}

/// A role given to the caller in one organization.
#[derive(Debug, Clone)]
pub struct Grant {
    pub org: String,
    pub rules: Vec<Rule>,
    pub scope: BindingScope,
}

/// Everything about the caller that decisions need.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub admin: bool,
    /// Organizations the caller owns (owners are Managers of all the org's namespaces).
    pub owner_of: Vec<String>,
    /// Organizations the caller belongs to as `member` (owners are listed in `owner_of`).
    pub member_of: Vec<String>,
    pub grants: Vec<Grant>,
    /// A registry token: read-only or read-write access to the namespaces of one organization.
    pub registry_token: Option<(String, bool)>,
    /// The revocation key of the subject's policy epoch (`pol:<kind>:<id>:<epoch>`): registry
    /// tokens issued under these grants name it, and a change that takes access away from the
    /// subject revokes it.
    pub epoch_key: Option<String>,
}

/// What the metadata says of a repository's namespace.
#[derive(Debug, Clone)]
pub struct NamespaceInfo {
    pub org: String,
    pub public: bool,
    /// The revocation key of this generation of the namespace (`store::namespace_key`).
    pub key: String,
    /// The revocation key of its current public period (`store::public_key`).
    pub public_key: String,
}

/// The revocation keys a bearer token that grants `allowed` in `repo` must name: the
/// namespace's generation always, and the public period's when the token's pull comes only
/// from publicness, so that turning the namespace private ends it (anonymous callers and
/// other organizations' principals).
pub fn token_keys(g: &Grants, repo: &str, ns: &NamespaceInfo, allowed: Actions) -> Vec<String> {
    let mut keys = vec![ns.key.clone()];
    if ns.public && allowed.contains(Action::Pull) {
        let private = NamespaceInfo {
            public: false,
            ..ns.clone()
        };
        if !repository_actions(g, repo, Some(&private)).contains(Action::Pull) {
            keys.push(ns.public_key.clone());
        }
    }
    keys
}

/// What organization `org` gives the holder of `g`, and nothing else: no server-admin bit, no
/// other organization's grants. The access review answers with this for a caller who is not a
/// server admin, so it cannot tell which users are admins or what they hold elsewhere.
pub fn within_org(g: &Grants, org: &str) -> Grants {
    Grants {
        admin: false,
        owner_of: g.owner_of.iter().filter(|o| *o == org).cloned().collect(),
        member_of: g.member_of.iter().filter(|o| *o == org).cloned().collect(),
        grants: g
            .grants
            .iter()
            .filter(|gr| gr.org == org)
            .cloned()
            .collect(),
        registry_token: g.registry_token.clone().filter(|(o, _)| o == org),
        epoch_key: None,
    }
}

/// Whether `g` sees all of organization `org` (its namespaces, their sizes, its members): a
/// server admin, an owner or member, a registry token of the org, or a binding for the whole
/// org. A subject bound only to some namespaces or repositories does not.
pub fn sees_whole_org(g: &Grants, org: &str) -> bool {
    g.admin
        || g.owner_of.iter().any(|o| o == org)
        || g.member_of.iter().any(|o| o == org)
        || g.registry_token.as_ref().is_some_and(|(o, _)| o == org)
        || g.grants
            .iter()
            .any(|gr| gr.org == org && gr.scope == BindingScope::Org)
}

/// Whether `g` may see namespace `ns` of `org` listed: the whole org, or a grant scoped to that
/// namespace or to repositories in it.
pub fn sees_namespace(g: &Grants, org: &str, ns: &str) -> bool {
    sees_whole_org(g, org)
        || g.grants.iter().any(|gr| {
            gr.org == org
                && match &gr.scope {
                    BindingScope::Org => true,
                    BindingScope::Namespace(n) => n == ns,
                    BindingScope::Repository(glob) => namespace_of(glob) == ns,
                }
        })
}

/// The namespace of a repository: its first path segment.
pub fn namespace_of(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

/// The actions `g` may take on `repo`, whose namespace is described by `ns` (`None`: no such
/// namespace).
pub fn repository_actions(g: &Grants, repo: &str, ns: Option<&NamespaceInfo>) -> Actions {
    if g.admin {
        return Actions::ALL;
    }
    let Some(ns) = ns else { return Actions::NONE };
    let mut allowed = if ns.public {
        Actions::NONE.with(Action::Pull)
    } else {
        Actions::NONE
    };
    if g.owner_of.contains(&ns.org) {
        return Actions::ALL;
    }
    if let Some((org, readwrite)) = &g.registry_token
        && *org == ns.org
    {
        allowed = allowed.with(Action::Pull);
        if *readwrite {
            allowed = allowed.with(Action::Push);
        }
    }
    let namespace = namespace_of(repo);
    for grant in g.grants.iter().filter(|gr| gr.org == ns.org) {
        let in_scope = match &grant.scope {
            BindingScope::Org => true,
            BindingScope::Namespace(n) => n == namespace,
            BindingScope::Repository(glob) => glob_match(glob, repo),
        };
        if !in_scope {
            continue;
        }
        for a in [Action::Pull, Action::Push, Action::Delete] {
            if grant
                .rules
                .iter()
                .any(|r| r.allows("repositories", a.as_str(), repo))
            {
                allowed = allowed.with(a);
            }
        }
    }
    allowed
}

/// The actions `g` has on every repository of `org` (owners and admins: all; otherwise what
/// org-wide bindings without name restrictions give). Registry tokens are org-wide, so their
/// creator must hold what they grant this way.
pub fn org_wide_actions(g: &Grants, org: &str) -> Actions {
    if g.admin || g.owner_of.iter().any(|o| o == org) {
        return Actions::ALL;
    }
    let mut allowed = Actions::NONE;
    for grant in g
        .grants
        .iter()
        .filter(|gr| gr.org == org && gr.scope == BindingScope::Org)
    {
        for a in [Action::Pull, Action::Push, Action::Delete] {
            if grant
                .rules
                .iter()
                .any(|r| r.names.is_empty() && r.allows("repositories", a.as_str(), ""))
            {
                allowed = allowed.with(a);
            }
        }
    }
    allowed
}

/// Whether `g` may do `verb` on `resource` (robots, credentials, roles, bindings) in `org`.
pub fn may_manage(g: &Grants, org: &str, resource: &str, verb: &str, name: &str) -> bool {
    g.admin
        || g.owner_of.iter().any(|o| o == org)
        || g.grants.iter().any(|gr| {
            gr.org == org
                && gr.scope == BindingScope::Org
                && gr.rules.iter().any(|r| r.allows(resource, verb, name))
        })
}

/// The longest glob a role or binding may hold, and the most wildcards in one.
pub const MAX_GLOB_LEN: usize = 256;
pub const MAX_GLOB_WILDCARDS: usize = 16;

/// Checks that a glob stays within the bounds matching relies on.
pub fn check_glob(glob: &str) -> Result<(), String> {
    if glob.is_empty() || glob.len() > MAX_GLOB_LEN {
        return Err(format!(
            "pattern {glob:?} must have 1 to {MAX_GLOB_LEN} characters"
        ));
    }
    let stars = tokens(glob)
        .iter()
        .filter(|t| !matches!(t, Tok::Lit(_)))
        .count();
    if stars > MAX_GLOB_WILDCARDS {
        return Err(format!(
            "pattern {glob:?} has more than {MAX_GLOB_WILDCARDS} wildcards"
        ));
    }
    Ok(())
}

/// One element of a glob: a literal byte, `*` (within a path segment) or `**` (across segments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    Star,
    DStar,
}

fn tokens(glob: &str) -> Vec<Tok> {
    let b = glob.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'*' {
            let mut j = i;
            while j < b.len() && b[j] == b'*' {
                j += 1;
            }
            // Any run of two or more stars is `**`; consecutive wildcards collapse to one.
            let t = if j - i >= 2 { Tok::DStar } else { Tok::Star };
            match out.last_mut() {
                Some(last @ Tok::Star) if t == Tok::DStar => *last = Tok::DStar,
                Some(Tok::Star | Tok::DStar) => {}
                _ => out.push(t),
            }
            i = j;
        } else {
            out.push(Tok::Lit(b[i]));
            i += 1;
        }
    }
    out
}

/// Runs the glob `p` over `input` as a set of reachable pattern positions (a Thompson-style
/// simulation): time O(|p| × |input|), memory O(|p|), whatever the pattern. `step` says whether
/// pattern token `t` consumes input symbol `x`, and whether it stays on a wildcard after doing so.
fn simulate<X: Copy>(p: &[Tok], input: &[X], step: impl Fn(Tok, X) -> (bool, bool)) -> bool {
    let close = |v: &mut [bool]| {
        for j in 0..p.len() {
            if v[j] && matches!(p[j], Tok::Star | Tok::DStar) {
                v[j + 1] = true;
            }
        }
    };
    let mut cur = vec![false; p.len() + 1];
    cur[0] = true;
    close(&mut cur);
    for &x in input {
        let mut next = vec![false; p.len() + 1];
        let mut any = false;
        for j in 0..p.len() {
            if !cur[j] {
                continue;
            }
            let (consumes, stays) = step(p[j], x);
            if consumes {
                any = true;
                if stays {
                    next[j] = true;
                } else {
                    next[j + 1] = true;
                }
            }
        }
        if !any {
            return false;
        }
        close(&mut next);
        cur = next;
    }
    cur[p.len()]
}

/// Glob match on names: `*` matches within one path segment, `**` across segments. Linear in
/// name × pattern (no backtracking), so no pattern can make a request slow.
pub fn glob_match(glob: &str, name: &str) -> bool {
    simulate(&tokens(glob), name.as_bytes(), |t, c| match t {
        Tok::Lit(x) => (x == c, false),
        Tok::Star => (c != b'/', true),
        Tok::DStar => (true, true),
    })
}

/// Whether every name `inner` matches is also matched by `outer` (conservative: `false` when in
/// doubt). Wildcards of `inner` are matched as symbols: its `*` only by `*` or `**`, its `**` only
/// by `**`.
pub fn glob_covers(outer: &str, inner: &str) -> bool {
    simulate(&tokens(outer), &tokens(inner), |t, x| match (t, x) {
        (Tok::Lit(a), Tok::Lit(b)) => (a == b, false),
        (Tok::Lit(_), _) => (false, false),
        (Tok::Star, Tok::Lit(c)) => (c != b'/', true),
        (Tok::Star, Tok::Star) => (true, true),
        (Tok::Star, Tok::DStar) => (false, false),
        (Tok::DStar, _) => (true, true),
    })
}

/// Whether a binding scope `outer` includes every repository of `inner`.
fn scope_covers(outer: &BindingScope, inner: &BindingScope) -> bool {
    match (outer, inner) {
        (BindingScope::Org, _) => true,
        (_, BindingScope::Org) => false,
        (BindingScope::Namespace(a), BindingScope::Namespace(b)) => a == b,
        (BindingScope::Namespace(a), BindingScope::Repository(g)) => {
            namespace_of(g) == a && !namespace_of(g).contains('*')
        }
        (BindingScope::Repository(o), BindingScope::Namespace(b)) => {
            glob_covers(o, b) && glob_covers(o, &format!("{b}/**"))
        }
        (BindingScope::Repository(o), BindingScope::Repository(i)) => glob_covers(o, i),
    }
}

/// The verbs that mean something on repositories.
pub const REPOSITORY_VERBS: [&str; 4] = ["pull", "list", "push", "delete"];

/// The verbs rules speak of.
pub const VERBS: [&str; 7] = ["pull", "push", "delete", "list", "get", "create", "update"];

fn expand<'a>(v: &'a [String], all: &'a [&'a str]) -> Vec<&'a str> {
    if v.iter().any(|s| s == "*") {
        all.to_vec()
    } else {
        v.iter().map(String::as_str).collect()
    }
}

/// Whether the caller's rule `held` includes the names of `wanted` (empty names: every name).
fn names_cover(held: &Rule, wanted: &Rule) -> bool {
    if held.names.is_empty() {
        return true;
    }
    !wanted.names.is_empty()
        && wanted
            .names
            .iter()
            .all(|w| held.names.iter().any(|h| glob_covers(h, w)))
}

/// **No escalation** (Kubernetes RBAC's rule): whether `g` already holds everything that `rules`
/// would grant within `scope` of `org`. Every route that creates or changes access (bindings,
/// roles, credentials, robots' tokens) asks this besides `may_manage`. Conservative: a grant the
/// caller holds only through a combination of several bindings is refused.
pub fn may_grant(g: &Grants, org: &str, scope: &BindingScope, rules: &[Rule]) -> bool {
    if g.admin || g.owner_of.iter().any(|o| o == org) {
        return true;
    }
    rules.iter().all(|wanted| {
        expand(&wanted.resources, &RESOURCES).iter().all(|res| {
            expand(&wanted.verbs, &VERBS).iter().all(|verb| {
                g.grants.iter().any(|held| {
                    held.org == org
                        && scope_covers(&held.scope, scope)
                        && held.rules.iter().any(|r| {
                            r.resources.iter().any(|x| x == "*" || x == res)
                                && r.verbs.iter().any(|x| x == "*" || x == verb)
                                && names_cover(r, wanted)
                        })
                })
            })
        })
    })
}

/// Whether `g` holds everything `other` holds in `org` (what a credential of `other` would give):
/// used before minting a credential for a robot.
pub fn may_grant_all(g: &Grants, org: &str, other: &Grants) -> bool {
    if g.admin || g.owner_of.iter().any(|o| o == org) {
        return true;
    }
    !other.admin
        && other.owner_of.is_empty()
        && other.registry_token.is_none()
        && other
            .grants
            .iter()
            .all(|gr| may_grant(g, &gr.org, &gr.scope, &gr.rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_and_owners_hold_everything_org_wide_and_nobody_else_does() {
        let admin = Grants {
            admin: true,
            ..Grants::default()
        };
        assert_eq!(org_wide_actions(&admin, "acme"), Actions::ALL);
        let owner = Grants {
            owner_of: vec!["acme".into()],
            ..Grants::default()
        };
        assert_eq!(org_wide_actions(&owner, "acme"), Actions::ALL);
        assert_eq!(org_wide_actions(&owner, "other"), Actions::NONE);
        assert_eq!(org_wide_actions(&Grants::default(), "acme"), Actions::NONE);
        let reader = Grants {
            grants: vec![grant("acme", "Reader", BindingScope::Org)],
            ..Grants::default()
        };
        assert_eq!(
            org_wide_actions(&reader, "acme"),
            Actions::of(&[Action::Pull])
        );
        let scoped = Grants {
            grants: vec![grant(
                "acme",
                "Writer",
                BindingScope::Namespace("acme".into()),
            )],
            ..Grants::default()
        };
        assert_eq!(org_wide_actions(&scoped, "acme"), Actions::NONE);
    }

    #[test]
    fn a_scope_covers_exactly_what_lies_inside_it() {
        use BindingScope::{Namespace as Ns, Org, Repository as Repo};
        let ns = |n: &str| Ns(n.into());
        let repo = |g: &str| Repo(g.into());
        assert!(scope_covers(&Org, &ns("acme")));
        assert!(!scope_covers(&ns("acme"), &Org));
        assert!(scope_covers(&ns("acme"), &ns("acme")));
        assert!(!scope_covers(&ns("acme"), &ns("other")));
        assert!(scope_covers(&ns("acme"), &repo("acme/app-*")));
        assert!(!scope_covers(&ns("acme"), &repo("other/app")));
        // A glob whose namespace is itself a pattern is never inside one namespace.
        assert!(!scope_covers(&ns("ac*"), &repo("ac*/app")));
        assert!(scope_covers(&repo("**"), &ns("acme")));
        assert!(!scope_covers(&repo("acme/app-*"), &ns("acme")));
        assert!(scope_covers(&repo("acme/**"), &repo("acme/team/*")));
        assert!(!scope_covers(&repo("acme/team/*"), &repo("acme/**")));
    }

    #[test]
    fn globs_are_bounded_at_exactly_their_limits() {
        assert!(check_glob(&"a".repeat(MAX_GLOB_LEN)).is_ok());
        assert!(check_glob(&"a".repeat(MAX_GLOB_LEN + 1)).is_err());
        assert!(check_glob("").is_err());
        // Literals are not wildcards, however many.
        assert!(check_glob(&"ab/".repeat(40)).is_ok());
        let stars = |n: usize| vec!["a*"; n].join("/");
        assert!(check_glob(&stars(MAX_GLOB_WILDCARDS)).is_ok());
        assert!(check_glob(&stars(MAX_GLOB_WILDCARDS + 1)).is_err());
    }

    #[test]
    fn a_rule_speaks_only_of_verbs_that_mean_something_on_its_resources() {
        let rule = |resources: &[&str], verbs: &[&str]| Rule {
            resources: resources.iter().map(|s| (*s).to_owned()).collect(),
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            names: Vec::new(),
        };
        for (resources, verbs) in [
            (
                &["repositories"][..],
                &["pull", "list", "push", "delete"][..],
            ),
            (
                &["robots", "bindings"],
                &["get", "list", "create", "update", "delete"],
            ),
            (&["repositories", "robots"], &["pull", "create"]),
            (&["*"], &["create"]),
            (&["robots"], &["*"]),
        ] {
            assert_eq!(
                rule(resources, verbs).validate(),
                Ok(()),
                "{resources:?} {verbs:?}"
            );
        }
        for (resources, verbs, bad) in [
            (&["repositories"][..], &["pull", "create"][..], "create"),
            (&["repositories"], &["get"], "get"),
            (&["robots"], &["pull"], "pull"),
            (&["credentials", "roles"], &["push"], "push"),
        ] {
            let e = rule(resources, verbs).validate().unwrap_err();
            assert!(e.contains(&format!("verb {bad:?} means nothing")), "{e}");
        }
    }

    fn grant(org: &str, role: &str, scope: BindingScope) -> Grant {
        Grant {
            org: org.into(),
            rules: builtin_role(role).unwrap(),
            scope,
        }
    }

    fn show(a: Actions) -> String {
        let v: Vec<_> = a.iter().map(Action::as_str).collect();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(",")
        }
    }

    #[test]
    fn decision_table() {
        let acme = NamespaceInfo {
            org: "acme".into(),
            public: false,
            key: String::new(),
            public_key: String::new(),
        };
        let public = NamespaceInfo {
            org: "acme".into(),
            public: true,
            key: String::new(),
            public_key: String::new(),
        };
        let other = NamespaceInfo {
            org: "globex".into(),
            public: false,
            key: String::new(),
            public_key: String::new(),
        };
        let reader_ns = Grants {
            grants: vec![grant(
                "acme",
                "Reader",
                BindingScope::Namespace("acme".into()),
            )],
            ..Grants::default()
        };
        let writer_org = Grants {
            grants: vec![grant("acme", "Writer", BindingScope::Org)],
            ..Grants::default()
        };
        let manager_glob = Grants {
            grants: vec![grant(
                "acme",
                "Manager",
                BindingScope::Repository("acme/team/*".into()),
            )],
            ..Grants::default()
        };
        // A binding of org acme naming globex's namespace grants nothing there.
        let sneaky = Grants {
            grants: vec![grant(
                "acme",
                "Manager",
                BindingScope::Namespace("globex".into()),
            )],
            ..Grants::default()
        };
        let owner = Grants {
            owner_of: vec!["acme".into()],
            ..Grants::default()
        };
        let admin = Grants {
            admin: true,
            ..Grants::default()
        };
        let token_ro = Grants {
            registry_token: Some(("acme".into(), false)),
            ..Grants::default()
        };
        let token_rw = Grants {
            registry_token: Some(("acme".into(), true)),
            ..Grants::default()
        };
        let custom = Grants {
            grants: vec![Grant {
                org: "acme".into(),
                rules: vec![Rule {
                    resources: vec!["repositories".into()],
                    verbs: vec!["pull".into()],
                    names: vec!["acme/pub-*".into()],
                }],
                scope: BindingScope::Org,
            }],
            ..Grants::default()
        };
        let none = Grants::default();
        let cases: &[(&str, &Grants, &str, Option<&NamespaceInfo>, &str)] = &[
            ("anonymous private", &none, "acme/app", Some(&acme), "-"),
            ("anonymous public", &none, "acme/app", Some(&public), "pull"),
            ("reader ns", &reader_ns, "acme/app", Some(&acme), "pull"),
            (
                "reader other org",
                &reader_ns,
                "globex/app",
                Some(&other),
                "-",
            ),
            (
                "writer org",
                &writer_org,
                "acme/deep/app",
                Some(&acme),
                "pull,push",
            ),
            (
                "manager glob hit",
                &manager_glob,
                "acme/team/app",
                Some(&acme),
                "pull,push,delete",
            ),
            (
                "manager glob deeper",
                &manager_glob,
                "acme/team/x/app",
                Some(&acme),
                "-",
            ),
            (
                "manager glob miss",
                &manager_glob,
                "acme/app",
                Some(&acme),
                "-",
            ),
            ("sneaky", &sneaky, "globex/app", Some(&other), "-"),
            ("owner", &owner, "acme/app", Some(&acme), "pull,push,delete"),
            ("owner elsewhere", &owner, "globex/app", Some(&other), "-"),
            ("admin", &admin, "anything/app", None, "pull,push,delete"),
            ("no namespace", &owner, "nowhere/app", None, "-"),
            ("token ro", &token_ro, "acme/app", Some(&acme), "pull"),
            ("token rw", &token_rw, "acme/app", Some(&acme), "pull,push"),
            (
                "token other org",
                &token_rw,
                "globex/app",
                Some(&other),
                "-",
            ),
            ("custom hit", &custom, "acme/pub-x", Some(&acme), "pull"),
            ("custom miss", &custom, "acme/private", Some(&acme), "-"),
        ];
        for (what, g, repo, ns, want) in cases {
            assert_eq!(show(repository_actions(g, repo, *ns)), *want, "{what}");
        }
    }

    #[test]
    fn management_and_globs() {
        let m = Grants {
            grants: vec![grant("acme", "Manager", BindingScope::Org)],
            ..Grants::default()
        };
        assert!(may_manage(&m, "acme", "robots", "create", "ci"));
        assert!(!may_manage(&m, "globex", "robots", "create", "ci"));
        let w = Grants {
            grants: vec![grant("acme", "Writer", BindingScope::Org)],
            ..Grants::default()
        };
        assert!(!may_manage(&w, "acme", "robots", "create", "ci"));
        let reader_ns = Grants {
            grants: vec![grant(
                "acme",
                "Reader",
                BindingScope::Namespace("acme".into()),
            )],
            ..Grants::default()
        };
        assert_eq!(org_wide_actions(&reader_ns, "acme"), Actions::NONE);
        assert_eq!(
            org_wide_actions(&w, "acme"),
            Actions::of(&[Action::Pull, Action::Push])
        );
        assert_eq!(org_wide_actions(&w, "globex"), Actions::NONE);
        assert!(glob_match("acme/**", "acme/a/b/c"));
        assert!(glob_match("acme/*", "acme/a"));
        assert!(!glob_match("acme/*", "acme/a/b"));
        assert!(glob_match("acme/app", "acme/app"));
        assert!(!glob_match("acme/app", "acme/apps"));
    }

    #[test]
    fn globs_are_linear() {
        // `*a*a*…` against a long name without a match backtracks exponentially in a naive
        // matcher; here it is a few hundred thousand steps at most.
        let glob = format!("mo/{}", "*a".repeat(16));
        let name = format!("mo/{}b", "a".repeat(250));
        let t = std::time::Instant::now();
        for _ in 0..100 {
            assert!(!glob_match(&glob, &name));
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        assert!(glob_match(&glob, &format!("mo/{}", "a".repeat(250))));
        assert!(check_glob(&format!("mo/{}", "*a".repeat(17))).is_err());
        assert!(check_glob(&"a".repeat(257)).is_err());
        assert!(check_glob("acme/team-*").is_ok());
        for (g, n, want) in [
            ("acme/**", "acme/a/b", true),
            ("acme/**/x", "acme/a/b/x", true),
            ("acme/*/x", "acme/a/b/x", false),
            ("acme/*", "acme/", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY/c", false),
            ("***", "a/b", true),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(glob_match(g, n), want, "{g} ~ {n}");
        }
    }

    #[test]
    fn glob_cover_is_sound() {
        let globs = [
            "acme/*",
            "acme/**",
            "acme/team-*",
            "acme/team-a",
            "acme/t*",
            "acme/*a*",
            "acme/team-*/**",
            "acme/*/*",
            "acme/**/x",
            "**",
            "*",
            "acme/team-a*",
            "acme/te*-a",
        ];
        let names = [
            "acme/team-a",
            "acme/team-b",
            "acme/tx",
            "acme/a",
            "acme/team-a/x",
            "acme/b/x",
            "acme/x/y/x",
            "acme",
            "other/team-a",
            "acme/team-ab",
            "acme/te-a",
            "acme/",
        ];
        for o in globs {
            for i in globs {
                if glob_covers(o, i) {
                    for n in names {
                        assert!(!glob_match(i, n) || glob_match(o, n), "{o} ⊇ {i} but {n}");
                    }
                }
            }
            assert!(glob_covers(o, o), "{o}");
        }
        assert!(glob_covers("acme/**", "acme/team-*"));
        assert!(!glob_covers("acme/team-*", "acme/*"));
        assert!(!glob_covers("acme/*", "acme/**"));
    }

    /// A small deterministic generator, so that property tests need no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
            &v[usize::try_from(self.next() % v.len() as u64).unwrap()]
        }
        fn some<T: Clone>(&mut self, v: &[T], max: usize) -> Vec<T> {
            let n = usize::try_from(self.next() % (max as u64 + 1)).unwrap();
            (0..n).map(|_| self.pick(v).clone()).collect()
        }
    }

    const GLOBS: [&str; 8] = [
        "acme/*",
        "acme/**",
        "acme/team-*",
        "acme/team-a",
        "acme/t*",
        "acme/*a*",
        "team-*",
        "deployer",
    ];
    const REPOS: [&str; 7] = [
        "acme",
        "acme/app",
        "acme/team-a",
        "acme/team-b",
        "acme/team-a/x",
        "acme/tx",
        "acme/deployer",
    ];
    const OBJECTS: [&str; 5] = ["team-a", "team-b", "deployer", "x", "tmp"];

    fn random_rules(r: &mut Rng) -> Vec<Rule> {
        let n = 1 + usize::try_from(r.next() % 2).unwrap();
        (0..n)
            .map(|_| {
                let mut resources = r.some(
                    &[
                        "*",
                        "repositories",
                        "robots",
                        "credentials",
                        "roles",
                        "bindings",
                    ],
                    2,
                );
                let mut verbs = r.some(
                    &[
                        "*", "pull", "push", "delete", "list", "get", "create", "update",
                    ],
                    3,
                );
                if resources.is_empty() {
                    resources.push("repositories");
                }
                if verbs.is_empty() {
                    verbs.push("pull");
                }
                Rule {
                    resources: resources.into_iter().map(str::to_owned).collect(),
                    verbs: verbs.into_iter().map(str::to_owned).collect(),
                    names: r.some(&GLOBS, 2).into_iter().map(str::to_owned).collect(),
                }
            })
            .collect()
    }

    fn random_scope(r: &mut Rng) -> BindingScope {
        match r.next() % 4 {
            0 => BindingScope::Org,
            1 => BindingScope::Namespace("acme".into()),
            _ => BindingScope::Repository(
                (*r.pick(&["acme/*", "acme/**", "acme/team-*", "acme/team-a", "acme/t*"])).into(),
            ),
        }
    }

    /// Everything a set of grants allows, over a fixed universe of repositories and objects.
    fn effective(g: &Grants) -> std::collections::BTreeSet<String> {
        let ns = NamespaceInfo {
            org: "acme".into(),
            public: false,
            key: String::new(),
            public_key: String::new(),
        };
        let mut out = std::collections::BTreeSet::new();
        for repo in REPOS {
            for a in repository_actions(g, repo, Some(&ns)).iter() {
                out.insert(format!("repo {repo} {}", a.as_str()));
            }
        }
        for res in RESOURCES {
            for verb in VERBS {
                for name in OBJECTS {
                    if may_manage(g, "acme", res, verb, name) {
                        out.insert(format!("{res} {verb} {name}"));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn may_grant_never_grants_more_than_held() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let caller = Grants {
                grants: (0..1 + r.next() % 3)
                    .map(|_| Grant {
                        org: "acme".into(),
                        rules: random_rules(&mut r),
                        scope: random_scope(&mut r),
                    })
                    .collect(),
                ..Grants::default()
            };
            let (scope, rules) = (random_scope(&mut r), random_rules(&mut r));
            if may_grant(&caller, "acme", &scope, &rules) {
                accepted += 1;
                let new = Grants {
                    grants: vec![Grant {
                        org: "acme".into(),
                        rules: rules.clone(),
                        scope: scope.clone(),
                    }],
                    ..Grants::default()
                };
                let (held, given) = (effective(&caller), effective(&new));
                assert!(
                    given.is_subset(&held),
                    "{caller:?} granted {scope:?} {rules:?}: {:?}",
                    given.difference(&held)
                );
            }
        }
        assert!(
            accepted > 1000,
            "the generator should exercise accepted grants ({accepted})"
        );
    }

    /// A sequence of binding and role changes, each made by a random subject and applied only when
    /// `may_manage` and `may_grant` allow it, never raises anyone above what somebody held at
    /// the start.
    #[test]
    fn no_sequence_of_management_calls_escalates() {
        type Binding = (usize, String, BindingScope);
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..300 {
            let mut roles: Vec<(String, Vec<Rule>)> = (0..3)
                .map(|i| (format!("r{i}"), random_rules(&mut r)))
                .collect();
            roles.push(("Manager".into(), builtin_role("Manager").unwrap()));
            let mut bindings: Vec<Binding> = (0..4)
                .map(|s| (s, r.pick(&roles).0.clone(), random_scope(&mut r)))
                .collect();
            let grants_of =
                |s: usize, roles: &[(String, Vec<Rule>)], bindings: &[Binding]| Grants {
                    grants: bindings
                        .iter()
                        .filter(|b| b.0 == s)
                        .map(|b| Grant {
                            org: "acme".into(),
                            rules: roles.iter().find(|x| x.0 == b.1).unwrap().1.clone(),
                            scope: b.2.clone(),
                        })
                        .collect(),
                    ..Grants::default()
                };
            let ceiling: std::collections::BTreeSet<String> = (0..4)
                .flat_map(|s| effective(&grants_of(s, &roles, &bindings)))
                .collect();
            for _ in 0..30 {
                let actor = usize::try_from(r.next() % 4).unwrap();
                let g = grants_of(actor, &roles, &bindings);
                if r.next().is_multiple_of(3) {
                    let i = usize::try_from(r.next() % 3).unwrap();
                    let rules = random_rules(&mut r);
                    if may_manage(&g, "acme", "roles", "update", &roles[i].0)
                        && may_grant(&g, "acme", &BindingScope::Org, &rules)
                    {
                        roles[i].1 = rules;
                    }
                } else {
                    let subject = usize::try_from(r.next() % 4).unwrap();
                    let role = r.pick(&roles).clone();
                    let scope = random_scope(&mut r);
                    if may_manage(&g, "acme", "bindings", "update", "team-a")
                        && may_grant(&g, "acme", &scope, &role.1)
                    {
                        bindings.push((subject, role.0, scope));
                    }
                }
                for s in 0..4 {
                    let now = effective(&grants_of(s, &roles, &bindings));
                    assert!(
                        now.is_subset(&ceiling),
                        "subject {s} gained {:?}",
                        now.difference(&ceiling)
                    );
                }
            }
        }
    }
}
