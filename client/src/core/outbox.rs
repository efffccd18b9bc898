//! Sending the outbox, sans I/O (SPEC §16.4, §16.8): a [`Pass`] walks the outbox oldest
//! entry first and says what to do next: prepare an entry's draft ([`Step::Prepare`], see
//! [`super::prepare`]), send one envelope ([`Step::Send`]) and report the relay's answer,
//! or stop until the next pass ([`Step::Done`]). The driver does the talking and the
//! waiting; every decision (what to send, what to keep for later, what failed) is here.
//!
//! A device whose mailbox refused an envelope in this pass gets nothing more in it (its
//! envelopes keep their order), while everyone else's mail goes on; an entry is done, with
//! its "sent" tick, once every envelope of it was stored.

use std::collections::HashSet;
use std::sync::Arc;

use hush_crypto::CryptoRng;
use hush_relay_protocol::proto::{self as pr, server_frame::Body as Out};

use super::Device;
use super::outbound;
use super::prepare::DeviceLists;
use crate::error::{ClientError, RelayErrorCode};
use crate::event::{DelayReason, Event, MessageId, ReceiptKind};
use crate::proto::client as pc;
use crate::store::{Sealed, Tick};

/// The least wait before an envelope a full mailbox refused is offered again.
pub(crate) const MAILBOX_RETRY_MS: u64 = 500;

/// Most `STALE_DEVICES` answers in a row (with no envelope stored between) that are
/// answered by preparing the message again at once: past it, nothing is sent for
/// [`STALE_RETRY_MS`] (a relay that calls every list stale cannot keep the client busy).
pub(crate) const MAX_STALE_IN_A_ROW: u32 = 3;
/// The wait after more than [`MAX_STALE_IN_A_ROW`] stale answers.
pub(crate) const STALE_RETRY_MS: u64 = 2_000;

/// What the driver does next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Encrypt this draft ([`super::prepare::Preparation`]), then report with
    /// [`Pass::prepared`].
    Prepare {
        /// The outbox entry.
        seq: i64,
        /// Its draft.
        draft: pc::Draft,
    },
    /// Send `frame` and report the answer with [`Pass::answer`].
    Send(Pending),
    /// Nothing more to send in this pass; pass again after `retry_ms` if given (mail kept
    /// for a full mailbox), or when something new is queued.
    Done {
        /// When to pass again at the latest.
        retry_ms: Option<u64>,
    },
}

/// One envelope on its way to the relay.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The frame to send.
    pub(crate) frame: pr::Send,
    seq: i64,
    idx: i64,
    ready: pc::Ready,
    /// Recipients left out because their mailbox refused an earlier envelope.
    held: Vec<pc::Recipient>,
}

/// The outbox entry a pass is at.
struct Entry {
    seq: i64,
    mid: Vec<u8>,
    /// The last envelope kept for later (or -1).
    idx_after: i64,
    /// One of its envelopes was refused for good.
    refused: bool,
    /// Some of it waits for a later pass.
    deferred: bool,
}

/// One pass over the outbox.
#[derive(Default)]
pub(crate) struct Pass {
    full: HashSet<(String, u32)>,
    retry_ms: Option<u64>,
    /// The outbox entries up to this one are behind the pass.
    after: i64,
    entry: Option<Entry>,
    reads_queued: bool,
    /// Entries of this pass refused for good by one device, and prepared again since.
    refused: HashSet<i64>,
    /// The pass ended early; pass again after this many milliseconds.
    ended: Option<u64>,
}

impl Pass {
    /// The next step. The events are for the app (records set aside, "sent" ticks).
    pub(crate) fn next(
        &mut self,
        dev: &Device,
        store: &mut Sealed,
        lists: &DeviceLists,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<(Step, Vec<Event>), ClientError> {
        let mut events = Vec::new();
        if self.ended.is_none() {
            self.ended = lists.quiet(now_ms);
        }
        if let Some(wait) = self.ended {
            let retry_ms = Some(self.retry_ms.map_or(wait, |r| r.min(wait)));
            return Ok((Step::Done { retry_ms }, events));
        }
        if !self.reads_queued {
            // Read receipts go end to end, as an outbox entry for the device that sent the
            // messages.
            while let Some((ids, from, mids)) = store.read(|tx| tx.pending_reads())? {
                store.transaction(|tx| {
                    outbound::queue_read(tx, &from, mids, now_ms, rng)?;
                    tx.done_reads(&ids)
                })?;
            }
            self.reads_queued = true;
        }
        loop {
            let Some(entry) = &mut self.entry else {
                let next = match store.read(|tx| tx.next_outbox(self.after)) {
                    Err(ClientError::Corrupt | ClientError::Sealed) => {
                        events.push(set_aside(store, self.after, now_ms)?);
                        continue;
                    }
                    next => next?,
                };
                let Some((seq, mid, draft)) = next else {
                    return Ok((
                        Step::Done {
                            retry_ms: self.retry_ms,
                        },
                        events,
                    ));
                };
                self.after = seq;
                self.entry = Some(Entry {
                    seq,
                    mid,
                    idx_after: -1,
                    refused: self.refused.contains(&seq),
                    deferred: false,
                });
                if let Some(draft) = draft {
                    return Ok((Step::Prepare { seq, draft }, events));
                }
                continue;
            };
            let (seq, idx_after) = (entry.seq, entry.idx_after);
            let next = match store.read(|tx| tx.next_ready(seq, idx_after)) {
                Err(ClientError::Corrupt | ClientError::Sealed) => {
                    events.push(set_aside(store, seq - 1, now_ms)?);
                    self.entry = None;
                    continue;
                }
                next => next?,
            };
            let Some((idx, ready)) = next else {
                if let Some(e) = self.entry.take()
                    && !e.deferred
                {
                    events.extend(finish(dev, store, &e, now_ms)?);
                }
                continue;
            };
            // Recipients whose mailbox refused an earlier envelope wait (their order is
            // kept); the others get this one now.
            let (held, to): (Vec<_>, Vec<_>) = ready
                .recipients
                .iter()
                .cloned()
                .partition(|r| self.full.contains(&(r.user_id.clone(), r.device_id)));
            if to.is_empty() {
                entry.deferred = true;
                entry.idx_after = idx;
                continue;
            }
            let frame = pr::Send {
                recipients: to
                    .into_iter()
                    .map(|r| pr::Address {
                        user_id: r.user_id,
                        device_id: r.device_id,
                    })
                    .collect(),
                message_id: if ready.message_id.is_empty() {
                    entry.mid.clone()
                } else {
                    ready.message_id.clone()
                },
                ciphertext: ready.payload.clone(),
                device_lists: ready
                    .device_lists
                    .iter()
                    .map(|c| pr::DeviceListCheck {
                        user_id: c.user_id.clone(),
                        digest: c.digest.clone(),
                    })
                    .collect(),
                franking_commitment: ready.franking_commitment.clone(),
            };
            return Ok((
                Step::Send(Pending {
                    frame,
                    seq,
                    idx,
                    ready,
                    held,
                }),
                events,
            ));
        }
    }

    /// What came of preparing the draft of [`Step::Prepare`]. Returns how long to wait
    /// before the next step (a transient refusal: the draft is kept and tried again), and
    /// events; an error the pass cannot go on from (offline).
    pub(crate) fn prepared(
        &mut self,
        store: &mut Sealed,
        result: Result<(), ClientError>,
    ) -> Result<(Option<u64>, Vec<Event>), ClientError> {
        let Some(entry) = &self.entry else {
            return Err(ClientError::Protocol);
        };
        match result {
            Ok(()) => Ok((None, Vec::new())),
            Err(ClientError::Offline) => Err(ClientError::Offline),
            Err(ClientError::Relay {
                code:
                    code @ (RelayErrorCode::RateLimited
                    | RelayErrorCode::Internal
                    | RelayErrorCode::ShuttingDown),
                retry_after_ms,
                ..
            }) => {
                self.after = entry.seq - 1;
                // A relay failing or shutting down is the connection's news, not this
                // message's.
                let events = match code {
                    RelayErrorCode::RateLimited => delayed(&entry.mid, DelayReason::RateLimited)
                        .into_iter()
                        .collect(),
                    _ => Vec::new(),
                };
                self.entry = None;
                Ok((Some(retry_after_ms.clamp(100, 5000)), events))
            }
            Err(e) => {
                let seq = entry.seq;
                store.transaction(|tx| tx.done_outbox(seq))?;
                let failed = failed(&entry.mid, e);
                self.entry = None;
                Ok((None, failed.into_iter().collect()))
            }
        }
    }

    /// The relay's answer to [`Step::Send`]. Returns how long to wait before the next step
    /// (rate limited: the same envelope goes again), and events; an error the pass cannot
    /// go on from (offline, a broken answer).
    pub(crate) fn answer(
        &mut self,
        dev: &Device,
        store: &mut Sealed,
        lists: &mut DeviceLists,
        p: Pending,
        answer: Result<Out, ClientError>,
        now_ms: u64,
    ) -> Result<(Option<u64>, Vec<Event>), ClientError> {
        let Some(entry) = &mut self.entry else {
            return Err(ClientError::Protocol);
        };
        let Pending {
            frame,
            seq,
            idx,
            ready,
            held,
        } = p;
        let mut events = Vec::new();
        match answer {
            Ok(Out::Sent(sent)) if sent.refused.is_empty() && held.is_empty() => {
                lists.stored();
                store.transaction(|tx| {
                    outbound::envelope_sent(tx, &dev.me, seq, idx, &entry.mid, &ready, now_ms)
                })?;
            }
            Ok(Out::Sent(sent)) => {
                lists.stored();
                // Stored for all but the held and the refused (full mailboxes): they get it
                // later, and mail to them waits behind it; everyone else goes on.
                let mut refused = held;
                refused.extend(sent.refused.into_iter().map(|a| pc::Recipient {
                    user_id: a.user_id,
                    device_id: a.device_id,
                }));
                store.transaction(|tx| {
                    outbound::envelope_partly_sent(
                        tx, &dev.me, seq, idx, &entry.mid, &ready, &refused, now_ms,
                    )
                })?;
                self.full
                    .extend(refused.into_iter().map(|r| (r.user_id, r.device_id)));
                events.extend(delayed(&entry.mid, DelayReason::MailboxFull));
                entry.deferred = true;
                entry.idx_after = idx;
                self.retry_ms = Some(
                    self.retry_ms
                        .map_or(MAILBOX_RETRY_MS, |r| r.min(MAILBOX_RETRY_MS)),
                );
            }
            Ok(_) => return Err(ClientError::Protocol),
            // Keep it; try again after the relay's delay.
            Err(ClientError::Relay {
                code: RelayErrorCode::RateLimited,
                retry_after_ms,
                ..
            }) => {
                events.extend(delayed(&entry.mid, DelayReason::RateLimited));
                return Ok((Some(retry_after_ms.clamp(100, 5000)), events));
            }
            // The relay's database, or the one holding a recipient, did not answer (SPEC
            // §14.4): the same envelope again after the relay's delay (it may have been
            // stored; recipients drop a repeated message id, §16.3). The connection's
            // news, not this message's: no event.
            Err(ClientError::Relay {
                code: RelayErrorCode::Internal,
                retry_after_ms,
                ..
            }) if retry_after_ms > 0 => {
                return Ok((Some(retry_after_ms.clamp(100, 5000)), events));
            }
            Err(ClientError::Relay {
                code: RelayErrorCode::MailboxFull,
                retry_after_ms,
                ..
            }) => {
                // Keep it for a later pass; go on with the rest.
                events.extend(delayed(&entry.mid, DelayReason::MailboxFull));
                self.full.extend(
                    frame
                        .recipients
                        .into_iter()
                        .map(|a| (a.user_id, a.device_id)),
                );
                entry.deferred = true;
                entry.idx_after = idx;
                let wait = retry_after_ms.clamp(MAILBOX_RETRY_MS, 5000);
                self.retry_ms = Some(self.retry_ms.map_or(wait, |r| r.min(wait)));
            }
            Err(
                e @ ClientError::Relay {
                    code: RelayErrorCode::StaleDevices,
                    ..
                },
            ) => {
                // A device list it was made for has changed: list the devices again and
                // encrypt the draft anew (a device that already got it drops the repeat,
                // §16.3).
                lists.forget(ready.device_lists.iter().map(|c| c.user_id.as_str()));
                if store.transaction(|tx| tx.restore_draft(seq))? {
                    if entry.refused {
                        self.refused.insert(seq);
                    }
                    self.entry = None;
                    if lists.stale_answer(MAX_STALE_IN_A_ROW, now_ms, STALE_RETRY_MS) {
                        // Enough: the draft waits (nothing after it goes first, so every
                        // device's order is kept).
                        self.ended = Some(STALE_RETRY_MS);
                    } else if !self.full.is_empty() {
                        // Mail held back in this pass for a full mailbox was made from the
                        // same old lists: the next pass sends it (prepared again if it too
                        // is stale) before this message, so no device gets them reversed.
                        self.ended = Some(MAILBOX_RETRY_MS);
                    } else {
                        self.after = seq - 1;
                    }
                    return Ok((None, events));
                }
                // Encrypted by an older version, which kept no draft: failed.
                store.transaction(|tx| tx.done_ready(seq, idx))?;
                events.extend(failed(&entry.mid, e));
                entry.refused = true;
            }
            Err(e @ ClientError::Relay { .. }) => {
                tracing::warn!(error = %e, "relay refused an envelope");
                store.transaction(|tx| tx.done_ready(seq, idx))?;
                events.extend(failed(&entry.mid, e));
                entry.refused = true;
            }
            Err(e) => return Err(e),
        }
        Ok((None, events))
    }
}

/// An entry all of whose envelopes were stored (or refused for good): it leaves the
/// outbox, and a message queued here gets its "sent" tick unless one was refused.
fn finish(
    dev: &Device,
    store: &mut Sealed,
    e: &Entry,
    now_ms: u64,
) -> Result<Option<Event>, ClientError> {
    let visible = store.transaction(|tx| {
        tx.done_outbox(e.seq)?;
        let visible = tx.queued_here(&e.mid)? && !e.refused;
        if visible {
            tx.put_tick(&e.mid, &dev.me, Tick::Receipt(ReceiptKind::Sent), now_ms)?;
        }
        Ok(visible)
    })?;
    Ok(match MessageId::try_from(e.mid.as_slice()) {
        Ok(id) if visible => Some(Event::Receipt {
            message_id: id,
            kind: ReceiptKind::Sent,
            by: dev.me.clone(),
            at_ms: now_ms,
        }),
        _ => None,
    })
}

/// Sets aside the outbox entry after `after` whose draft or envelopes do not open (it is
/// not sent) and tells the app; an error if there is none such (the failure is elsewhere).
fn set_aside(store: &mut Sealed, after: i64, now_ms: u64) -> Result<Event, ClientError> {
    match store.transaction(|tx| tx.set_aside_outbox(after, now_ms))? {
        Some(record) => {
            tracing::warn!(?record, "an outbox entry does not open: set aside");
            Ok(Event::RecordSetAside { record })
        }
        None => Err(ClientError::Corrupt),
    }
}

/// The event telling the app a message waits.
fn delayed(mid: &[u8], reason: DelayReason) -> Option<Event> {
    MessageId::try_from(mid).ok().map(|id| Event::SendDelayed {
        message_id: id,
        reason,
    })
}

/// The event telling the app a message failed.
fn failed(mid: &[u8], reason: ClientError) -> Option<Event> {
    MessageId::try_from(mid).ok().map(|id| Event::SendFailed {
        message_id: id,
        reason: Arc::new(reason),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;
    use crate::core::{conversation_to_proto, test_device};
    use crate::event::{Address, Conversation};

    fn refusal(code: RelayErrorCode, retry_after_ms: u64) -> Result<Out, ClientError> {
        Err(ClientError::Relay {
            code,
            message: "refused".into(),
            retry_after_ms,
        })
    }

    fn sent() -> Result<Out, ClientError> {
        Ok(Out::Sent(pr::Sent::default()))
    }

    fn ready_for(devices: &[(&str, u32)], lists: Vec<pc::DeviceListCheck>) -> pc::Ready {
        pc::Ready {
            recipients: devices
                .iter()
                .map(|(u, d)| pc::Recipient {
                    user_id: (*u).into(),
                    device_id: *d,
                })
                .collect(),
            payload: b"ciphertext".to_vec(),
            message_id: vec![],
            device_lists: lists,
            franking_commitment: vec![],
        }
    }

    /// Queues a message to Bob (with its "queued" tick) whose envelopes are `ready`, or only
    /// its draft when `ready` is `None`.
    fn queue(store: &mut Sealed, me: &Address, mid: u8, ready: Option<Vec<pc::Ready>>) -> i64 {
        let draft = pc::Draft {
            to: Some(conversation_to_proto(&Conversation::Direct("bob".into()))),
            content: Some(pc::Content::default()),
            only: vec![],
        };
        store
            .transaction(|tx| {
                let seq = tx.push_draft(&[mid; 16], &draft, 1)?;
                tx.put_tick(&[mid; 16], me, Tick::Queued, 1)?;
                if let Some(ready) = ready {
                    tx.set_ready(seq, &ready)?;
                }
                Ok(seq)
            })
            .unwrap()
    }

    fn recipients(p: &Pending) -> Vec<(String, u32)> {
        p.frame
            .recipients
            .iter()
            .map(|a| (a.user_id.clone(), a.device_id))
            .collect()
    }

    fn sent_ticks(store: &mut Sealed, mid: u8) -> usize {
        store
            .read(|tx| tx.ticks(&[mid; 16]))
            .unwrap()
            .iter()
            .filter(|(_, t, _)| *t == Tick::Receipt(ReceiptKind::Sent))
            .count()
    }

    /// A full mailbox holds that device's mail alone, in order, for the next pass; the other
    /// recipients get theirs now, and each message's "sent" tick comes once all of it is
    /// stored.
    #[test]
    fn a_full_mailbox_holds_that_device_alone() {
        let mut rng = StdRng::seed_from_u64(1);
        let (dev, mut store) = test_device("alice", &mut rng);
        let mut lists = DeviceLists::new(true);
        let me = dev.me.clone();
        queue(
            &mut store,
            &me,
            1,
            Some(vec![
                ready_for(&[("bob", 1)], vec![]),
                ready_for(&[("carol", 1)], vec![]),
            ]),
        );
        queue(
            &mut store,
            &me,
            2,
            Some(vec![ready_for(&[("bob", 1)], vec![])]),
        );
        let mut pass = Pass::default();
        let mut step = |pass: &mut Pass, store: &mut Sealed, lists: &DeviceLists| {
            pass.next(&dev, store, lists, 1, &mut rng).unwrap()
        };
        let (Step::Send(p), _) = step(&mut pass, &mut store, &lists) else {
            panic!("the first envelope goes first")
        };
        assert_eq!(recipients(&p), [("bob".into(), 1)]);
        let (wait, events) = pass
            .answer(
                &dev,
                &mut store,
                &mut lists,
                p,
                refusal(RelayErrorCode::MailboxFull, 0),
                1,
            )
            .unwrap();
        assert_eq!(wait, None);
        assert!(matches!(
            events.as_slice(),
            [Event::SendDelayed {
                reason: DelayReason::MailboxFull,
                ..
            }]
        ));
        let (Step::Send(p), _) = step(&mut pass, &mut store, &lists) else {
            panic!("Carol's envelope goes on")
        };
        assert_eq!(recipients(&p), [("carol".into(), 1)]);
        pass.answer(&dev, &mut store, &mut lists, p, sent(), 1)
            .unwrap();
        // The second message is for Bob alone: it waits behind the first.
        let (Step::Done { retry_ms }, _) = step(&mut pass, &mut store, &lists) else {
            panic!("nothing more goes to Bob in this pass")
        };
        assert_eq!(retry_ms, Some(MAILBOX_RETRY_MS));
        assert_eq!(
            (sent_ticks(&mut store, 1), sent_ticks(&mut store, 2)),
            (0, 0)
        );

        // The next pass: Bob has room again; both go, in order, and both are done.
        let mut pass = Pass::default();
        let mut ticks = Vec::new();
        for mid in [1u8, 2] {
            let (Step::Send(p), events) = step(&mut pass, &mut store, &lists) else {
                panic!("Bob's envelopes go now")
            };
            ticks.extend(events);
            assert_eq!(p.frame.message_id, [mid; 16]);
            pass.answer(&dev, &mut store, &mut lists, p, sent(), 1)
                .unwrap();
        }
        let (Step::Done { retry_ms }, events) = step(&mut pass, &mut store, &lists) else {
            panic!("the outbox is empty")
        };
        ticks.extend(events);
        assert_eq!(retry_ms, None);
        let sent_events: Vec<_> = ticks
            .iter()
            .filter_map(|e| match e {
                Event::Receipt {
                    message_id,
                    kind: ReceiptKind::Sent,
                    ..
                } => Some(*message_id),
                _ => None,
            })
            .collect();
        assert_eq!(
            sent_events,
            [
                MessageId::try_from(&[1u8; 16][..]).unwrap(),
                MessageId::try_from(&[2u8; 16][..]).unwrap()
            ],
            "each message's sent tick is reported once, in order"
        );
        assert_eq!(
            (sent_ticks(&mut store, 1), sent_ticks(&mut store, 2)),
            (1, 1)
        );
        assert_eq!(store.read(|tx| tx.outbox_len()).unwrap(), 0);
    }

    /// Rate limited: the same envelope again after the relay's delay. Refused for good: the
    /// message fails, with no "sent" tick.
    #[test]
    fn rate_limits_wait_and_refusals_fail() {
        let mut rng = StdRng::seed_from_u64(2);
        let (dev, mut store) = test_device("alice", &mut rng);
        let mut lists = DeviceLists::new(true);
        let me = dev.me.clone();
        queue(
            &mut store,
            &me,
            3,
            Some(vec![ready_for(&[("bob", 1)], vec![])]),
        );
        let mut pass = Pass::default();
        let (Step::Send(p), _) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap() else {
            panic!("send")
        };
        let first = p.frame.clone();
        let (wait, events) = pass
            .answer(
                &dev,
                &mut store,
                &mut lists,
                p,
                refusal(RelayErrorCode::RateLimited, 20),
                1,
            )
            .unwrap();
        assert_eq!(wait, Some(100), "at least 100 ms");
        assert!(matches!(
            events.as_slice(),
            [Event::SendDelayed {
                reason: DelayReason::RateLimited,
                ..
            }]
        ));
        let (Step::Send(p), _) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap() else {
            panic!("the same envelope again")
        };
        assert_eq!(p.frame, first);
        let (_, events) = pass
            .answer(
                &dev,
                &mut store,
                &mut lists,
                p,
                refusal(RelayErrorCode::Forbidden, 0),
                1,
            )
            .unwrap();
        assert!(matches!(events.as_slice(), [Event::SendFailed { .. }]));
        let (Step::Done { .. }, events) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap()
        else {
            panic!("done")
        };
        assert!(events.is_empty(), "no sent tick for a refused message");
        assert_eq!(sent_ticks(&mut store, 3), 0);
        assert_eq!(store.read(|tx| tx.outbox_len()).unwrap(), 0);
    }

    /// `INTERNAL` with a retry delay (the relay's database unavailable): the same envelope
    /// again after it, with no event; `INTERNAL` without one fails the message.
    #[test]
    fn an_unavailable_database_is_retried() {
        let mut rng = StdRng::seed_from_u64(12);
        let (dev, mut store) = test_device("alice", &mut rng);
        let mut lists = DeviceLists::new(true);
        let me = dev.me.clone();
        queue(
            &mut store,
            &me,
            4,
            Some(vec![ready_for(&[("bob", 1)], vec![])]),
        );
        let mut pass = Pass::default();
        let (Step::Send(p), _) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap() else {
            panic!("send")
        };
        let first = p.frame.clone();
        let (wait, events) = pass
            .answer(
                &dev,
                &mut store,
                &mut lists,
                p,
                refusal(RelayErrorCode::Internal, 1000),
                1,
            )
            .unwrap();
        assert_eq!((wait, events.len()), (Some(1000), 0));
        let (Step::Send(p), _) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap() else {
            panic!("the same envelope again")
        };
        assert_eq!(p.frame, first);
        let (_, events) = pass
            .answer(
                &dev,
                &mut store,
                &mut lists,
                p,
                refusal(RelayErrorCode::Internal, 0),
                1,
            )
            .unwrap();
        assert!(matches!(events.as_slice(), [Event::SendFailed { .. }]));
        assert_eq!(sent_ticks(&mut store, 4), 0);
    }

    /// A send refused for a stale device list forgets the lists it names and brings the
    /// draft back to be prepared again; the envelopes left are dropped.
    #[test]
    fn a_stale_device_list_prepares_the_draft_again() {
        let mut rng = StdRng::seed_from_u64(3);
        let (dev, mut store) = test_device("alice", &mut rng);
        let mut lists = DeviceLists::new(true);
        lists.remember("bob", Vec::new());
        lists.remember("carol", Vec::new());
        let me = dev.me.clone();
        let seq = queue(&mut store, &me, 4, None);
        let mut pass = Pass::default();
        let (Step::Prepare { seq: s, draft }, _) =
            pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap()
        else {
            panic!("the draft is prepared first")
        };
        assert_eq!(s, seq);
        let check = pc::DeviceListCheck {
            user_id: "bob".into(),
            digest: vec![9; 32],
        };
        store
            .transaction(|tx| {
                tx.set_ready(
                    seq,
                    &[
                        ready_for(&[("bob", 1)], vec![check.clone()]),
                        ready_for(&[("bob", 2)], vec![check.clone()]),
                    ],
                )
            })
            .unwrap();
        pass.prepared(&mut store, Ok(())).unwrap();
        let (Step::Send(p), _) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap() else {
            panic!("send")
        };
        assert_eq!(p.frame.device_lists.len(), 1);
        pass.answer(
            &dev,
            &mut store,
            &mut lists,
            p,
            refusal(RelayErrorCode::StaleDevices, 0),
            1,
        )
        .unwrap();
        assert!(lists.get("bob").is_none() && lists.get("carol").is_some());
        let (
            Step::Prepare {
                seq: s,
                draft: again,
            },
            _,
        ) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap()
        else {
            panic!("the draft comes back")
        };
        assert_eq!((s, again), (seq, draft));
        assert_eq!(store.read(|tx| tx.next_ready(seq, -1)).unwrap(), None);
    }

    /// A send stored for some devices and refused for others (full mailboxes) says the
    /// message waits, for a full mailbox.
    #[test]
    fn a_partly_refused_send_says_the_message_waits() {
        let mut rng = StdRng::seed_from_u64(8);
        let (dev, mut store) = test_device("alice", &mut rng);
        let mut lists = DeviceLists::new(true);
        let me = dev.me.clone();
        queue(
            &mut store,
            &me,
            9,
            Some(vec![ready_for(&[("bob", 1), ("bob", 2)], vec![])]),
        );
        let mut pass = Pass::default();
        let (Step::Send(p), _) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap() else {
            panic!("send")
        };
        let partly = Ok(Out::Sent(pr::Sent {
            refused: vec![pr::Address {
                user_id: "bob".into(),
                device_id: 2,
            }],
            ..Default::default()
        }));
        let (_, events) = pass
            .answer(&dev, &mut store, &mut lists, p, partly, 1)
            .unwrap();
        assert!(
            matches!(
                events.as_slice(),
                [Event::SendDelayed {
                    reason: DelayReason::MailboxFull,
                    ..
                }]
            ),
            "{events:?}"
        );
    }

    /// Preparing a draft waits on a rate-limited relay with `SendDelayed`, and on a relay
    /// failing or shutting down with no event for the message (that is the connection's
    /// news).
    #[test]
    fn a_rate_limited_preparation_says_the_message_waits() {
        let mut rng = StdRng::seed_from_u64(6);
        let (dev, mut store) = test_device("alice", &mut rng);
        let lists = DeviceLists::new(true);
        let me = dev.me.clone();
        queue(&mut store, &me, 7, None);
        for (code, expect_event) in [
            (RelayErrorCode::RateLimited, true),
            (RelayErrorCode::ShuttingDown, false),
            (RelayErrorCode::Internal, false),
        ] {
            let mut pass = Pass::default();
            let (Step::Prepare { .. }, _) =
                pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap()
            else {
                panic!("the draft is prepared first")
            };
            let refused = Err(ClientError::Relay {
                code,
                message: String::new(),
                retry_after_ms: 300,
            });
            let (wait, events) = pass.prepared(&mut store, refused).unwrap();
            assert_eq!(wait, Some(300), "{code:?}");
            assert_eq!(
                matches!(
                    events.as_slice(),
                    [Event::SendDelayed {
                        reason: DelayReason::RateLimited,
                        ..
                    }]
                ),
                expect_event,
                "{code:?}: {events:?}"
            );
            assert!(expect_event || events.is_empty());
        }
    }

    /// A relay that calls every device list stale cannot keep the client busy: after
    /// [`MAX_STALE_IN_A_ROW`] fresh preparations the pass ends with the draft kept, to be
    /// tried again [`STALE_RETRY_MS`] later.
    #[test]
    fn endless_stale_answers_end_the_pass() {
        let mut rng = StdRng::seed_from_u64(4);
        let (dev, mut store) = test_device("alice", &mut rng);
        let mut lists = DeviceLists::new(true);
        let me = dev.me.clone();
        let seq = queue(&mut store, &me, 5, None);
        let check = pc::DeviceListCheck {
            user_id: "bob".into(),
            digest: vec![9; 32],
        };
        let mut pass = Pass::default();
        let mut prepared = 0;
        let retry_ms = loop {
            match pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap() {
                (Step::Prepare { .. }, _) => {
                    prepared += 1;
                    store
                        .transaction(|tx| {
                            tx.set_ready(seq, &[ready_for(&[("bob", 1)], vec![check.clone()])])
                        })
                        .unwrap();
                    pass.prepared(&mut store, Ok(())).unwrap();
                }
                (Step::Send(p), _) => {
                    let stale = refusal(RelayErrorCode::StaleDevices, 0);
                    pass.answer(&dev, &mut store, &mut lists, p, stale, 1)
                        .unwrap();
                }
                (Step::Done { retry_ms }, _) => break retry_ms,
            }
            assert!(prepared <= 10, "the pass does not end");
        };
        assert_eq!(prepared as u32, MAX_STALE_IN_A_ROW + 1);
        assert_eq!(retry_ms, Some(STALE_RETRY_MS));
        // A new pass at once waits too: the quiet time is the client's, not the pass's.
        let (Step::Done { retry_ms }, _) = Pass::default()
            .next(&dev, &mut store, &lists, 1_000, &mut rng)
            .unwrap()
        else {
            panic!("a new pass sends nothing yet")
        };
        assert_eq!(retry_ms, Some(STALE_RETRY_MS - 999));
        let (_, _, draft) = store.read(|tx| tx.next_outbox(0)).unwrap().unwrap();
        assert!(draft.is_some(), "the draft is kept for the next pass");
    }

    /// A stale answer while mail is held back for a full mailbox ends the pass instead of
    /// preparing the message again at once: the held mail (made from the same old lists)
    /// goes first in the next pass, so no device gets the two messages reversed.
    #[test]
    fn a_stale_answer_behind_held_mail_waits_for_the_next_pass() {
        let mut rng = StdRng::seed_from_u64(5);
        let (dev, mut store) = test_device("alice", &mut rng);
        let mut lists = DeviceLists::new(true);
        let me = dev.me.clone();
        let check = pc::DeviceListCheck {
            user_id: "bob".into(),
            digest: vec![9; 32],
        };
        let a = queue(
            &mut store,
            &me,
            6,
            Some(vec![ready_for(&[("bob", 1)], vec![check.clone()])]),
        );
        queue(
            &mut store,
            &me,
            7,
            Some(vec![ready_for(&[("bob", 2)], vec![check.clone()])]),
        );
        let mut pass = Pass::default();
        let (Step::Send(p), _) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap() else {
            panic!("A first")
        };
        let full = refusal(RelayErrorCode::MailboxFull, 0);
        pass.answer(&dev, &mut store, &mut lists, p, full, 1)
            .unwrap();
        let (Step::Send(p), _) = pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap() else {
            panic!("B goes on to bob:2")
        };
        let stale = refusal(RelayErrorCode::StaleDevices, 0);
        pass.answer(&dev, &mut store, &mut lists, p, stale, 1)
            .unwrap();
        let (Step::Done { retry_ms }, _) =
            pass.next(&dev, &mut store, &lists, 1, &mut rng).unwrap()
        else {
            panic!("the pass ends")
        };
        assert_eq!(retry_ms, Some(MAILBOX_RETRY_MS));
        // The next pass starts with A.
        let (Step::Send(p), _) = Pass::default()
            .next(&dev, &mut store, &lists, 2, &mut rng)
            .unwrap()
        else {
            panic!("A goes first")
        };
        assert_eq!(p.seq, a);
    }
}
