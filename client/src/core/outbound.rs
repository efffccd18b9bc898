//! Outbound fan-out: one draft of the outbox becomes the envelopes that carry it (SPEC §16.4
//! and §16.5), encrypted in one store transaction and kept as `Ready` entries, so a crash
//! afterwards resends the same ciphertexts and never encrypts twice.

use std::collections::HashMap;

use hush_crypto::{CryptoRng, IdentityPublicKey, Zeroizing};
use hush_sessions::{PrekeyBundle, Session};
use prost::Message as _;

use super::groups::{load_group, save_group_state};
use super::{
    Device, FORWARDED_MANY_TIMES, ForwardLimits, MAX_TEXT, body_to_content, conversation_to_proto,
    random_id,
};
use crate::error::{ClientError, EncryptError};
use crate::event::{Address, Body, Conversation, Event, Message, MessageId};
use crate::proto::client as pc;
use crate::store::{Tick, Tx};

/// Records that the relay stored envelope `idx` of outbox entry `seq` (message `mid`): the
/// envelope is done and, if it carries the message itself (not a sender key or a session
/// reset), each device it went to may now send receipts for it (SPEC §16.6: receipts from
/// any other device are dropped).
pub(crate) fn envelope_sent(
    tx: &Tx<'_>,
    me: &Address,
    seq: i64,
    idx: i64,
    mid: &[u8],
    ready: &pc::Ready,
    now_ms: u64,
) -> Result<(), ClientError> {
    envelope_partly_sent(tx, me, seq, idx, mid, ready, &[], now_ms)
}

/// Records that the relay stored envelope `idx` of outbox entry `seq` for every recipient
/// but those in `refused` (their mailboxes were full, SPEC §14.2): the envelope stays, for
/// them alone, to be sent again.
#[allow(clippy::too_many_arguments)]
pub(crate) fn envelope_partly_sent(
    tx: &Tx<'_>,
    me: &Address,
    seq: i64,
    idx: i64,
    mid: &[u8],
    ready: &pc::Ready,
    refused: &[pc::Recipient],
    now_ms: u64,
) -> Result<(), ClientError> {
    let (left, stored): (Vec<_>, Vec<_>) = ready
        .recipients
        .iter()
        .cloned()
        .partition(|r| refused.contains(r));
    if left.is_empty() {
        tx.done_ready(seq, idx)?;
    } else {
        tx.replace_ready(
            seq,
            idx,
            &pc::Ready {
                recipients: left,
                ..ready.clone()
            },
        )?;
    }
    // Only for messages (which have ticks), not receipts or group plumbing.
    if (ready.message_id.is_empty() || ready.message_id == mid) && tx.queued_by(mid, me)? {
        for r in stored {
            let to = Address::new(r.user_id, r.device_id);
            tx.put_tick(mid, &to, Tick::Addressed, now_ms)?;
        }
    }
    Ok(())
}

/// Queues read receipts for messages `from` sent to this device: one end-to-end message to
/// that device alone, through the outbox like any other (SPEC §16.4). Nothing is queued if
/// this device does not know `from`'s identity key (it never had a session with it).
pub(crate) fn queue_read<R: CryptoRng + ?Sized>(
    tx: &Tx<'_>,
    from: &Address,
    message_ids: Vec<Vec<u8>>,
    now_ms: u64,
    rng: &mut R,
) -> Result<(), ClientError> {
    let Some(key) = tx.device_key(from)? else {
        return Ok(());
    };
    let id = random_id(rng);
    tx.push_draft(
        &id,
        &pc::Draft {
            to: Some(conversation_to_proto(&Conversation::Direct(
                from.user.clone(),
            ))),
            content: Some(pc::Content {
                message_id: id.to_vec(),
                sent_ms: now_ms,
                body: Some(pc::content::Body::Read(pc::ReadReceipts { message_ids })),
                sync: None,
                forwarded: 0,
                franking_key: vec![],
            }),
            only: vec![pc::Member {
                identity_key: key,
                user_id: from.user.clone(),
                device_id: from.device,
            }],
        },
        now_ms,
    )?;
    Ok(())
}

/// Queues a message: checks it, and in one transaction writes the draft to the outbox, the
/// "queued" tick and the history entry. Nothing is encrypted yet.
pub(crate) fn queue<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    to: &Conversation,
    body: &Body,
    now_ms: u64,
    rng: &mut R,
) -> Result<MessageId, ClientError> {
    queue_forwarded(dev, tx, to, body, 0, now_ms, rng)
}

/// How many chats one forward may go to, by how often the message was already forwarded
/// (SPEC §16.2): `limits.max_chats`, or `limits.max_chats_many_times` once the message was
/// forwarded [`FORWARDED_MANY_TIMES`] times or more.
pub(crate) fn forward_allowed(
    limits: &ForwardLimits,
    forwarded: u32,
    chats: usize,
) -> Result<(), ClientError> {
    let max = if forwarded >= FORWARDED_MANY_TIMES {
        limits.max_chats_many_times
    } else {
        limits.max_chats
    };
    if chats == 0 {
        return Err(ClientError::Invalid("forward to at least one chat"));
    }
    if chats > max {
        return Err(ClientError::ForwardLimit { max });
    }
    Ok(())
}

/// [`queue`] for a copy that was forwarded `forwarded` times before (0 for a new message).
pub(crate) fn queue_forwarded<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    to: &Conversation,
    body: &Body,
    forwarded: u32,
    now_ms: u64,
    rng: &mut R,
) -> Result<MessageId, ClientError> {
    let id = random_id(rng);
    queue_as(dev, tx, id, to, body, forwarded, now_ms)?;
    Ok(id)
}

/// The message id of a reply to message `id` from `from` (SPEC §16.2, "Replies"): the
/// first 16 bytes of `SHA-256("hush reply id v1" ‖ u32be(len(user)) ‖ user ‖
/// u32be(device) ‖ id)`.
pub(crate) fn reply_id(from: &Address, id: &MessageId) -> MessageId {
    let user = from.user.as_bytes();
    let len = u32::try_from(user.len()).unwrap_or(u32::MAX).to_be_bytes();
    let digest = hush_crypto::hash::sha256(&[
        hush_crypto::labels::REPLY_ID_CONTEXT,
        &len,
        user,
        &from.device.to_be_bytes(),
        id,
    ]);
    let mut out: MessageId = [0; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Queues `body` as the reply to `to` (a received message), in its conversation, once:
/// `None` if this device queued that reply already (SPEC §16.2, "Replies").
pub(crate) fn queue_reply(
    dev: &Device,
    tx: &Tx<'_>,
    to: &Message,
    body: &Body,
    now_ms: u64,
) -> Result<Option<MessageId>, ClientError> {
    let id = reply_id(&to.from, &to.id);
    if tx.queued_here(&id)? {
        return Ok(None);
    }
    let conversation = match &to.conversation {
        Conversation::Group(g) => Conversation::Group(*g),
        Conversation::Direct(_) if to.outgoing => to.conversation.clone(),
        Conversation::Direct(_) => Conversation::Direct(to.from.user.clone()),
    };
    queue_as(dev, tx, id, &conversation, body, 0, now_ms)?;
    Ok(Some(id))
}

/// Queues a message under `id`.
fn queue_as(
    dev: &Device,
    tx: &Tx<'_>,
    id: MessageId,
    to: &Conversation,
    body: &Body,
    forwarded: u32,
    now_ms: u64,
) -> Result<(), ClientError> {
    if let Body::Text(t) = body
        && t.len() > MAX_TEXT
    {
        return Err(ClientError::Invalid("text over 64 KiB"));
    }
    if let Conversation::Direct(u) = to
        && !hush_relay_protocol::valid_user_id(u)
    {
        return Err(ClientError::Invalid(
            "user id must be 1 to 64 bytes of a-z, 0-9, '.', '_' and '-'",
        ));
    }
    if let Conversation::Group(g) = to
        && tx.group(g)?.is_none()
    {
        return Err(ClientError::Unknown("group"));
    }
    let content = pc::Content {
        message_id: id.to_vec(),
        sent_ms: now_ms,
        body: Some(body_to_content(body)),
        sync: None,
        forwarded,
        franking_key: vec![],
    };
    tx.push_draft(
        &id,
        &pc::Draft {
            to: Some(conversation_to_proto(to)),
            content: Some(content.clone()),
            only: vec![],
        },
        now_ms,
    )?;
    tx.put_tick(&id, &dev.me, Tick::Queued, now_ms)?;
    tx.put_message(
        &pc::StoredMessage {
            from_user: dev.me.user.clone(),
            from_device: dev.me.device,
            conversation: Some(conversation_to_proto(to)),
            content: Some(content),
            server_ms: 0,
            outgoing: true,
            before_removal: false,
            franking: None,
        },
        now_ms,
    )?;
    Ok(())
}

/// What one draft is to become: its conversation and content, the devices it goes to with
/// the identity key each must have, and this user's other devices (direct messages only).
pub(crate) struct Plan {
    /// The conversation.
    pub(crate) to: Conversation,
    /// The content, as the recipients will decrypt it.
    pub(crate) content: pc::Content,
    /// The recipients' devices.
    pub(crate) targets: Vec<(Address, IdentityPublicKey)>,
    /// This user's other devices, which get a copy marked with the conversation.
    pub(crate) own: Vec<(Address, IdentityPublicKey)>,
    /// A group text or attachment: one sender-key message for every member (plus, when
    /// the sender key rotates, its distribution to each member over their sessions).
    pub(crate) group_message: bool,
    /// The remembered device lists `targets` and `own` come from, as (user, digest): every
    /// envelope carries them, so the relay refuses it if a list has changed (SPEC §16.4).
    pub(crate) device_lists: Vec<(String, [u8; 32])>,
}

fn recipient(a: &Address) -> pc::Recipient {
    pc::Recipient {
        user_id: a.user.clone(),
        device_id: a.device,
    }
}

/// Encrypts `content` for one device over its session, starting one from its bundle when
/// there is none (or the identity key changed; `started` then gets a
/// [`Event::SessionStarted`]). `None` when there is neither.
#[allow(clippy::too_many_arguments)]
fn encrypt_to<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    bundles: &HashMap<Address, PrekeyBundle>,
    a: &Address,
    key: &IdentityPublicKey,
    plaintext: &[u8],
    started: &mut Vec<Event>,
    rng: &mut R,
) -> Result<Option<Vec<u8>>, ClientError> {
    let session = match tx.session(a)? {
        Some(s) if s.remote_identity() == key => Some(s),
        _ => match bundles.get(a) {
            Some(b) => {
                let s = Session::initiate_with(
                    &dev.identity,
                    b,
                    Some(key),
                    dev.post_quantum.suite_policy(),
                    rng,
                )
                .map_err(|e| ClientError::Encrypt(EncryptError::Init(e)))?;
                started.push(Event::SessionStarted {
                    with: a.clone(),
                    post_quantum: s.is_post_quantum(),
                    initiated: true,
                });
                Some(s)
            }
            None => None,
        },
    };
    let Some(mut session) = session else {
        return Ok(None);
    };
    let m = session
        .encrypt(plaintext)
        .map_err(|e| ClientError::Encrypt(EncryptError::Session(e)))?;
    tx.save_session(a, &session)?;
    Ok(Some(
        pc::Payload {
            kind: Some(pc::payload::Kind::Session(m.to_bytes())),
        }
        .encode_to_vec(),
    ))
}

/// Length of the franking key field that ends a franked Content: `7a 20` and 32 bytes.
pub(crate) const FRANKING_TRAILER: usize = 34;

/// A Content as its recipients decrypt it. A text or attachment is franked (SPEC §17): the
/// encoded Content (`C`) is followed by its franking key `nf` as field 15 (`7a 20 nf`), and
/// the commitment to `C` under `nf` is returned, for the relay.
fn plaintext_of(
    content: &pc::Content,
    nf: &hush_crypto::franking::FrankingKey,
) -> (Zeroizing<Vec<u8>>, Option<[u8; 32]>) {
    let mut bytes = Zeroizing::new(content.encode_to_vec());
    if !matches!(
        content.body,
        Some(pc::content::Body::Text(_) | pc::content::Body::Attachment(_))
    ) {
        return (bytes, None);
    }
    let cf = hush_crypto::franking::commit(nf, &bytes);
    bytes.extend_from_slice(&[0x7a, 0x20]);
    bytes.extend_from_slice(nf.expose());
    (bytes, Some(cf))
}

/// Encrypts the draft `seq` as `plan` says and replaces it by its ready envelopes, in `tx`.
/// `bundles` holds the prekey bundles fetched for devices without a session. Returns the
/// sessions it started, as events to report once `tx` commits.
pub(crate) fn encrypt<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    seq: i64,
    plan: &Plan,
    bundles: &HashMap<Address, PrekeyBundle>,
    now_ms: u64,
    rng: &mut R,
) -> Result<Vec<Event>, ClientError> {
    let mut ready = Vec::new();
    let mut started = Vec::new();
    // One franking key for every copy of this message (SPEC §17).
    let nf = hush_crypto::franking::FrankingKey::generate(rng);
    if plan.group_message {
        let Conversation::Group(gid) = &plan.to else {
            return Err(ClientError::Protocol);
        };
        let rec = tx.group(gid)?.ok_or(ClientError::Unknown("group"))?;
        let mut g = load_group(&rec)?;
        let (bytes, franking) = plaintext_of(&plan.content, &nf);
        let sent = g
            .encrypt(&bytes, now_ms / 1000, rng)
            .map_err(|e| ClientError::Encrypt(EncryptError::Group(e)))?;
        if let Some(d) = &sent.distribution {
            let sk = pc::Content {
                message_id: random_id(rng).to_vec(),
                sent_ms: now_ms,
                body: Some(pc::content::Body::SenderKey(pc::SenderKey {
                    group_id: gid.to_vec(),
                    distribution: d.to_vec(),
                })),
                sync: None,
                forwarded: 0,
                franking_key: vec![],
            };
            let sk_bytes = Zeroizing::new(sk.encode_to_vec());
            for (a, k) in &plan.targets {
                if let Some(p) = encrypt_to(dev, tx, bundles, a, k, &sk_bytes, &mut started, rng)? {
                    ready.push(pc::Ready {
                        recipients: vec![recipient(a)],
                        payload: p,
                        message_id: sk.message_id.clone(),
                        device_lists: vec![],
                        franking_commitment: vec![],
                    });
                }
            }
        }
        if !plan.targets.is_empty() {
            ready.push(pc::Ready {
                recipients: plan.targets.iter().map(|(a, _)| recipient(a)).collect(),
                payload: pc::Payload {
                    kind: Some(pc::payload::Kind::Group(pc::GroupPayload {
                        group_id: gid.to_vec(),
                        message: sent.message.clone(),
                    })),
                }
                .encode_to_vec(),
                message_id: vec![],
                device_lists: vec![],
                franking_commitment: franking.map(|c| c.to_vec()).unwrap_or_default(),
            });
        }
        save_group_state(tx, gid, &g, rec)?;
    } else {
        let checks: Vec<pc::DeviceListCheck> = plan
            .device_lists
            .iter()
            .map(|(user, digest)| pc::DeviceListCheck {
                user_id: user.clone(),
                digest: digest.to_vec(),
            })
            .collect();
        let mut reached = 0usize;
        let (bytes, franking) = plaintext_of(&plan.content, &nf);
        let franking = franking.map(|c| c.to_vec()).unwrap_or_default();
        for (a, k) in &plan.targets {
            if let Some(p) = encrypt_to(dev, tx, bundles, a, k, &bytes, &mut started, rng)? {
                reached += 1;
                ready.push(pc::Ready {
                    recipients: vec![recipient(a)],
                    payload: p,
                    message_id: vec![],
                    device_lists: checks.clone(),
                    franking_commitment: franking.clone(),
                });
            }
        }
        let synced = pc::Content {
            sync: Some(conversation_to_proto(&plan.to)),
            ..plan.content.clone()
        };
        let (bytes, franking) = plaintext_of(&synced, &nf);
        let franking = franking.map(|c| c.to_vec()).unwrap_or_default();
        for (a, k) in &plan.own {
            if let Some(p) = encrypt_to(dev, tx, bundles, a, k, &bytes, &mut started, rng)? {
                ready.push(pc::Ready {
                    recipients: vec![recipient(a)],
                    payload: p,
                    message_id: vec![],
                    device_lists: checks.clone(),
                    franking_commitment: franking.clone(),
                });
            }
        }
        if reached == 0 && !plan.targets.is_empty() {
            return Err(ClientError::Unknown("device with prekeys"));
        }
    }
    tx.set_ready(seq, &ready)?;
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_limits_at_their_boundaries() {
        let limits = ForwardLimits::default();
        let max = |e: Result<(), ClientError>| match e {
            Err(ClientError::ForwardLimit { max }) => Some(max),
            _ => None,
        };
        assert!(forward_allowed(&limits, 0, 5).is_ok());
        assert_eq!(max(forward_allowed(&limits, 0, 6)), Some(5));
        assert!(forward_allowed(&limits, FORWARDED_MANY_TIMES - 1, 5).is_ok());
        assert!(forward_allowed(&limits, FORWARDED_MANY_TIMES, 1).is_ok());
        assert_eq!(
            max(forward_allowed(&limits, FORWARDED_MANY_TIMES, 2)),
            Some(1)
        );
        assert!(matches!(
            forward_allowed(&limits, 0, 0),
            Err(ClientError::Invalid(_))
        ));
        let wide = ForwardLimits {
            max_chats: 10,
            max_chats_many_times: 3,
        };
        assert!(forward_allowed(&wide, 0, 10).is_ok());
        assert_eq!(max(forward_allowed(&wide, 9, 4)), Some(3));
    }
}

#[cfg(test)]
mod reply_tests {
    use rand::SeedableRng as _;

    use super::*;

    /// SPEC §16.2's worked example.
    #[test]
    fn reply_ids_follow_the_spec() {
        let mut m: MessageId = [0; 16];
        for (i, b) in m.iter_mut().enumerate() {
            *b = u8::try_from(i).expect("small");
        }
        assert_eq!(
            hex::encode(reply_id(&Address::new("alice", 1), &m)),
            "9cf0e1de9ea7fef77d3028fdf932136d"
        );
        assert_ne!(
            reply_id(&Address::new("alice", 2), &m),
            reply_id(&Address::new("alice", 1), &m)
        );
    }

    /// A reply is queued once, in the answered message's conversation.
    #[test]
    fn a_reply_is_queued_once() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (dev, mut store) = super::super::test_device("bot", &mut rng);
        let incoming = Message {
            id: [9; 16],
            from: Address::new("bob", 2),
            conversation: Conversation::Direct("bob".into()),
            body: Body::Text("menu".into()),
            sent_ms: 1,
            server_ms: 2,
            outgoing: false,
            before_removal: false,
            forwarded: 0,
            reportable: true,
        };
        let answer = Body::Text("here it is".into());
        let reply = |store: &mut crate::store::Sealed| {
            store
                .transaction(|tx| queue_reply(&dev, tx, &incoming, &answer, 5))
                .expect("reply")
        };
        let first = reply(&mut store);
        assert_eq!(first, Some(reply_id(&incoming.from, &incoming.id)));
        assert_eq!(reply(&mut store), None, "answered already");
        let (_, _, draft) = store
            .read(|tx| tx.next_outbox(0))
            .expect("outbox")
            .expect("one entry");
        assert_eq!(store.read(|tx| tx.outbox_len()).expect("len"), 1);
        let draft = draft.expect("a draft");
        assert_eq!(
            crate::core::conversation_from_proto(draft.to.as_ref()),
            Some(Conversation::Direct("bob".into()))
        );
    }
}
