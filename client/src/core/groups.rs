//! Groups as the client keeps them: the group state with its directory of member devices
//! (SPEC §16.6), and control messages applied from other members.

use hush_crypto::{CryptoRng, IdentityPublicKey};
use hush_groups::{Group, MembershipChange, Role};

use super::account::record_devices;
use super::{Device, identity_of, member_address};
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

/// Creates a group of this device and the `listed` devices (every device of each member
/// user, as the relay listed them; this device left out) and queues its creation for them.
pub(crate) fn create<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    name: &str,
    listed: &[(Address, IdentityPublicKey)],
    now: u64,
    rng: &mut R,
) -> Result<(GroupId, Vec<Event>), ClientError> {
    let mut events = record_devices(tx, dev, listed)?;
    let others: Vec<(IdentityPublicKey, Role)> =
        listed.iter().map(|(_, k)| (*k, Role::Member)).collect();
    let (group, create) = Group::create(&dev.identity, &others, dev.group_config, rng)
        .map_err(ClientError::NotAllowed)?;
    let gid = *group.id();
    let mut directory: Vec<pc::Member> = listed
        .iter()
        .map(|(a, k)| pc::Member {
            identity_key: k.to_bytes().to_vec(),
            user_id: a.user.clone(),
            device_id: a.device,
        })
        .collect();
    directory.push(dev.own_member());
    let rec = pc::GroupRecord {
        state: vec![],
        directory: directory.clone(),
        name: name.to_string(),
    };
    save_group_state(tx, &gid, &group, rec)?;
    let others = dev.others(&directory);
    dev.push_control(
        tx,
        &gid,
        pc::GroupControl {
            group_id: gid.to_vec(),
            control: create,
            group_info: vec![],
            directory: directory.clone(),
            name: name.to_string(),
        },
        others,
        now,
        rng,
    )?;
    events.push(Event::Group {
        group: gid,
        change: GroupChange::Joined {
            name: name.to_string(),
            members: listed.iter().map(|(a, _)| a.clone()).collect(),
        },
        by: dev.me.clone(),
    });
    Ok((gid, events))
}

/// Adds the `listed` devices (every device of one user, as the relay listed them) to a
/// group; this device must be an admin. Each newcomer gets the group's state and this
/// device's sender key; the members hear of it.
pub(crate) fn add<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    group: &GroupId,
    listed: &[(Address, IdentityPublicKey)],
    now: u64,
    rng: &mut R,
) -> Result<Vec<Event>, ClientError> {
    let mut events = record_devices(tx, dev, listed)?;
    let mut rec = tx.group(group)?.ok_or(ClientError::Unknown("group"))?;
    let mut g = load_group(&rec)?;
    for (addr, key) in listed {
        if rec
            .directory
            .iter()
            .any(|m| m.identity_key == key.as_bytes())
        {
            continue;
        }
        let existing: Vec<pc::Member> = dev.others(&rec.directory);
        let (add, info) = g
            .add(&dev.identity, key, Role::Member)
            .map_err(ClientError::NotAllowed)?;
        let entry = pc::Member {
            identity_key: key.to_bytes().to_vec(),
            user_id: addr.user.clone(),
            device_id: addr.device,
        };
        rec.directory.push(entry.clone());
        dev.push_control(
            tx,
            group,
            pc::GroupControl {
                group_id: group.to_vec(),
                control: add,
                group_info: vec![],
                directory: vec![entry.clone()],
                name: String::new(),
            },
            existing,
            now,
            rng,
        )?;
        dev.push_control(
            tx,
            group,
            pc::GroupControl {
                group_id: group.to_vec(),
                control: vec![],
                group_info: info,
                directory: rec.directory.clone(),
                name: rec.name.clone(),
            },
            vec![entry.clone()],
            now,
            rng,
        )?;
        if let Some(d) = g.sender_key_distribution() {
            dev.push_sender_key(tx, group, &d, vec![entry], now, rng)?;
        }
        events.push(Event::Group {
            group: *group,
            change: GroupChange::Added(addr.clone()),
            by: dev.me.clone(),
        });
    }
    save_group_state(tx, group, &g, rec)?;
    Ok(events)
}

/// Removes every device of `user` from a group (this device must be an admin). The next
/// message of every remaining member uses a fresh sender key.
pub(crate) fn remove<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    group: &GroupId,
    user: &str,
    now: u64,
    rng: &mut R,
) -> Result<Vec<Event>, ClientError> {
    let mut rec = tx.group(group)?.ok_or(ClientError::Unknown("group"))?;
    let mut g = load_group(&rec)?;
    let targets: Vec<pc::Member> = rec
        .directory
        .iter()
        .filter(|m| m.user_id == user && member_address(m) != dev.me)
        .cloned()
        .collect();
    if targets.is_empty() {
        return Err(ClientError::Unknown("member"));
    }
    let mut events = Vec::new();
    for t in &targets {
        let key = identity_of(&t.identity_key)?;
        let control = g
            .remove(&dev.identity, &key)
            .map_err(ClientError::NotAllowed)?;
        // Everyone still in the group, and the removed device itself, hear of it.
        let recipients: Vec<pc::Member> = dev.others(&rec.directory);
        rec.directory.retain(|m| m.identity_key != t.identity_key);
        dev.push_control(
            tx,
            group,
            pc::GroupControl {
                group_id: group.to_vec(),
                control,
                group_info: vec![],
                directory: vec![],
                name: String::new(),
            },
            recipients,
            now,
            rng,
        )?;
        events.push(Event::Group {
            group: *group,
            change: GroupChange::Removed(member_address(t)),
            by: dev.me.clone(),
        });
    }
    save_group_state(tx, group, &g, rec)?;
    Ok(events)
}

/// Leaves a group: the other members hear of it.
pub(crate) fn leave<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    group: &GroupId,
    now: u64,
    rng: &mut R,
) -> Result<(), ClientError> {
    let rec = tx.group(group)?.ok_or(ClientError::Unknown("group"))?;
    let mut g = load_group(&rec)?;
    let control = g.leave(&dev.identity).map_err(ClientError::NotAllowed)?;
    let others: Vec<pc::Member> = dev.others(&rec.directory);
    dev.push_control(
        tx,
        group,
        pc::GroupControl {
            group_id: group.to_vec(),
            control,
            group_info: vec![],
            directory: vec![],
            name: String::new(),
        },
        others,
        now,
        rng,
    )?;
    save_group_state(tx, group, &g, rec)
}
