//! Delivery to a connected device: what the hub pushed into its inbox, and what waits in
//! the store (at connect, after an inbox overflow, on polls), each sent once per connection.

use std::time::Duration;

use hush_relay_protocol::codec;
use hush_relay_protocol::proto::{self, server_frame::Body as Out};

use super::{Sink, feed};
use crate::hub::Inbox;
use crate::store::{Addr, Delivery, PrekeyStock, PushedMessage, Store, StoredReceipt};
use crate::{Shared, now_ms};

/// Envelopes or receipts fetched per store round trip while draining a mailbox.
const PAGE: u32 = 256;

/// The newest envelope and receipt this connection has sent: anything at or below is not
/// sent again.
#[derive(Default)]
pub(super) struct Cursor {
    envelope: u64,
    receipt: u64,
}

/// Tells the device how many one-time prekeys it has left (and whether that is low).
pub(super) async fn prekey_status<S: Store>(
    sink: &mut Sink,
    shared: &Shared<S>,
    addr: &Addr,
) -> bool {
    let Ok(stock) = shared.store.prekey_count(addr).await else {
        return true;
    };
    feed(sink, prekey_status_frame(shared, stock)).await
}

/// A `PrekeyStatus` frame for `stock`.
pub(super) fn prekey_status_frame<S>(shared: &Shared<S>, stock: PrekeyStock) -> Vec<u8> {
    codec::encode_server(0, Out::PrekeyStatus(prekey_status_of(shared, stock)))
}

/// The status of `stock`: low if the one-time prekeys, or (for a device with a last-resort
/// KEM prekey, which uses post-quantum prekeys) the one-time KEM prekeys, are below the
/// watermark.
pub(super) fn prekey_status_of<S>(shared: &Shared<S>, stock: PrekeyStock) -> proto::PrekeyStatus {
    proto::PrekeyStatus {
        one_time_prekeys: u32::try_from(stock.one_time).unwrap_or(u32::MAX),
        low: prekeys_low(shared, stock),
        kem_prekeys: u32::try_from(stock.kem_one_time).unwrap_or(u32::MAX),
        last_resort_kem_prekey: stock.kem_last_resort,
    }
}

/// Whether `stock` needs a refill.
pub(super) fn prekeys_low<S>(shared: &Shared<S>, stock: PrekeyStock) -> bool {
    let watermark = shared.config.prekey_low_watermark;
    stock.one_time < watermark || (stock.kem_last_resort && stock.kem_one_time < watermark)
}

/// The franking commitment and the relay's tag for recipient `to` (SPEC §17), or two empty
/// fields for an envelope sent without a commitment.
fn franking<S>(
    shared: &Shared<S>,
    sender: &Addr,
    to: &Addr,
    server_ms: u64,
    commitment: Option<[u8; 32]>,
) -> (Vec<u8>, Vec<u8>) {
    let Some(c) = commitment else {
        return (Vec::new(), Vec::new());
    };
    let stamp = hush_crypto::franking::Stamp {
        sender: (&sender.user, sender.device),
        recipient: (&to.user, to.device),
        server_ms,
    };
    let tag = hush_crypto::franking::relay_tag(&shared.franking, &c, &stamp);
    (c.to_vec(), tag.to_vec())
}

fn envelope_frame<S>(
    shared: &Shared<S>,
    to: &Addr,
    envelope_id: u64,
    m: &PushedMessage,
) -> Vec<u8> {
    let (franking_commitment, franking_tag) =
        franking(shared, &m.sender, to, m.server_ms, m.franking_commitment);
    codec::encode_server(
        0,
        Out::Envelope(proto::Envelope {
            envelope_id,
            sender: Some(m.sender.to_proto()),
            message_id: m.message_id.clone(),
            server_timestamp_ms: m.server_ms,
            ciphertext: m.ciphertext.clone(),
            franking_commitment,
            franking_tag,
        }),
    )
}

fn receipt_frame(r: StoredReceipt) -> Vec<u8> {
    codec::encode_server(
        0,
        Out::Receipt(proto::Receipt {
            receipt_id: r.receipt_id,
            kind: if r.read {
                proto::ReceiptKind::Read
            } else {
                proto::ReceiptKind::Delivered
            } as i32,
            recipient: Some(r.recipient.to_proto()),
            message_id: r.message_id,
            timestamp_ms: r.at_ms,
        }),
    )
}

/// Sends what was pushed into the inbox (skipping what this connection already sent from
/// the store), then reads the store if the inbox says so, or if a pushed item follows one
/// this connection has not sent (another writer committed it first; it is in the store).
pub(super) async fn deliver<S: Store>(
    sink: &mut Sink,
    shared: &Shared<S>,
    addr: &Addr,
    inbox: &Inbox,
    cursor: &mut Cursor,
) -> Pass {
    let (items, mut check_store) = inbox.take();
    for d in items {
        let bytes = match d {
            Delivery::Envelope {
                envelope_id,
                message,
                after,
                ..
            } if envelope_id > cursor.envelope => {
                if after > cursor.envelope {
                    check_store = true;
                    break;
                }
                cursor.envelope = envelope_id;
                shared.metrics.envelope_out();
                envelope_frame(shared, addr, envelope_id, &message)
            }
            Delivery::Receipt { receipt, after, .. } if receipt.receipt_id > cursor.receipt => {
                if after > cursor.receipt {
                    check_store = true;
                    break;
                }
                cursor.receipt = receipt.receipt_id;
                shared.metrics.receipt_out();
                receipt_frame(receipt)
            }
            _ => continue,
        };
        if !feed(sink, bytes).await {
            return Pass::Closed;
        }
    }
    if check_store {
        drain(sink, shared, addr, cursor).await
    } else {
        Pass::Sent
    }
}

/// What a delivery pass came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pass {
    /// Everything due was sent (or is in the socket's buffer).
    Sent,
    /// The socket failed: the connection ends.
    Closed,
    /// The store could not be read (a database down or unreachable): the connection stays
    /// open and the session reads again later ([`retry_after`]), as it does after a wake-up.
    /// What it already sent stays sent; nothing is skipped (the cursor stays where it was).
    StoreFailed,
}

/// How soon a session reads its mailbox again after the store first failed to answer.
pub(super) const STORE_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between a session's reads of its mailbox while the store fails.
pub(super) const STORE_RETRY_MAX: Duration = Duration::from_secs(16);

/// How long after a failed read of the mailbox the session reads again: [`STORE_RETRY`]
/// (or the configured poll interval if shorter) after a first failure, then twice the last
/// wait after each failure, at most [`STORE_RETRY_MAX`].
pub(super) fn retry_after(poll: Option<Duration>, last: Option<Duration>) -> Duration {
    match last {
        None => poll.map_or(STORE_RETRY, |p| p.min(STORE_RETRY)),
        Some(d) => (d * 2).min(STORE_RETRY_MAX),
    }
}

/// Sends every queued envelope and receipt not sent yet on this connection, in order, from
/// the store.
pub(super) async fn drain<S: Store>(
    sink: &mut Sink,
    shared: &Shared<S>,
    addr: &Addr,
    cursor: &mut Cursor,
) -> Pass {
    loop {
        let Ok(page) = shared
            .store
            .pending(addr, cursor.envelope, PAGE, now_ms())
            .await
        else {
            return Pass::StoreFailed;
        };
        let n = page.len();
        for e in page {
            cursor.envelope = e.envelope_id;
            let (franking_commitment, franking_tag) =
                franking(shared, &e.sender, addr, e.server_ms, e.franking_commitment);
            let env = proto::Envelope {
                envelope_id: e.envelope_id,
                sender: Some(e.sender.to_proto()),
                message_id: e.message_id,
                server_timestamp_ms: e.server_ms,
                ciphertext: e.ciphertext,
                franking_commitment,
                franking_tag,
            };
            if !feed(sink, codec::encode_server(0, Out::Envelope(env))).await {
                return Pass::Closed;
            }
            shared.metrics.envelope_out();
        }
        if n < PAGE as usize {
            break;
        }
    }
    loop {
        let Ok(page) = shared.store.receipts(addr, cursor.receipt, PAGE).await else {
            return Pass::StoreFailed;
        };
        let n = page.len();
        for r in page {
            cursor.receipt = r.receipt_id;
            if !feed(sink, receipt_frame(r)).await {
                return Pass::Closed;
            }
            shared.metrics.receipt_out();
        }
        if n < PAGE as usize {
            return Pass::Sent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session's waits between failed reads: 1 s (or a shorter poll), doubling to 16 s.
    #[test]
    fn retries_back_off_to_the_maximum() {
        let mut last = None;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let d = retry_after(None, last);
            waits.push(d.as_secs());
            last = Some(d);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 16, 16]);
        let short = Some(Duration::from_millis(100));
        assert_eq!(retry_after(short, None), Duration::from_millis(100));
        assert_eq!(
            retry_after(short, Some(Duration::from_millis(100))),
            Duration::from_millis(200)
        );
        assert_eq!(retry_after(Some(Duration::from_secs(5)), None), STORE_RETRY);
    }
}
