//! Applying parsed requests (docs/SPEC.md §14.2): each [`Request`] against the store, the
//! hub and the cluster, answered with one frame. Sends are stored several at a time by
//! [`store_sends`].

use std::collections::HashMap;
use std::time::Instant;

use hush_crypto::{IdentityPublicKey, Signature};
use hush_relay_protocol::proto::{self, ErrorCode, server_frame::Body as Out};
use hush_relay_protocol::request::{KemPrekey, Send, UploadPrekeys};
use hush_relay_protocol::{Request, codec, device_list, signed};

use super::refusal::{Refused, refuse};
use super::{Sink, feed};
use crate::store::{
    Addr, DeviceLookup, MailboxLimits, Outgoing, PrekeyCaps, PrekeyStock, PrekeyUpload, Store,
    StoreError, StoredKemPrekey, StoredPrekey, StoredReport,
};
use crate::{Shared, now_ms};

/// The answer frame to send, if any, or the refusal.
pub(super) type Handled = Result<Option<Vec<u8>>, Refused>;

/// Applies one request (any but a send) from the authenticated device `addr`.
pub(super) async fn apply<S: Store>(
    request: Request,
    rid: u64,
    shared: &Shared<S>,
    addr: &Addr,
) -> Handled {
    let done = |body: Out| Ok(Some(codec::encode_server(rid, body)));
    let started = Instant::now();
    let result = match request {
        Request::Authenticate(_) => Err(Refused::ALREADY_AUTHENTICATED),
        Request::Ping => done(Out::Pong(proto::Pong {})),
        Request::UploadPrekeys(u) => {
            let stock = upload(shared, addr, u).await?;
            done(Out::PrekeyStatus(super::delivery::prekey_status_of(
                shared, stock,
            )))
        }
        Request::FetchBundle(target) => {
            if let Err(wait) = shared.bundle_limits.check(addr) {
                return Err(Refused::rate_limited(wait));
            }
            // A one-time prekey only within the target's hand-out rate: nobody can drain
            // a device's stock faster, and bundles keep coming without one.
            let one_time = target == *addr || shared.handout_limits.check(&target).is_ok();
            fetch_bundle(shared, &target, one_time, rid).await
        }
        // Sends are stored by `store_sends`, several at a time.
        Request::Send(_) => Err(Refused::INTERNAL),
        // Acknowledgements are stored by `store_acks`, several at a time.
        Request::Ack(_) => Err(Refused::INTERNAL),
        Request::AckReceipts(receipt_ids) => {
            shared.store.ack_receipts(addr, receipt_ids).await?;
            done(Out::Done(proto::Done {}))
        }
        Request::Presence(user_id) => {
            let now = now_ms();
            // Only a user `user_id` has sent to sees its presence (and the user itself);
            // to anyone else it looks hidden, which says nothing of whether it exists.
            let allowed = user_id == addr.user
                || shared
                    .store
                    .presence_allowed(&user_id, &addr.user, now)
                    .await?;
            let seen = if allowed {
                shared.store.presence(&user_id).await?
            } else {
                Some((0, true))
            };
            let window = u64::try_from(shared.config.online_window.as_millis()).unwrap_or(u64::MAX);
            let (online, last, hidden) = match seen {
                None => (false, 0, false),
                // Hiding hides both: not online, no last-seen time.
                Some((_, true)) => (false, 0, true),
                Some((t, false)) => (now.saturating_sub(t) <= window, t, false),
            };
            done(Out::Presence(proto::Presence {
                user_id,
                online,
                last_seen_ms: last,
                hidden,
            }))
        }
        Request::UploadToken => {
            if let Err(wait) = shared.token_limits.check(addr) {
                return Err(Refused::rate_limited(wait));
            }
            let ttl = shared.config.upload_token_ttl;
            let token = crate::blobs::issue_token(shared, addr, ttl).await?;
            done(Out::UploadToken(proto::UploadToken {
                token: token.to_vec(),
                expires_ms: now_ms()
                    .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
                max_bytes: shared.config.max_blob_bytes,
            }))
        }
        Request::ListDevices(user_id) => {
            let devices = shared.store.devices(&user_id).await?;
            if devices.is_empty() {
                return Err(refuse(ErrorCode::NotFound, "no such user", "not_found"));
            }
            done(Out::Devices(proto::Devices {
                user_id,
                devices: devices
                    .into_iter()
                    .map(|(device_id, identity_key)| proto::DeviceKey {
                        device_id,
                        identity_key,
                    })
                    .collect(),
            }))
        }
        Request::RemoveDevice(device) => {
            if device == addr.device {
                return Err(refuse(
                    ErrorCode::Forbidden,
                    "a device cannot remove itself",
                    "forbidden",
                ));
            }
            let target = Addr {
                user: addr.user.clone(),
                device,
            };
            if !shared.store.remove_device(&target).await? {
                return Err(refuse(ErrorCode::NotFound, "no such device", "not_found"));
            }
            shared.evict(&target);
            done(Out::Done(proto::Done {}))
        }
        Request::Report(r) => {
            // SPEC §17.2: the content and key open the commitment, and the tag is this
            // relay's for that commitment, sender, this device and time.
            let stamp = hush_crypto::franking::Stamp {
                sender: (&r.sender.user, r.sender.device),
                recipient: (&addr.user, addr.device),
                server_ms: r.server_ms,
            };
            let key = hush_crypto::franking::FrankingKey::from_bytes(r.franking_key);
            if let Err(e) = hush_crypto::franking::verify_report(
                &shared.franking,
                &r.content,
                &key,
                &r.commitment,
                &r.tag,
                &stamp,
            ) {
                return Err(refuse(
                    ErrorCode::ReportRefused,
                    match e {
                        hush_crypto::franking::ReportError::Commitment => {
                            "the message does not match its commitment"
                        }
                        hush_crypto::franking::ReportError::RelayTag => {
                            "this relay did not deliver that message to you"
                        }
                    },
                    "report_refused",
                ));
            }
            let report = StoredReport {
                id: 0,
                reporter: addr.clone(),
                sender: r.sender.clone(),
                server_ms: r.server_ms,
                content: r.content.clone(),
                reason: r.reason.clone(),
                consent: r.consent.clone(),
                tag: r.tag,
                received_ms: now_ms(),
            };
            if shared
                .store
                .put_report(report, shared.config.max_reports_per_day)
                .await?
            {
                shared.metrics.report_in();
            }
            done(Out::Done(proto::Done {}))
        }
        Request::PresenceSettings { hide_last_seen } => {
            shared.store.set_hidden(&addr.user, hide_last_seen).await?;
            done(Out::Done(proto::Done {}))
        }
        _ => Err(Refused::INTERNAL),
    };
    shared.metrics.store_latency(started.elapsed());
    result
}

/// A bundle for `target`, with a one-time prekey if `one_time` and one is left.
async fn fetch_bundle<S: Store>(
    shared: &Shared<S>,
    target: &Addr,
    one_time: bool,
    rid: u64,
) -> Handled {
    let Some(b) = shared.store.take_bundle(target, one_time).await? else {
        return Err(refuse(
            ErrorCode::NotFound,
            "no bundle for that device",
            "not_found",
        ));
    };
    // The owner re-checks its stock (and hears if it ran low).
    if b.one_time_prekey.is_some() || b.kem_prekey.as_ref().is_some_and(|(_, one_time)| *one_time) {
        shared.prekeys_taken(target);
    }
    Ok(Some(codec::encode_server(
        rid,
        Out::Bundle(proto::Bundle {
            identity_key: b.identity_key,
            signed_prekey_id: b.signed_prekey.id,
            signed_prekey: b.signed_prekey.key,
            signed_prekey_signature: b.signature,
            one_time_prekey: b.one_time_prekey.map(|k| proto::OneTimePrekey {
                id: k.id,
                key: k.key,
            }),
            kem_prekey: b.kem_prekey.map(|(k, _)| proto::KemPrekey {
                id: k.id,
                key: k.key,
                signature: k.signature,
            }),
        }),
    )))
}

/// Stores an upload whose signatures verify under the device's registered identity key: the
/// signed prekey's, for either suite (SPEC §5.1), and every KEM prekey's (§5.3). Returns the
/// device's prekey stock.
async fn upload<S: Store>(
    shared: &Shared<S>,
    addr: &Addr,
    u: UploadPrekeys,
) -> Result<PrekeyStock, Refused> {
    let needs_key = u.signed_prekey.is_some()
        || !u.kem_prekeys.is_empty()
        || u.last_resort_kem_prekey.is_some();
    let identity = if needs_key {
        let DeviceLookup::Known(identity) = shared.store.device(addr).await? else {
            return Err(refuse(
                ErrorCode::Unauthenticated,
                "device not registered",
                "unauthenticated",
            ));
        };
        Some(
            IdentityPublicKey::from_slice(&identity)
                .map_err(|_| refuse(ErrorCode::Internal, "stored key invalid", "internal"))?,
        )
    } else {
        None
    };
    let signed_by = |message: &[u8], signature: &[u8]| {
        identity.as_ref().is_some_and(|key| {
            Signature::from_slice(signature).is_some_and(|s| key.verify(message, &s).is_ok())
        })
    };
    let bad = |what| refuse(ErrorCode::BadSignature, what, "bad_signature");
    let mut post_quantum = false;
    let signed = match u.signed_prekey {
        None => None,
        Some((prekey, signature)) => {
            if signed_by(
                &signed::pq_signed_prekey_message(prekey.id, &prekey.key),
                &signature,
            ) {
                post_quantum = true;
            } else if !signed_by(
                &signed::signed_prekey_message(prekey.id, &prekey.key),
                &signature,
            ) {
                return Err(bad("signed prekey signature does not verify"));
            }
            Some((
                StoredPrekey {
                    id: prekey.id,
                    key: prekey.key,
                },
                signature,
            ))
        }
    };
    let mut kem = |k: KemPrekey| {
        if signed_by(&signed::kem_prekey_message(k.id, &k.key), &k.signature) {
            Ok(StoredKemPrekey {
                id: k.id,
                key: k.key,
                signature: k.signature,
            })
        } else {
            Err(bad("KEM prekey signature does not verify"))
        }
    };
    let kem_one_time = u
        .kem_prekeys
        .into_iter()
        .map(&mut kem)
        .collect::<Result<_, _>>()?;
    let kem_last_resort = u.last_resort_kem_prekey.map(&mut kem).transpose()?;
    let one_time = u
        .one_time_prekeys
        .into_iter()
        .map(|k| StoredPrekey {
            id: k.id,
            key: k.key,
        })
        .collect();
    let caps = PrekeyCaps {
        one_time: shared.config.max_one_time_prekeys,
        kem_one_time: shared.config.max_one_time_kem_prekeys,
    };
    let upload = PrekeyUpload {
        signed,
        post_quantum,
        one_time,
        kem_one_time,
        kem_last_resort,
    };
    Ok(shared.store.upload_prekeys(addr, upload, caps).await?)
}

/// Stores consecutive `Ack` frames' ids in one store call and answers each frame (`Done`, or
/// the store's refusal for every one). `false` when the connection must close.
pub(super) async fn store_acks<S: Store>(
    sink: &mut Sink,
    shared: &Shared<S>,
    addr: &Addr,
    acks: Vec<(u64, Vec<u64>)>,
) -> bool {
    if acks.is_empty() {
        return true;
    }
    let started = Instant::now();
    let mut ids = Vec::with_capacity(acks.iter().map(|(_, v)| v.len()).sum());
    let mut rids = Vec::with_capacity(acks.len());
    for (rid, v) in acks {
        ids.extend(v);
        rids.push(rid);
    }
    let n = ids.len() as u64;
    let result = shared
        .store
        .ack(addr, ids, now_ms(), shared.config.receipt_limits())
        .await;
    shared.metrics.store_latency(started.elapsed());
    match result {
        Ok(senders) => {
            shared.metrics.acked(n);
            for s in &senders {
                shared.committed_for(s);
            }
            for rid in rids {
                if !feed(sink, codec::encode_server(rid, Out::Done(proto::Done {}))).await {
                    return false;
                }
            }
            true
        }
        Err(e) => {
            let r = Refused::from(e);
            for rid in rids {
                shared.metrics.reject(r.reason);
                if !feed(sink, r.frame(rid)).await {
                    return false;
                }
            }
            !r.fatal
        }
    }
}

/// Stores parsed sends (one store job) and writes each one's answer: `Sent` once it is
/// durable, or the error. `false` when the connection must close.
pub(super) async fn store_sends<S: Store>(
    sink: &mut Sink,
    shared: &Shared<S>,
    addr: &Addr,
    sends: Vec<(u64, Send)>,
) -> bool {
    if sends.is_empty() {
        return true;
    }
    let started = Instant::now();
    let now = now_ms();
    let limits = MailboxLimits {
        max_count: shared.config.mailbox_max_count,
        max_bytes: shared.config.mailbox_max_bytes,
        sender_max_count: shared.config.mailbox_sender_max_count,
        sender_max_bytes: shared.config.mailbox_sender_max_bytes,
        ttl_ms: u64::try_from(shared.config.mailbox_ttl.as_millis()).unwrap_or(u64::MAX),
    };
    // A send made for a device list that has changed is refused, nothing stored, so the
    // sender lists the devices again (SPEC §14.2).
    let mut stale = Vec::new();
    let mut current = Vec::with_capacity(sends.len());
    let mut digests = HashMap::new();
    for (rid, s) in sends {
        match lists_are_current(shared, &s, &mut digests).await {
            Ok(true) => current.push((rid, s)),
            Ok(false) => stale.push((rid, Refused::STALE_DEVICES)),
            Err(e) => stale.push((rid, Refused::from(e))),
        }
    }
    for (rid, r) in stale {
        shared.metrics.reject(r.reason);
        if !feed(sink, r.frame(rid)).await {
            return false;
        }
    }
    if current.is_empty() {
        return true;
    }
    let (ids, batch): (Vec<_>, Vec<_>) = current
        .into_iter()
        .map(|(rid, s)| {
            let answer = (rid, s.message_id.clone(), s.recipients.clone());
            let out = Outgoing {
                recipients: s.recipients,
                message_id: s.message_id,
                ciphertext: s.ciphertext,
                franking_commitment: s.franking_commitment,
            };
            (answer, out)
        })
        .unzip();
    let results = shared.store.enqueue_many(addr, batch, now, limits).await;
    shared.metrics.store_latency(started.elapsed());
    let mut viewers = Vec::new();
    for ((rid, message_id, recipients), result) in ids.into_iter().zip(results) {
        let reply = match result {
            Ok(full) => {
                let mut refused = Vec::with_capacity(full.len());
                for e in full {
                    if let StoreError::MailboxFull(a)
                    | StoreError::SenderShareFull(a)
                    | StoreError::RecipientUnavailable(a) = &e
                    {
                        refused.push(a.clone());
                    }
                    shared.metrics.reject(Refused::from(e).reason);
                }
                let stored = recipients.into_iter().filter(|r| !refused.contains(r));
                let mut n = 0;
                for r in stored {
                    shared.committed_for(&r);
                    viewers.push(r.user);
                    n += 1;
                }
                shared.metrics.envelope_in(n);
                codec::encode_server(
                    rid,
                    Out::Sent(proto::Sent {
                        message_id,
                        server_timestamp_ms: now,
                        refused: refused
                            .into_iter()
                            .map(|a| proto::Address {
                                user_id: a.user,
                                device_id: a.device,
                            })
                            .collect(),
                    }),
                )
            }
            Err(e) => {
                let r = Refused::from(e);
                shared.metrics.reject(r.reason);
                r.frame(rid)
            }
        };
        if !feed(sink, reply).await {
            return false;
        }
    }
    grant_presence(shared, addr, viewers, now).await;
    true
}

/// Whether every device list `s` was made for is its user's current one. `digests` holds
/// the lists already read for this batch of sends (each user's list is read once).
async fn lists_are_current<S: Store>(
    shared: &Shared<S>,
    s: &Send,
    digests: &mut HashMap<String, [u8; device_list::DIGEST_LEN]>,
) -> Result<bool, StoreError> {
    for (user, digest) in &s.device_lists {
        let current = match digests.get(user) {
            Some(d) => *d,
            None => {
                let devices = shared.store.devices(user).await?;
                let d = device_list::digest(user, &devices);
                digests.insert(user.clone(), d);
                d
            }
        };
        if current != *digest {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The sender of stored envelopes lets their recipients see its presence (SPEC §14.2):
/// written once a day per pair at most, after the answers have gone out.
async fn grant_presence<S: Store>(
    shared: &Shared<S>,
    sender: &Addr,
    viewers: Vec<String>,
    now: u64,
) {
    const RENEW_MS: u64 = 24 * 3600 * 1000;
    let mut due: Vec<String> = {
        let Ok(mut written) = shared.grants.lock() else {
            return;
        };
        if written.len() > 100_000 {
            written.clear();
        }
        viewers
            .into_iter()
            .filter(|v| *v != sender.user)
            .filter(|v| {
                let key = (sender.user.clone(), v.clone());
                match written.get(&key) {
                    Some(at) if now.saturating_sub(*at) < RENEW_MS => false,
                    _ => {
                        written.insert(key, now);
                        true
                    }
                }
            })
            .collect()
    };
    if due.is_empty() {
        return;
    }
    due.sort();
    due.dedup();
    let ttl = u64::try_from(shared.config.presence_grant_ttl.as_millis()).unwrap_or(u64::MAX);
    if let Err(e) = shared
        .store
        .grant_presence(&sender.user, due.clone(), now.saturating_add(ttl))
        .await
    {
        // Not written: try again with the next envelope.
        tracing::warn!(error = %crate::store::error_chain(&e), "presence grant not stored");
        if let Ok(mut written) = shared.grants.lock() {
            for v in due {
                written.remove(&(sender.user.clone(), v));
            }
        }
    }
}
