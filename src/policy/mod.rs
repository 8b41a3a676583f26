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

pub mod scope;

use serde::{Deserialize, Serialize};

/// What can be done to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const ALL: Actions = Actions(0b111);

    fn bit(a: Action) -> u8 {
        match a {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }

    pub fn with(self, a: Action) -> Actions {
        Actions(self.0 | Self::bit(a))
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & Self::bit(a) != 0
    }

    pub fn union(self, o: Actions) -> Actions {
        Actions(self.0 | o.0)
    }

    pub fn intersect(self, o: Actions) -> Actions {
        Actions(self.0 & o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        [Action::Pull, Action::Push, Action::Delete]
            .into_iter()
            .filter(move |a| self.contains(*a))
    }

    pub fn of(actions: &[Action]) -> Actions {
        actions.iter().fold(Actions::NONE, |s, a| s.with(*a))
    }
}

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
pub const RESOURCES: [&str; 5] = ["repositories", "robots", "credentials", "roles", "bindings"];

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
            if ![
                "*", "pull", "push", "delete", "list", "get", "create", "update",
            ]
            .contains(&v.as_str())
            {
                return Err(format!("unknown verb {v:?}"));
            }
        }
        if self.resources.is_empty() || self.verbs.is_empty() {
            return Err("a rule needs at least one resource and one verb".into());
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
}

/// What the metadata says of a repository's namespace.
#[derive(Debug, Clone)]
pub struct NamespaceInfo {
    pub org: String,
    pub public: bool,
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

/// Glob match on repository names: `*` matches within one path segment, `**` across segments.
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn go(g: &[u8], n: &[u8]) -> bool {
        match g.first() {
            None => n.is_empty(),
            Some(b'*') if g.get(1) == Some(&b'*') => (0..=n.len()).any(|i| go(&g[2..], &n[i..])),
            Some(b'*') => {
                let seg_end = n.iter().position(|&c| c == b'/').unwrap_or(n.len());
                (0..=seg_end).any(|i| go(&g[1..], &n[i..]))
            }
            Some(&c) => n.first() == Some(&c) && go(&g[1..], &n[1..]),
        }
    }
    go(glob.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let public = NamespaceInfo {
            org: "acme".into(),
            public: true,
        };
        let other = NamespaceInfo {
            org: "globex".into(),
            public: false,
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
}
