//! The receive pipeline: an envelope is decoded once ([`Incoming::decode`], through the
//! checked [`crate::wire`] module), opened (a session or group message; nothing is saved
//! when that fails), checked and applied, all in one store transaction.

use hush_crypto::{CryptoRng, IdentityPublicKey, SecretBytes, Zeroizing};
use hush_relay_protocol::proto as pr;
use hush_sessions::error::AcceptError;
use hush_sessions::{OneTimePrekey, Session, SessionMessage};

use super::account::{load_kem_prekey, load_signed_prekey};
use super::groups::apply_control;
use super::held::{self, Applied};
use super::{
    Device, PostQuantum, conversation_from_proto, conversation_to_proto, identity_of,
    stored_to_message,
};
use crate::error::ClientError;
use crate::event::{
    Address, Conversation, DropReason, Event, GroupId, MessageId, ReceiptKind, Undecryptable,
};
use crate::proto::client as pc;
use crate::store::{Sealed, Tick, Tx};

/// What an envelope's ciphertext holds, decoded once through the checked [`crate::wire`]
/// module.
pub(crate) enum Incoming {
    /// A session message (SPEC §9.3).
    Session(SessionMessage),
    /// A sender-key message of a group (SPEC §13.3).
    Group { group_id: GroupId, message: Vec<u8> },
}

impl Incoming {
    /// `None` when the bytes are not a valid payload.
    pub(crate) fn decode(ciphertext: &[u8]) -> Option<Self> {
        match crate::wire::parse_payload(ciphertext).ok()? {
            crate::wire::Payload::Session(bytes) => {
                SessionMessage::from_bytes(&bytes).ok().map(Self::Session)
            }
            crate::wire::Payload::Group { group_id, message } => {
                Some(Self::Group { group_id, message })
            }
        }
    }
}

/// A session message opened by [`open_session_message`].
pub(crate) struct Opened {
    plaintext: Zeroizing<Vec<u8>>,
    /// The sending device's identity key.
    identity: IdentityPublicKey,
    /// The sender's identity key differs from the one stored for its address.
    identity_changed: bool,
    /// A prekey message started a new session, which replaces the current one only if the
    /// content proves the message new (SPEC §16.7).
    new_session: bool,
    /// The new session is post-quantum (PQXDH).
    post_quantum: bool,
}

impl Opened {
    fn existing(plaintext: Vec<u8>, identity: IdentityPublicKey) -> Self {
        Self {
            plaintext: Zeroizing::new(plaintext),
            identity,
            identity_changed: false,
            new_session: false,
            post_quantum: false,
        }
    }
}

/// Opens one envelope and commits everything it causes in one transaction: the session or
/// group state, the record that it was processed, the history entry, group changes. Returns
/// the events to emit once the relay has been told. Errors here are store failures only;
/// undecryptable input becomes a `Dropped` event and leaves every state as it was.
pub(crate) fn receive<R: CryptoRng + ?Sized>(
    dev: &Device,
    store: &mut Sealed,
    env: pr::Envelope,
    incoming: Option<Incoming>,
    registered: Option<IdentityPublicKey>,
    now: u64,
    rng: &mut R,
) -> Result<Vec<Event>, ClientError> {
    let Some(from) = env
        .sender
        .as_ref()
        .map(|a| Address::new(a.user_id.clone(), a.device_id))
    else {
        return Ok(vec![]);
    };
    let drop_event = |reason| {
        vec![Event::Dropped {
            from: from.clone(),
            reason,
        }]
    };
    let Some(payload) = incoming else {
        return Ok(drop_event(DropReason::Malformed));
    };
    if store.read(|tx| tx.processed(&from, &env.message_id))? {
        return Ok(vec![]);
    }
    // A record this message needs that does not open is set aside, and the message tried
    // again (at most a few times): one bad record never stalls the mailbox behind it.
    let mut set_aside = Vec::new();
    let result = loop {
        let attempt = open_and_apply(
            dev,
            store,
            &env,
            &from,
            &payload,
            registered.as_ref(),
            now,
            rng,
        );
        match attempt {
            Err(ClientError::Corrupt | ClientError::Sealed) if set_aside.len() < 4 => {
                let group = match &payload {
                    Incoming::Group { group_id, .. } => Some(group_id.as_slice()),
                    Incoming::Session(_) => None,
                };
                let records = store.transaction(|tx| tx.set_aside_for(&from, group, now))?;
                if records.is_empty() {
                    break attempt;
                }
                set_aside.extend(
                    records
                        .into_iter()
                        .map(|record| Event::RecordSetAside { record }),
                );
            }
            other => break other,
        }
    };
    let mut events = set_aside;
    match result? {
        Ok(mut e) => events.append(&mut e),
        Err(reason) => events.append(&mut drop_event(reason)),
    }
    Ok(events)
}

/// One attempt at [`receive`]: opens the message and applies it in one transaction.
#[allow(clippy::too_many_arguments)]
fn open_and_apply<R: CryptoRng + ?Sized>(
    dev: &Device,
    store: &mut Sealed,
    env: &pr::Envelope,
    from: &Address,
    payload: &Incoming,
    registered: Option<&IdentityPublicKey>,
    now: u64,
    rng: &mut R,
) -> Result<Result<Vec<Event>, DropReason>, ClientError> {
    let from = from.clone();
    // Committed only when the message is applied or dropped after its state moved on.
    store.transaction_if_ok(|tx| {
        let mut events = Vec::new();
        let mut new_session = None;
        let (content, sender_identity, group, before_removal) = match payload {
            Incoming::Session(msg) => {
                match open_session_message(dev, tx, &from, msg, registered, rng)? {
                    Ok(o) => {
                        if o.identity_changed {
                            events.push(Event::IdentityChanged {
                                address: from.clone(),
                                safety_number: dev.safety_number(&from.user, &o.identity),
                            });
                        }
                        new_session = o.new_session.then_some(o.post_quantum);
                        (o.plaintext, o.identity, None, false)
                    }
                    Err(reason) => return Ok(Err(reason)),
                }
            }
            Incoming::Group { group_id, message } => {
                match held::open_arrived(tx, &from, group_id, message, now)? {
                    Applied::Done(o) => (o.plaintext, o.sender, Some(*group_id), o.before_removal),
                    Applied::Dropped(reason) => return Ok(Err(reason)),
                    Applied::Early => {
                        // Kept on the device until the change it needs (SPEC §16.9).
                        tx.mark_processed(&from, &env.message_id, now)?;
                        let item = pc::HeldItem {
                            group_message: message.clone(),
                            franking_commitment: env.franking_commitment.clone(),
                            franking_tag: env.franking_tag.clone(),
                            ..held::item(&from, env, group_id.as_slice())
                        };
                        return Ok(Ok(held::hold(dev, tx, &item, now)?));
                    }
                }
            }
        };
        tx.mark_processed(&from, &env.message_id, now)?;
        // From here an existing session (or group chain) has moved on and is committed even
        // if the content turns out to be invalid. A new session is not: an old prekey message
        // replayed under a fresh envelope id must not replace the session in use (§16.7).
        let invalid = |reason| {
            if new_session.is_some() {
                Err(reason)
            } else {
                Ok(vec![drop_of(&from, reason)])
            }
        };
        let c = match crate::wire::parse_content(&content, &env.message_id) {
            Ok(c) => c,
            Err(crate::wire::WireError::Field("message_id")) => {
                return Ok(invalid(DropReason::Undecryptable(
                    Undecryptable::MessageIdMismatch,
                )));
            }
            Err(_) => return Ok(invalid(DropReason::Malformed)),
        };
        // A text or attachment must open the envelope's franking commitment (SPEC §17), so
        // that every message shown can be reported.
        let franking = match franking_of(&content, &c, &env.franking_commitment, &env.franking_tag)
        {
            Ok(f) => f,
            Err(reason) => return Ok(invalid(reason)),
        };
        if let Some(post_quantum) = new_session {
            events.push(Event::SessionStarted {
                with: from.clone(),
                post_quantum,
                initiated: false,
            });
        }
        match &c.body {
            Some(pc::content::Body::Text(_) | pc::content::Body::Attachment(_)) => {
                events.append(&mut show(
                    dev,
                    tx,
                    &from,
                    env.server_timestamp_ms,
                    &c,
                    group,
                    before_removal,
                    franking,
                    now,
                )?);
                // Shown past a held message of the same sender that waited long enough:
                // what waited behind that one may go too.
                if let Some(g) = &group
                    && tx.oldest_held_from(g, &from)?.is_some()
                {
                    events.append(&mut held::replay(dev, tx, g, now)?);
                }
            }
            Some(pc::content::Body::GroupControl(gc)) if group.is_none() => {
                match apply_control(dev, tx, &from, &sender_identity, gc, now, rng)? {
                    Ok(mut e) => {
                        events.append(&mut e);
                        // What came before this change may apply now.
                        events.append(&mut held::replay(dev, tx, &gc.group_id, now)?);
                    }
                    Err(reason) => events.push(drop_of(&from, reason)),
                }
            }
            Some(pc::content::Body::SenderKey(sk)) if group.is_none() => {
                match held::apply_distribution(
                    tx,
                    &sender_identity,
                    &sk.group_id,
                    &sk.distribution,
                )? {
                    Applied::Done(()) => {
                        events.append(&mut held::replay(dev, tx, &sk.group_id, now)?);
                    }
                    Applied::Early => {
                        let item = pc::HeldItem {
                            distribution: sk.distribution.clone(),
                            sender_identity: sender_identity.to_bytes().to_vec(),
                            ..held::item(&from, env, &sk.group_id)
                        };
                        events.append(&mut held::hold(dev, tx, &item, now)?);
                    }
                    Applied::Dropped(reason) => events.push(drop_of(&from, reason)),
                }
            }
            Some(pc::content::Body::Read(r)) if group.is_none() => {
                // Only for messages this device sent to that very device.
                for mid in &r.message_ids {
                    let Ok(id) = MessageId::try_from(mid.as_slice()) else {
                        continue;
                    };
                    let at = env.server_timestamp_ms;
                    if tx.addressed_to(mid, &from)?
                        && tx.put_tick(mid, &from, Tick::Receipt(ReceiptKind::Read), at)?
                    {
                        events.push(Event::Receipt {
                            message_id: id,
                            kind: ReceiptKind::Read,
                            by: from.clone(),
                            at_ms: at,
                        });
                    }
                }
            }
            _ => events.push(drop_of(&from, DropReason::Malformed)),
        }
        Ok(Ok(events))
    })
}

/// The franking of a received text or attachment (SPEC §17): its plaintext ends with the
/// franking key field (`7a 20 nf`), the bytes before it are the canonical encoding of the
/// rest of the Content (at most `MAX_REPORT_CONTENT`), and they open the envelope's
/// `commitment` under `nf`. `None` for other bodies; a drop if it does not hold.
pub(crate) fn franking_of(
    plaintext: &[u8],
    c: &pc::Content,
    commitment: &[u8],
    tag: &[u8],
) -> Result<Option<pc::Franking>, DropReason> {
    if !matches!(
        c.body,
        Some(pc::content::Body::Text(_) | pc::content::Body::Attachment(_))
    ) {
        return Ok(None);
    }
    let unfranked = DropReason::Undecryptable(Undecryptable::Franking);
    let split = plaintext
        .len()
        .checked_sub(super::outbound::FRANKING_TRAILER)
        .ok_or(unfranked.clone())?;
    let (committed, trailer) = plaintext.split_at(split);
    let Ok(nf) = <[u8; 32]>::try_from(c.franking_key.as_slice()) else {
        return Err(unfranked);
    };
    if trailer[..2] != [0x7a, 0x20] || trailer[2..] != nf || tag.len() != 32 {
        return Err(unfranked);
    }
    // The committed bytes are the canonical encoding of what is shown (so the operator sees
    // what the recipient saw: no repeated or unknown fields, no padding), and fit a report.
    let canonical = prost::Message::encode_to_vec(&pc::Content {
        franking_key: Vec::new(),
        ..c.clone()
    });
    if canonical != committed || committed.len() > hush_relay_protocol::limits::MAX_REPORT_CONTENT {
        return Err(unfranked);
    }
    let key = hush_crypto::franking::FrankingKey::from_bytes(nf);
    if !hush_crypto::franking::opens(&key, committed, commitment) {
        return Err(unfranked);
    }
    Ok(Some(pc::Franking {
        content: committed.to_vec(),
        key: nf.to_vec(),
        commitment: commitment.to_vec(),
        tag: tag.to_vec(),
    }))
}

/// Adds a text or attachment to the history and reports it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn show(
    dev: &Device,
    tx: &Tx<'_>,
    from: &Address,
    server_ms: u64,
    c: &pc::Content,
    group: Option<GroupId>,
    before_removal: bool,
    franking: Option<pc::Franking>,
    now: u64,
) -> Result<Vec<Event>, ClientError> {
    let outgoing = from.user == dev.me.user;
    let conversation = match (&group, &c.sync) {
        (Some(g), _) => Conversation::Group(*g),
        (None, Some(s)) if outgoing => {
            conversation_from_proto(Some(s)).ok_or(ClientError::Protocol)?
        }
        _ => Conversation::Direct(from.user.clone()),
    };
    let stored = pc::StoredMessage {
        from_user: from.user.clone(),
        from_device: from.device,
        conversation: Some(conversation_to_proto(&conversation)),
        content: Some(c.clone()),
        server_ms,
        outgoing,
        before_removal,
        franking,
    };
    tx.put_message(&stored, now)?;
    Ok(stored_to_message(&stored)
        .map(Event::Message)
        .into_iter()
        .collect())
}

pub(crate) fn drop_of(from: &Address, reason: DropReason) -> Event {
    Event::Dropped {
        from: from.clone(),
        reason,
    }
}

/// Decrypts a session message from `from`, starting a session for a prekey message. The new
/// state is saved in `tx`; nothing is saved on failure.
pub(crate) fn open_session_message<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    from: &Address,
    msg: &SessionMessage,
    registered: Option<&IdentityPublicKey>,
    rng: &mut R,
) -> Result<Result<Opened, DropReason>, ClientError> {
    let existing = tx.session(from)?;
    let mut previous = tx.previous_sessions(from)?;
    if let Some(mut s) = existing {
        let error = match s.decrypt(msg, rng) {
            Ok(pt) => {
                tx.save_session(from, &s)?;
                return Ok(Ok(Opened::existing(pt, *s.remote_identity())));
            }
            Err(e) => e,
        };
        // A session that a newer one replaced: the peer may still be on it (both sides
        // started a session at the same time). The first that decrypts becomes current.
        for i in 0..previous.len() {
            if let Ok(pt) = previous[i].decrypt(msg, rng) {
                let promoted = previous.remove(i);
                keep_previous(&mut previous, s);
                tx.save_previous_sessions(from, &previous)?;
                tx.save_session(from, &promoted)?;
                return Ok(Ok(Opened::existing(pt, *promoted.remote_identity())));
            }
        }
        let SessionMessage::Prekey(p) = msg else {
            return Ok(Err(DropReason::Undecryptable(Undecryptable::Session(
                error,
            ))));
        };
        // A prekey message for a session we already have (a replay, or a repeat that does
        // not decrypt) never replaces it.
        let known_base = |x: &Session| x.base_key() == Some(p.base_key());
        if known_base(&s) || previous.iter().any(known_base) {
            return Ok(Err(DropReason::Undecryptable(Undecryptable::Session(
                error,
            ))));
        }
        // A new session from the peer: accepted below, this one kept as previous.
        keep_previous(&mut previous, s);
    }
    let SessionMessage::Prekey(p) = msg else {
        return Ok(Err(DropReason::NoSession));
    };
    let Some(spk) = load_signed_prekey(tx, p.signed_prekey_id())? else {
        return Ok(Err(DropReason::Undecryptable(
            Undecryptable::UnknownSignedPrekey,
        )));
    };
    let opk = match p.one_time_prekey_id() {
        None => None,
        Some(id) => match tx.one_time_prekey(id)? {
            Some(secret) => {
                let secret = SecretBytes::<32>::from_slice(&secret).ok_or(ClientError::Sealed)?;
                Some(OneTimePrekey::from_secret_bytes(id, &secret))
            }
            None => {
                return Ok(Err(DropReason::Undecryptable(
                    Undecryptable::OneTimePrekeyUsed,
                )));
            }
        },
    };
    let kem = match p.kem_prekey_id() {
        None if dev.post_quantum == PostQuantum::Required => {
            return Ok(Err(DropReason::Undecryptable(
                Undecryptable::ClassicalRefused,
            )));
        }
        None => None,
        Some(id) => match load_kem_prekey(tx, id)? {
            None => {
                return Ok(Err(DropReason::Undecryptable(Undecryptable::KemPrekeyUsed)));
            }
            // A last-resort key starts one session per (key, signed prekey, base key).
            Some(k) if k.is_last_resort() && is_reuse(tx, p)? => {
                return Ok(Err(DropReason::Undecryptable(
                    Undecryptable::KemPrekeyReused,
                )));
            }
            Some(k) => Some(k),
        },
    };
    if registered != Some(p.identity_key()) {
        return Ok(Err(DropReason::Undecryptable(
            Undecryptable::NotRegisteredIdentity,
        )));
    }
    let known = tx.device_key(from)?.map(|k| identity_of(&k)).transpose()?;
    let mut changed = false;
    let accept = |known: Option<&IdentityPublicKey>, rng: &mut R| {
        Session::accept_with_kem(
            &dev.identity,
            &spk,
            opk.as_ref(),
            kem.as_ref(),
            p,
            known,
            rng,
        )
    };
    let accepted = match accept(known.as_ref(), rng) {
        Err(AcceptError::IdentityChanged(_)) => {
            changed = true;
            accept(None, rng)
        }
        other => other,
    };
    let (session, pt) = match accepted {
        Ok(x) => x,
        Err(e) => return Ok(Err(DropReason::Undecryptable(Undecryptable::Accept(e)))),
    };
    if let Some(id) = p.one_time_prekey_id() {
        tx.delete_one_time_prekey(id)?;
    }
    match (&kem, p.kem_prekey_use()) {
        (Some(k), Some(u)) if k.is_last_resort() => tx.record_kem_prekey_use(&u)?,
        (Some(k), _) => tx.delete_kem_prekey(k.id())?,
        _ => {}
    }
    tx.set_device_key(from, p.identity_key().as_bytes())?;
    if changed {
        // Sessions with the old identity key are of no use any more.
        previous.clear();
    }
    tx.save_previous_sessions(from, &previous)?;
    tx.save_session(from, &session)?;
    let post_quantum = session.is_post_quantum();
    Ok(Ok(Opened {
        plaintext: Zeroizing::new(pt),
        identity: *p.identity_key(),
        identity_changed: changed,
        new_session: true,
        post_quantum,
    }))
}

fn is_reuse(tx: &Tx<'_>, p: &hush_sessions::PrekeyMessage) -> Result<bool, ClientError> {
    match p.kem_prekey_use() {
        Some(u) => tx.kem_prekey_used(&u),
        None => Ok(false),
    }
}

/// Most sessions kept per peer device after a newer one replaced them (SPEC §16.7).
pub(crate) const MAX_PREVIOUS_SESSIONS: usize = 8;

/// Puts `replaced` first among the previous sessions, forgetting the oldest past
/// [`MAX_PREVIOUS_SESSIONS`].
fn keep_previous<T>(previous: &mut Vec<T>, replaced: T) {
    previous.insert(0, replaced);
    previous.truncate(MAX_PREVIOUS_SESSIONS);
}

/// Records a receipt for a message this device sent; `None` for any other (or a repeat).
pub(crate) fn receipt(store: &mut Sealed, r: &pr::Receipt) -> Result<Option<Event>, ClientError> {
    let kind = if r.kind == pr::ReceiptKind::Read as i32 {
        ReceiptKind::Read
    } else {
        ReceiptKind::Delivered
    };
    let by = r
        .recipient
        .as_ref()
        .map(|a| Address::new(a.user_id.clone(), a.device_id));
    let (Some(by), Ok(mid)) = (by, MessageId::try_from(r.message_id.as_slice())) else {
        return Ok(None);
    };
    store.transaction(|tx| {
        // Only a device this device sent the message to may tick it (SPEC §16.4).
        let new = tx.addressed_to(&mid, &by)?
            && tx.put_tick(&mid, &by, Tick::Receipt(kind), r.timestamp_ms)?;
        Ok(new.then_some(Event::Receipt {
            message_id: mid,
            kind,
            by,
            at_ms: r.timestamp_ms,
        }))
    })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::{MAX_PREVIOUS_SESSIONS, keep_previous, receipt};
    use crate::core::outbound::envelope_sent;
    use crate::proto::client as pc;
    use crate::store::{MemoryStore, Sealed, Tick};
    use crate::{Address, ReceiptKind};
    use hush_relay_protocol::proto as pr;

    #[test]
    fn receipts_count_only_from_devices_the_message_was_sent_to() {
        let mut store = Sealed::new(
            Box::new(MemoryStore::new()),
            hush_crypto::StorageKey::from_bytes([7; 32]),
            Box::new(rand::rngs::StdRng::seed_from_u64(1)),
        );
        let mid = vec![1; 16];
        let me = Address::new("alice", 1);
        let ready = pc::Ready {
            recipients: vec![pc::Recipient {
                user_id: "bob".into(),
                device_id: 1,
            }],
            ..Default::default()
        };
        store
            .transaction(|tx| {
                tx.put_tick(&mid, &me, Tick::Queued, 1)?;
                let seq = tx.push_draft(&mid, &pc::Draft::default(), 1)?;
                tx.set_ready(seq, std::slice::from_ref(&ready))?;
                envelope_sent(tx, &me, seq, 0, &mid, &ready, 2)
            })
            .unwrap();
        let from = |user: &str, device| pr::Receipt {
            receipt_id: 1,
            kind: pr::ReceiptKind::Read as i32,
            recipient: Some(pr::Address {
                user_id: user.into(),
                device_id: device,
            }),
            message_id: mid.clone(),
            timestamp_ms: 5,
        };
        // Bob's other device and a stranger were never sent it: dropped.
        assert!(receipt(&mut store, &from("bob", 2)).unwrap().is_none());
        assert!(receipt(&mut store, &from("mallory", 1)).unwrap().is_none());
        // Bob's device 1 was: one event, once.
        let e = receipt(&mut store, &from("bob", 1)).unwrap();
        assert!(matches!(
            e,
            Some(crate::Event::Receipt {
                kind: ReceiptKind::Read,
                ..
            })
        ));
        assert!(receipt(&mut store, &from("bob", 1)).unwrap().is_none());
        // A receipt for a message never sent: dropped.
        let mut other = from("bob", 1);
        other.message_id = vec![2; 16];
        assert!(receipt(&mut store, &other).unwrap().is_none());
    }

    #[test]
    fn previous_sessions_keep_the_newest_up_to_the_limit() {
        let mut previous = Vec::new();
        for i in 0..MAX_PREVIOUS_SESSIONS {
            keep_previous(&mut previous, i);
        }
        assert_eq!(previous.len(), MAX_PREVIOUS_SESSIONS);
        assert_eq!(previous[0], MAX_PREVIOUS_SESSIONS - 1);
        // One more: the oldest (0) goes.
        keep_previous(&mut previous, MAX_PREVIOUS_SESSIONS);
        assert_eq!(previous.len(), MAX_PREVIOUS_SESSIONS);
        assert_eq!(previous[0], MAX_PREVIOUS_SESSIONS);
        assert!(!previous.contains(&0));
    }
}
