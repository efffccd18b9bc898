//! One WebSocket connection: authentication, then requests and pushed mail and receipts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{FutureExt as _, SinkExt, StreamExt};
use hush_crypto::{IdentityPublicKey, Signature, X25519PublicKey};
use rand::Rng as _;

use crate::frame::{self, FrameError, MAX_MESSAGE_ID, MAX_USER_ID};
use crate::hub::Inbox;
use crate::proto::{self, ErrorCode, client_frame::Body as In, server_frame::Body as Out};
use crate::store::{
    Addr, Delivery, DeviceLookup, MailboxLimits, Outgoing, PushedMessage, Store, StoreError,
    StoredPrekey, StoredReceipt,
};
use crate::{Shared, now_ms};

/// Envelopes or receipts fetched per store round trip while draining a mailbox.
const PAGE: u32 = 256;

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

struct Refused {
    code: ErrorCode,
    message: &'static str,
    retry_after_ms: u64,
    fatal: bool,
    reason: &'static str,
}

fn refuse(code: ErrorCode, message: &'static str, reason: &'static str) -> Refused {
    Refused {
        code,
        message,
        retry_after_ms: 0,
        fatal: false,
        reason,
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownRecipient(_) => refuse(
                ErrorCode::UnknownRecipient,
                "unknown recipient",
                "unknown_recipient",
            ),
            StoreError::MailboxFull(_) => refuse(
                ErrorCode::MailboxFull,
                "a recipient's mailbox is full",
                "mailbox_full",
            ),
            other => {
                tracing::error!(error = %other, "store failure");
                refuse(ErrorCode::Internal, "internal error", "internal")
            }
        }
    }
}

async fn send(sink: &mut Sink, bytes: Vec<u8>) -> bool {
    sink.send(Message::Binary(bytes.into())).await.is_ok()
}

/// Queues a frame without flushing (the caller flushes once per batch of frames).
async fn feed(sink: &mut Sink, bytes: Vec<u8>) -> bool {
    sink.feed(Message::Binary(bytes.into())).await.is_ok()
}

async fn feed_error(sink: &mut Sink, request_id: u64, r: &Refused) -> bool {
    feed(
        sink,
        frame::error(request_id, r.code, r.message, r.retry_after_ms, r.fatal),
    )
    .await
}

async fn send_error(sink: &mut Sink, request_id: u64, r: &Refused) -> bool {
    send(
        sink,
        frame::error(request_id, r.code, r.message, r.retry_after_ms, r.fatal),
    )
    .await
}

fn addr_of(a: Option<&proto::Address>) -> Option<Addr> {
    let a = a?;
    if a.user_id.is_empty() || a.user_id.len() > MAX_USER_ID {
        return None;
    }
    Some(Addr {
        user: a.user_id.clone(),
        device: a.device_id,
    })
}

fn to_proto(a: &Addr) -> proto::Address {
    proto::Address {
        user_id: a.user.clone(),
        device_id: a.device,
    }
}

pub(crate) async fn serve<S: Store>(socket: WebSocket, peer: SocketAddr, shared: Arc<Shared<S>>) {
    shared.metrics.connected();
    let (mut sink, mut stream) = socket.split();
    let who = authenticate(&mut sink, &mut stream, &shared).await;
    if let Some(addr) = who {
        tracing::debug!(user = %addr.user, device = addr.device, "authenticated");
        session(&mut sink, &mut stream, peer, &shared, addr).await;
    }
    let _ = sink.close().await;
    shared.metrics.disconnected();
}

/// Challenge, then exactly one Authenticate frame. Returns the device, or `None` after
/// sending a fatal error frame.
async fn authenticate<S: Store>(
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    shared: &Shared<S>,
) -> Option<Addr> {
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let challenge = proto::Challenge {
        nonce: nonce.to_vec(),
        relay_id: shared.config.relay_id.clone(),
    };
    if !send(sink, frame::encode_server(0, Out::Challenge(challenge))).await {
        return None;
    }
    let fail = |code, message, reason| Refused {
        code,
        message,
        retry_after_ms: 0,
        fatal: true,
        reason,
    };
    let next = tokio::time::timeout(shared.config.auth_timeout, stream.next()).await;
    let bytes = match next {
        Err(_) => {
            shared.metrics.reject("auth_timeout");
            send_error(
                sink,
                0,
                &fail(
                    ErrorCode::Timeout,
                    "authentication timed out",
                    "auth_timeout",
                ),
            )
            .await;
            return None;
        }
        Ok(Some(Ok(Message::Binary(b)))) => b,
        Ok(_) => return None,
    };
    let result = check_auth(&bytes, &nonce, shared).await;
    match result {
        Ok((request_id, addr, registered)) => {
            // Online from the moment it is told it is authenticated.
            let _ = shared.store.touch(&addr.user, now_ms()).await;
            send(
                sink,
                frame::encode_server(
                    request_id,
                    Out::Authenticated(proto::Authenticated { registered }),
                ),
            )
            .await;
            Some(addr)
        }
        Err((request_id, mut r)) => {
            shared.metrics.reject(r.reason);
            r.fatal = true;
            send_error(sink, request_id, &r).await;
            None
        }
    }
}

async fn check_auth<S: Store>(
    bytes: &[u8],
    nonce: &[u8; 32],
    shared: &Shared<S>,
) -> Result<(u64, Addr, bool), (u64, Refused)> {
    let f = match frame::decode_client(bytes, shared.config.max_frame_bytes) {
        Ok(f) => f,
        Err(FrameError::TooLarge { .. }) => {
            return Err((
                0,
                refuse(ErrorCode::TooLarge, "frame too large", "too_large"),
            ));
        }
        Err(FrameError::Malformed) => {
            return Err((
                0,
                refuse(ErrorCode::Malformed, "malformed frame", "malformed"),
            ));
        }
    };
    let rid = f.request_id;
    let Some(In::Authenticate(a)) = f.body else {
        return Err((
            rid,
            refuse(
                ErrorCode::Unauthenticated,
                "authenticate first",
                "unauthenticated",
            ),
        ));
    };
    let addr = addr_of(a.address.as_ref()).ok_or((
        rid,
        refuse(ErrorCode::Malformed, "bad address", "malformed"),
    ))?;
    let key = IdentityPublicKey::from_slice(&a.identity_key).map_err(|_| {
        (
            rid,
            refuse(ErrorCode::InvalidKey, "invalid identity key", "invalid_key"),
        )
    })?;
    let sig = Signature::from_slice(&a.signature).ok_or((
        rid,
        refuse(ErrorCode::Malformed, "bad signature length", "malformed"),
    ))?;
    let msg = frame::auth_message(
        &shared.config.relay_id,
        nonce,
        &addr.user,
        addr.device,
        &a.identity_key,
    );
    if key.verify(&msg, &sig).is_err() {
        return Err((
            rid,
            refuse(
                ErrorCode::AuthFailed,
                "signature does not verify for this challenge",
                "auth_failed",
            ),
        ));
    }
    let lookup = shared
        .store
        .device(&addr)
        .await
        .map_err(|e| (rid, Refused::from(e)))?;
    match lookup {
        DeviceLookup::Known(stored) if stored == a.identity_key => Ok((rid, addr, false)),
        DeviceLookup::Known(stored) => {
            // A reinstalled device with a new identity key: another device of the same user
            // must vouch for the new key.
            let Some(link) = a.link.as_ref() else {
                return Err((
                    rid,
                    refuse(
                        ErrorCode::AuthFailed,
                        "another identity key owns this device",
                        "auth_failed",
                    ),
                ));
            };
            let devices = shared
                .store
                .devices(&addr.user)
                .await
                .map_err(|e| (rid, Refused::from(e)))?;
            if link.linking_device_id == addr.device
                || !link_verifies(&devices, link, &addr, &a.identity_key)
            {
                return Err((
                    rid,
                    refuse(
                        ErrorCode::Forbidden,
                        "device link signature does not verify",
                        "link_invalid",
                    ),
                ));
            }
            let replaced = shared
                .store
                .rekey(&addr, &stored, &a.identity_key)
                .await
                .map_err(|e| (rid, Refused::from(e)))?;
            if !replaced {
                return Err((
                    rid,
                    refuse(
                        ErrorCode::AuthFailed,
                        "device changed concurrently",
                        "auth_failed",
                    ),
                ));
            }
            // The old installation, if still connected, is replaced when this one's session
            // registers with the hub.
            Ok((rid, addr, true))
        }
        DeviceLookup::Unknown(devices) => {
            if devices.is_empty() {
                // An unclaimed user id: the first device claims it (with a token, if the
                // relay requires one).
                if let Some(token) = &shared.config.registration_token
                    && !hush_crypto::constant_time_eq(token, &a.registration_token)
                {
                    return Err((
                        rid,
                        refuse(
                            ErrorCode::Forbidden,
                            "registration token required",
                            "registration_token",
                        ),
                    ));
                }
            } else {
                // Another device of an existing user: an existing device must vouch for it.
                let link = a.link.as_ref().ok_or((
                    rid,
                    refuse(
                        ErrorCode::Forbidden,
                        "user exists: a device link is required",
                        "link_required",
                    ),
                ))?;
                if !link_verifies(&devices, link, &addr, &a.identity_key) {
                    return Err((
                        rid,
                        refuse(
                            ErrorCode::Forbidden,
                            "device link signature does not verify",
                            "link_invalid",
                        ),
                    ));
                }
            }
            let created = shared
                .store
                .register(&addr, &a.identity_key, now_ms())
                .await
                .map_err(|e| (rid, Refused::from(e)))?;
            if !created {
                return Err((
                    rid,
                    refuse(
                        ErrorCode::AuthFailed,
                        "device registered concurrently",
                        "auth_failed",
                    ),
                ));
            }
            Ok((rid, addr, true))
        }
    }
}

/// Whether `link` is a valid signature, by the linking device among `devices`, vouching for
/// `identity_key` at `addr`.
fn link_verifies(
    devices: &[(u32, Vec<u8>)],
    link: &proto::DeviceLink,
    addr: &Addr,
    identity_key: &[u8],
) -> bool {
    let Some(linker) = devices
        .iter()
        .find(|(d, _)| *d == link.linking_device_id)
        .and_then(|(_, k)| IdentityPublicKey::from_slice(k).ok())
    else {
        return false;
    };
    Signature::from_slice(&link.signature).is_some_and(|s| {
        linker
            .verify(
                &frame::link_message(&addr.user, addr.device, identity_key),
                &s,
            )
            .is_ok()
    })
}

struct Cursor {
    envelope: u64,
    receipt: u64,
}

/// Most frames read ahead and handled together (their envelopes stored in one job, their
/// answers written with one flush).
const READ_AHEAD: usize = 64;

async fn session<S: Store>(
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    peer: SocketAddr,
    shared: &Shared<S>,
    addr: Addr,
) {
    // Registered before the first read of the mailbox: whatever commits from now on reaches
    // the inbox, and whatever committed before is in the store.
    let registration = shared.hub.register(&addr);
    shared.announce(&addr);
    // With several nodes, also check the mailbox now and then (a wake-up may be lost).
    let mut poll = shared.config.poll_interval.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut cursor = Cursor {
        envelope: 0,
        receipt: 0,
    };
    let mut shutdown = shared.shutdown.clone();
    if !prekey_status(sink, shared, &addr).await
        || !drain(sink, shared, &addr, &mut cursor).await
        || sink.flush().await.is_err()
    {
        return;
    }
    let mut last_touch = Instant::now();
    let mut idle_deadline = tokio::time::Instant::now() + shared.config.idle_timeout;
    loop {
        let open = tokio::select! {
            // The idle deadline moves only when the device sends something: pushes and
            // polls do not keep a silent connection open.
            incoming = tokio::time::timeout_at(idle_deadline, stream.next()) => {
                idle_deadline = tokio::time::Instant::now() + shared.config.idle_timeout;
                let Ok(first) = incoming else {
                    let r = Refused { code: ErrorCode::Timeout, message: "idle", retry_after_ms: 0, fatal: true, reason: "idle_timeout" };
                    shared.metrics.reject(r.reason);
                    send_error(sink, 0, &r).await;
                    return;
                };
                // Read ahead what has already arrived, up to a closed or failed stream.
                let mut messages = vec![first];
                while messages.len() < READ_AHEAD
                    && matches!(messages.last(), Some(Some(Ok(_))))
                    && let Some(next) = stream.next().now_or_never()
                {
                    messages.push(next);
                }
                if last_touch.elapsed().as_secs() >= 10 {
                    let _ = shared.store.touch(&addr.user, now_ms()).await;
                    last_touch = Instant::now();
                }
                handle_frames(sink, messages, peer, shared, &addr).await
            }
            () = registration.inbox.notify.notified() => {
                deliver(sink, shared, &addr, &registration.inbox, &mut cursor).await
            }
            _ = async { match poll.as_mut() { Some(p) => { p.tick().await; } None => std::future::pending::<()>().await } } => {
                drain(sink, shared, &addr, &mut cursor).await
            }
            () = registration.prekeys.notified() => {
                match shared.store.prekey_count(&addr).await {
                    Ok(n) if n < shared.config.prekey_low_watermark => {
                        feed(sink, frame::encode_server(0, Out::PrekeyStatus(proto::PrekeyStatus { one_time_prekeys: n as u32, low: true }))).await
                    }
                    _ => true,
                }
            }
            () = registration.replaced.notified() => {
                let r = Refused { code: ErrorCode::Forbidden, message: "connected elsewhere", retry_after_ms: 0, fatal: true, reason: "replaced" };
                send_error(sink, 0, &r).await;
                return;
            }
            _ = shutdown.changed() => {
                let r = Refused { code: ErrorCode::ShuttingDown, message: "relay shutting down", retry_after_ms: 1000, fatal: true, reason: "shutdown" };
                send_error(sink, 0, &r).await;
                return;
            }
        };
        // Everything a branch wrote goes out in one flush.
        if !open || sink.flush().await.is_err() {
            return;
        }
    }
}

/// Handles frames read together, in order. Consecutive sends are stored in one store job.
/// `false` when the connection must close.
async fn handle_frames<S: Store>(
    sink: &mut Sink,
    messages: Vec<Option<Result<Message, axum::Error>>>,
    peer: SocketAddr,
    shared: &Shared<S>,
    addr: &Addr,
) -> bool {
    let mut sends = Vec::new();
    for message in messages {
        let bytes = match message {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(_))) => {
                let r = refuse(ErrorCode::Malformed, "binary frames only", "malformed");
                shared.metrics.reject(r.reason);
                if !feed_error(sink, 0, &r).await {
                    return false;
                }
                continue;
            }
            // Closed or failed: answer what came before, then close.
            _ => {
                store_sends(sink, shared, addr, std::mem::take(&mut sends)).await;
                return false;
            }
        };
        let f = match frame::decode_client(&bytes, shared.config.max_frame_bytes) {
            Ok(f) => f,
            Err(e) => {
                let r = match e {
                    FrameError::TooLarge { .. } => {
                        refuse(ErrorCode::TooLarge, "frame too large", "too_large")
                    }
                    FrameError::Malformed => {
                        refuse(ErrorCode::Malformed, "malformed frame", "malformed")
                    }
                };
                shared.metrics.reject(r.reason);
                if !feed_error(sink, 0, &r).await {
                    return false;
                }
                continue;
            }
        };
        let limited = shared
            .device_limits
            .check(addr)
            .and_then(|()| shared.ip_limits.check(&peer.ip()));
        if let Err(wait) = limited {
            let r = Refused {
                code: ErrorCode::RateLimited,
                message: "rate limited",
                retry_after_ms: wait.as_millis().max(1) as u64,
                fatal: false,
                reason: "rate_limited",
            };
            shared.metrics.reject(r.reason);
            if !feed_error(sink, f.request_id, &r).await {
                return false;
            }
            continue;
        }
        let rid = f.request_id;
        if let Some(In::Send(s)) = f.body {
            match check_send(shared, s) {
                Ok(out) => sends.push((rid, out)),
                Err(r) => {
                    shared.metrics.reject(r.reason);
                    if !feed_error(sink, rid, &r).await {
                        return false;
                    }
                }
            }
            continue;
        }
        // Any other request runs after the sends before it are stored.
        if !store_sends(sink, shared, addr, std::mem::take(&mut sends)).await {
            return false;
        }
        match handle(f, shared, addr).await {
            Ok(Some(reply)) => {
                if !feed(sink, reply).await {
                    return false;
                }
            }
            Ok(None) => {}
            Err((rid, r)) => {
                shared.metrics.reject(r.reason);
                if !feed_error(sink, rid, &r).await || r.fatal {
                    return false;
                }
            }
        }
    }
    store_sends(sink, shared, addr, sends).await
}

async fn prekey_status<S: Store>(sink: &mut Sink, shared: &Shared<S>, addr: &Addr) -> bool {
    let Ok(n) = shared.store.prekey_count(addr).await else {
        return true;
    };
    let low = n < shared.config.prekey_low_watermark;
    feed(
        sink,
        frame::encode_server(
            0,
            Out::PrekeyStatus(proto::PrekeyStatus {
                one_time_prekeys: n as u32,
                low,
            }),
        ),
    )
    .await
}

fn envelope_frame(envelope_id: u64, m: &PushedMessage) -> Vec<u8> {
    frame::encode_server(
        0,
        Out::Envelope(proto::Envelope {
            envelope_id,
            sender: Some(to_proto(&m.sender)),
            message_id: m.message_id.clone(),
            server_timestamp_ms: m.server_ms,
            ciphertext: m.ciphertext.clone(),
        }),
    )
}

fn receipt_frame(r: StoredReceipt) -> Vec<u8> {
    frame::encode_server(
        0,
        Out::Receipt(proto::Receipt {
            receipt_id: r.receipt_id,
            kind: if r.read {
                proto::ReceiptKind::Read
            } else {
                proto::ReceiptKind::Delivered
            } as i32,
            recipient: Some(to_proto(&r.recipient)),
            message_id: r.message_id,
            timestamp_ms: r.at_ms,
        }),
    )
}

/// Sends what was pushed into the inbox (skipping what this connection already sent from
/// the store), then reads the store if the inbox says so.
async fn deliver<S: Store>(
    sink: &mut Sink,
    shared: &Shared<S>,
    addr: &Addr,
    inbox: &Inbox,
    cursor: &mut Cursor,
) -> bool {
    let (items, check_store) = inbox.take();
    for d in items {
        let bytes = match d {
            Delivery::Envelope {
                envelope_id,
                message,
                ..
            } if envelope_id > cursor.envelope => {
                cursor.envelope = envelope_id;
                shared.metrics.envelope_out();
                envelope_frame(envelope_id, &message)
            }
            Delivery::Receipt { receipt, .. } if receipt.receipt_id > cursor.receipt => {
                cursor.receipt = receipt.receipt_id;
                shared.metrics.receipt_out();
                receipt_frame(receipt)
            }
            _ => continue,
        };
        if !feed(sink, bytes).await {
            return false;
        }
    }
    !check_store || drain(sink, shared, addr, cursor).await
}

/// Sends every queued envelope and receipt not sent yet on this connection, in order, from
/// the store.
async fn drain<S: Store>(
    sink: &mut Sink,
    shared: &Shared<S>,
    addr: &Addr,
    cursor: &mut Cursor,
) -> bool {
    loop {
        let Ok(page) = shared
            .store
            .pending(addr, cursor.envelope, PAGE, now_ms())
            .await
        else {
            return false;
        };
        let n = page.len();
        for e in page {
            cursor.envelope = e.envelope_id;
            let env = proto::Envelope {
                envelope_id: e.envelope_id,
                sender: Some(to_proto(&e.sender)),
                message_id: e.message_id,
                server_timestamp_ms: e.server_ms,
                ciphertext: e.ciphertext,
            };
            if !feed(sink, frame::encode_server(0, Out::Envelope(env))).await {
                return false;
            }
            shared.metrics.envelope_out();
        }
        if n < PAGE as usize {
            break;
        }
    }
    loop {
        let Ok(page) = shared.store.receipts(addr, cursor.receipt, PAGE).await else {
            return false;
        };
        let n = page.len();
        for r in page {
            cursor.receipt = r.receipt_id;
            if !feed(sink, receipt_frame(r)).await {
                return false;
            }
            shared.metrics.receipt_out();
        }
        if n < PAGE as usize {
            return true;
        }
    }
}

type Handled = Result<Option<Vec<u8>>, (u64, Refused)>;

async fn handle<S: Store>(f: proto::ClientFrame, shared: &Shared<S>, addr: &Addr) -> Handled {
    let rid = f.request_id;
    let err = |r: Refused| (rid, r);
    let done = |body: Out| Ok(Some(frame::encode_server(rid, body)));
    let started = Instant::now();
    let result = match f.body {
        None | Some(In::Authenticate(_)) => Err(err(refuse(
            ErrorCode::Malformed,
            "already authenticated",
            "malformed",
        ))),
        Some(In::Ping(_)) => done(Out::Pong(proto::Pong {})),
        Some(In::UploadPrekeys(u)) => upload(shared, addr, u).await.map_err(err).and_then(|n| {
            done(Out::PrekeyStatus(proto::PrekeyStatus {
                one_time_prekeys: n as u32,
                low: n < shared.config.prekey_low_watermark,
            }))
        }),
        Some(In::FetchBundle(fb)) => {
            let target = addr_of(fb.address.as_ref()).ok_or(err(refuse(
                ErrorCode::Malformed,
                "bad address",
                "malformed",
            )))?;
            match shared
                .store
                .take_bundle(&target)
                .await
                .map_err(|e| err(e.into()))?
            {
                None => Err(err(refuse(
                    ErrorCode::NotFound,
                    "no bundle for that device",
                    "not_found",
                ))),
                Some(b) => {
                    // The owner re-checks its stock (and hears if it ran low).
                    if b.one_time_prekey.is_some() {
                        shared.prekeys_taken(&target);
                    }
                    done(Out::Bundle(proto::Bundle {
                        identity_key: b.identity_key,
                        signed_prekey_id: b.signed_prekey.id,
                        signed_prekey: b.signed_prekey.key,
                        signed_prekey_signature: b.signature,
                        one_time_prekey: b.one_time_prekey.map(|k| proto::OneTimePrekey {
                            id: k.id,
                            key: k.key,
                        }),
                    }))
                }
            }
        }
        // Sends are stored by `store_sends`, several at a time.
        Some(In::Send(_)) => Err(err(refuse(
            ErrorCode::Internal,
            "internal error",
            "internal",
        ))),
        Some(In::Ack(a)) => {
            let n = a.envelope_ids.len() as u64;
            let senders = shared
                .store
                .ack(addr, a.envelope_ids, now_ms())
                .await
                .map_err(|e| err(e.into()))?;
            shared.metrics.acked(n);
            for s in &senders {
                shared.committed_for(s);
            }
            done(Out::Done(proto::Done {}))
        }
        Some(In::Read(r)) => {
            let sender = addr_of(r.sender.as_ref()).ok_or(err(refuse(
                ErrorCode::Malformed,
                "bad address",
                "malformed",
            )))?;
            if r.message_ids
                .iter()
                .any(|m| m.is_empty() || m.len() > MAX_MESSAGE_ID)
                || r.message_ids.len() > 1024
            {
                return Err(err(refuse(
                    ErrorCode::Malformed,
                    "bad message ids",
                    "malformed",
                )));
            }
            shared
                .store
                .read(addr, &sender, r.message_ids, now_ms())
                .await
                .map_err(|e| err(e.into()))?;
            shared.committed_for(&sender);
            done(Out::Done(proto::Done {}))
        }
        Some(In::AckReceipts(a)) => {
            shared
                .store
                .ack_receipts(addr, a.receipt_ids)
                .await
                .map_err(|e| err(e.into()))?;
            done(Out::Done(proto::Done {}))
        }
        Some(In::Presence(q)) => {
            let seen = shared
                .store
                .presence(&q.user_id)
                .await
                .map_err(|e| err(e.into()))?;
            let now = now_ms();
            let (online, last, hidden) = match seen {
                None => (false, 0, false),
                Some((t, hidden)) => {
                    let online =
                        now.saturating_sub(t) <= shared.config.online_window.as_millis() as u64;
                    (online, if hidden { 0 } else { t }, hidden)
                }
            };
            done(Out::Presence(proto::Presence {
                user_id: q.user_id,
                online,
                last_seen_ms: last,
                hidden,
            }))
        }
        Some(In::UploadToken(_)) => {
            let ttl = shared.config.upload_token_ttl;
            let token = crate::blobs::issue_token(shared, addr, ttl)
                .await
                .map_err(|e| err(e.into()))?;
            done(Out::UploadToken(proto::UploadToken {
                token: token.to_vec(),
                expires_ms: now_ms().saturating_add(ttl.as_millis() as u64),
                max_bytes: shared.config.max_blob_bytes,
            }))
        }
        Some(In::ListDevices(q)) => {
            if q.user_id.is_empty() || q.user_id.len() > MAX_USER_ID {
                return Err(err(refuse(
                    ErrorCode::Malformed,
                    "bad user id",
                    "malformed",
                )));
            }
            let devices = shared
                .store
                .devices(&q.user_id)
                .await
                .map_err(|e| err(e.into()))?;
            if devices.is_empty() {
                return Err(err(refuse(
                    ErrorCode::NotFound,
                    "no such user",
                    "not_found",
                )));
            }
            done(Out::Devices(proto::Devices {
                user_id: q.user_id,
                devices: devices
                    .into_iter()
                    .map(|(device_id, identity_key)| proto::DeviceKey {
                        device_id,
                        identity_key,
                    })
                    .collect(),
            }))
        }
        Some(In::PresenceSettings(p)) => {
            shared
                .store
                .set_hidden(&addr.user, p.hide_last_seen)
                .await
                .map_err(|e| err(e.into()))?;
            done(Out::Done(proto::Done {}))
        }
    };
    shared.metrics.store_latency(started.elapsed());
    result
}

async fn upload<S: Store>(
    shared: &Shared<S>,
    addr: &Addr,
    u: proto::UploadPrekeys,
) -> Result<u64, Refused> {
    if u.one_time_prekeys.len() > shared.config.max_prekeys_per_upload {
        return Err(refuse(
            ErrorCode::TooLarge,
            "too many prekeys in one upload",
            "too_large",
        ));
    }
    let valid_key = |k: &[u8]| X25519PublicKey::from_slice(k).is_some();
    if u.one_time_prekeys.iter().any(|k| !valid_key(&k.key)) {
        return Err(refuse(
            ErrorCode::InvalidKey,
            "one-time prekeys are 32-byte X25519 keys",
            "invalid_key",
        ));
    }
    let signed = if u.signed_prekey.is_empty() {
        None
    } else {
        if !valid_key(&u.signed_prekey) {
            return Err(refuse(
                ErrorCode::InvalidKey,
                "signed prekey is a 32-byte X25519 key",
                "invalid_key",
            ));
        }
        // The signature must verify under this device's registered identity key.
        let DeviceLookup::Known(identity) = shared.store.device(addr).await? else {
            return Err(refuse(
                ErrorCode::Unauthenticated,
                "device not registered",
                "unauthenticated",
            ));
        };
        let key = IdentityPublicKey::from_slice(&identity)
            .map_err(|_| refuse(ErrorCode::Internal, "stored key invalid", "internal"))?;
        let ok = Signature::from_slice(&u.signed_prekey_signature).is_some_and(|s| {
            key.verify(
                &frame::signed_prekey_message(u.signed_prekey_id, &u.signed_prekey),
                &s,
            )
            .is_ok()
        });
        if !ok {
            return Err(refuse(
                ErrorCode::BadSignature,
                "signed prekey signature does not verify",
                "bad_signature",
            ));
        }
        Some((
            StoredPrekey {
                id: u.signed_prekey_id,
                key: u.signed_prekey,
            },
            u.signed_prekey_signature,
        ))
    };
    let one_time = u
        .one_time_prekeys
        .into_iter()
        .map(|k| StoredPrekey {
            id: k.id,
            key: k.key,
        })
        .collect();
    Ok(shared.store.upload_prekeys(addr, signed, one_time).await?)
}

/// Checks a send (no store access) and turns it into an [`Outgoing`] envelope.
fn check_send<S>(shared: &Shared<S>, s: proto::Send) -> Result<Outgoing, Refused> {
    if s.recipients.is_empty() {
        return Err(refuse(ErrorCode::Malformed, "no recipients", "malformed"));
    }
    if s.recipients.len() > shared.config.max_recipients {
        return Err(refuse(
            ErrorCode::TooManyRecipients,
            "too many recipients",
            "too_many_recipients",
        ));
    }
    if s.message_id.is_empty() || s.message_id.len() > MAX_MESSAGE_ID {
        return Err(refuse(
            ErrorCode::Malformed,
            "message id must be 1 to 32 bytes",
            "malformed",
        ));
    }
    if s.ciphertext.is_empty() {
        return Err(refuse(
            ErrorCode::Malformed,
            "empty ciphertext",
            "malformed",
        ));
    }
    if s.ciphertext.len() > shared.config.max_envelope_bytes {
        return Err(refuse(
            ErrorCode::TooLarge,
            "envelope too large",
            "too_large",
        ));
    }
    let mut recipients = Vec::with_capacity(s.recipients.len());
    for r in &s.recipients {
        recipients.push(addr_of(Some(r)).ok_or(refuse(
            ErrorCode::Malformed,
            "bad recipient address",
            "malformed",
        ))?);
    }
    recipients.sort();
    recipients.dedup();
    Ok(Outgoing {
        recipients,
        message_id: s.message_id,
        ciphertext: s.ciphertext,
    })
}

/// Stores checked sends (one store job) and writes each one's answer: `Sent` once it is
/// durable, or the error. `false` when the connection must close.
async fn store_sends<S: Store>(
    sink: &mut Sink,
    shared: &Shared<S>,
    addr: &Addr,
    sends: Vec<(u64, Outgoing)>,
) -> bool {
    if sends.is_empty() {
        return true;
    }
    let started = Instant::now();
    let now = now_ms();
    let limits = MailboxLimits {
        max_count: shared.config.mailbox_max_count,
        max_bytes: shared.config.mailbox_max_bytes,
        ttl_ms: shared.config.mailbox_ttl.as_millis() as u64,
    };
    let (ids, batch): (Vec<_>, Vec<_>) = sends
        .into_iter()
        .map(|(rid, out)| ((rid, out.message_id.clone(), out.recipients.clone()), out))
        .unzip();
    let results = shared.store.enqueue_many(addr, batch, now, limits).await;
    shared.metrics.store_latency(started.elapsed());
    for ((rid, message_id, recipients), result) in ids.into_iter().zip(results) {
        let reply = match result {
            Ok(()) => {
                shared.metrics.envelope_in(recipients.len() as u64);
                for r in &recipients {
                    shared.committed_for(r);
                }
                frame::encode_server(
                    rid,
                    Out::Sent(proto::Sent {
                        message_id,
                        server_timestamp_ms: now,
                    }),
                )
            }
            Err(e) => {
                let r = Refused::from(e);
                shared.metrics.reject(r.reason);
                frame::error(rid, r.code, r.message, r.retry_after_ms, r.fatal)
            }
        };
        if !feed(sink, reply).await {
            return false;
        }
    }
    true
}
