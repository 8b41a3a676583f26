//! What can be done to a repository (`Action`) and sets of it (`Actions`).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_and_print_as_they_are_named() {
        for a in [Action::Pull, Action::Push, Action::Delete] {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("Pull"), None);
        assert_eq!(Action::parse(""), None);
    }

    #[test]
    fn sets_of_actions_hold_exactly_their_members() {
        let pp = Actions::of(&[Action::Pull, Action::Push]);
        assert!(pp.contains(Action::Pull) && pp.contains(Action::Push));
        assert!(!pp.contains(Action::Delete));
        assert_eq!(pp.iter().collect::<Vec<_>>(), [Action::Pull, Action::Push]);
        let d = Actions::NONE.with(Action::Delete);
        assert_eq!(pp.union(d), Actions::ALL);
        assert_eq!(pp.union(pp), pp, "a union keeps what both hold");
        assert_eq!(pp.intersect(d), Actions::NONE);
        assert_eq!(pp.intersect(Actions::ALL), pp);
        assert!(Actions::NONE.is_empty() && !d.is_empty());
        assert_eq!(Actions::ALL.iter().count(), 3);
        assert_eq!(Actions::default(), Actions::NONE);
    }
}
