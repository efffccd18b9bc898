//! Groups as the client keeps them: the group state with its directory of member devices
//! (SPEC §16.6), and control messages applied from other members.

use hush_crypto::{CryptoRng, IdentityPublicKey};
use hush_groups::{Group, MembershipChange};

use super::{Device, member_address};
use crate::error::ClientError;
use crate::event::{Address, DropReason, Event, GroupChange, GroupId, Undecryptable};
use crate::proto::client as pc;
use crate::store::Tx;

pub(crate) fn load_group(rec: &pc::GroupRecord) -> Result<Group, ClientError> {
    Group::from_bytes(&rec.state).map_err(|_| ClientError::Corrupt)
}

pub(crate) fn save_group_state(
    tx: &Tx<'_>,
    id: &[u8],
    group: &Group,
    mut rec: pc::GroupRecord,
) -> Result<(), ClientError> {
    rec.state = group.to_bytes().to_vec();
    let out = tx.save_group(id, &rec);
    rec.state.iter_mut().for_each(|b| *b = 0);
    out
}

/// Applies a group control message sent pairwise by `from`.
pub(crate) fn apply_control<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    from: &Address,
    sender: &IdentityPublicKey,
    gc: &pc::GroupControl,
    now: u64,
    rng: &mut R,
) -> Result<Result<Vec<Event>, DropReason>, ClientError> {
    let me_key = dev.identity.public();
    let Ok(gid) = GroupId::try_from(gc.group_id.as_slice()) else {
        return Ok(Err(DropReason::Malformed));
    };
    let mut events = Vec::new();
    let existing = tx.group(&gid)?;
    let Some(mut rec) = existing else {
        // A new group for this device: created with it, or joining by group info.
        let created = if gc.group_info.is_empty() {
            Group::from_create_by(me_key, &gc.control, sender, dev.group_config)
        } else {
            Group::join(me_key, &gc.group_info, sender, dev.group_config)
        };
        let g = match created {
            Ok(g) => g,
            Err(e) => return Ok(Err(DropReason::Undecryptable(Undecryptable::Control(e)))),
        };
        if g.id() != &gid {
            return Ok(Err(DropReason::Malformed));
        }
        // Only keep directory entries for actual members.
        let members: Vec<[u8; 32]> = g
            .membership()
            .members()
            .map(|(k, _)| k.to_bytes())
            .collect();
        let directory: Vec<pc::Member> = gc
            .directory
            .iter()
            .filter(|m| {
                members
                    .iter()
                    .any(|k| k.as_slice() == m.identity_key.as_slice())
            })
            .cloned()
            .collect();
        let rec = pc::GroupRecord {
            state: vec![],
            directory,
            name: gc.name.clone(),
        };
        events.push(Event::Group {
            group: gid,
            change: GroupChange::Joined {
                name: gc.name.clone(),
                members: rec
                    .directory
                    .iter()
                    .map(member_address)
                    .filter(|a| a != &dev.me)
                    .collect(),
            },
            by: from.clone(),
        });
        save_group_state(tx, &gid, &g, rec)?;
        return Ok(Ok(events));
    };
    if gc.control.is_empty() {
        // Group info for a group this device is already in: nothing to do.
        return Ok(Ok(events));
    }
    let mut g = load_group(&rec)?;
    let change = match g.apply(&gc.control) {
        Ok(c) => c,
        Err(e) => return Ok(Err(DropReason::Undecryptable(Undecryptable::Control(e)))),
    };
    let address_of = |k: &IdentityPublicKey, dir: &[pc::Member]| {
        dir.iter()
            .find(|m| m.identity_key == k.as_bytes())
            .map(member_address)
    };
    let change_event = match &change {
        MembershipChange::Added(k, _) => {
            // Without its directory entry the newcomer could not be addressed and would
            // silently miss everything: refuse the control, leaving the group as it was.
            let Some(entry) = gc.directory.iter().find(|m| m.identity_key == k.as_bytes()) else {
                return Ok(Err(DropReason::Malformed));
            };
            rec.directory.retain(|m| m.identity_key != k.as_bytes());
            rec.directory.push(entry.clone());
            // Hand the newcomer this device's current sender key.
            if k != me_key
                && let Some(d) = g.sender_key_distribution()
            {
                dev.push_sender_key(tx, &gid, &d, vec![entry.clone()], now, rng)?;
            }
            address_of(k, &rec.directory).map(GroupChange::Added)
        }
        MembershipChange::Removed(k) | MembershipChange::Left(k) => {
            let a = address_of(k, &rec.directory);
            rec.directory.retain(|m| m.identity_key != k.as_bytes());
            if k == me_key {
                Some(GroupChange::RemovedSelf)
            } else if matches!(change, MembershipChange::Left(_)) {
                a.map(GroupChange::Left)
            } else {
                a.map(GroupChange::Removed)
            }
        }
        MembershipChange::Promoted(k) | MembershipChange::Demoted(k) => {
            address_of(k, &rec.directory).map(GroupChange::RoleChanged)
        }
        _ => None,
    };
    save_group_state(tx, &gid, &g, rec)?;
    if let Some(change) = change_event {
        events.push(Event::Group {
            group: gid,
            change,
            by: from.clone(),
        });
    }
    Ok(Ok(events))
}
