//! Docker token scopes: `repository:<name>:<actions>` and `registry:catalog:*`.
//! See the Docker registry token specification, "Requesting a Token".

use super::action::{Action, Actions};
use crate::types::RepositoryName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repository {
        name: RepositoryName,
        actions: Actions,
    },
    Catalog,
}

impl Scope {
    /// Parses one scope. Unknown actions are dropped (asking for more than exists is not an
    /// error); a malformed scope is `None` and is ignored by the token service.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        match kind {
            "repository" => {
                let name: RepositoryName = name.parse().ok()?;
                let actions = actions
                    .split(',')
                    .filter_map(|a| if a == "*" { None } else { Action::parse(a) })
                    .fold(
                        if actions.split(',').any(|a| a == "*") {
                            Actions::ALL
                        } else {
                            Actions::NONE
                        },
                        Actions::with,
                    );
                Some(Scope::Repository { name, actions })
            }
            "registry" if name == "catalog" && actions.split(',').any(|a| a == "*") => {
                Some(Scope::Catalog)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let Some(Scope::Repository { name, actions }) =
            Scope::parse("repository:acme/app:pull,push,frobnicate")
        else {
            panic!()
        };
        assert_eq!(name.as_str(), "acme/app");
        assert_eq!(actions, Actions::of(&[Action::Pull, Action::Push]));
        assert!(matches!(
            Scope::parse("repository:acme/app:*"),
            Some(Scope::Repository {
                actions: Actions::ALL,
                ..
            })
        ));
        assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::Catalog));
        // Only the catalog, and only with `*`.
        assert_eq!(Scope::parse("registry:catalog:pull"), None);
        assert_eq!(Scope::parse("registry:other:*"), None);
        assert_eq!(
            Scope::parse("registry:catalog:pull,*"),
            Some(Scope::Catalog)
        );
        assert_eq!(Scope::parse("repository:Bad:pull"), None);
        assert_eq!(Scope::parse("nonsense"), None);
        // Registry hosts with ports in the name are not repository names.
        assert_eq!(Scope::parse("repository:host:5000/app:pull"), None);
    }
}
