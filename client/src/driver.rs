//! The driver (tokio natively, the page's event loop in a browser: [`crate::rt`]): the worker that keeps the relay connection (reconnecting with
//! backoff), does the housekeeping (prekey uploads and rotation, presence polling), and
//! answers the core's steps: it carries frames to and from the relay and sleeps when told
//! to, while the core ([`crate::core`]) decides what to send and what each answer means.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hush_crypto::kem::KemPublicKey;
use hush_crypto::{IdentityPublicKey, Signature, X25519PublicKey};
use hush_sessions::{BundleKemPrekey, PrekeyBundle};
use tokio::sync::{mpsc, watch};

use crate::core::account::{self};
use crate::core::outbox::{Pass, Step};
use crate::core::prepare::{Listed, Need, Preparation};
use crate::core::presence;
use crate::core::pushes::{PushStep, Pushes};
use crate::core::uploads::{self, Upload};
use crate::core::{identity_of, to_relay};
use crate::error::ClientError;
use crate::error::RelayErrorCode;
use crate::event::{Address, Event, Presence};
use crate::net::{self, Conn, Credentials};
use crate::proto::client as pc;
use crate::store::{StoreError, Tx};
use hush_relay_protocol::proto::{self as pr, client_frame::Body as In, server_frame::Body as Out};

use crate::client::{Inner, now_ms};

/// The store's lock was poisoned by a panic while it was held.
pub(crate) fn poisoned() -> ClientError {
    ClientError::Store(StoreError::backend(std::io::Error::other(
        "store lock poisoned",
    )))
}

/// Remembers `user`'s devices as the relay has just listed them.
pub(crate) fn remember_devices(inner: &Inner, user: &str, listed: Listed) {
    if let Ok(mut lists) = inner.device_lists.lock() {
        lists.remember(user, listed);
    }
}

pub(crate) async fn list_devices(
    conn: &Conn,
    user: &str,
) -> Result<Vec<(Address, IdentityPublicKey)>, ClientError> {
    match conn
        .request(In::ListDevices(pr::ListDevices {
            user_id: user.to_string(),
        }))
        .await
    {
        Ok(Out::Devices(d)) => d
            .devices
            .iter()
            .map(|k| {
                Ok((
                    Address::new(user, k.device_id),
                    identity_of(&k.identity_key)?,
                ))
            })
            .collect(),
        Ok(_) => Err(ClientError::Protocol),
        Err(ClientError::Relay {
            code: RelayErrorCode::NotFound,
            ..
        }) => Err(ClientError::Unknown("user")),
        Err(e) => Err(e),
    }
}

async fn fetch_bundle(conn: &Conn, a: &Address) -> Result<Option<PrekeyBundle>, ClientError> {
    let b = match conn
        .request(In::FetchBundle(pr::FetchBundle {
            address: Some(to_relay(a)),
        }))
        .await
    {
        Ok(Out::Bundle(b)) => b,
        Ok(_) => return Err(ClientError::Protocol),
        Err(ClientError::Relay {
            code: RelayErrorCode::NotFound,
            ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let identity = identity_of(&b.identity_key)?;
    let spk = X25519PublicKey::from_slice(&b.signed_prekey).ok_or(ClientError::Protocol)?;
    let sig = Signature::from_slice(&b.signed_prekey_signature).ok_or(ClientError::Protocol)?;
    let opk = match b.one_time_prekey {
        Some(k) => Some((
            k.id,
            X25519PublicKey::from_slice(&k.key).ok_or(ClientError::Protocol)?,
        )),
        None => None,
    };
    let bundle = PrekeyBundle::from_public_parts(identity, b.signed_prekey_id, spk, sig, opk);
    let bundle = match b.kem_prekey {
        Some(k) => bundle.with_kem_public(BundleKemPrekey {
            id: k.id,
            key: KemPublicKey::from_slice(&k.key).map_err(|_| ClientError::Protocol)?,
            signature: Signature::from_slice(&k.signature).ok_or(ClientError::Protocol)?,
        }),
        None => bundle,
    };
    // Verified when a session starts from it (`Session::initiate_with`): a bundle that does
    // not verify, or that the policy refuses, fails the message with the reason.
    Ok(Some(bundle))
}

pub(crate) async fn presence(conn: &Conn, user: &str) -> Result<Presence, ClientError> {
    match conn
        .request(In::Presence(pr::PresenceQuery {
            user_id: user.to_string(),
        }))
        .await?
    {
        Out::Presence(p) => Ok(presence::presence_of(p)),
        _ => Err(ClientError::Protocol),
    }
}

impl Inner {
    pub(crate) fn conn(&self) -> Result<Conn, ClientError> {
        self.conn
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(Conn::is_open)
            .ok_or(ClientError::Offline)
    }

    pub(crate) fn with_store<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut s = self.store.lock().map_err(|_| poisoned())?;
        s.transaction(f)
    }

    pub(crate) fn read_store<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut s = self.store.lock().map_err(|_| poisoned())?;
        s.read(f)
    }

    pub(crate) fn emit(&self, e: Event) {
        match &e {
            // Once per message and reason, however often the outbox retries it.
            Event::SendDelayed { message_id, reason } => {
                let fresh = self
                    .delayed
                    .lock()
                    .map_or(true, |mut d| d.insert((*message_id, *reason)));
                if !fresh {
                    return;
                }
            }
            Event::SendFailed { message_id, .. }
            | Event::Receipt {
                message_id,
                kind: crate::event::ReceiptKind::Sent,
                ..
            } => {
                if let Ok(mut d) = self.delayed.lock() {
                    d.retain(|(m, _)| m != message_id);
                }
            }
            _ => {}
        }
        let _ = self.events.send(e);
    }

    pub(crate) fn emit_all(&self, events: Vec<Event>) {
        for e in events {
            self.emit(e);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The worker.

pub(crate) async fn worker(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let (min, max) = inner.reconnect;
    let mut backoff = min;
    let mut last_failure: Option<String> = None;
    while !*stop.borrow() {
        let link = inner.link.lock().ok().and_then(|l| l.clone());
        let creds = Credentials {
            identity: &inner.dev.identity,
            user: &inner.dev.me.user,
            device: inner.dev.me.device,
            registration_token: inner.registration_token.as_deref(),
            relay_id: inner.relay_id.as_deref(),
            link: link.map(|l| pr::DeviceLink {
                linking_device_id: l.linking_device,
                signature: l.signature.to_bytes().to_vec(),
            }),
        };
        let reason = match net::connect(
            &inner.url,
            inner.ca_file.as_ref(),
            creds,
            inner.flush.clone(),
        )
        .await
        {
            Ok((conn, authenticated, pushes)) => {
                backoff = min;
                let registered = authenticated.registered;
                // Device lists are remembered between sends only with a relay that checks
                // them (SPEC §14.2); otherwise each send asks for them.
                if let Ok(mut lists) = inner.device_lists.lock() {
                    lists.set_relay_checks(authenticated.checks_device_lists);
                }
                if let Ok(mut c) = inner.conn.lock() {
                    *c = Some(conn.clone());
                }
                let _ = inner.connected.send_replace(true);
                inner.emit(Event::Connected { registered });
                tracing::info!(device = %inner.dev.me, registered, "connected");
                let result = connected(&inner, &conn, registered, pushes, &mut stop).await;
                if let Ok(mut c) = inner.conn.lock() {
                    *c = None;
                }
                let _ = inner.connected.send_replace(false);
                let reason = match result {
                    Ok(()) => None,
                    Err(e) => Some(Arc::new(e)),
                };
                inner.emit(Event::Disconnected {
                    reason: reason.clone(),
                });
                reason.map_or_else(|| "stopped".to_string(), |e| e.to_string())
            }
            Err(e) => {
                // The app hears why connecting fails (a wrong relay, a refused
                // registration...), once per kind of failure, not on every retry.
                let reason = e.to_string();
                if last_failure.as_deref() != Some(reason.as_str()) {
                    inner.emit(Event::Disconnected {
                        reason: Some(Arc::new(e)),
                    });
                }
                reason
            }
        };
        last_failure = Some(reason.clone());
        tracing::debug!(device = %inner.dev.me, %reason, "not connected");
        if *stop.borrow() {
            break;
        }
        // Jitter: up to a quarter of the delay, so clients do not reconnect in lockstep.
        let jitter =
            rand::RngExt::random_range(&mut rand::rng(), 0..=backoff.as_millis() as u64 / 4);
        let wait = backoff + Duration::from_millis(jitter);
        tokio::select! {
            () = crate::rt::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(max);
    }
}

async fn connected(
    inner: &Arc<Inner>,
    conn: &Conn,
    registered: bool,
    mut pushes: mpsc::Receiver<pr::ServerFrame>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ClientError> {
    housekeeping(inner, conn, registered).await?;
    let mut retry = flush(inner, conn).await?;
    // The first tick comes at once, then one every `poll` (as `tokio::time::interval`).
    let poll = inner.poll.as_millis() as u64;
    let mut next_tick = crate::rt::monotonic_ms();
    loop {
        let tick = crate::rt::sleep(Duration::from_millis(
            next_tick.saturating_sub(crate::rt::monotonic_ms()),
        ));
        tokio::select! {
            () = async {
                match retry {
                    Some(d) => crate::rt::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {
                retry = flush(inner, conn).await?;
            }
            push = pushes.recv() => {
                let Some(f) = push else { return Err(ClientError::Offline) };
                // What else has already arrived is handled with it and acknowledged in one
                // frame.
                let mut batch = vec![f];
                while batch.len() < ACK_BATCH && let Ok(f) = pushes.try_recv() {
                    batch.push(f);
                }
                handle_pushes(inner, conn, batch).await?;
                // Replies sent while handling (acks) and drafts queued by what arrived.
                retry = flush(inner, conn).await?;
            }
            () = inner.kick.notified() => {
                if *stop.borrow() { return Ok(()); }
                retry = flush(inner, conn).await?;
            }
            () = tick => {
                next_tick = crate::rt::monotonic_ms().saturating_add(poll.max(1));
                conn.request(In::Ping(pr::Ping {})).await?;
                housekeeping(inner, conn, false).await?;
                poll_presence(inner, conn).await?;
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Uploads the signed prekey and the last-resort KEM prekey if the relay lacks them, rotates
/// them when due (and the signed prekey at once if it is not of the suite this device
/// uses: an account from before PQXDH), and uploads one-time prekeys and one-time KEM
/// prekeys not uploaded yet.
async fn housekeeping(inner: &Inner, conn: &Conn, registered: bool) -> Result<(), ClientError> {
    let rotation = inner.spk_rotation.as_millis() as u64;
    let (signed, rotated) = inner.with_store(|tx| {
        uploads::signed_upload(
            &inner.dev,
            tx,
            rotation,
            registered,
            now_ms(),
            &mut rand::rng(),
        )
    })?;
    upload(inner, conn, signed).await?;
    if let Some(e) = rotated {
        inner.emit(e);
    }
    upload_one_time_prekeys(inner, conn).await?;
    let kem = inner.read_store(uploads::kem_upload)?;
    upload(inner, conn, kem).await
}

/// Sends one prekey upload the core made, and records what came of it.
async fn upload(inner: &Inner, conn: &Conn, upload: Option<Upload>) -> Result<(), ClientError> {
    let Some(upload) = upload else {
        return Ok(());
    };
    let answer = conn.request(In::UploadPrekeys(upload.frame.clone())).await;
    let event = inner.with_store(|tx| uploads::uploaded(tx, upload, answer, now_ms()))?;
    if let Some(e) = event {
        inner.emit(e);
    }
    Ok(())
}

async fn upload_one_time_prekeys(inner: &Inner, conn: &Conn) -> Result<(), ClientError> {
    let one_time = inner.read_store(uploads::one_time_upload)?;
    upload(inner, conn, one_time).await
}

/// Asks for every watched user's presence (`core::presence` says what is news).
async fn poll_presence(inner: &Inner, conn: &Conn) -> Result<(), ClientError> {
    let queries = inner
        .watched
        .lock()
        .map(|w| w.queries())
        .unwrap_or_default();
    for q in queries {
        let user = q.user_id.clone();
        let p = match conn.request(In::Presence(q)).await {
            Ok(Out::Presence(p)) => p,
            Err(ClientError::Offline) => return Err(ClientError::Offline),
            _ => continue,
        };
        let news = inner
            .watched
            .lock()
            .ok()
            .and_then(|mut w| w.answer(&user, p));
        if let Some(e) = news {
            inner.emit(e);
        }
    }
    Ok(())
}

/// Sends pending read receipts, then every outbox entry in order. An envelope refused for a
/// full mailbox stays queued, and so does everything after it for that device; the rest
/// goes on. Returns when to try those again, if any.
async fn flush(inner: &Inner, conn: &Conn) -> Result<Option<Duration>, ClientError> {
    // The core's pass decides; this does the talking and the waiting.
    let mut pass = Pass::default();
    loop {
        let (step, events) = {
            // Locks in one order everywhere: device lists, then the store.
            let lists = inner.device_lists.lock().map_err(|_| poisoned())?;
            let mut store = inner.store.lock().map_err(|_| poisoned())?;
            pass.next(&inner.dev, &mut store, &lists, now_ms(), &mut rand::rng())?
        };
        inner.emit_all(events);
        let (wait, events) = match step {
            Step::Done { retry_ms } => return Ok(retry_ms.map(Duration::from_millis)),
            Step::Prepare { seq, draft } => {
                let result = prepare(inner, conn, seq, draft).await;
                let mut store = inner.store.lock().map_err(|_| poisoned())?;
                pass.prepared(&mut store, result)?
            }
            Step::Send(pending) => {
                let answer = conn.request(In::Send(pending.frame.clone())).await;
                let mut lists = inner.device_lists.lock().map_err(|_| poisoned())?;
                let mut store = inner.store.lock().map_err(|_| poisoned())?;
                pass.answer(
                    &inner.dev,
                    &mut store,
                    &mut lists,
                    pending,
                    answer,
                    now_ms(),
                )?
            }
        };
        inner.emit_all(events);
        if let Some(ms) = wait {
            crate::rt::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// Encrypts one draft for every recipient device and replaces it by the envelopes, in one
/// transaction with the session and group state changes: the core's [`Preparation`] says
/// what it needs from the relay (device lists not remembered, missing bundles), and this
/// asks for it.
async fn prepare(
    inner: &Inner,
    conn: &Conn,
    seq: i64,
    draft: pc::Draft,
) -> Result<(), ClientError> {
    let mut p = Preparation::new(seq, draft)?;
    loop {
        let need = {
            let lists = inner.device_lists.lock().map_err(|_| poisoned())?;
            inner.read_store(|tx| p.need(&inner.dev, &lists, tx, now_ms()))?
        };
        match need {
            None => break,
            Some(Need::Devices(user)) => {
                let listed = list_devices(conn, &user).await?;
                let mut lists = inner.device_lists.lock().map_err(|_| poisoned())?;
                p.listed(&mut lists, &user, listed);
            }
            Some(Need::Bundles(missing)) => {
                // Fetched outside the store lock; the core checks their keys.
                let mut bundles = HashMap::new();
                for (a, _) in &missing {
                    match fetch_bundle(conn, a).await? {
                        Some(b) => {
                            bundles.insert(a.clone(), b);
                        }
                        None => tracing::warn!(device = %a, "no prekey bundle; skipped"),
                    }
                }
                p.bundles(bundles);
            }
        }
    }
    let started = {
        let mut store = inner.store.lock().map_err(|_| poisoned())?;
        p.encrypt(&inner.dev, &mut store, now_ms(), &mut rand::rng())?
    };
    inner.emit_all(started);
    Ok(())
}

/// Most pushed frames handled together and acknowledged with one `Ack` and one
/// `AckReceipts`.
const ACK_BATCH: usize = 256;

/// Handles pushed frames in order: each envelope and receipt is committed in its own
/// transaction, then all of them are acknowledged at once (a crash before the
/// acknowledgement means the relay sends them again, and the store's record of processed
/// messages drops the repeats), then their events are emitted.
async fn handle_pushes(
    inner: &Arc<Inner>,
    conn: &Conn,
    batch: Vec<pr::ServerFrame>,
) -> Result<(), ClientError> {
    // The core handles the batch; this answers what it asks and sends the acknowledgements.
    let mut pushes = Pushes::new(batch);
    loop {
        let step = {
            let mut store = inner.store.lock().map_err(|_| poisoned())?;
            pushes.next(&inner.dev, &mut store, now_ms(), &mut rand::rng())?
        };
        match step {
            PushStep::Devices(user) => {
                let listed = list_to_check(conn, &user).await?;
                if let Some(l) = &listed {
                    remember_devices(inner, &user, l.clone());
                }
                let mut store = inner.store.lock().map_err(|_| poisoned())?;
                pushes.listed(
                    &inner.dev,
                    &mut store,
                    listed.as_ref(),
                    now_ms(),
                    &mut rand::rng(),
                )?;
            }
            PushStep::Other(body) => handle_push(inner, conn, body).await?,
            PushStep::Fatal(e, events) => {
                inner.emit_all(events);
                return Err(net::relay_error(&e));
            }
            PushStep::Done {
                envelope_ids,
                receipt_ids,
                events,
            } => {
                if !envelope_ids.is_empty() {
                    conn.request(In::Ack(pr::Ack { envelope_ids })).await?;
                }
                if !receipt_ids.is_empty() {
                    conn.request(In::AckReceipts(pr::AckReceipts { receipt_ids }))
                        .await?;
                }
                inner.emit_all(events);
                return Ok(());
            }
        }
    }
}

/// A pushed frame other than an envelope, a receipt or a fatal error.
async fn handle_push(
    inner: &Arc<Inner>,
    conn: &Conn,
    body: Option<Out>,
) -> Result<(), ClientError> {
    match body {
        Some(Out::PrekeyStatus(mut s)) => {
            if s.low {
                // The push may predate an upload of ours: an empty upload asks for the stock
                // now.
                match conn
                    .request(In::UploadPrekeys(pr::UploadPrekeys::default()))
                    .await?
                {
                    Out::PrekeyStatus(now) => s = now,
                    _ => return Err(ClientError::Protocol),
                }
            }
            let (pending, kem_pending) = inner.with_store(|tx| {
                let rng = &mut rand::rng();
                Ok((
                    account::prekey_stock(
                        tx,
                        &inner.dev.prekeys,
                        u64::from(s.one_time_prekeys),
                        s.low,
                        now_ms(),
                        rng,
                    )?,
                    account::kem_stock(
                        tx,
                        &inner.dev.identity,
                        &inner.dev.prekeys,
                        u64::from(s.kem_prekeys),
                        now_ms(),
                        rng,
                    )?,
                ))
            })?;
            if pending {
                upload_one_time_prekeys(inner, conn).await?;
            }
            if kem_pending {
                let kem = inner.read_store(uploads::kem_upload)?;
                upload(inner, conn, kem).await?;
            }
        }
        Some(Out::Error(e)) if e.fatal => return Err(net::relay_error(&e)),
        _ => {}
    }
    Ok(())
}

/// `user`'s devices, to check the sender of a prekey message ([`PushStep::Devices`]), or
/// `None` if the relay will not list them: the message is then dropped (never let one
/// envelope stall the mailbox behind it). Rate limited: waits and asks again (the envelope
/// stays unacknowledged meanwhile).
async fn list_to_check(conn: &Conn, user: &str) -> Result<Option<Listed>, ClientError> {
    for _ in 0..5 {
        match list_devices(conn, user).await {
            Ok(listed) => return Ok(Some(listed)),
            Err(ClientError::Relay {
                code: RelayErrorCode::RateLimited,
                retry_after_ms,
                ..
            }) => crate::rt::sleep(Duration::from_millis(retry_after_ms.clamp(50, 5000))).await,
            Err(
                ClientError::Unknown(_)
                | ClientError::Relay {
                    code:
                        RelayErrorCode::NotFound
                        | RelayErrorCode::Malformed
                        | RelayErrorCode::TooLarge
                        | RelayErrorCode::Forbidden,
                    ..
                },
            ) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Offline)
}
