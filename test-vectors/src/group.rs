//! A group history: real `Group`s driven by scripted randomness, beside a model built from
//! the specification's formulas (SPEC §13). The generator runs a built-in script; the
//! verifier replays the file's events (with the file's bytes for refused inputs).

use std::collections::BTreeMap;

use hush_crypto::hash::sha256;
use hush_crypto::kdf::chain_step;
use hush_crypto::{IdentityKeyPair, MessageKeys, SecretBytes, SigningKeyPair};
use hush_groups::wire::{
    CONTROL_SIGNATURE_CONTEXT, GROUP_INFO_SIGNATURE_CONTEXT, GROUP_KEYS_INFO,
    MESSAGE_SIGNATURE_CONTEXT,
};
use hush_groups::{ControlError, Group, GroupConfig, GroupDecryptError, Role};
use serde_json::{Value, json};

use crate::util::{Report, Scripted, VectorError, bytes, gen_err, h, list, num, seeded, text};
use crate::wire::{control_message, encode};

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];
const NOW: u64 = 1_000;

enum Step {
    Create {
        by: usize,
        members: Vec<usize>,
    },
    Send {
        from: usize,
        plaintext: Vec<u8>,
    },
    Receive {
        to: usize,
        message: usize,
    },
    Add {
        by: usize,
        target: usize,
        applied_by: Vec<usize>,
    },
    Promote {
        by: usize,
        target: usize,
        applied_by: Vec<usize>,
    },
    Remove {
        by: usize,
        target: usize,
        applied_by: Vec<usize>,
    },
    Join {
        by: usize,
        who: usize,
    },
    Handover {
        from: usize,
        to: usize,
    },
    RejectMessage {
        to: usize,
        message: Source,
        note: String,
    },
    RejectControl {
        to: usize,
        control: Source,
        note: String,
    },
}

enum Source {
    Given(Vec<u8>),
    Replay(usize),
    TamperSignature(usize),
    GapFrom(usize),
    ReplayControl(usize),
    TamperControl(usize),
    StaleFork,
    Unauthorized { signer: usize, target: usize },
}

struct Chain {
    id: u32,
    ck: [u8; 32],
    iteration: u32,
    seed: [u8; 32],
}

fn idx(name: &str) -> Result<usize, VectorError> {
    NAMES
        .iter()
        .position(|n| *n == name)
        .ok_or_else(|| VectorError::Field(format!("unknown member {name}")))
}

fn decrypt_class(e: &GroupDecryptError) -> &'static str {
    match e {
        GroupDecryptError::Decode(_) => "Decode",
        GroupDecryptError::WrongGroup => "WrongGroup",
        GroupDecryptError::NotAMember => "NotAMember",
        GroupDecryptError::RemovedMember => "RemovedMember",
        GroupDecryptError::FromFutureEpoch { .. } => "FromFutureEpoch",
        GroupDecryptError::FromSelf => "FromSelf",
        GroupDecryptError::UnknownChain => "UnknownChain",
        GroupDecryptError::BadSignature => "BadSignature",
        GroupDecryptError::Duplicate => "Duplicate",
        GroupDecryptError::KeyUnavailable => "KeyUnavailable",
        GroupDecryptError::TooFarAhead { .. } => "TooFarAhead",
        GroupDecryptError::Authentication => "Authentication",
        _ => "Other",
    }
}

fn control_class(e: &ControlError) -> &'static str {
    match e {
        ControlError::Decode(_) => "Decode",
        ControlError::WrongGroup => "WrongGroup",
        ControlError::Replayed { .. } => "Replayed",
        ControlError::Stale { .. } => "Stale",
        ControlError::Conflicting { .. } => "Conflicting",
        ControlError::FromFuture { .. } => "FromFuture",
        ControlError::BadSignature => "BadSignature",
        ControlError::Unauthorized => "Unauthorized",
        ControlError::Invalid(_) => "Invalid",
        _ => "Other",
    }
}

struct World {
    ids: Vec<IdentityKeyPair>,
    rngs: Vec<Scripted>,
    streams: Vec<Vec<u8>>,
    groups: Vec<Option<Group>>,
    chains: Vec<Option<Chain>>,
    messages: Vec<Vec<u8>>,
    controls: Vec<Vec<u8>>,
    snapshot_at_0: Vec<u8>,
    group_id: [u8; 32],
    events: Vec<Value>,
}

impl World {
    fn group(&mut self, i: usize) -> Result<&mut Group, VectorError> {
        self.groups[i]
            .as_mut()
            .ok_or_else(|| gen_err(format!("{} has no group", NAMES[i])))
    }

    fn take(&self, i: usize, pos: usize, n: usize) -> Vec<u8> {
        self.streams[i]
            .get(pos..pos + n)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    fn chain_event(
        &mut self,
        member: usize,
        recipients: &[usize],
        distribution: &[u8],
        cause: &str,
    ) -> Result<(), VectorError> {
        let c = self.chains[member]
            .as_ref()
            .ok_or_else(|| gen_err("no chain"))?;
        let signing = SigningKeyPair::from_seed(&SecretBytes::from_bytes(c.seed));
        let epoch = self.groups[member].as_ref().map_or(0, Group::epoch);
        let expected = encode(
            "SenderKeyDistribution",
            &json!({"version": 1, "group_id": h(&self.group_id), "epoch": epoch, "chain_id": c.id, "iteration": c.iteration,
                    "chain_key": h(&c.ck), "signing_key": h(signing.public().as_bytes())}),
        )?;
        if expected != distribution {
            return Err(gen_err(format!(
                "model and group disagree on {}'s distribution",
                NAMES[member]
            )));
        }
        self.events.push(json!({
            "type": "chain", "cause": cause, "member": NAMES[member], "epoch": epoch, "chain_id": c.id, "iteration": c.iteration,
            "chain_key": h(&c.ck), "signing_seed": h(&c.seed), "signing_key": h(signing.public().as_bytes()),
            "distribution": h(distribution), "recipients": recipients.iter().map(|r| NAMES[*r]).collect::<Vec<_>>(),
        }));
        for r in recipients {
            let from = *self.ids[member].public();
            self.group(*r)?
                .process_distribution(&from, distribution)
                .map_err(gen_err)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // one call per kind of change; a struct would only rename them
    fn control_event(
        &mut self,
        by: usize,
        action: &str,
        target: Option<usize>,
        role: Option<u8>,
        control: Vec<u8>,
        applied_by: &[usize],
        content: Value,
    ) -> Result<(), VectorError> {
        let content_bytes = encode("ControlContent", &content)?;
        let mut m = CONTROL_SIGNATURE_CONTEXT.to_vec();
        m.extend_from_slice(&content_bytes);
        let sig = self.ids[by].sign(&m);
        let expected = encode(
            "ControlMessage",
            &json!({"content": h(&content_bytes), "signature": h(sig.as_bytes())}),
        )?;
        if expected != control {
            return Err(gen_err(format!(
                "model and group disagree on the {action} control"
            )));
        }
        for a in applied_by {
            self.group(*a)?.apply(&control).map_err(gen_err)?;
        }
        self.events.push(json!({
            "type": "control", "by": NAMES[by], "action": action, "target": target.map(|t| NAMES[t]), "role": role,
            "epoch": content["epoch"], "parent": content["parent"], "content": h(&content_bytes), "signature": h(sig.as_bytes()),
            "control": h(&control), "digest": h(&sha256(&[&content_bytes])),
            "applied_by": applied_by.iter().map(|r| NAMES[*r]).collect::<Vec<_>>(),
        }));
        self.controls.push(control);
        Ok(())
    }

    /// A promote or remove of `target` by admin `by`, applied by `applied_by`.
    fn targeted(
        &mut self,
        by: usize,
        target: usize,
        applied_by: &[usize],
        action: &'static str,
    ) -> Result<(), VectorError> {
        let content = self.control_content(by, action, h(self.ids[target].public().as_bytes()))?;
        let t = *self.ids[target].public();
        let id = IdentityKeyPair::from_seed(&self.ids[by].seed());
        let g = self.group(by)?;
        let control = if action == "promote" {
            g.promote(&id, &t)
        } else {
            g.remove(&id, &t)
        }
        .map_err(gen_err)?;
        self.control_event(by, action, Some(target), None, control, applied_by, content)
    }

    fn control_content(
        &mut self,
        by: usize,
        action: &str,
        value: Value,
    ) -> Result<Value, VectorError> {
        let g = self.group(by)?;
        let (epoch, parent) = (g.epoch() + 1, *g.membership().head());
        let mut c = json!({"version": 1, "group_id": h(&self.group_id), "epoch": epoch, "parent": h(&parent), "signer": h(self.ids[by].public().as_bytes())});
        if let Some(o) = c.as_object_mut() {
            o.insert(action.to_string(), value);
        }
        Ok(c)
    }

    fn step(&mut self, s: Step) -> Result<(), VectorError> {
        match s {
            Step::Create { by, members } => {
                let pos = self.rngs[by].used();
                let others: Vec<_> = members
                    .iter()
                    .map(|m| (*self.ids[*m].public(), Role::Member))
                    .collect();
                let (g, control) = Group::create(
                    &self.ids[by],
                    &others,
                    GroupConfig::default(),
                    &mut self.rngs[by],
                )
                .map_err(gen_err)?;
                self.group_id = self
                    .take(by, pos, 32)
                    .try_into()
                    .map_err(|_| gen_err("short stream"))?;
                self.snapshot_at_0 = g.to_bytes().to_vec();
                self.groups[by] = Some(g);
                for m in &members {
                    self.groups[*m] = Some(
                        Group::from_create(self.ids[*m].public(), &control, GroupConfig::default())
                            .map_err(gen_err)?,
                    );
                }
                let mut list: Vec<(Vec<u8>, Value)> = std::iter::once((by, 1u8))
                    .chain(members.iter().map(|m| (*m, 0u8)))
                    .map(|(m, role)| (self.ids[m].public().to_bytes().to_vec(), json!({"identity_key": h(self.ids[m].public().as_bytes()), "role": role})))
                    .collect();
                list.sort_by(|a, b| a.0.cmp(&b.0));
                let content = json!({"version": 1, "group_id": h(&self.group_id), "parent": h(&[0; 32]), "signer": h(self.ids[by].public().as_bytes()),
                    "create": {"members": list.into_iter().map(|x| x.1).collect::<Vec<_>>()}});
                let content_bytes = encode("ControlContent", &content)?;
                let mut m = CONTROL_SIGNATURE_CONTEXT.to_vec();
                m.extend_from_slice(&content_bytes);
                let sig = self.ids[by].sign(&m);
                let expected = encode(
                    "ControlMessage",
                    &json!({"content": h(&content_bytes), "signature": h(sig.as_bytes())}),
                )?;
                if expected != control {
                    return Err(gen_err("model and group disagree on create"));
                }
                self.events.push(json!({
                    "type": "create", "by": NAMES[by], "members": members.iter().map(|m| NAMES[*m]).collect::<Vec<_>>(),
                    "content": h(&content_bytes), "signature": h(sig.as_bytes()), "control": h(&control), "digest": h(&sha256(&[&content_bytes])),
                }));
                self.controls.push(control);
            }
            Step::Send { from, plaintext } => {
                let pos = self.rngs[from].used();
                let sent = {
                    let rng = &mut self.rngs[from];
                    let g = self.groups[from]
                        .as_mut()
                        .ok_or_else(|| gen_err("no group"))?;
                    g.encrypt(&plaintext, NOW, rng).map_err(gen_err)?
                };
                if let Some(d) = &sent.distribution {
                    let id = u32::from_le_bytes(
                        self.take(from, pos, 4)
                            .try_into()
                            .map_err(|_| gen_err("short stream"))?,
                    );
                    let ck = self
                        .take(from, pos + 4, 32)
                        .try_into()
                        .map_err(|_| gen_err("short stream"))?;
                    let seed = self
                        .take(from, pos + 36, 32)
                        .try_into()
                        .map_err(|_| gen_err("short stream"))?;
                    self.chains[from] = Some(Chain {
                        id,
                        ck,
                        iteration: 0,
                        seed,
                    });
                    let recipients = self
                        .group(from)?
                        .members()
                        .iter()
                        .filter_map(|k| self.ids.iter().position(|i| i.public() == k))
                        .collect::<Vec<_>>();
                    self.chain_event(from, &recipients, d, "rotation")?;
                }
                let epoch = self.group(from)?.epoch();
                let gid = self.group_id;
                let sender = *self.ids[from].public();
                let c = self.chains[from]
                    .as_mut()
                    .ok_or_else(|| gen_err("no chain"))?;
                let (mk, next) = chain_step(&SecretBytes::from_bytes(c.ck));
                let keys = MessageKeys::derive(&mk, GROUP_KEYS_INFO);
                let ad = hush_groups::wire::message_ad(
                    &gid,
                    sender.as_bytes(),
                    epoch,
                    c.id,
                    c.iteration,
                );
                let ct = keys.seal(&ad, &plaintext).map_err(gen_err)?;
                let content = encode(
                    "GroupMessageContent",
                    &json!({"version": 1, "group_id": h(&gid), "sender": h(sender.as_bytes()),
                    "epoch": epoch, "chain_id": c.id, "iteration": c.iteration, "ciphertext": h(&ct)}),
                )?;
                let mut m = MESSAGE_SIGNATURE_CONTEXT.to_vec();
                m.extend_from_slice(&content);
                let sig = SigningKeyPair::from_seed(&SecretBytes::from_bytes(c.seed)).sign(&m);
                let message = encode(
                    "GroupMessage",
                    &json!({"content": h(&content), "signature": h(sig.as_bytes())}),
                )?;
                if message != sent.message {
                    return Err(gen_err("model and group disagree on a message"));
                }
                let event = json!({
                    "type": "send", "from": NAMES[from], "index": self.messages.len(), "epoch": epoch, "chain_id": c.id, "iteration": c.iteration,
                    "chain_key": h(&c.ck), "message_key": h(mk.expose()), "aead_key": h(keys.key()), "aead_nonce": h(keys.nonce()),
                    "ad": h(&ad), "plaintext": h(&plaintext), "ciphertext": h(&ct), "content": h(&content), "signature": h(sig.as_bytes()),
                    "message": h(&message),
                });
                c.ck = *next.expose();
                c.iteration += 1;
                self.events.push(event);
                self.messages.push(message);
            }
            Step::Receive { to, message } => {
                let m = self
                    .messages
                    .get(message)
                    .cloned()
                    .ok_or_else(|| gen_err("no such message"))?;
                let p = self.group(to)?.decrypt(&m).map_err(gen_err)?;
                self.events.push(json!({"type": "receive", "to": NAMES[to], "message": message, "plaintext": h(&p.plaintext)}));
            }
            Step::Add {
                by,
                target,
                applied_by,
            } => {
                let content = self.control_content(
                    by,
                    "add",
                    json!({"identity_key": h(self.ids[target].public().as_bytes())}),
                )?;
                let t = *self.ids[target].public();
                let (control, _) = {
                    let id = IdentityKeyPair::from_seed(&self.ids[by].seed());
                    self.group(by)?
                        .add(&id, &t, Role::Member)
                        .map_err(gen_err)?
                };
                self.control_event(
                    by,
                    "add",
                    Some(target),
                    Some(0),
                    control,
                    &applied_by,
                    content,
                )?;
            }
            Step::Promote {
                by,
                target,
                applied_by,
            } => self.targeted(by, target, &applied_by, "promote")?,
            Step::Remove {
                by,
                target,
                applied_by,
            } => self.targeted(by, target, &applied_by, "remove")?,
            Step::Join { by, who } => {
                let id = IdentityKeyPair::from_seed(&self.ids[by].seed());
                let info = self.group(by)?.group_info(&id).map_err(gen_err)?;
                let g = self.group(by)?;
                let (epoch, head) = (g.epoch(), *g.membership().head());
                let members: Vec<Value> = g.membership().members().map(|(k, r)| json!({"identity_key": h(k.as_bytes()), "role": u8::from(r == Role::Admin)})).collect();
                let content = encode(
                    "GroupInfoContent",
                    &json!({"version": 1, "group_id": h(&self.group_id), "epoch": epoch, "head": h(&head), "members": members, "signer": h(id.public().as_bytes())}),
                )?;
                let mut m = GROUP_INFO_SIGNATURE_CONTEXT.to_vec();
                m.extend_from_slice(&content);
                let sig = id.sign(&m);
                if encode(
                    "GroupInfo",
                    &json!({"content": h(&content), "signature": h(sig.as_bytes())}),
                )? != info
                {
                    return Err(gen_err("model and group disagree on group info"));
                }
                self.groups[who] = Some(
                    Group::join(
                        self.ids[who].public(),
                        &info,
                        id.public(),
                        GroupConfig::default(),
                    )
                    .map_err(gen_err)?,
                );
                self.events.push(json!({"type": "group_info", "by": NAMES[by], "for": NAMES[who], "content": h(&content), "signature": h(sig.as_bytes()), "group_info": h(&info)}));
            }
            Step::Handover { from, to } => {
                let d = self
                    .group(from)?
                    .sender_key_distribution()
                    .ok_or_else(|| gen_err("nothing to hand over"))?;
                self.chain_event(from, &[to], &d, "handover")?;
            }
            Step::RejectMessage { to, message, note } => {
                let bytes = match message {
                    Source::Given(b) => b,
                    Source::Replay(i) => self
                        .messages
                        .get(i)
                        .cloned()
                        .ok_or_else(|| gen_err("no message"))?,
                    Source::TamperSignature(i) => {
                        let mut b = self
                            .messages
                            .get(i)
                            .cloned()
                            .ok_or_else(|| gen_err("no message"))?;
                        let last = b.len() - 1;
                        b[last] ^= 1;
                        b
                    }
                    Source::GapFrom(member) => {
                        let mut fork =
                            Group::from_bytes(&self.group(member)?.to_bytes()).map_err(gen_err)?;
                        let mut rng = Scripted::new(&[]);
                        let mut last = vec![];
                        for _ in 0..=GroupConfig::default().max_forward_jump + 1 {
                            last = fork
                                .encrypt(b"far ahead", NOW, &mut rng)
                                .map_err(gen_err)?
                                .message;
                        }
                        last
                    }
                    _ => return Err(gen_err("not a message source")),
                };
                let g = self.group(to)?;
                let before = g.to_bytes();
                let error = match g.decrypt(&bytes) {
                    Ok(_) => "accepted",
                    Err(_) if *before != *g.to_bytes() => "StateChanged",
                    Err(e) => decrypt_class(&e),
                };
                self.events.push(json!({"type": "reject_message", "to": NAMES[to], "message": h(&bytes), "error": error, "note": note}));
            }
            Step::RejectControl { to, control, note } => {
                let bytes = match control {
                    Source::Given(b) => b,
                    Source::ReplayControl(i) => self
                        .controls
                        .get(i)
                        .cloned()
                        .ok_or_else(|| gen_err("no control"))?,
                    Source::TamperControl(i) => {
                        let mut b = self
                            .controls
                            .get(i)
                            .cloned()
                            .ok_or_else(|| gen_err("no control"))?;
                        let last = b.len() - 1;
                        b[last] ^= 1;
                        b
                    }
                    Source::StaleFork => {
                        let mut fork = Group::from_bytes(&self.snapshot_at_0).map_err(gen_err)?;
                        let stranger = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(
                            seeded("group stranger"),
                        ));
                        let admin = IdentityKeyPair::from_seed(&self.ids[0].seed());
                        fork.add(&admin, stranger.public(), Role::Member)
                            .map_err(gen_err)?
                            .0
                    }
                    Source::Unauthorized { signer, target } => {
                        let content = self.control_content(
                            to,
                            "remove",
                            h(self.ids[target].public().as_bytes()),
                        )?;
                        let mut content = content;
                        content["signer"] = h(self.ids[signer].public().as_bytes());
                        let id = &self.ids[signer];
                        control_message(&content, |m| id.sign(m).as_bytes().to_vec())?.1
                    }
                    _ => return Err(gen_err("not a control source")),
                };
                let g = self.group(to)?;
                let before = g.to_bytes();
                let error = match g.apply(&bytes) {
                    Ok(_) => "accepted",
                    Err(_) if *before != *g.to_bytes() => "StateChanged",
                    Err(e) => control_class(&e),
                };
                self.events.push(json!({"type": "reject_control", "to": NAMES[to], "control": h(&bytes), "error": error, "note": note}));
            }
        }
        Ok(())
    }
}

fn script() -> Vec<Step> {
    use Source::*;
    use Step::*;
    let t = |s: &str| s.as_bytes().to_vec();
    let (a, b, c, d) = (0, 1, 2, 3);
    let n = |s: &str| s.to_string();
    vec![
        Create {
            by: a,
            members: vec![b, c],
        },
        Send {
            from: a,
            plaintext: t("hello group"),
        },
        Receive { to: b, message: 0 },
        Receive { to: c, message: 0 },
        Send {
            from: b,
            plaintext: t("hi from bob"),
        },
        Receive { to: a, message: 1 },
        Receive { to: c, message: 1 },
        Send {
            from: a,
            plaintext: t("two"),
        },
        Send {
            from: a,
            plaintext: t("three"),
        },
        Receive { to: b, message: 3 },
        Receive { to: b, message: 2 },
        RejectMessage {
            to: b,
            message: Replay(2),
            note: n("replay"),
        },
        RejectMessage {
            to: c,
            message: TamperSignature(3),
            note: n("signature altered"),
        },
        RejectMessage {
            to: c,
            message: GapFrom(a),
            note: n("max_forward_jump + 1 ahead, validly signed"),
        },
        Send {
            from: c,
            plaintext: t("carol speaks"),
        },
        Receive { to: a, message: 4 },
        Add {
            by: a,
            target: d,
            applied_by: vec![b, c],
        },
        Join { by: a, who: d },
        Handover { from: a, to: d },
        Handover { from: b, to: d },
        Handover { from: c, to: d },
        RejectMessage {
            to: d,
            message: Replay(0),
            note: n("sent before dave joined"),
        },
        Send {
            from: a,
            plaintext: t("welcome dave"),
        },
        Receive { to: b, message: 5 },
        Receive { to: c, message: 5 },
        Receive { to: d, message: 5 },
        Promote {
            by: a,
            target: b,
            applied_by: vec![b, c, d],
        },
        RejectControl {
            to: c,
            control: ReplayControl(1),
            note: n("the add, again"),
        },
        RejectControl {
            to: c,
            control: StaleFork,
            note: n("another change for epoch 1"),
        },
        RejectControl {
            to: c,
            control: Unauthorized {
                signer: d,
                target: c,
            },
            note: n("a plain member signs a removal"),
        },
        RejectControl {
            to: c,
            control: TamperControl(2),
            note: n("the promote with its signature altered"),
        },
        Remove {
            by: a,
            target: c,
            applied_by: vec![b, d, c],
        },
        RejectMessage {
            to: b,
            message: Replay(4),
            note: n("carol's message, delivered after her removal"),
        },
        Send {
            from: a,
            plaintext: t("carol is gone"),
        },
        Receive { to: b, message: 6 },
        Receive { to: d, message: 6 },
        RejectMessage {
            to: c,
            message: Replay(6),
            note: n("the removed member has no new chain"),
        },
        Send {
            from: b,
            plaintext: t("bob rotates too"),
        },
        Receive { to: a, message: 7 },
        Receive { to: d, message: 7 },
    ]
}

fn run(streams: Vec<Vec<u8>>, steps: Vec<Step>) -> Result<World, VectorError> {
    let mut w = World {
        ids: NAMES
            .iter()
            .map(|n| {
                IdentityKeyPair::from_seed(&SecretBytes::from_bytes(seeded(&format!("group {n}"))))
            })
            .collect(),
        rngs: streams
            .iter()
            .map(|s| Scripted::new(std::slice::from_ref(s)))
            .collect(),
        streams,
        groups: (0..4).map(|_| None).collect(),
        chains: (0..4).map(|_| None).collect(),
        messages: vec![],
        controls: vec![],
        snapshot_at_0: vec![],
        group_id: [0; 32],
        events: vec![],
    };
    for s in steps {
        w.step(s)?;
    }
    Ok(w)
}

fn members_json(w: &World) -> Vec<Value> {
    NAMES.iter().zip(&w.ids).map(|(n, id)| json!({"name": n, "identity_seed": h(&seeded(&format!("group {n}"))), "identity_key": h(id.public().as_bytes())})).collect()
}

pub(crate) fn generate() -> Result<Value, VectorError> {
    let streams: Vec<Vec<u8>> = NAMES
        .iter()
        .map(|n| {
            (0..8)
                .flat_map(|i| seeded(&format!("group {n} random {i}")))
                .collect()
        })
        .collect();
    let w = run(streams, script())?;
    for e in &w.events {
        if e["error"] == "accepted" || e["error"] == "StateChanged" {
            return Err(gen_err(format!("group: {e}")));
        }
    }
    let used: BTreeMap<&str, Value> = NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, h(&w.streams[i][..w.rngs[i].used()])))
        .collect();
    Ok(json!({
        "description": "A group history (SPEC §13): create, sender chains and distributions, messages with every intermediate value, membership changes, a join, and refused messages and changes.",
        "group_id": h(&w.group_id),
        "members": members_json(&w),
        "random": used,
        "max_forward_jump": GroupConfig::default().max_forward_jump,
        "events": w.events,
    }))
}

pub(crate) fn verify(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    let random = crate::util::field(v, "random")?;
    let streams: Vec<Vec<u8>> = NAMES
        .iter()
        .map(|n| bytes(random, n))
        .collect::<Result<_, _>>()?;
    let events = list(v, "events")?;
    let names = |e: &Value, k: &str| -> Result<Vec<usize>, VectorError> {
        list(e, k)?
            .iter()
            .map(|x| idx(x.as_str().unwrap_or_default()))
            .collect()
    };
    let mut steps = vec![];
    for e in events {
        let s = match text(e, "type")? {
            "create" => Step::Create {
                by: idx(text(e, "by")?)?,
                members: names(e, "members")?,
            },
            "chain" if text(e, "cause")? == "rotation" => continue,
            "chain" => Step::Handover {
                from: idx(text(e, "member")?)?,
                to: *names(e, "recipients")?
                    .first()
                    .ok_or_else(|| VectorError::Field("recipients".into()))?,
            },
            "send" => Step::Send {
                from: idx(text(e, "from")?)?,
                plaintext: bytes(e, "plaintext")?,
            },
            "receive" => Step::Receive {
                to: idx(text(e, "to")?)?,
                message: num(e, "message")? as usize,
            },
            "control" => {
                let (by, target, applied_by) = (
                    idx(text(e, "by")?)?,
                    idx(text(e, "target")?)?,
                    names(e, "applied_by")?,
                );
                match text(e, "action")? {
                    "add" => Step::Add {
                        by,
                        target,
                        applied_by,
                    },
                    "promote" => Step::Promote {
                        by,
                        target,
                        applied_by,
                    },
                    "remove" => Step::Remove {
                        by,
                        target,
                        applied_by,
                    },
                    other => return Err(VectorError::Field(format!("action {other}"))),
                }
            }
            "group_info" => Step::Join {
                by: idx(text(e, "by")?)?,
                who: idx(text(e, "for")?)?,
            },
            "reject_message" => Step::RejectMessage {
                to: idx(text(e, "to")?)?,
                message: Source::Given(bytes(e, "message")?),
                note: text(e, "note")?.into(),
            },
            "reject_control" => Step::RejectControl {
                to: idx(text(e, "to")?)?,
                control: Source::Given(bytes(e, "control")?),
                note: text(e, "note")?.into(),
            },
            other => return Err(VectorError::Field(format!("unknown event {other}"))),
        };
        steps.push(s);
    }
    match run(streams, steps) {
        Ok(w) => {
            r.check(bytes(v, "group_id")? == w.group_id, || {
                "group_id differs".into()
            });
            r.check(list(v, "members")? == &members_json(&w), || {
                "members differ".into()
            });
            r.check(events.len() == w.events.len(), || {
                "event count differs".into()
            });
            for (i, (expected, got)) in events.iter().zip(&w.events).enumerate() {
                r.check(expected == got, || {
                    format!("group event {i}: expected {expected}, got {got}")
                });
            }
        }
        Err(e) => r.fail(format!("group history: {e}")),
    }
    Ok(())
}
