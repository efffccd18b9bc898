//! Group messages and sender keys that arrive before what they need (SPEC §16.9).
//!
//! The relay keeps each sender's order, not the order of cause and effect across senders:
//! a member may hand a newcomer its sender key before the admin's group info reaches it, a
//! message may come from a member added by a change not yet received, and a sender's
//! message may leave its outbox before the sender key it queued for a newcomer. Such an
//! item is not dropped (it would be lost for good: its envelope is acknowledged and its
//! session has moved on) but **held** on the device, sealed, and applied again after each
//! change to its group: a control applied, a sender key taken. At most
//! [`MAX_HELD_ITEMS`] are held, each at most [`HELD_ITEM_TTL_MS`]; the oldest beyond either
//! is dropped with [`DropReason::TooEarly`].

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

/// Most items held on a device at once (SPEC §16.9); a new one beyond it drops the oldest.
pub const MAX_HELD_ITEMS: usize = 256;
/// How long an item is held at most (SPEC §16.9): 7 days.
pub const HELD_ITEM_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

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
/// state; held if something from the same sender is held for the group (its messages are
/// shown in the order they came).
pub(crate) fn open_arrived(
    tx: &Tx<'_>,
    from: &Address,
    group_id: &[u8],
    message: &[u8],
) -> Result<Applied<GroupOpened>, ClientError> {
    if tx.holds_from(group_id, from)? {
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

/// Holds `item`; returns the drops of what no longer fits.
pub(crate) fn hold(tx: &Tx<'_>, item: &pc::HeldItem, now: u64) -> Result<Vec<Event>, ClientError> {
    tx.hold(item, now)?;
    evict(tx, now)
}

/// Drops what was held too long or beyond the limit.
fn evict(tx: &Tx<'_>, now: u64) -> Result<Vec<Event>, ClientError> {
    tx.held_over(now.saturating_sub(HELD_ITEM_TTL_MS), MAX_HELD_ITEMS)?
        .into_iter()
        .map(|(id, from)| {
            tx.release(id)?;
            Ok(drop_of(&from, DropReason::TooEarly))
        })
        .collect()
}

/// Applies again, oldest first, what is held for a group that just changed, until nothing
/// more applies (a sender key taken may open a message held behind it).
pub(crate) fn replay(
    dev: &Device,
    tx: &Tx<'_>,
    group_id: &[u8],
    now: u64,
) -> Result<Vec<Event>, ClientError> {
    let mut events = evict(tx, now)?;
    let Ok(gid) = GroupId::try_from(group_id) else {
        return Ok(events);
    };
    loop {
        let mut moved = false;
        // Senders with a message still waiting: their later messages wait behind it (a
        // sender key of theirs may still apply).
        let mut waiting: Vec<Address> = Vec::new();
        for (id, item) in tx.held(group_id)? {
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
                            if message {
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
    let events = show(
        dev,
        tx,
        &from,
        item.server_ms,
        &c,
        Some(gid),
        o.before_removal,
        now,
    )?;
    Ok(Applied::Done(events))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    fn events_of(store: &mut crate::store::Sealed, at: u64, n: u32) -> Vec<Event> {
        store
            .transaction(|tx| {
                let item = pc::HeldItem {
                    from_user: format!("u{n}"),
                    from_device: 1,
                    group_id: vec![7; 16],
                    group_message: vec![1, 2, 3],
                    ..Default::default()
                };
                hold(tx, &item, at)
            })
            .expect("hold")
    }

    fn held(store: &mut crate::store::Sealed) -> usize {
        store.read(|tx| tx.held(&[7; 16])).expect("held").len()
    }

    /// `MAX_HELD_ITEMS` are held; one more drops the oldest, with `TooEarly`.
    #[test]
    fn at_most_max_held_items_are_held() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (_, mut store) = super::super::test_device("alice", &mut rng);
        for n in 0..u32::try_from(MAX_HELD_ITEMS).expect("small") {
            assert!(events_of(&mut store, 10, n).is_empty());
        }
        assert_eq!(held(&mut store), MAX_HELD_ITEMS);
        let dropped = events_of(&mut store, 10, 9999);
        assert!(
            matches!(&dropped[..], [Event::Dropped { from, reason: DropReason::TooEarly }]
                if from.user == "u0"),
            "{dropped:?}"
        );
        assert_eq!(held(&mut store), MAX_HELD_ITEMS);
    }

    /// An item is held `HELD_ITEM_TTL_MS` at most.
    #[test]
    fn items_are_held_for_the_ttl_at_most() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (_, mut store) = super::super::test_device("alice", &mut rng);
        assert!(events_of(&mut store, 1_000, 0).is_empty());
        assert!(events_of(&mut store, 1_000 + HELD_ITEM_TTL_MS, 1).is_empty());
        assert_eq!(held(&mut store), 2);
        let dropped = events_of(&mut store, 1_001 + HELD_ITEM_TTL_MS, 2);
        assert!(
            matches!(&dropped[..], [Event::Dropped { from, reason: DropReason::TooEarly }]
                if from.user == "u0"),
            "{dropped:?}"
        );
        assert_eq!(held(&mut store), 2);
    }
}
