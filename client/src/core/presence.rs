//! Presence watching (SPEC §14.2, `PresenceQuery`): which users are watched, what to ask
//! the relay for them, and which answers are news for the app. The driver asks every poll
//! interval and reports what [`Watched::answer`] returns.

use std::collections::BTreeMap;

use hush_relay_protocol::proto as pr;

use crate::event::{Event, Presence};

/// A relay's answer as the app sees it (a last-seen time of 0 is none).
pub(crate) fn presence_of(p: pr::Presence) -> Presence {
    Presence {
        user: p.user_id,
        online: p.online,
        last_seen_ms: (p.last_seen_ms != 0).then_some(p.last_seen_ms),
    }
}

/// The watched users, each with the last presence reported for it.
#[derive(Default)]
pub(crate) struct Watched {
    users: BTreeMap<String, Option<Presence>>,
}

impl Watched {
    /// Watches `user` (nothing changes if it is watched already).
    pub(crate) fn watch(&mut self, user: &str) {
        self.users.entry(user.to_string()).or_insert(None);
    }

    /// The queries to send this poll, one per watched user.
    pub(crate) fn queries(&self) -> Vec<pr::PresenceQuery> {
        self.users
            .keys()
            .map(|u| pr::PresenceQuery { user_id: u.clone() })
            .collect()
    }

    /// Takes the answer to the query for `user`: an [`Event::Presence`] on its first
    /// answer, when it goes on- or offline, or when its last-seen time moves while it is
    /// offline (while online, the time moves with every action and is no news). An answer
    /// about another user than the one asked is ignored.
    pub(crate) fn answer(&mut self, user: &str, p: pr::Presence) -> Option<Event> {
        if p.user_id != user {
            return None;
        }
        let p = presence_of(p);
        let slot = self.users.get_mut(&p.user)?;
        let news = slot.as_ref().is_none_or(|old| {
            old.online != p.online || (!p.online && old.last_seen_ms != p.last_seen_ms)
        });
        *slot = Some(p.clone());
        news.then_some(Event::Presence(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(w: &mut Watched, user: &str, online: bool, last_seen_ms: u64) -> bool {
        w.answer(
            user,
            pr::Presence {
                user_id: user.into(),
                online,
                last_seen_ms,
                hidden: false,
            },
        )
        .is_some()
    }

    #[test]
    fn only_changes_of_watched_users_are_news() {
        let mut w = Watched::default();
        w.watch("bob");
        w.watch("bob");
        assert_eq!(w.queries().len(), 1);
        assert!(!answer(&mut w, "carol", true, 5), "carol is not watched");
        assert!(
            w.answer(
                "bob",
                pr::Presence {
                    user_id: "carol".into(),
                    online: true,
                    last_seen_ms: 5,
                    hidden: false,
                }
            )
            .is_none(),
            "an answer about someone else"
        );
        assert!(answer(&mut w, "bob", true, 5), "the first answer");
        assert!(!answer(&mut w, "bob", true, 9), "online, acting");
        assert!(answer(&mut w, "bob", false, 9), "gone offline");
        assert!(!answer(&mut w, "bob", false, 9), "the same");
        assert!(answer(&mut w, "bob", false, 12), "seen again while offline");
        assert!(answer(&mut w, "bob", false, 0), "last seen hidden");
        let Some(Event::Presence(p)) = w.answer(
            "bob",
            pr::Presence {
                user_id: "bob".into(),
                online: true,
                last_seen_ms: 0,
                hidden: false,
            },
        ) else {
            panic!("back online is news");
        };
        assert_eq!((p.online, p.last_seen_ms), (true, None));
    }
}
