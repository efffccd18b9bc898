//! Group messages and sender keys that arrive before what they need (SPEC §16.9).
//!
//! The relay keeps each sender's order, not the order of cause and effect across senders:
//! a member may hand a newcomer its sender key before the admin's group info reaches it, a
//! message may come from a member added by a change not yet received, and a sender's
//! message may leave its outbox before the sender key it queued for a newcomer. Such an
//! item is not dropped (it would be lost for good: its envelope is acknowledged and its
//! session has moved on) but **held** on the device, sealed, and applied again after each
//! change to its group: a control applied, a sender key taken, a message of the same sender
//! shown. Each sender may have [`MAX_HELD_PER_SENDER`] items held and the device
//! [`MAX_HELD_ITEMS`] in all (beyond either, the oldest item of the sender holding the most
//! goes), each for at most [`HELD_ITEM_TTL_MS`]; what goes is dropped with
//! [`DropReason::TooEarly`]. A sender's later messages wait behind its held one for at most
//! [`HELD_ORDER_WAIT_MS`], so one message that never becomes readable cannot mute its
//! sender.

use hush_crypto::{IdentityPublicKey, Zeroizing};
use hush_groups::{DistributionError, GroupDecryptError};
use hush_relay_protocol::proto as pr;

use super::groups::{load_group, save_group_state};
use super::inbound::{drop_of, show};
use super::{Device, identity_of, member_address};
use crate::error::ClientError;
use crate::event::{Address, DropReason, Event, GroupId, Undecryptable};
use crate::proto::client as pc;
use crate::store::Tx;

/// Most items held on a device at once (SPEC §16.9).
pub const MAX_HELD_ITEMS: usize = 256;
/// Most items one sender may have held (SPEC §16.9): a sender that floods the hold pushes
/// out its own items, not others'.
pub const MAX_HELD_PER_SENDER: usize = 32;
/// How long an item is held at most (SPEC §16.9): 7 days.
pub const HELD_ITEM_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// How long a sender's later messages wait behind its held one, to be shown in order (SPEC
/// §16.9): 5 minutes.
pub const HELD_ORDER_WAIT_MS: u64 = 5 * 60 * 1000;

/// What applying a group item came to.
pub(crate) enum Applied<T> {
    /// Applied; the group state is saved.
    Done(T),
    /// It needs a change to the group (its creation, a member, a sender key) that has not
    /// arrived: hold it. Nothing changed.
    Early,
    /// Refused. Nothing changed.
    Dropped(DropReason),
}

/// A group message opened by [`open_group`].
pub(crate) struct GroupOpened {
    pub(crate) plaintext: Zeroizing<Vec<u8>>,
    /// The sending device's identity key.
    pub(crate) sender: IdentityPublicKey,
    /// Sent before its sender applied the latest removal.
    pub(crate) before_removal: bool,
}

/// Decrypts a group message that just arrived from `from` and saves the group's new
/// state; held if the sender has an item held for the group since less than
/// [`HELD_ORDER_WAIT_MS`] (its messages are shown in the order they came).
pub(crate) fn open_arrived(
    tx: &Tx<'_>,
    from: &Address,
    group_id: &[u8],
    message: &[u8],
    now: u64,
) -> Result<Applied<GroupOpened>, ClientError> {
    if tx
        .oldest_held_from(group_id, from)?
        .is_some_and(|at| now.saturating_sub(at) < HELD_ORDER_WAIT_MS)
    {
        return Ok(Applied::Early);
    }
    open_group(tx, from, group_id, message)
}

/// Decrypts a group message from `from` and saves the group's new state.
fn open_group(
    tx: &Tx<'_>,
    from: &Address,
    group_id: &[u8],
    message: &[u8],
) -> Result<Applied<GroupOpened>, ClientError> {
    let Some(rec) = tx.group(group_id)? else {
        return Ok(Applied::Early);
    };
    let mut g = load_group(&rec)?;
    let opened = match g.decrypt(message) {
        Ok(p) => p,
        // A member or sender key this device has not heard of yet.
        Err(GroupDecryptError::FromFutureEpoch { .. } | GroupDecryptError::UnknownChain) => {
            return Ok(Applied::Early);
        }
        Err(e) => {
            return Ok(Applied::Dropped(DropReason::Undecryptable(
                Undecryptable::Group(e),
            )));
        }
    };
    // The signature names the sender; it must be the device the relay says.
    let listed = rec
        .directory
        .iter()
        .any(|m| m.identity_key == opened.sender.as_bytes() && member_address(m) == *from);
    if !listed {
        return Ok(Applied::Dropped(DropReason::UnknownGroup));
    }
    save_group_state(tx, group_id, &g, rec)?;
    Ok(Applied::Done(GroupOpened {
        plaintext: Zeroizing::new(opened.plaintext),
        sender: opened.sender,
        before_removal: opened.sent_before_removal.is_some(),
    }))
}

/// Takes a sender key `sender` distributed for a group and saves the group's new state.
pub(crate) fn apply_distribution(
    tx: &Tx<'_>,
    sender: &IdentityPublicKey,
    group_id: &[u8],
    distribution: &[u8],
) -> Result<Applied<()>, ClientError> {
    let Some(rec) = tx.group(group_id)? else {
        return Ok(Applied::Early);
    };
    let mut g = load_group(&rec)?;
    match g.process_distribution(sender, distribution) {
        Ok(()) => {
            save_group_state(tx, group_id, &g, rec)?;
            Ok(Applied::Done(()))
        }
        Err(DistributionError::FromFutureEpoch { .. }) => Ok(Applied::Early),
        Err(e) => Ok(Applied::Dropped(DropReason::Undecryptable(
            Undecryptable::Distribution(e),
        ))),
    }
}

/// The part of a held item that says where it came from.
pub(crate) fn item(from: &Address, env: &pr::Envelope, group_id: &[u8]) -> pc::HeldItem {
    pc::HeldItem {
        from_user: from.user.clone(),
        from_device: from.device,
        message_id: env.message_id.clone(),
        server_ms: env.server_timestamp_ms,
        group_id: group_id.to_vec(),
        ..Default::default()
    }
}

/// Holds `item`; returns the drops of what no longer fits, and what that lets through.
pub(crate) fn hold(
    dev: &Device,
    tx: &Tx<'_>,
    item: &pc::HeldItem,
    now: u64,
) -> Result<Vec<Event>, ClientError> {
    tx.hold(item, now)?;
    let (mut events, touched) = evict(tx, now)?;
    for g in touched {
        events.append(&mut rounds(dev, tx, &g, now)?);
    }
    Ok(events)
}

/// Drops what was held too long, then, while a sender holds more than
/// [`MAX_HELD_PER_SENDER`] or the device more than [`MAX_HELD_ITEMS`], the oldest item of
/// the sender holding the most. Returns the drops and the groups they were in.
fn evict(tx: &Tx<'_>, now: u64) -> Result<(Vec<Event>, Vec<Vec<u8>>), ClientError> {
    let mut events = Vec::new();
    let mut touched: Vec<Vec<u8>> = Vec::new();
    let mut dropped = |id: i64, group: Vec<u8>, from: &Address| -> Result<(), ClientError> {
        tx.release(id)?;
        events.push(drop_of(from, DropReason::TooEarly));
        if !touched.contains(&group) {
            touched.push(group);
        }
        Ok(())
    };
    for (id, group, from) in tx.held_before(now.saturating_sub(HELD_ITEM_TTL_MS))? {
        dropped(id, group, &from)?;
    }
    loop {
        let senders = tx.held_senders()?;
        let total: u64 = senders.iter().map(|(_, n, _)| n).sum();
        // The sender holding the most; of those, the one with the oldest item.
        let Some((top, n, _)) = senders
            .into_iter()
            .max_by_key(|(_, n, oldest)| (*n, std::cmp::Reverse(*oldest)))
        else {
            break;
        };
        if n <= MAX_HELD_PER_SENDER as u64 && total <= MAX_HELD_ITEMS as u64 {
            break;
        }
        let Some((id, group)) = tx.oldest_held_of(&top)? else {
            break;
        };
        dropped(id, group, &top)?;
    }
    Ok((events, touched))
}

/// Applies again, oldest first, what is held for a group that just changed (and for groups
/// whose items an eviction let through), until nothing more applies.
pub(crate) fn replay(
    dev: &Device,
    tx: &Tx<'_>,
    group_id: &[u8],
    now: u64,
) -> Result<Vec<Event>, ClientError> {
    let (mut events, mut touched) = evict(tx, now)?;
    if !touched.iter().any(|g| g == group_id) {
        touched.push(group_id.to_vec());
    }
    for g in touched {
        events.append(&mut rounds(dev, tx, &g, now)?);
    }
    Ok(events)
}

/// Rounds over a group's held items, oldest first, until one leaves nothing changed (a
/// sender key taken may open a message held behind it).
fn rounds(dev: &Device, tx: &Tx<'_>, group_id: &[u8], now: u64) -> Result<Vec<Event>, ClientError> {
    let mut events = Vec::new();
    let Ok(gid) = GroupId::try_from(group_id) else {
        return Ok(events);
    };
    loop {
        let mut moved = false;
        // Senders with a message still waiting (held recently): their later messages wait
        // behind it, to be shown in order (a sender key of theirs may still apply).
        let mut waiting: Vec<Address> = Vec::new();
        for (id, at, item) in tx.held(group_id)? {
            let outcome = match &item {
                // Damaged on disk: it can never apply.
                None => Err(DropReason::Malformed),
                Some(item) => {
                    let from = Address::new(item.from_user.clone(), item.from_device);
                    let message = item.distribution.is_empty();
                    if message && waiting.contains(&from) {
                        continue;
                    }
                    match apply_held(dev, tx, item, gid, now)? {
                        Applied::Done(e) => Ok(e),
                        Applied::Early => {
                            if message && now.saturating_sub(at) < HELD_ORDER_WAIT_MS {
                                waiting.push(from);
                            }
                            continue;
                        }
                        Applied::Dropped(reason) => Err(reason),
                    }
                }
            };
            tx.release(id)?;
            moved = true;
            match (outcome, item) {
                (Ok(mut e), _) => events.append(&mut e),
                (Err(reason), Some(item)) => events.push(drop_of(
                    &Address::new(item.from_user, item.from_device),
                    reason,
                )),
                (Err(_), None) => {}
            }
        }
        if !moved {
            return Ok(events);
        }
    }
}

/// Applies one held item, as [`super::inbound`] would have on arrival.
fn apply_held(
    dev: &Device,
    tx: &Tx<'_>,
    item: &pc::HeldItem,
    gid: GroupId,
    now: u64,
) -> Result<Applied<Vec<Event>>, ClientError> {
    let from = Address::new(item.from_user.clone(), item.from_device);
    if !item.distribution.is_empty() {
        let Ok(sender) = identity_of(&item.sender_identity) else {
            return Ok(Applied::Dropped(DropReason::Malformed));
        };
        return Ok(
            match apply_distribution(tx, &sender, &item.group_id, &item.distribution)? {
                Applied::Done(()) => Applied::Done(Vec::new()),
                Applied::Early => Applied::Early,
                Applied::Dropped(r) => Applied::Dropped(r),
            },
        );
    }
    let o = match open_group(tx, &from, &item.group_id, &item.group_message)? {
        Applied::Done(o) => o,
        Applied::Early => return Ok(Applied::Early),
        Applied::Dropped(r) => return Ok(Applied::Dropped(r)),
    };
    let c = match crate::wire::parse_content(&o.plaintext, &item.message_id) {
        Ok(c) => c,
        Err(crate::wire::WireError::Field("message_id")) => {
            return Ok(Applied::Dropped(DropReason::Undecryptable(
                Undecryptable::MessageIdMismatch,
            )));
        }
        Err(_) => return Ok(Applied::Dropped(DropReason::Malformed)),
    };
    if !matches!(
        c.body,
        Some(pc::content::Body::Text(_) | pc::content::Body::Attachment(_))
    ) {
        return Ok(Applied::Dropped(DropReason::Malformed));
    }
    let franking = match super::inbound::franking_of(
        &o.plaintext,
        &c,
        &item.franking_commitment,
        &item.franking_tag,
    ) {
        Ok(f) => f,
        Err(reason) => return Ok(Applied::Dropped(reason)),
    };
    let events = show(
        dev,
        tx,
        &from,
        item.server_ms,
        &c,
        Some(gid),
        o.before_removal,
        franking,
        now,
    )?;
    Ok(Applied::Done(events))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;
    use crate::store::Sealed;

    fn hold_one(dev: &Device, store: &mut Sealed, at: u64, sender: &str) -> Vec<Event> {
        store
            .transaction(|tx| {
                let item = pc::HeldItem {
                    from_user: sender.into(),
                    from_device: 1,
                    group_id: vec![7; 32],
                    group_message: vec![1, 2, 3],
                    ..Default::default()
                };
                hold(dev, tx, &item, at)
            })
            .expect("hold")
    }

    fn held_from(store: &mut Sealed, sender: &str) -> usize {
        store
            .read(|tx| tx.held_senders())
            .expect("held")
            .iter()
            .find(|(a, ..)| a.user == sender)
            .map_or(0, |(_, n, _)| *n as usize)
    }

    fn dropped(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Dropped {
                    from,
                    reason: DropReason::TooEarly,
                } => from.user.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn total(store: &mut Sealed) -> usize {
        store.read(|tx| tx.held(&[7; 32])).expect("held").len()
    }

    /// `MAX_HELD_ITEMS` are held; one more drops the oldest item of a sender holding the
    /// most.
    #[test]
    fn at_most_max_held_items_are_held() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (dev, mut store) = super::super::test_device("alice", &mut rng);
        for n in 0..MAX_HELD_ITEMS {
            assert!(hold_one(&dev, &mut store, 10, &format!("u{n}")).is_empty());
        }
        assert_eq!(total(&mut store), MAX_HELD_ITEMS);
        assert_eq!(dropped(&hold_one(&dev, &mut store, 10, "late")), ["u0"]);
        assert_eq!(total(&mut store), MAX_HELD_ITEMS);
    }

    /// A sender holds `MAX_HELD_PER_SENDER` at most: one flooding the hold pushes out its
    /// own items, never another sender's.
    #[test]
    fn a_flooding_sender_pushes_out_only_its_own_items() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (dev, mut store) = super::super::test_device("alice", &mut rng);
        assert!(hold_one(&dev, &mut store, 10, "bob").is_empty());
        for _ in 0..MAX_HELD_PER_SENDER {
            assert!(hold_one(&dev, &mut store, 11, "mallory").is_empty());
        }
        for _ in 0..3 * MAX_HELD_ITEMS {
            assert_eq!(
                dropped(&hold_one(&dev, &mut store, 12, "mallory")),
                ["mallory"]
            );
        }
        assert_eq!(held_from(&mut store, "mallory"), MAX_HELD_PER_SENDER);
        assert_eq!(held_from(&mut store, "bob"), 1, "bob's item stays");
        // Many flooding senders together: the device's limit, and still the senders
        // holding the most lose first, so a sender with one item keeps it (unless more
        // senders than the limit flood, each down to one item: then the oldest go).
        for n in 0..100 {
            for _ in 0..5 {
                hold_one(&dev, &mut store, 13, &format!("sybil{n}"));
            }
        }
        assert_eq!(total(&mut store), MAX_HELD_ITEMS);
        assert_eq!(held_from(&mut store, "bob"), 1, "bob's item stays");
    }

    /// A sender's new message waits behind its held one for `HELD_ORDER_WAIT_MS` at most,
    /// and never behind another sender's.
    #[test]
    fn a_held_message_holds_back_its_senders_next_ones_for_the_order_wait_at_most() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (dev, mut store) = super::super::test_device("alice", &mut rng);
        let bob = Address::new("bob", 1);
        let carol = Address::new("carol", 1);
        let listed: Vec<(Address, IdentityPublicKey)> = [&bob, &carol]
            .into_iter()
            .map(|a| {
                let k = hush_crypto::IdentityKeyPair::generate(&mut rng);
                (a.clone(), *k.public())
            })
            .collect();
        let (gid, _) = store
            .transaction(|tx| super::super::groups::create(&dev, tx, "g", &listed, 1, &mut rng))
            .expect("group");
        let junk = vec![1, 2, 3];
        store
            .transaction(|tx| {
                let item = pc::HeldItem {
                    from_user: "bob".into(),
                    from_device: 1,
                    group_id: gid.to_vec(),
                    group_message: junk.clone(),
                    ..Default::default()
                };
                tx.hold(&item, 1_000)
            })
            .expect("hold");
        let arrives = |store: &mut Sealed, from: &Address, now: u64| {
            store
                .transaction(|tx| open_arrived(tx, from, &gid, &junk, now))
                .expect("open")
        };
        let t = 1_000 + HELD_ORDER_WAIT_MS;
        assert!(matches!(arrives(&mut store, &bob, t - 1), Applied::Early));
        // Past the wait it is opened (and, being junk, refused).
        assert!(matches!(arrives(&mut store, &bob, t), Applied::Dropped(_)));
        assert!(matches!(
            arrives(&mut store, &carol, 1_001),
            Applied::Dropped(_)
        ));
    }

    /// An item is held `HELD_ITEM_TTL_MS` at most.
    #[test]
    fn items_are_held_for_the_ttl_at_most() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (dev, mut store) = super::super::test_device("alice", &mut rng);
        assert!(hold_one(&dev, &mut store, 1_000, "u0").is_empty());
        assert!(hold_one(&dev, &mut store, 1_000 + HELD_ITEM_TTL_MS, "u1").is_empty());
        assert_eq!(total(&mut store), 2);
        let events = hold_one(&dev, &mut store, 1_001 + HELD_ITEM_TTL_MS, "u2");
        assert_eq!(dropped(&events), ["u0"]);
        assert_eq!(total(&mut store), 2);
    }
}
