//! The client's core: everything that decides what a device does, with no I/O. It takes
//! the store, the current time and an RNG from its caller and never reads a clock, opens a
//! socket or runs SQL, so it builds for `wasm32-unknown-unknown`. One room per concept:
//! [`account`] (identity, prekeys, known devices), [`inbound`] (decode once, open, apply),
//! [`prepare`] (what a draft needs from the relay: device lists, remembered between drafts,
//! and bundles), [`outbound`] (fan-out of a draft into envelopes), [`outbox`] (a pass over
//! the outbox: what to send next and what each answer means), [`pushes`] (a batch of
//! pushed frames: what to ask the relay, what to acknowledge), [`uploads`] (prekey rotation
//! and uploads), [`groups`] (group
//! records and control messages), [`held`] (group messages and sender keys that came
//! before the change they need), [`presence`] (watched users: what to ask, what is news). The tokio driver ([`crate::Client`]) does the talking to
//! the relay: it answers what the core says it needs.

pub(crate) mod account;
pub(crate) mod groups;
pub(crate) mod held;
pub(crate) mod inbound;
pub(crate) mod outbound;
pub(crate) mod outbox;
pub(crate) mod prepare;
pub(crate) mod presence;
pub(crate) mod pushes;
#[cfg(test)]
mod sim;
pub(crate) mod uploads;

use hush_crypto::{CryptoRng, IdentityKeyPair, IdentityPublicKey, SafetyNumber};
use hush_groups::GroupConfig;
use hush_relay_protocol::proto as pr;

use crate::error::ClientError;
use crate::event::{Address, Body, Conversation, GroupId, Message, MessageId};
use crate::proto::client as pc;
use crate::store::Tx;

/// Longest text message, in bytes.
pub const MAX_TEXT: usize = 64 * 1024;

/// A message forwarded this many times or more is "forwarded many times" (SPEC §16.2), and
/// goes on only to [`ForwardLimits::max_chats_many_times`] chats at once.
pub const FORWARDED_MANY_TIMES: u32 = 5;

/// How far one forward may go (SPEC §16.2). The defaults are WhatsApp's published rule: at
/// most 5 chats at once, and 1 once the message was forwarded many times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardLimits {
    /// Chats one forward may go to. Default 5.
    pub max_chats: usize,
    /// Chats one forward may go to once the message was forwarded
    /// [`FORWARDED_MANY_TIMES`] times or more. Default 1.
    pub max_chats_many_times: usize,
}

impl ForwardLimits {
    /// Whether a message already forwarded `forwarded` times may be forwarded to `chats`
    /// chats at once (SPEC §16.2): `ClientError::ForwardLimit` with the limit if not,
    /// `ClientError::Invalid` for no chat.
    pub fn allows(&self, forwarded: u32, chats: usize) -> Result<(), ClientError> {
        outbound::forward_allowed(self, forwarded, chats)
    }
}

impl Default for ForwardLimits {
    fn default() -> Self {
        Self {
            max_chats: 5,
            max_chats_many_times: 1,
        }
    }
}
/// Post-quantum session setup (PQXDH, SPEC §6.2) for this device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PostQuantum {
    /// No KEM prekeys are published, so sessions other devices start with this one are
    /// classical (X3DH): for a relay that does not carry KEM prekeys yet. Sessions this
    /// device starts are still post-quantum with devices whose bundles offer it.
    Off,
    /// KEM prekeys are published (and signed prekeys signed for PQXDH). A new session with
    /// a device whose bundle offers PQXDH is post-quantum, and a bundle stripped of its KEM
    /// prekey is refused; a device that publishes no KEM prekeys still gets a classical
    /// session, and so is accepted from it.
    #[default]
    WhenOffered,
    /// As `WhenOffered`, but no classical session is started or accepted.
    Required,
}

impl PostQuantum {
    /// The policy for sessions this device starts.
    pub(crate) const fn suite_policy(self) -> hush_sessions::SuitePolicy {
        match self {
            Self::Required => hush_sessions::SuitePolicy::PostQuantumOnly,
            Self::Off | Self::WhenOffered => hush_sessions::SuitePolicy::PostQuantumWhenOffered,
        }
    }
}

/// Longest user id, in bytes (SPEC §14.1, shared with the relay).
pub use hush_relay_protocol::limits::MAX_USER_ID;

/// This device: its address, identity and the settings the core needs.
pub(crate) struct Device {
    pub(crate) me: Address,
    pub(crate) identity: IdentityKeyPair,
    pub(crate) group_config: GroupConfig,
    pub(crate) prekeys: account::PrekeyPolicy,
    pub(crate) post_quantum: PostQuantum,
}

impl Device {
    pub(crate) fn safety_number(&self, user: &str, key: &IdentityPublicKey) -> SafetyNumber {
        SafetyNumber::compute(
            (self.me.user.as_bytes(), self.identity.public()),
            (user.as_bytes(), key),
        )
    }

    /// The devices of a group directory other than this one.
    pub(crate) fn others(&self, directory: &[pc::Member]) -> Vec<pc::Member> {
        directory
            .iter()
            .filter(|m| member_address(m) != self.me)
            .cloned()
            .collect()
    }

    pub(crate) fn own_member(&self) -> pc::Member {
        pc::Member {
            identity_key: self.identity.public().to_bytes().to_vec(),
            user_id: self.me.user.clone(),
            device_id: self.me.device,
        }
    }

    /// Queues a group control message to the devices `to` (nothing when there are none).
    pub(crate) fn push_control(
        &self,
        tx: &Tx<'_>,
        group: &GroupId,
        control: pc::GroupControl,
        to: Vec<pc::Member>,
        now: u64,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), ClientError> {
        if to.is_empty() {
            return Ok(());
        }
        let body = pc::content::Body::GroupControl(control);
        push_group_content(tx, group, body, to, now, rng)
    }

    /// Queues this device's sender-key distribution for `group` to the devices `to`.
    pub(crate) fn push_sender_key(
        &self,
        tx: &Tx<'_>,
        group: &GroupId,
        distribution: &[u8],
        to: Vec<pc::Member>,
        now: u64,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), ClientError> {
        let body = pc::content::Body::SenderKey(pc::SenderKey {
            group_id: group.to_vec(),
            distribution: distribution.to_vec(),
        });
        push_group_content(tx, group, body, to, now, rng)
    }
}

pub(crate) fn identity_of(bytes: &[u8]) -> Result<IdentityPublicKey, ClientError> {
    IdentityPublicKey::from_slice(bytes).map_err(|_| ClientError::Protocol)
}

pub(crate) fn to_relay(a: &Address) -> pr::Address {
    pr::Address {
        user_id: a.user.clone(),
        device_id: a.device,
    }
}

pub(crate) fn member_address(m: &pc::Member) -> Address {
    Address::new(m.user_id.clone(), m.device_id)
}

pub(crate) fn conversation_to_proto(c: &Conversation) -> pc::Conversation {
    pc::Conversation {
        with: Some(match c {
            Conversation::Direct(u) => pc::conversation::With::UserId(u.clone()),
            Conversation::Group(g) => pc::conversation::With::GroupId(g.to_vec()),
        }),
    }
}

pub(crate) fn conversation_from_proto(c: Option<&pc::Conversation>) -> Option<Conversation> {
    match c?.with.as_ref()? {
        pc::conversation::With::UserId(u) => Some(Conversation::Direct(u.clone())),
        pc::conversation::With::GroupId(g) => {
            Some(Conversation::Group(g.as_slice().try_into().ok()?))
        }
    }
}

pub(crate) fn body_from_content(c: &pc::Content) -> Option<Body> {
    match c.body.as_ref()? {
        pc::content::Body::Text(t) => Some(Body::Text(t.clone())),
        pc::content::Body::Attachment(a) => {
            Some(Body::Attachment(crate::wire::attachment(a).ok()?))
        }
        _ => None,
    }
}

pub(crate) fn body_to_content(b: &Body) -> pc::content::Body {
    match b {
        Body::Text(t) => pc::content::Body::Text(t.clone()),
        Body::Attachment(a) => pc::content::Body::Attachment(pc::AttachmentPointer {
            blob_id: a.blob_id.clone(),
            key: a.key.to_vec(),
            digest: a.digest.to_vec(),
            size: a.size,
            media_type: a.media_type.clone(),
            file_name: a.file_name.clone(),
        }),
    }
}

pub(crate) fn stored_to_message(m: &pc::StoredMessage) -> Option<Message> {
    let c = m.content.as_ref()?;
    Some(Message {
        id: c.message_id.as_slice().try_into().ok()?,
        from: Address::new(m.from_user.clone(), m.from_device),
        conversation: conversation_from_proto(m.conversation.as_ref())?,
        body: body_from_content(c)?,
        sent_ms: c.sent_ms,
        server_ms: m.server_ms,
        outgoing: m.outgoing,
        before_removal: m.before_removal,
        forwarded: c.forwarded,
        reportable: m.franking.is_some() && !m.outgoing,
    })
}

/// Queues `body` as a group's pairwise content to the devices `to` (SPEC §16.6).
fn push_group_content(
    tx: &Tx<'_>,
    group: &GroupId,
    body: pc::content::Body,
    to: Vec<pc::Member>,
    now: u64,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<(), ClientError> {
    let id = random_id(rng);
    tx.push_draft(
        &id,
        &pc::Draft {
            to: Some(conversation_to_proto(&Conversation::Group(*group))),
            content: Some(pc::Content {
                message_id: id.to_vec(),
                sent_ms: now,
                body: Some(body),
                sync: None,
                forwarded: 0,
                franking_key: vec![],
            }),
            only: to,
        },
        now,
    )?;
    Ok(())
}

/// A fresh random message id.
pub(crate) fn random_id<R: CryptoRng + ?Sized>(rng: &mut R) -> MessageId {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    id
}

/// A device of `user` (device 1) on a fresh in-memory store, for the core's unit tests.
#[cfg(test)]
pub(crate) fn test_device(
    user: &str,
    rng: &mut rand::rngs::StdRng,
) -> (Device, crate::store::Sealed) {
    use rand::SeedableRng as _;
    const PREKEYS: account::PrekeyPolicy = account::PrekeyPolicy {
        batch: 2,
        grace_ms: 1,
        daily_budget: 10,
        post_quantum: false,
        kem_batch: 0,
    };
    let me = Address::new(user, 1);
    let mut store = crate::store::Sealed::new(
        Box::new(crate::store::MemoryStore::new()),
        hush_crypto::StorageKey::from_bytes([5; 32]),
        Box::new(rand::rngs::StdRng::seed_from_u64(2)),
    );
    let identity = store
        .transaction(|tx| account::open(tx, &me, &PREKEYS, 1, rng))
        .expect("account opens");
    let dev = Device {
        me,
        identity,
        group_config: GroupConfig::default(),
        prekeys: PREKEYS,
        post_quantum: PostQuantum::WhenOffered,
    };
    (dev, store)
}
