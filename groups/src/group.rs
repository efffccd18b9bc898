//! A member's view of a group: membership, our sender key, and other members' sender keys.

use core::fmt;
use std::collections::{BTreeMap, VecDeque};

use hush_crypto::{CryptoRng, IdentityKeyPair, IdentityPublicKey, Zeroizing};

use crate::config::{CONTROL_HISTORY, GroupConfig, MAX_PLAINTEXT_LEN, REMOVED_HISTORY};
use crate::error::{
    ControlError, DistributionError, GroupDecryptError, GroupEncryptError, InvalidChange,
};
use crate::member::Role;
use crate::membership::Membership;
use crate::sender_key::{
    OWN_CHAIN_ID_HISTORY, OwnChain, ReceiverChain, SenderChains, message_keys,
};
use crate::wire::{
    self, Action, CONTROL_SIGNATURE_CONTEXT, Control, Distribution, GROUP_INFO_SIGNATURE_CONTEXT,
    GroupId, GroupMessage, Info, MESSAGE_SIGNATURE_CONTEXT,
};

/// What [`Group::encrypt`] produces.
#[derive(Debug)]
pub struct GroupSend {
    /// A new sender-key distribution, present when this send rotated our sender key (first
    /// send, after a member left or was removed, or by the rotation policy). The caller
    /// sends it to every other current member ([`Group::members`]) inside the pairwise
    /// sessions, before or with `message`.
    pub distribution: Option<Zeroizing<Vec<u8>>>,
    /// The group message, encrypted once for everyone; the relay fans it out.
    pub message: Vec<u8>,
}

/// A decrypted group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlaintext {
    /// The sending member.
    pub sender: IdentityPublicKey,
    /// The sender's membership epoch when it sent.
    pub epoch: u64,
    /// The epoch of the newest removal (or departure) this member has applied, when the
    /// message's epoch is older: the sender had not applied that removal yet, so it may
    /// have sent on a chain the removed member holds, who may then read this message too.
    /// A relay that withholds a removal from some members shows up here (SPEC §13.3).
    pub sent_before_removal: Option<u64>,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

/// What an applied membership change did, so the caller can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipChange {
    /// A member joined. Each existing member sends it [`Group::sender_key_distribution`].
    Added(IdentityPublicKey, Role),
    /// A member was removed. Our next send rotates our sender key.
    Removed(IdentityPublicKey),
    /// A member left. Our next send rotates our sender key.
    Left(IdentityPublicKey),
    /// A member became an admin.
    Promoted(IdentityPublicKey),
    /// An admin became a plain member.
    Demoted(IdentityPublicKey),
}

/// One member's view of a sender-key group. Sans-I/O: bytes in, bytes and events out.
pub struct Group {
    pub(crate) config: GroupConfig,
    pub(crate) own_identity: IdentityPublicKey,
    pub(crate) membership: Membership,
    /// Recently applied changes `(epoch, digest)`, oldest first, to recognise replays.
    pub(crate) history: VecDeque<(u64, [u8; 32])>,
    /// Removed members and the epoch of their removal, oldest first.
    pub(crate) removed: VecDeque<([u8; 32], u64)>,
    pub(crate) own_chain: Option<OwnChain>,
    pub(crate) old_own_chain_ids: VecDeque<u32>,
    pub(crate) rotation_required: bool,
    pub(crate) senders: BTreeMap<[u8; 32], SenderChains>,
    /// We left or were removed.
    pub(crate) left: bool,
}

impl Group {
    /// Creates a group: we become an admin, `others` are its other members. Returns the
    /// group and the signed create change, which the caller sends to every other member.
    pub fn create<R: CryptoRng + ?Sized>(
        me: &IdentityKeyPair,
        others: &[(IdentityPublicKey, Role)],
        config: GroupConfig,
        rng: &mut R,
    ) -> Result<(Self, Vec<u8>), ControlError> {
        let mut group_id = [0u8; 32];
        rng.fill_bytes(&mut group_id);
        let mut members = others.to_vec();
        members.push((*me.public(), Role::Admin));
        members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let content = Control::encode_content(
            &group_id,
            0,
            &[0; 32],
            me.public(),
            &Action::Create(members),
        );
        let bytes =
            wire::encode_signed_control(wire::sign(CONTROL_SIGNATURE_CONTEXT, content, |m| {
                me.sign(m)
            }));
        let group = Self::from_create(me.public(), &bytes, config)?;
        Ok((group, bytes))
    }

    /// [`from_create`](Self::from_create) for a create change that arrived over a pairwise
    /// session with `from`: refused ([`ControlError::NotFromCreator`]) unless `from` signed
    /// it, so a member forwarding the create cannot pass off its own directory or name.
    pub fn from_create_by(
        me: &IdentityPublicKey,
        control: &[u8],
        from: &IdentityPublicKey,
        config: GroupConfig,
    ) -> Result<Self, ControlError> {
        let group = Self::from_create(me, control, config)?;
        if Control::decode(control)?.signer != *from {
            return Err(ControlError::NotFromCreator);
        }
        Ok(group)
    }

    /// Builds our view of a group from the signed create change we received.
    pub fn from_create(
        me: &IdentityPublicKey,
        control: &[u8],
        config: GroupConfig,
    ) -> Result<Self, ControlError> {
        let c = Control::decode(control)?;
        let Action::Create(list) = &c.action else {
            return Err(InvalidChange::MisplacedCreate.into());
        };
        if c.epoch != 0 || c.parent != [0; 32] {
            return Err(InvalidChange::MisplacedCreate.into());
        }
        if !wire::verify(CONTROL_SIGNATURE_CONTEXT, &c.signed, c.signer.signing_key()) {
            return Err(ControlError::BadSignature);
        }
        let members = Membership::from_create(&c.signer, list, config.max_members)?;
        if !members.contains_key(me.as_bytes()) {
            return Err(ControlError::NotInGroup);
        }
        let head = c.digest();
        Ok(Self::new(
            *me,
            config,
            Membership {
                group_id: c.group_id,
                epoch: 0,
                head,
                members,
            },
        ))
    }

    /// Joins from the group info an admin sent us (inside our pairwise session with
    /// `inviter`) after adding us.
    pub fn join(
        me: &IdentityPublicKey,
        group_info: &[u8],
        inviter: &IdentityPublicKey,
        config: GroupConfig,
    ) -> Result<Self, ControlError> {
        let info = Info::decode(group_info)?;
        if &info.signer != inviter {
            return Err(ControlError::Unauthorized);
        }
        if !wire::verify(
            GROUP_INFO_SIGNATURE_CONTEXT,
            &info.signed,
            info.signer.signing_key(),
        ) {
            return Err(ControlError::BadSignature);
        }
        let members = Membership::from_create(&info.signer, &info.members, config.max_members)
            .map_err(|_| ControlError::Unauthorized)?;
        if !members.contains_key(me.as_bytes()) {
            return Err(ControlError::NotInGroup);
        }
        let membership = Membership {
            group_id: info.group_id,
            epoch: info.epoch,
            head: info.head,
            members,
        };
        Ok(Self::new(*me, config, membership))
    }

    fn new(me: IdentityPublicKey, config: GroupConfig, membership: Membership) -> Self {
        let history = VecDeque::from([(membership.epoch, membership.head)]);
        Self {
            config,
            own_identity: me,
            membership,
            history,
            removed: VecDeque::new(),
            own_chain: None,
            old_own_chain_ids: VecDeque::new(),
            rotation_required: false,
            senders: BTreeMap::new(),
            left: false,
        }
    }

    /// The group id.
    pub const fn id(&self) -> &GroupId {
        &self.membership.group_id
    }

    /// The current membership.
    pub const fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The other current members: who must receive our sender-key distributions.
    pub fn members(&self) -> Vec<IdentityPublicKey> {
        self.membership
            .members()
            .map(|(k, _)| *k)
            .filter(|k| k != &self.own_identity)
            .collect()
    }

    /// The current epoch.
    pub const fn epoch(&self) -> u64 {
        self.membership.epoch
    }

    /// The limits and policy this group runs with.
    pub const fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Whether we are still a member.
    pub const fn is_member(&self) -> bool {
        !self.left
    }

    fn change(&mut self, me: &IdentityKeyPair, action: Action) -> Result<Vec<u8>, ControlError> {
        let content = Control::encode_content(
            &self.membership.group_id,
            self.membership.epoch + 1,
            &self.membership.head,
            me.public(),
            &action,
        );
        let bytes =
            wire::encode_signed_control(wire::sign(CONTROL_SIGNATURE_CONTEXT, content, |m| {
                me.sign(m)
            }));
        self.apply(&bytes)?;
        Ok(bytes)
    }

    /// As an admin, adds `member`. Returns the signed change (for every other member) and
    /// the group info (for the new member, over our pairwise session with it).
    pub fn add(
        &mut self,
        me: &IdentityKeyPair,
        member: &IdentityPublicKey,
        role: Role,
    ) -> Result<(Vec<u8>, Vec<u8>), ControlError> {
        let control = self.change(me, Action::Add(*member, role))?;
        let info = self.group_info(me)?;
        Ok((control, info))
    }

    /// As an admin, removes `member`. Returns the signed change for every other member
    /// (including the one removed, so it learns it).
    pub fn remove(
        &mut self,
        me: &IdentityKeyPair,
        member: &IdentityPublicKey,
    ) -> Result<Vec<u8>, ControlError> {
        self.change(me, Action::Remove(*member))
    }

    /// Leaves the group. Returns the signed change for every other member.
    pub fn leave(&mut self, me: &IdentityKeyPair) -> Result<Vec<u8>, ControlError> {
        self.change(me, Action::Leave)
    }

    /// As an admin, makes `member` an admin.
    pub fn promote(
        &mut self,
        me: &IdentityKeyPair,
        member: &IdentityPublicKey,
    ) -> Result<Vec<u8>, ControlError> {
        self.change(me, Action::Promote(*member))
    }

    /// As an admin, makes admin `member` a plain member.
    pub fn demote(
        &mut self,
        me: &IdentityKeyPair,
        member: &IdentityPublicKey,
    ) -> Result<Vec<u8>, ControlError> {
        self.change(me, Action::Demote(*member))
    }

    /// The current group, signed by us (an admin), for a member we added.
    pub fn group_info(&self, me: &IdentityKeyPair) -> Result<Vec<u8>, ControlError> {
        if self.membership.role(me.public()) != Some(Role::Admin) {
            return Err(ControlError::Unauthorized);
        }
        let m = &self.membership;
        let content =
            Info::encode_content(&m.group_id, m.epoch, &m.head, &m.member_list(), me.public());
        Ok(wire::encode_signed_info(wire::sign(
            GROUP_INFO_SIGNATURE_CONTEXT,
            content,
            |b| me.sign(b),
        )))
    }

    /// Applies a signed membership change. Changes apply strictly in epoch order, each
    /// building on the previous one; anything else is refused with a typed error and changes
    /// nothing.
    pub fn apply(&mut self, control: &[u8]) -> Result<MembershipChange, ControlError> {
        let c = Control::decode(control)?;
        if c.group_id != self.membership.group_id {
            return Err(ControlError::WrongGroup);
        }
        if !wire::verify(CONTROL_SIGNATURE_CONTEXT, &c.signed, c.signer.signing_key()) {
            return Err(ControlError::BadSignature);
        }
        let digest = c.digest();
        let current = self.membership.epoch;
        if c.epoch <= current {
            if self.history.contains(&(c.epoch, digest)) {
                return Err(ControlError::Replayed { epoch: c.epoch });
            }
            if c.epoch == current {
                return Err(ControlError::Conflicting { epoch: c.epoch });
            }
            return Err(ControlError::Stale {
                epoch: c.epoch,
                current,
            });
        }
        if c.epoch > current + 1 {
            return Err(ControlError::FromFuture {
                epoch: c.epoch,
                current,
            });
        }
        if c.parent != self.membership.head {
            return Err(ControlError::Conflicting { epoch: c.epoch });
        }
        let members = self
            .membership
            .after(&c.signer, &c.action, self.config.max_members)?;
        let change = match &c.action {
            Action::Add(k, r) => MembershipChange::Added(*k, *r),
            Action::Remove(k) => MembershipChange::Removed(*k),
            Action::Leave => MembershipChange::Left(c.signer),
            Action::Promote(k) => MembershipChange::Promoted(*k),
            Action::Demote(k) => MembershipChange::Demoted(*k),
            Action::Create(_) => return Err(InvalidChange::MisplacedCreate.into()),
        };

        // Commit.
        self.membership.members = members;
        self.membership.epoch = c.epoch;
        self.membership.head = digest;
        self.history.push_back((c.epoch, digest));
        while self.history.len() > CONTROL_HISTORY {
            self.history.pop_front();
        }
        match &change {
            MembershipChange::Added(k, _) => self.removed.retain(|(id, _)| id != k.as_bytes()),
            MembershipChange::Removed(k) | MembershipChange::Left(k) => self.forget(k, c.epoch),
            MembershipChange::Promoted(_) | MembershipChange::Demoted(_) => {}
        }
        Ok(change)
    }

    /// A member is gone: drop its chains, remember it, and rotate before our next send.
    fn forget(&mut self, member: &IdentityPublicKey, epoch: u64) {
        if member == &self.own_identity {
            self.left = true;
            self.own_chain = None;
            return;
        }
        self.senders.remove(member.as_bytes());
        self.removed.push_back((member.to_bytes(), epoch));
        while self.removed.len() > REMOVED_HISTORY {
            self.removed.pop_front();
        }
        self.rotation_required = true;
    }

    fn was_removed(&self, member: &IdentityPublicKey) -> bool {
        self.removed.iter().any(|(id, _)| id == member.as_bytes())
    }

    /// Our current sender key, at its current iteration, for a member who just joined (it
    /// cannot read anything we sent before). `None` if we have not sent yet, or if our next
    /// send will rotate anyway.
    pub fn sender_key_distribution(&self) -> Option<Zeroizing<Vec<u8>>> {
        if self.rotation_required || self.left {
            return None;
        }
        self.own_chain.as_ref().map(|c| self.distribution_of(c))
    }

    fn distribution_of(&self, chain: &OwnChain) -> Zeroizing<Vec<u8>> {
        Distribution {
            group_id: self.membership.group_id,
            epoch: self.membership.epoch,
            chain_id: chain.chain_id,
            iteration: chain.iteration,
            chain_key: chain.chain_key.duplicate(),
            signing_key: *chain.signing.public(),
        }
        .encode()
    }

    /// Whether [`encrypt`](Self::encrypt) at `now` (the caller's clock, seconds) starts a
    /// new sender chain, and so returns a distribution that every member must receive over
    /// a pairwise session: no chain yet, a removal since the last one, or the rotation
    /// policy due. `false` once this member has left (encrypting then fails). A sender asks
    /// this before fetching prekey bundles, so none is spent for a message that carries no
    /// new sender key.
    pub fn needs_rotation(&self, now: u64) -> bool {
        if self.left {
            return false;
        }
        let Some(chain) = &self.own_chain else {
            return true;
        };
        let policy = self.config.rotation;
        self.rotation_required
            || chain.iteration == u32::MAX
            || policy.after_messages.is_some_and(|n| chain.sent >= n)
            || policy
                .after_seconds
                .is_some_and(|t| now.saturating_sub(chain.created_at) >= t)
    }

    /// Encrypts `plaintext` once for the whole group. `now` is the caller's clock (seconds),
    /// used only by the rotation policy.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        plaintext: &[u8],
        now: u64,
        rng: &mut R,
    ) -> Result<GroupSend, GroupEncryptError> {
        if self.left {
            return Err(GroupEncryptError::NotAMember);
        }
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(GroupEncryptError::TooLarge {
                len: plaintext.len(),
                max: MAX_PLAINTEXT_LEN,
            });
        }
        let mut distribution = None;
        if self.needs_rotation(now) {
            let avoid: Vec<u32> = self.old_own_chain_ids.iter().copied().collect();
            let chain = OwnChain::generate(rng, &avoid, now);
            distribution = Some(self.distribution_of(&chain));
            if let Some(old) = self.own_chain.replace(chain) {
                self.old_own_chain_ids.push_back(old.chain_id);
                while self.old_own_chain_ids.len() > OWN_CHAIN_ID_HISTORY {
                    self.old_own_chain_ids.pop_front();
                }
            }
            self.rotation_required = false;
        }
        let Some(chain) = self.own_chain.as_mut() else {
            return Err(GroupEncryptError::NotAMember);
        };
        let (mk, next) = hush_crypto::kdf::chain_step(&chain.chain_key);
        let iteration = chain.iteration;
        let ad = wire::message_ad(
            &self.membership.group_id,
            self.own_identity.as_bytes(),
            self.membership.epoch,
            chain.chain_id,
            iteration,
        );
        let ciphertext =
            message_keys(&mk)
                .seal(&ad, plaintext)
                .map_err(|_| GroupEncryptError::TooLarge {
                    len: plaintext.len(),
                    max: MAX_PLAINTEXT_LEN,
                })?;
        let content = wire::encode_message_content(
            &self.membership.group_id,
            &self.own_identity,
            self.membership.epoch,
            chain.chain_id,
            iteration,
            ciphertext,
        );
        let signed = wire::sign(MESSAGE_SIGNATURE_CONTEXT, content, |m| {
            chain.signing.sign(m)
        });
        chain.chain_key = next;
        chain.iteration += 1; // < u32::MAX: a chain at u32::MAX is rotated above
        chain.sent = chain.sent.saturating_add(1);
        Ok(GroupSend {
            distribution,
            message: wire::encode_signed_message(signed),
        })
    }

    /// Stores another member's sender key, received from `from` inside our pairwise session
    /// with it.
    pub fn process_distribution(
        &mut self,
        from: &IdentityPublicKey,
        distribution: &[u8],
    ) -> Result<(), DistributionError> {
        let d = Distribution::decode(distribution)?;
        if d.group_id != self.membership.group_id {
            return Err(DistributionError::WrongGroup);
        }
        if from == &self.own_identity {
            return Err(DistributionError::FromSelf);
        }
        if self.membership.role(from).is_none() {
            return Err(if self.was_removed(from) {
                DistributionError::RemovedMember
            } else if d.epoch > self.membership.epoch {
                DistributionError::FromFutureEpoch { epoch: d.epoch }
            } else {
                DistributionError::NotAMember
            });
        }
        let chains = self.senders.entry(from.to_bytes()).or_default();
        if chains.find(d.chain_id).is_some() {
            return Err(DistributionError::Duplicate);
        }
        chains.add(
            ReceiverChain {
                chain_id: d.chain_id,
                first_iteration: d.iteration,
                iteration: d.iteration,
                chain_key: d.chain_key,
                signing_key: d.signing_key,
            },
            self.config.max_old_chains,
        );
        Ok(())
    }

    /// Verifies and decrypts a group message. On any error the state is unchanged.
    pub fn decrypt(&mut self, message: &[u8]) -> Result<GroupPlaintext, GroupDecryptError> {
        let m = GroupMessage::decode(message)?;
        if m.group_id != self.membership.group_id {
            return Err(GroupDecryptError::WrongGroup);
        }
        if &m.sender == self.own_identity.as_bytes() {
            return Err(GroupDecryptError::FromSelf);
        }
        // The membership holds every member's key already parsed.
        let Some((sender, _)) = self.membership.members.get(&m.sender) else {
            return Err(if self.removed.iter().any(|(id, _)| id == &m.sender) {
                GroupDecryptError::RemovedMember
            } else if m.epoch > self.membership.epoch {
                GroupDecryptError::FromFutureEpoch { epoch: m.epoch }
            } else {
                GroupDecryptError::NotAMember
            });
        };
        let sender = *sender;
        let chains = self
            .senders
            .get(&m.sender)
            .ok_or(GroupDecryptError::UnknownChain)?;
        let index = chains
            .find(m.chain_id)
            .ok_or(GroupDecryptError::UnknownChain)?;
        if !wire::verify(
            MESSAGE_SIGNATURE_CONTEXT,
            &m.signed,
            &chains.chains[index].signing_key,
        ) {
            return Err(GroupDecryptError::BadSignature);
        }
        let (mk, advance) = chains.stage(index, m.iteration, self.config.max_forward_jump)?;
        let ad = wire::message_ad(&m.group_id, &m.sender, m.epoch, m.chain_id, m.iteration);
        let plaintext = message_keys(&mk)
            .open(&ad, &m.ciphertext)
            .map_err(|_| GroupDecryptError::Authentication)?;
        if let Some(chains) = self.senders.get_mut(&m.sender) {
            chains.commit(advance, self.config.max_skipped_keys);
        }
        let last_removal = self.removed.iter().map(|(_, e)| *e).max();
        Ok(GroupPlaintext {
            sender,
            epoch: m.epoch,
            sent_before_removal: last_removal.filter(|removal| m.epoch < *removal),
            plaintext,
        })
    }

    /// How many skipped message keys we hold for `member`.
    pub fn skipped_keys(&self, member: &IdentityPublicKey) -> usize {
        self.senders
            .get(member.as_bytes())
            .map_or(0, |s| s.skipped.len())
    }

    /// How many chains we hold for `member`.
    pub fn chains(&self, member: &IdentityPublicKey) -> usize {
        self.senders
            .get(member.as_bytes())
            .map_or(0, |s| s.chains.len())
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("epoch", &self.membership.epoch)
            .field("members", &self.membership.len())
            .field("own_identity", &self.own_identity)
            .field("own_chain_id", &self.own_chain.as_ref().map(|c| c.chain_id))
            .field("senders", &self.senders.len())
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}
