//! One WebSocket connection: authentication ([`auth`]), then a loop that reads requests
//! (parsed by `hush-relay-protocol`, applied by [`dispatch`]) and pushes mail and receipts
//! ([`delivery`]). Every error frame comes from [`refusal`].

mod auth;
mod delivery;
mod dispatch;
mod refusal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{FutureExt as _, SinkExt, StreamExt};
use hush_relay_protocol::{Request, codec};

use self::delivery::{Cursor, Pass};
use self::refusal::Refused;
use crate::store::{Addr, Store};
use crate::{Shared, now_ms};

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, bytes: Vec<u8>) -> bool {
    sink.send(Message::Binary(bytes.into())).await.is_ok()
}

/// Queues a frame without flushing (the caller flushes once per batch of frames).
async fn feed(sink: &mut Sink, bytes: Vec<u8>) -> bool {
    sink.feed(Message::Binary(bytes.into())).await.is_ok()
}

/// Counts a refusal and queues its error frame.
async fn feed_refusal<S>(
    sink: &mut Sink,
    shared: &Shared<S>,
    request_id: u64,
    r: &Refused,
) -> bool {
    shared.metrics.reject(r.reason);
    feed(sink, r.frame(request_id)).await
}

pub(crate) async fn serve<S: Store>(socket: WebSocket, peer: SocketAddr, shared: Arc<Shared<S>>) {
    shared.metrics.connected();
    let (mut sink, mut stream) = socket.split();
    let who = Box::pin(auth::authenticate(&mut sink, &mut stream, &shared)).await;
    if let Some(addr) = who {
        tracing::debug!(user = %addr.user, device = addr.device, "authenticated");
        session(&mut sink, &mut stream, peer, &shared, addr).await;
    }
    let _ = sink.close().await;
    shared.metrics.disconnected();
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
    let every = |p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    };
    let mut poll = shared.config.poll_interval.map(every);
    // The store failed to answer a read of the mailbox: how long after that failure `poll`
    // ticks (`STORE_RETRY`, or the configured poll if shorter, doubling after each failure
    // up to `STORE_RETRY_MAX`), until a read succeeds. A database that hangs rather than
    // refuses keeps each read waiting for seconds, and the session reads no frames meanwhile.
    let mut retry: Option<std::time::Duration> = None;
    let mut cursor = Cursor::default();
    let mut shutdown = shared.shutdown.clone();
    if !Box::pin(delivery::prekey_status(sink, shared, &addr)).await {
        return;
    }
    match Box::pin(delivery::drain(sink, shared, &addr, &mut cursor)).await {
        Pass::Closed => return,
        Pass::StoreFailed => {
            let d = delivery::retry_after(shared.config.poll_interval, None);
            retry = Some(d);
            poll = Some(every(d));
        }
        Pass::Sent => {}
    }
    if sink.flush().await.is_err() {
        return;
    }
    let mut last_touch = Instant::now();
    let mut idle_deadline = tokio::time::Instant::now() + shared.config.idle_timeout;
    loop {
        let pass = tokio::select! {
            // The idle deadline moves only when the device sends something: pushes and
            // polls do not keep a silent connection open.
            incoming = tokio::time::timeout_at(idle_deadline, stream.next()) => {
                idle_deadline = tokio::time::Instant::now() + shared.config.idle_timeout;
                let Ok(first) = incoming else {
                    shared.metrics.reject(Refused::IDLE.reason);
                    send(sink, Refused::IDLE.frame(0)).await;
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
                if last_touch.elapsed() >= shared.config.presence_every() {
                    let _ = Box::pin(shared.store.touch(&addr.user, now_ms())).await;
                    last_touch = Instant::now();
                }
                if Box::pin(handle_frames(sink, messages, peer, shared, &addr)).await {
                    Pass::Sent
                } else {
                    Pass::Closed
                }
            }
            // One wait for every signal: an idle connection's task stays small.
            () = registration.inbox.notify.notified() => {
                let signals = registration.inbox.signals();
                if signals.replaced {
                    // Connected elsewhere, or removed by another device of the user.
                    let removed = matches!(
                        Box::pin(shared.store.device(&addr)).await,
                        Ok(crate::store::DeviceLookup::Unknown(_))
                    );
                    let why = if removed { Refused::REMOVED } else { Refused::REPLACED };
                    send(sink, why.frame(0)).await;
                    return;
                }
                let mut open = true;
                if signals.prekeys {
                    match Box::pin(shared.store.prekey_count(&addr)).await {
                        Ok(stock) if delivery::prekeys_low(shared, stock) => {
                            open = feed(sink, delivery::prekey_status_frame(shared, stock)).await;
                        }
                        _ => {}
                    }
                }
                if open {
                    Box::pin(delivery::deliver(sink, shared, &addr, &registration.inbox, &mut cursor))
                        .await
                } else {
                    Pass::Closed
                }
            }
            _ = async { match poll.as_mut() { Some(p) => { p.tick().await; } None => std::future::pending::<()>().await } } => {
                let pass = Box::pin(delivery::drain(sink, shared, &addr, &mut cursor)).await;
                if retry.is_some() && pass == Pass::Sent {
                    // The store answers again: back to the configured polling, if any.
                    retry = None;
                    poll = shared.config.poll_interval.map(every);
                }
                pass
            }
            _ = shutdown.changed() => {
                send(sink, Refused::SHUTTING_DOWN.frame(0)).await;
                return;
            }
        };
        if pass == Pass::StoreFailed {
            // Counted from now, when the failed read returned.
            let d = delivery::retry_after(shared.config.poll_interval, retry);
            retry = Some(d);
            poll = Some(every(d));
        }
        // Everything a branch wrote goes out in one flush.
        if pass == Pass::Closed || sink.flush().await.is_err() {
            return;
        }
    }
}

/// Ids in an `Ack`, `AckReceipts` or read receipt frame that cost as much of the device's
/// rate limit as one frame (SPEC §14.4).
pub(crate) const IDS_PER_TOKEN: usize = 64;

/// Handles frames read together, in order. Consecutive sends are stored in one store job,
/// and so are consecutive acknowledgements (a client acknowledging a burst of deliveries in
/// several frames waits for one commit, not one per frame). `false` when the connection
/// must close.
async fn handle_frames<S: Store>(
    sink: &mut Sink,
    messages: Vec<Option<Result<Message, axum::Error>>>,
    peer: SocketAddr,
    shared: &Shared<S>,
    addr: &Addr,
) -> bool {
    let limits = shared.config.request_limits();
    let mut sends = Vec::new();
    let mut acks = Vec::new();
    for message in messages {
        let bytes = match message {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(_))) => {
                if !feed_refusal(sink, shared, 0, &Refused::TEXT_FRAME).await {
                    return false;
                }
                continue;
            }
            // Closed or failed: answer what came before, then close.
            _ => {
                // At most one of the two runs is pending.
                dispatch::store_acks(sink, shared, addr, std::mem::take(&mut acks)).await;
                dispatch::store_sends(sink, shared, addr, std::mem::take(&mut sends)).await;
                return false;
            }
        };
        let frame = match codec::decode_client(&bytes, shared.config.max_frame_bytes) {
            Ok(f) => f,
            Err(e) => {
                if !feed_refusal(sink, shared, 0, &e.into()).await {
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
            let r = Refused::rate_limited(wait);
            if !feed_refusal(sink, shared, frame.request_id, &r).await {
                return false;
            }
            continue;
        }
        let rid = frame.request_id;
        let request = match Request::parse(frame, &limits) {
            Ok((_, request)) => {
                shared.metrics.request(request.kind());
                request
            }
            Err(e) => {
                if !feed_refusal(sink, shared, rid, &e.into()).await {
                    return false;
                }
                continue;
            }
        };
        // Lists of ids cost their length: one more token per `IDS_PER_TOKEN` ids.
        let ids = match &request {
            Request::Ack(v) | Request::AckReceipts(v) => v.len(),
            _ => 0,
        };
        if ids > 0
            && let Err(wait) = shared
                .device_limits
                .charge(addr, ids as f64 / IDS_PER_TOKEN as f64)
        {
            if !feed_refusal(sink, shared, rid, &Refused::rate_limited(wait)).await {
                return false;
            }
            continue;
        }
        // Runs of sends, and runs of acknowledgements, are stored together, each run in
        // the order the frames came (a send after an acknowledgement runs after it).
        let request = match request {
            Request::Send(s) => {
                if !dispatch::store_acks(sink, shared, addr, std::mem::take(&mut acks)).await {
                    return false;
                }
                sends.push((rid, s));
                continue;
            }
            Request::Ack(ids) => {
                if !dispatch::store_sends(sink, shared, addr, std::mem::take(&mut sends)).await {
                    return false;
                }
                acks.push((rid, ids));
                continue;
            }
            other => other,
        };
        // Any other request runs after the acknowledgements and sends before it are stored.
        if !dispatch::store_acks(sink, shared, addr, std::mem::take(&mut acks)).await
            || !dispatch::store_sends(sink, shared, addr, std::mem::take(&mut sends)).await
        {
            return false;
        }
        // Boxed: the largest of the request handlers' states would otherwise size every
        // connection's task for its whole life (BENCHMARKS, memory per idle connection).
        match Box::pin(dispatch::apply(request, rid, shared, addr)).await {
            Ok(Some(reply)) => {
                if !feed(sink, reply).await {
                    return false;
                }
            }
            Ok(None) => {}
            Err(r) => {
                if !feed_refusal(sink, shared, rid, &r).await || r.fatal {
                    return false;
                }
            }
        }
    }
    dispatch::store_acks(sink, shared, addr, acks).await
        && dispatch::store_sends(sink, shared, addr, sends).await
}
