//! Handling frames the relay pushed, sans I/O (SPEC §16.3): a [`Pushes`] takes a batch of
//! them in order, commits each envelope and receipt in its own transaction, asks the
//! driver for what it cannot know itself (the relay's device list, to check the sender of
//! a prekey message; any other pushed frame), and ends with the acknowledgements to send
//! and the events to emit once they are sent. A crash before the acknowledgement means the
//! relay sends the frames again, and the store's record of processed messages drops the
//! repeats.

use hush_crypto::{CryptoRng, IdentityPublicKey};
use hush_relay_protocol::proto::{self as pr, server_frame::Body as Out};
use hush_sessions::SessionMessage;

use super::Device;
use super::inbound::{self, Incoming};
use super::prepare::Listed;
use crate::error::ClientError;
use crate::event::{Address, Event};
use crate::store::Sealed;

/// What the driver does next for a [`Pushes`].
#[derive(Debug)]
pub(crate) enum PushStep {
    /// Ask the relay for this user's devices and give the answer to [`Pushes::listed`]:
    /// a prekey message's sender is checked against the key the relay lists for it.
    Devices(String),
    /// A pushed frame that is not mail (a prekey status...): the driver handles it, then
    /// asks for the next step.
    Other(Option<Out>),
    /// The relay is closing the connection (a fatal error frame): nothing is acknowledged,
    /// so what was processed comes again and is dropped as a repeat. Emit the events.
    Fatal(pr::Error, Vec<Event>),
    /// The batch is handled: send these acknowledgements (when not empty), then emit the
    /// events.
    Done {
        /// Envelopes to acknowledge (`Ack`).
        envelope_ids: Vec<u64>,
        /// Receipts to acknowledge (`AckReceipts`).
        receipt_ids: Vec<u64>,
        /// For the app, once acknowledged.
        events: Vec<Event>,
    },
}

/// A batch of pushed frames being handled.
pub(crate) struct Pushes {
    frames: std::vec::IntoIter<pr::ServerFrame>,
    /// An envelope waiting for its sender's registered key: (envelope, decoded, sender).
    waiting: Option<(pr::Envelope, Option<Incoming>, Address)>,
    envelope_ids: Vec<u64>,
    receipt_ids: Vec<u64>,
    events: Vec<Event>,
}

impl Pushes {
    /// Starts handling `batch`, in order.
    pub(crate) fn new(batch: Vec<pr::ServerFrame>) -> Self {
        Self {
            frames: batch.into_iter(),
            waiting: None,
            envelope_ids: Vec::new(),
            receipt_ids: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The next step.
    pub(crate) fn next(
        &mut self,
        dev: &Device,
        store: &mut Sealed,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<PushStep, ClientError> {
        if self.waiting.is_some() {
            return Err(ClientError::Protocol);
        }
        for f in self.frames.by_ref() {
            match f.body {
                Some(Out::Envelope(env)) => {
                    // Decoded once, here; the checks and the decryption use this.
                    let incoming = Incoming::decode(&env.ciphertext);
                    match key_to_check(store, &env, incoming.as_ref())? {
                        Check::Known(registered) => {
                            let id = env.envelope_id;
                            self.events.extend(inbound::receive(
                                dev,
                                store,
                                env,
                                incoming,
                                registered.map(|k| *k),
                                now_ms,
                                rng,
                            )?);
                            self.envelope_ids.push(id);
                        }
                        Check::List(from) => {
                            let user = from.user.clone();
                            self.waiting = Some((env, incoming, from));
                            return Ok(PushStep::Devices(user));
                        }
                    }
                }
                Some(Out::Receipt(r)) => {
                    self.receipt_ids.push(r.receipt_id);
                    self.events.extend(inbound::receipt(store, &r)?);
                }
                Some(Out::Error(e)) if e.fatal => {
                    return Ok(PushStep::Fatal(e, std::mem::take(&mut self.events)));
                }
                body => return Ok(PushStep::Other(body)),
            }
        }
        Ok(PushStep::Done {
            envelope_ids: std::mem::take(&mut self.envelope_ids),
            receipt_ids: std::mem::take(&mut self.receipt_ids),
            events: std::mem::take(&mut self.events),
        })
    }

    /// The relay's answer to [`PushStep::Devices`]: the user's devices, or `None` if the
    /// relay will not list them (an unknown user: the message cannot be checked, and is
    /// dropped rather than left to stall the mailbox behind it).
    pub(crate) fn listed(
        &mut self,
        dev: &Device,
        store: &mut Sealed,
        listed: Option<&Listed>,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<(), ClientError> {
        let (env, incoming, from) = self.waiting.take().ok_or(ClientError::Protocol)?;
        let registered = listed
            .and_then(|l| l.iter().find(|(a, _)| *a == from))
            .map(|(_, k)| *k);
        let id = env.envelope_id;
        self.events.extend(inbound::receive(
            dev, store, env, incoming, registered, now_ms, rng,
        )?);
        self.envelope_ids.push(id);
        Ok(())
    }
}

/// Whether an envelope's sender must be checked against the relay's list first.
enum Check {
    /// No: the key to accept a prekey message under, if it is one (boxed: a key is large
    /// on some targets).
    Known(Option<Box<IdentityPublicKey>>),
    /// Yes: a prekey message from a device whose key this device does not know yet (or
    /// knows differently). A prekey message is accepted only from the address that owns its
    /// identity key, so one captured from a relay cannot be replayed from another address.
    List(Address),
}

fn key_to_check(
    store: &mut Sealed,
    env: &pr::Envelope,
    incoming: Option<&Incoming>,
) -> Result<Check, ClientError> {
    let Some(from) = env
        .sender
        .as_ref()
        .map(|a| Address::new(a.user_id.clone(), a.device_id))
    else {
        return Ok(Check::Known(None));
    };
    let Some(Incoming::Session(SessionMessage::Prekey(p))) = incoming else {
        return Ok(Check::Known(None));
    };
    let stored = store.read(|tx| tx.device_key(&from))?;
    if stored.as_deref() == Some(p.identity_key().as_bytes().as_slice()) {
        return Ok(Check::Known(Some(Box::new(*p.identity_key()))));
    }
    Ok(Check::List(from))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;
    use crate::core::test_device;

    fn frame(body: Out) -> pr::ServerFrame {
        pr::ServerFrame {
            request_id: 0,
            body: Some(body),
        }
    }

    fn envelope(id: u64, ciphertext: &[u8]) -> Out {
        Out::Envelope(pr::Envelope {
            envelope_id: id,
            sender: Some(pr::Address {
                user_id: "bob".into(),
                device_id: 1,
            }),
            message_id: vec![id as u8; 16],
            server_timestamp_ms: 1,
            ciphertext: ciphertext.to_vec(),
            ..Default::default()
        })
    }

    fn receipt(id: u64) -> Out {
        Out::Receipt(pr::Receipt {
            receipt_id: id,
            ..Default::default()
        })
    }

    /// Envelopes and receipts are handled in order and acknowledged together at the end
    /// (an undecryptable envelope too: it is dropped, and reported); any other frame is
    /// handed to the driver without ending the batch.
    #[test]
    fn a_batch_is_acknowledged_once_with_other_frames_handed_out() {
        let mut rng = StdRng::seed_from_u64(1);
        let (dev, mut store) = test_device("alice", &mut rng);
        let status = Out::PrekeyStatus(pr::PrekeyStatus::default());
        let mut pushes = Pushes::new(vec![
            frame(envelope(10, b"not a message")),
            frame(receipt(20)),
            frame(status.clone()),
            frame(envelope(11, b"")),
            frame(receipt(21)),
        ]);
        let step = pushes.next(&dev, &mut store, 1, &mut rng).unwrap();
        assert!(matches!(step, PushStep::Other(Some(ref o)) if *o == status));
        let PushStep::Done {
            envelope_ids,
            receipt_ids,
            events,
        } = pushes.next(&dev, &mut store, 1, &mut rng).unwrap()
        else {
            panic!("the batch ends")
        };
        assert_eq!((envelope_ids, receipt_ids), (vec![10, 11], vec![20, 21]));
        let dropped = events
            .iter()
            .filter(|e| matches!(e, Event::Dropped { .. }))
            .count();
        assert_eq!(dropped, 2, "both undecryptable envelopes are reported");
    }

    /// A fatal error frame ends the batch with nothing acknowledged: what was handled comes
    /// again and is dropped as a repeat.
    #[test]
    fn a_fatal_error_acknowledges_nothing() {
        let mut rng = StdRng::seed_from_u64(2);
        let (dev, mut store) = test_device("alice", &mut rng);
        let fatal = pr::Error {
            code: pr::ErrorCode::Forbidden as i32,
            message: "connected elsewhere".into(),
            retry_after_ms: 0,
            fatal: true,
        };
        let mut pushes = Pushes::new(vec![
            frame(receipt(1)),
            frame(Out::Error(fatal.clone())),
            frame(receipt(2)),
        ]);
        let PushStep::Fatal(e, _) = pushes.next(&dev, &mut store, 1, &mut rng).unwrap() else {
            panic!("fatal")
        };
        assert_eq!(e, fatal);
        // An answer nobody asked for is refused.
        assert!(pushes.listed(&dev, &mut store, None, 1, &mut rng).is_err());
    }
}
