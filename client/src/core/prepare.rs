//! Preparing an outbox draft, sans I/O (SPEC §16.4, §16.5): a [`Preparation`] says what it
//! still needs from the relay (a user's device list, prekey bundles), takes the answers,
//! and encrypts the draft once it has them. The device lists it uses are remembered
//! between drafts ([`DeviceLists`]) until the relay refuses a send made from one as stale.

use std::collections::HashMap;

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

/// Device lists as the relay last gave them, by user, kept in memory.
#[derive(Default)]
pub(crate) struct DeviceLists {
    lists: HashMap<String, Listed>,
}

impl DeviceLists {
    /// Remembers `user`'s devices as the relay has just listed them.
    pub(crate) fn remember(&mut self, user: &str, listed: Listed) {
        if self.lists.len() >= DEVICE_LIST_CACHE && !self.lists.contains_key(user) {
            self.lists.clear();
        }
        self.lists.insert(user.to_string(), listed);
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
    /// The user's device list (`ListDevices`), to give to [`DeviceLists::remember`].
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
        })
    }

    /// What is still needed from the relay, or `None` once [`Preparation::encrypt`] can run.
    pub(crate) fn need(
        &self,
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
        Ok(Some(Need::Bundles(missing)))
    }

    /// The bundles fetched for [`Need::Bundles`] (those the relay had).
    pub(crate) fn bundles(&mut self, fetched: HashMap<Address, PrekeyBundle>) {
        self.bundles = Some(fetched);
    }

    /// Encrypts the draft for every device (one transaction: listed keys recorded, sessions
    /// and group state updated, the envelopes replace the draft). Call once
    /// [`Preparation::need`] says nothing more is needed.
    pub(crate) fn encrypt(
        self,
        dev: &Device,
        lists: &DeviceLists,
        store: &mut Sealed,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<Event>, ClientError> {
        store.transaction(|tx| {
            let bundles = self.bundles.clone().unwrap_or_default();
            let t = match self.targets(dev, lists, tx)? {
                Ok(t) => t,
                // The lists changed under it: the caller prepares the draft again.
                Err(_) => return Err(ClientError::Protocol),
            };
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
                let Some((listed, digest)) = lists.get(user) else {
                    return Ok(Err(Need::Devices(user.clone())));
                };
                t.device_lists.push((user.clone(), digest));
                t.targets = listed.clone();
                t.targets.retain(|(a, _)| a != &dev.me);
                if *user != dev.me.user {
                    let Some((listed, digest)) = lists.get(&dev.me.user) else {
                        return Ok(Err(Need::Devices(dev.me.user.clone())));
                    };
                    t.device_lists.push((dev.me.user.clone(), digest));
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
        let mut lists = DeviceLists::default();
        let bob = *IdentityKeyPair::generate(&mut rng).public();
        let laptop = *IdentityKeyPair::generate(&mut rng).public();
        let mut p = Preparation::new(7, draft_to("bob")).unwrap();
        let need = |store: &mut Sealed, p: &Preparation, lists: &DeviceLists| {
            store.read(|tx| p.need(&dev, lists, tx, 1)).unwrap()
        };
        assert_eq!(
            need(&mut store, &p, &lists),
            Some(Need::Devices("bob".into()))
        );
        lists.remember("bob", vec![(Address::new("bob", 1), bob)]);
        assert_eq!(
            need(&mut store, &p, &lists),
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
            need(&mut store, &p, &lists),
            Some(Need::Bundles(vec![
                (Address::new("bob", 1), bob),
                (Address::new("alice", 2), laptop)
            ]))
        );
        p.bundles(HashMap::new());
        assert_eq!(need(&mut store, &p, &lists), None);
        // A second draft finds both lists remembered; after the relay calls one stale, it
        // asks for that one again.
        let q = Preparation::new(8, draft_to("bob")).unwrap();
        assert!(matches!(
            need(&mut store, &q, &lists),
            Some(Need::Bundles(_))
        ));
        lists.forget(["alice"]);
        assert_eq!(
            need(&mut store, &q, &lists),
            Some(Need::Devices("alice".into()))
        );
        // To its own user: only its own list.
        let own = Preparation::new(9, draft_to("alice")).unwrap();
        assert_eq!(
            need(&mut store, &own, &lists),
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
            p.encrypt(&dev, &lists, &mut store, 1, &mut rng),
            Err(ClientError::Unknown(_))
        ));
        assert_eq!(
            store
                .read(|tx| tx.device_key(&Address::new("bob", 1)))
                .unwrap(),
            None
        );
    }

    /// At most [`DEVICE_LIST_CACHE`] users are remembered: one more forgets all the others;
    /// a list replaced in place forgets nothing.
    #[test]
    fn the_remembered_lists_are_bounded() {
        let mut lists = DeviceLists::default();
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
