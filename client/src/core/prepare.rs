//! Preparing an outbox draft, sans I/O (SPEC §16.4, §16.5): a [`Preparation`] says what it
//! still needs from the relay (a user's device list, prekey bundles), takes the answers,
//! and encrypts the draft once it has them. The device lists it uses are remembered
//! between drafts ([`DeviceLists`]) until the relay refuses a send made from one as stale.

use std::collections::{HashMap, HashSet};

use hush_crypto::{CryptoRng, IdentityPublicKey};
use hush_sessions::PrekeyBundle;

use super::account::record_devices;
use super::groups::load_group;
use super::{Device, conversation_from_proto, identity_of, member_address, outbound};
use crate::error::ClientError;
use crate::event::{Address, Conversation, Event};
use crate::proto::client as pc;
use crate::store::{Sealed, Tx};

/// A user's devices as the relay listed them.
pub(crate) type Listed = Vec<(Address, IdentityPublicKey)>;

/// Most users whose device lists are remembered; past it, all are forgotten.
pub(crate) const DEVICE_LIST_CACHE: usize = 10_000;

/// Device lists as the relay last gave them, by user, kept in memory; and how many sends
/// in a row the relay has refused as stale.
#[derive(Default)]
pub(crate) struct DeviceLists {
    lists: HashMap<String, Listed>,
    /// `STALE_DEVICES` answers since the last stored envelope.
    stale_streak: u32,
    /// No sends before this time (after too many `STALE_DEVICES` in a row).
    quiet_until_ms: u64,
    /// Whether the relay checks the lists a send names (`Authenticated`): only then is a
    /// remembered list used; otherwise each preparation asks for the lists it needs.
    relay_checks: bool,
}

impl DeviceLists {
    /// No lists yet, for a relay that checks them (`relay_checks`) or not.
    #[cfg(test)]
    pub(crate) fn new(relay_checks: bool) -> Self {
        Self {
            relay_checks,
            ..Self::default()
        }
    }

    /// Says whether the relay (on this connection) checks the lists a send names.
    pub(crate) fn set_relay_checks(&mut self, checks: bool) {
        self.relay_checks = checks;
    }

    /// Remembers `user`'s devices as the relay has just listed them.
    pub(crate) fn remember(&mut self, user: &str, listed: Listed) {
        if self.lists.len() >= DEVICE_LIST_CACHE && !self.lists.contains_key(user) {
            self.lists.clear();
        }
        self.lists.insert(user.to_string(), listed);
    }

    /// Counts a `STALE_DEVICES` answer; `true` once there were more than `max` in a row,
    /// and then no sends for `wait_ms` ([`DeviceLists::quiet`]).
    pub(crate) fn stale_answer(&mut self, max: u32, now_ms: u64, wait_ms: u64) -> bool {
        self.stale_streak = self.stale_streak.saturating_add(1);
        let over = self.stale_streak > max;
        if over {
            self.quiet_until_ms = now_ms.saturating_add(wait_ms);
        }
        over
    }

    /// An envelope was stored: the streak of stale answers is over.
    pub(crate) fn stored(&mut self) {
        self.stale_streak = 0;
    }

    /// How long to wait before sending again, if at all.
    pub(crate) fn quiet(&self, now_ms: u64) -> Option<u64> {
        (self.quiet_until_ms > now_ms).then(|| self.quiet_until_ms - now_ms)
    }

    /// Forgets the lists of `users` (the relay said one is stale).
    pub(crate) fn forget<'a>(&mut self, users: impl IntoIterator<Item = &'a str>) {
        for u in users {
            self.lists.remove(u);
        }
    }

    /// `user`'s remembered list and its digest (SPEC §14.2).
    pub(crate) fn get(&self, user: &str) -> Option<(&Listed, [u8; 32])> {
        let listed = self.lists.get(user)?;
        let keys: Vec<(u32, [u8; 32])> = listed
            .iter()
            .map(|(a, k)| (a.device, *k.as_bytes()))
            .collect();
        Some((
            listed,
            hush_relay_protocol::device_list::digest(user, &keys),
        ))
    }
}

/// What a [`Preparation`] needs from the relay before it can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// The user's device list (`ListDevices`), to give to [`Preparation::listed`].
    Devices(String),
    /// Prekey bundles of these devices (`FetchBundle`), each to be used only if its identity
    /// key is the one given; to give to [`Preparation::bundles`].
    Bundles(Vec<(Address, IdentityPublicKey)>),
}

/// One outbox draft on its way to being encrypted.
pub(crate) struct Preparation {
    seq: i64,
    to: Conversation,
    content: pc::Content,
    only: Vec<pc::Member>,
    /// The fetched bundles, once asked for (or found not needed).
    bundles: Option<HashMap<Address, PrekeyBundle>>,
    /// The devices the bundles were asked for, with the keys they must have.
    missing: Vec<(Address, IdentityPublicKey)>,
    /// Users whose lists the relay gave during this preparation (never asked twice).
    fresh: HashSet<String>,
    /// Users whose remembered list turned out older than a bundle: asked again.
    recheck: HashSet<String>,
    /// Who it goes to, once nothing more is needed.
    resolved: Option<Targets>,
}

/// Who a draft goes to, once known.
struct Targets {
    targets: Listed,
    own: Listed,
    device_lists: Vec<(String, [u8; 32])>,
    group_message: bool,
}

impl Preparation {
    /// Starts preparing the draft of outbox entry `seq`.
    pub(crate) fn new(seq: i64, draft: pc::Draft) -> Result<Self, ClientError> {
        Ok(Self {
            seq,
            to: conversation_from_proto(draft.to.as_ref()).ok_or(ClientError::Protocol)?,
            content: draft.content.ok_or(ClientError::Protocol)?,
            only: draft.only,
            bundles: None,
            missing: Vec::new(),
            fresh: HashSet::new(),
            recheck: HashSet::new(),
            resolved: None,
        })
    }

    /// The relay's answer to [`Need::Devices`]: remembered, and trusted for the rest of
    /// this preparation.
    pub(crate) fn listed(&mut self, lists: &mut DeviceLists, user: &str, listed: Listed) {
        lists.remember(user, listed);
        self.fresh.insert(user.to_string());
    }

    /// What is still needed from the relay, or `None` once [`Preparation::encrypt`] can run.
    pub(crate) fn need(
        &mut self,
        dev: &Device,
        lists: &DeviceLists,
        tx: &Tx<'_>,
        now_ms: u64,
    ) -> Result<Option<Need>, ClientError> {
        let t = match self.targets(dev, lists, tx)? {
            Ok(t) => t,
            Err(need) => return Ok(Some(need)),
        };
        if self.bundles.is_some() {
            self.resolved = Some(t);
            return Ok(None);
        }
        // A group message needs pairwise sessions only if it carries a new sender key: the
        // group says whether its next message rotates, so no one-time prekey is spent for
        // nothing.
        let needs_sessions = !t.group_message || {
            let Conversation::Group(gid) = &self.to else {
                return Err(ClientError::Protocol);
            };
            let rec = tx.group(gid)?.ok_or(ClientError::Unknown("group"))?;
            load_group(&rec)?.needs_rotation(now_ms / 1000)
        };
        let mut missing = Vec::new();
        if needs_sessions {
            for (a, k) in t.targets.iter().chain(t.own.iter()) {
                if tx.session(a)?.is_none_or(|s| s.remote_identity() != k) {
                    missing.push((a.clone(), *k));
                }
            }
        }
        self.missing.clone_from(&missing);
        Ok(Some(Need::Bundles(missing)))
    }

    /// The bundles fetched for [`Need::Bundles`] (those the relay had). A bundle whose
    /// identity key is not the listed one is not used; if the list was a remembered one, the
    /// relay is asked for it again first (its device may have been reinstalled since).
    pub(crate) fn bundles(&mut self, mut fetched: HashMap<Address, PrekeyBundle>) {
        let mut recheck = false;
        for (a, k) in &self.missing {
            if fetched.get(a).is_some_and(|b| b.identity_key() != k) {
                tracing::warn!(device = %a, "bundle identity differs from the listed key");
                fetched.remove(a);
                if !self.fresh.contains(&a.user) && self.recheck.insert(a.user.clone()) {
                    recheck = true;
                }
            }
        }
        if !recheck {
            self.bundles = Some(fetched);
        }
    }

    /// Encrypts the draft for every device (one transaction: listed keys recorded, sessions
    /// and group state updated, the envelopes replace the draft). Call once
    /// [`Preparation::need`] says nothing more is needed.
    pub(crate) fn encrypt(
        self,
        dev: &Device,
        store: &mut Sealed,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<Event>, ClientError> {
        store.transaction(|tx| {
            let bundles = self.bundles.clone().unwrap_or_default();
            // Called before `need` said nothing more is needed: a caller's mistake.
            let t = self.resolved.ok_or(ClientError::Protocol)?;
            let mut events = Vec::new();
            if !t.device_lists.is_empty() {
                let all: Listed = t.targets.iter().chain(t.own.iter()).cloned().collect();
                events.extend(record_devices(tx, dev, &all)?);
            }
            let plan = outbound::Plan {
                to: self.to,
                content: self.content,
                targets: t.targets,
                own: t.own,
                group_message: t.group_message,
                device_lists: t.device_lists,
            };
            events.extend(outbound::encrypt(
                dev, tx, self.seq, &plan, &bundles, now_ms, rng,
            )?);
            Ok(events)
        })
    }

    /// `user`'s list for this draft, or `None` to ask the relay for it: not remembered, or
    /// remembered but older than what this device knows (a device whose stored key is
    /// another, a bundle that disagreed with it), or, for the recipient (`recipient`),
    /// naming no device but this one (a device linked since would never hear of the
    /// message: no send, so no stale answer). A list the relay gave during this preparation
    /// is used as it is.
    fn list<'l>(
        &self,
        dev: &Device,
        lists: &'l DeviceLists,
        tx: &Tx<'_>,
        user: &str,
        recipient: bool,
    ) -> Result<Option<(&'l Listed, [u8; 32])>, ClientError> {
        let Some((listed, digest)) = lists.get(user) else {
            return Ok(None);
        };
        if self.fresh.contains(user) {
            return Ok(Some((listed, digest)));
        }
        if !lists.relay_checks
            || self.recheck.contains(user)
            || (recipient && listed.iter().all(|(a, _)| *a == dev.me))
        {
            return Ok(None);
        }
        for (a, k) in listed {
            if tx
                .device_key(a)?
                .is_some_and(|stored| stored.as_slice() != k.as_bytes())
            {
                return Ok(None);
            }
        }
        Ok(Some((listed, digest)))
    }

    /// Who the draft goes to, or the device list still needed to know it.
    fn targets(
        &self,
        dev: &Device,
        lists: &DeviceLists,
        tx: &Tx<'_>,
    ) -> Result<Result<Targets, Need>, ClientError> {
        let mut t = Targets {
            targets: Vec::new(),
            own: Vec::new(),
            device_lists: Vec::new(),
            group_message: false,
        };
        match &self.to {
            // To known devices (a read receipt, group plumbing): their stored keys.
            Conversation::Direct(_) if !self.only.is_empty() => {
                for m in &self.only {
                    t.targets
                        .push((member_address(m), identity_of(&m.identity_key)?));
                }
            }
            Conversation::Direct(user) => {
                let Some((listed, digest)) = self.list(dev, lists, tx, user, true)? else {
                    return Ok(Err(Need::Devices(user.clone())));
                };
                t.device_lists.push((user.clone(), digest));
                t.targets = listed.clone();
                t.targets.retain(|(a, _)| a != &dev.me);
                if *user != dev.me.user {
                    let me = &dev.me.user;
                    let Some((listed, digest)) = self.list(dev, lists, tx, me, false)? else {
                        return Ok(Err(Need::Devices(me.clone())));
                    };
                    t.device_lists.push((me.clone(), digest));
                    t.own = listed.clone();
                    t.own.retain(|(a, _)| a != &dev.me);
                }
            }
            Conversation::Group(gid) => {
                let members = if self.only.is_empty() {
                    tx.group(gid)?
                        .ok_or(ClientError::Unknown("group"))?
                        .directory
                } else {
                    self.only.clone()
                };
                for m in members {
                    let a = member_address(&m);
                    if a != dev.me {
                        t.targets.push((a, identity_of(&m.identity_key)?));
                    }
                }
                t.group_message = self.only.is_empty()
                    && matches!(
                        self.content.body,
                        Some(pc::content::Body::Text(_) | pc::content::Body::Attachment(_))
                    );
            }
        }
        Ok(Ok(t))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hush_crypto::IdentityKeyPair;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;
    use crate::core::test_device;

    fn draft_to(user: &str) -> pc::Draft {
        pc::Draft {
            to: Some(crate::core::conversation_to_proto(&Conversation::Direct(
                user.into(),
            ))),
            content: Some(pc::Content::default()),
            only: vec![],
        }
    }

    /// A one-to-one draft asks for the recipient's list, then its own user's, then the
    /// bundles of devices without a session; a remembered list is not asked again, and a
    /// forgotten one is.
    #[test]
    fn a_draft_asks_for_what_is_not_remembered() {
        let mut rng = StdRng::seed_from_u64(1);
        let (dev, mut store) = test_device("alice", &mut rng);
        let mut lists = DeviceLists::new(true);
        let bob = *IdentityKeyPair::generate(&mut rng).public();
        let laptop = *IdentityKeyPair::generate(&mut rng).public();
        let mut p = Preparation::new(7, draft_to("bob")).unwrap();
        let need = |store: &mut Sealed, p: &mut Preparation, lists: &DeviceLists| {
            store.read(|tx| p.need(&dev, lists, tx, 1)).unwrap()
        };
        assert_eq!(
            need(&mut store, &mut p, &lists),
            Some(Need::Devices("bob".into()))
        );
        lists.remember("bob", vec![(Address::new("bob", 1), bob)]);
        assert_eq!(
            need(&mut store, &mut p, &lists),
            Some(Need::Devices("alice".into()))
        );
        lists.remember(
            "alice",
            vec![
                (Address::new("alice", 1), *dev.identity.public()),
                (Address::new("alice", 2), laptop),
            ],
        );
        // Every device but this one, none with a session yet.
        assert_eq!(
            need(&mut store, &mut p, &lists),
            Some(Need::Bundles(vec![
                (Address::new("bob", 1), bob),
                (Address::new("alice", 2), laptop)
            ]))
        );
        p.bundles(HashMap::new());
        assert_eq!(need(&mut store, &mut p, &lists), None);
        // A second draft finds both lists remembered; after the relay calls one stale, it
        // asks for that one again.
        let mut q = Preparation::new(8, draft_to("bob")).unwrap();
        assert!(matches!(
            need(&mut store, &mut q, &lists),
            Some(Need::Bundles(_))
        ));
        lists.forget(["alice"]);
        assert_eq!(
            need(&mut store, &mut q, &lists),
            Some(Need::Devices("alice".into()))
        );
        // With a relay that does not check device lists, a remembered list is not used.
        let mut unchecked = DeviceLists::new(false);
        unchecked.remember("bob", vec![(Address::new("bob", 1), bob)]);
        let mut r = Preparation::new(10, draft_to("bob")).unwrap();
        assert_eq!(
            need(&mut store, &mut r, &unchecked),
            Some(Need::Devices("bob".into()))
        );
        // To its own user: only its own list.
        let mut own = Preparation::new(9, draft_to("alice")).unwrap();
        assert_eq!(
            need(&mut store, &mut own, &lists),
            Some(Need::Devices("alice".into()))
        );
        // With no bundle for any device, nothing can be sent: the message fails, and
        // nothing of it is written.
        lists.remember(
            "alice",
            vec![
                (Address::new("alice", 1), *dev.identity.public()),
                (Address::new("alice", 2), laptop),
            ],
        );
        assert!(matches!(
            p.encrypt(&dev, &mut store, 1, &mut rng),
            Err(ClientError::Unknown(_))
        ));
        assert_eq!(
            store
                .read(|tx| tx.device_key(&Address::new("bob", 1)))
                .unwrap(),
            None
        );
    }

    /// A remembered list is asked for again, once per preparation, when it cannot be
    /// right: it names no device but this one for a note to self (a device linked since
    /// would never hear of it), a device's stored key is newer than the list's, or a bundle
    /// disagrees with it. A list the relay has just given is used as it is.
    #[test]
    fn a_remembered_list_that_cannot_be_right_is_asked_again() {
        let mut rng = StdRng::seed_from_u64(3);
        let (dev, mut store) = test_device("alice", &mut rng);
        let mut lists = DeviceLists::new(true);
        let old = *IdentityKeyPair::generate(&mut rng).public();
        let new = *IdentityKeyPair::generate(&mut rng).public();
        let need = |store: &mut Sealed, p: &mut Preparation, lists: &DeviceLists| {
            store.read(|tx| p.need(&dev, lists, tx, 1)).unwrap()
        };
        // A note to self, remembered list: only this device.
        lists.remember("alice", vec![(dev.me.clone(), *dev.identity.public())]);
        let mut p = Preparation::new(1, draft_to("alice")).unwrap();
        assert_eq!(
            need(&mut store, &mut p, &lists),
            Some(Need::Devices("alice".into()))
        );
        // The relay says the same: now it is trusted (no device to send to).
        p.listed(
            &mut lists,
            "alice",
            vec![(dev.me.clone(), *dev.identity.public())],
        );
        assert_eq!(
            need(&mut store, &mut p, &lists),
            Some(Need::Bundles(vec![]))
        );

        // Bob's remembered key is older than the one this device stored since.
        lists.remember("bob", vec![(Address::new("bob", 1), old)]);
        store
            .transaction(|tx| tx.set_device_key(&Address::new("bob", 1), new.as_bytes()))
            .unwrap();
        let mut p = Preparation::new(2, draft_to("bob")).unwrap();
        assert_eq!(
            need(&mut store, &mut p, &lists),
            Some(Need::Devices("bob".into()))
        );
        p.listed(&mut lists, "bob", vec![(Address::new("bob", 1), new)]);
        assert!(matches!(
            need(&mut store, &mut p, &lists),
            Some(Need::Bundles(_))
        ));

        // A bundle disagrees with a remembered list: asked again, then trusted.
        lists.remember("carol", vec![(Address::new("carol", 1), old)]);
        let mut p = Preparation::new(3, draft_to("carol")).unwrap();
        let Some(Need::Bundles(missing)) = need(&mut store, &mut p, &lists) else {
            panic!("bundles")
        };
        assert_eq!(missing, [(Address::new("carol", 1), old)]);
        let carol = IdentityKeyPair::generate(&mut rng);
        let spk = hush_sessions::SignedPrekey::generate(1, &carol, &mut rng);
        let bundle = PrekeyBundle::from_public_parts(
            *carol.public(),
            1,
            *spk.public_key(),
            *spk.signature(),
            None,
        );
        let fetched = || HashMap::from([(Address::new("carol", 1), bundle.clone())]);
        p.bundles(fetched());
        assert_eq!(
            need(&mut store, &mut p, &lists),
            Some(Need::Devices("carol".into()))
        );
        // The relay still lists the old key: the bundle is not used, and nothing loops.
        p.listed(&mut lists, "carol", vec![(Address::new("carol", 1), old)]);
        assert!(matches!(
            need(&mut store, &mut p, &lists),
            Some(Need::Bundles(_))
        ));
        p.bundles(fetched());
        assert_eq!(need(&mut store, &mut p, &lists), None);
    }

    /// At most [`DEVICE_LIST_CACHE`] users are remembered: one more forgets all the others;
    /// a list replaced in place forgets nothing.
    #[test]
    fn the_remembered_lists_are_bounded() {
        let mut lists = DeviceLists::new(true);
        for i in 0..DEVICE_LIST_CACHE {
            lists.remember(&format!("u{i}"), Vec::new());
        }
        lists.remember("u0", Vec::new());
        assert_eq!(lists.lists.len(), DEVICE_LIST_CACHE);
        lists.remember("one-more", Vec::new());
        assert_eq!(lists.lists.len(), 1);
        assert!(lists.get("one-more").is_some() && lists.get("u0").is_none());
    }
}
