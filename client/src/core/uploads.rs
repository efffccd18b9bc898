//! Prekey uploads, sans I/O (SPEC §5, §16.8): which keys to rotate and upload, the
//! `UploadPrekeys` frames that carry them, and what the relay's answer means for the keys
//! kept here. The driver sends each [`Upload`] and hands the answer to [`uploaded`].

use hush_crypto::{CryptoRng, SecretBytes};
use hush_relay_protocol::proto::{self as pr, server_frame::Body as Out};
use hush_sessions::{KemPrekey, OneTimePrekey, SignedPrekey, Suite};

use super::Device;
use super::account::{
    load_kem_prekey, load_signed_prekey, new_last_resort, store_signed_prekey,
    unuploaded_kem_prekeys,
};
use crate::error::{ClientError, RelayErrorCode};
use crate::event::Event;
use crate::store::Tx;

/// Most one-time KEM prekeys in one upload (the relay's default limit).
const KEM_UPLOAD_BATCH: usize = 100;

/// One `UploadPrekeys` to send, and what it carries.
#[derive(Debug)]
pub(crate) struct Upload {
    /// The frame to send.
    pub(crate) frame: pr::UploadPrekeys,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// The signed prekey and/or the last-resort KEM prekey (ids as uploaded).
    Signed {
        signed_prekey: Option<u32>,
        last_resort: Option<u32>,
    },
    /// One-time prekeys.
    OneTime(Vec<u32>),
    /// One-time KEM prekeys.
    Kem(Vec<u32>),
}

/// Rotates the signed prekey and the last-resort KEM prekey once they are `rotation_ms` old
/// (or of the wrong suite), keeping the ones they replace for messages in flight, and says
/// what to upload: the current ones if the relay does not have them yet (or this device has
/// just registered). The event says a signed prekey was rotated.
pub(crate) fn signed_upload<R: CryptoRng + ?Sized>(
    dev: &Device,
    tx: &Tx<'_>,
    rotation_ms: u64,
    registered: bool,
    now: u64,
    rng: &mut R,
) -> Result<(Option<Upload>, Option<Event>), ClientError> {
    let pq = dev.prekeys.post_quantum;
    let identity = &dev.identity;
    if pq {
        let current = tx.meta_u64("kem_lr_current")? as u32;
        let created = tx.meta_u64("kem_lr_created")?;
        if current == 0 || now.saturating_sub(created) >= rotation_ms {
            let id = new_last_resort(tx, identity, now, rng)?;
            // The key it replaces stays for prekey messages in flight (however long this
            // device was away: the relay handed it out until now); older ones go, with the
            // uses recorded for them.
            tx.prune_last_resort_kem_prekeys(now.saturating_sub(2 * rotation_ms), [id, current])?;
        }
    }
    let wanted = if pq {
        Suite::PostQuantum
    } else {
        Suite::Classical
    };
    let mut current = tx.meta_u64("spk_current")? as u32;
    let created = tx.meta_u64("spk_created")?;
    let suite = load_signed_prekey(tx, current)?.map(|k| k.suite());
    let mut rotated = None;
    if created == 0 && suite == Some(wanted) {
        tx.set_meta_u64("spk_created", now)?;
    } else if now.saturating_sub(created) >= rotation_ms || suite != Some(wanted) {
        let previous = current;
        current = current.wrapping_add(1).max(1);
        let spk = SignedPrekey::generate_for(wanted, current, identity, rng);
        store_signed_prekey(tx, &spk, now)?;
        tx.set_meta_u64("spk_current", u64::from(current))?;
        tx.set_meta_u64("spk_created", now)?;
        // Keep the key it replaces for messages already in flight (however long this device
        // was away); drop older ones.
        tx.prune_signed_prekeys(now.saturating_sub(2 * rotation_ms), [current, previous])?;
        rotated = Some(Event::SignedPrekeyRotated { id: current });
    }
    let uploaded = tx.meta_u64("spk_uploaded")? as u32;
    let spk = if registered || uploaded != current {
        load_signed_prekey(tx, current)?
    } else {
        None
    };
    let lr = tx.meta_u64("kem_lr_current")? as u32;
    let last_resort = if pq && (registered || tx.meta_u64("kem_lr_uploaded")? as u32 != lr) {
        load_kem_prekey(tx, lr)?
    } else {
        None
    };
    if spk.is_none() && last_resort.is_none() {
        return Ok((None, rotated));
    }
    // One upload: the relay takes a post-quantum signed prekey only with a last-resort KEM
    // prekey, stored or beside it.
    let mut frame = pr::UploadPrekeys {
        last_resort_kem_prekey: last_resort.as_ref().map(kem_to_relay),
        ..Default::default()
    };
    if let Some(spk) = &spk {
        frame.signed_prekey_id = spk.id();
        frame.signed_prekey = spk.public_key().to_bytes().to_vec();
        frame.signed_prekey_signature = spk.signature().to_bytes().to_vec();
    }
    let kind = Kind::Signed {
        signed_prekey: spk.as_ref().map(SignedPrekey::id),
        last_resort: last_resort.as_ref().map(KemPrekey::id),
    };
    Ok((Some(Upload { frame, kind }), rotated))
}

/// The one-time prekeys not uploaded yet, if any.
pub(crate) fn one_time_upload(tx: &Tx<'_>) -> Result<Option<Upload>, ClientError> {
    let keys = tx.unuploaded_prekeys()?;
    if keys.is_empty() {
        return Ok(None);
    }
    let one_time_prekeys = keys
        .iter()
        .map(|(id, secret)| {
            let secret = SecretBytes::<32>::from_slice(secret).ok_or(ClientError::Sealed)?;
            Ok(pr::OneTimePrekey {
                id: *id,
                key: OneTimePrekey::from_secret_bytes(*id, &secret)
                    .public_key()
                    .to_bytes()
                    .to_vec(),
            })
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    Ok(Some(Upload {
        frame: pr::UploadPrekeys {
            one_time_prekeys,
            ..Default::default()
        },
        kind: Kind::OneTime(keys.iter().map(|(id, _)| *id).collect()),
    }))
}

/// The one-time KEM prekeys not uploaded yet (at most one upload's worth), if any.
pub(crate) fn kem_upload(tx: &Tx<'_>) -> Result<Option<Upload>, ClientError> {
    let keys = unuploaded_kem_prekeys(tx, KEM_UPLOAD_BATCH)?;
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(Upload {
        frame: pr::UploadPrekeys {
            kem_prekeys: keys.iter().map(kem_to_relay).collect(),
            ..Default::default()
        },
        kind: Kind::Kem(keys.iter().map(KemPrekey::id).collect()),
    }))
}

/// Records what the relay's answer to `upload` means: the keys are uploaded (with the
/// relay's stock), or, refused because the relay's stock is at its cap, deleted (they would
/// never be handed out). Any other refusal is the caller's error; the event is for the app.
pub(crate) fn uploaded(
    tx: &Tx<'_>,
    upload: Upload,
    answer: Result<Out, ClientError>,
    now: u64,
) -> Result<Option<Event>, ClientError> {
    match upload.kind {
        Kind::Signed {
            signed_prekey,
            last_resort,
        } => {
            answer?;
            if let Some(id) = signed_prekey {
                tx.set_meta_u64("spk_uploaded", u64::from(id))?;
            }
            if let Some(id) = last_resort {
                tx.set_meta_u64("kem_lr_uploaded", u64::from(id))?;
            }
            Ok(None)
        }
        Kind::OneTime(ids) => match answer {
            Ok(Out::PrekeyStatus(s)) => {
                tx.mark_uploaded(&ids)?;
                tx.set_prekey_stock(u64::from(s.one_time_prekeys), now)?;
                Ok(Some(Event::PrekeysUploaded {
                    count: ids.len() as u32,
                }))
            }
            Ok(_) => Err(ClientError::Protocol),
            Err(ClientError::Relay {
                code: RelayErrorCode::TooLarge,
                ..
            }) => {
                ids.iter()
                    .try_for_each(|id| tx.delete_one_time_prekey(*id))?;
                Ok(None)
            }
            Err(e) => Err(e),
        },
        Kind::Kem(ids) => match answer {
            Ok(Out::PrekeyStatus(s)) => {
                tx.mark_kem_uploaded(&ids)?;
                tx.set_kem_stock(u64::from(s.kem_prekeys), now)?;
                Ok(Some(Event::KemPrekeysUploaded {
                    count: ids.len() as u32,
                }))
            }
            Ok(_) => Err(ClientError::Protocol),
            Err(ClientError::Relay {
                code: RelayErrorCode::TooLarge,
                ..
            }) => {
                ids.iter().try_for_each(|id| tx.delete_kem_prekey(*id))?;
                Ok(None)
            }
            Err(e) => Err(e),
        },
    }
}

/// A KEM prekey as the relay takes it.
fn kem_to_relay(k: &KemPrekey) -> pr::KemPrekey {
    pr::KemPrekey {
        id: k.id(),
        key: k.public_key().as_bytes().to_vec(),
        signature: k.signature().to_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;
    use crate::core::test_device;

    fn status(one_time: u32) -> Result<Out, ClientError> {
        Ok(Out::PrekeyStatus(pr::PrekeyStatus {
            one_time_prekeys: one_time,
            ..Default::default()
        }))
    }

    /// One-time prekeys are uploaded once: taken by the relay they are marked uploaded;
    /// refused because its stock is full they are deleted; either way the next upload has
    /// none of them.
    #[test]
    fn one_time_prekeys_are_uploaded_or_dropped_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let (_, mut store) = test_device("alice", &mut rng);
        let first = store.read(one_time_upload).unwrap().unwrap();
        assert_eq!(
            first.frame.one_time_prekeys.len(),
            2,
            "the test device's batch"
        );
        let event = store
            .transaction(|tx| uploaded(tx, first, status(2), 5))
            .unwrap();
        assert!(matches!(event, Some(Event::PrekeysUploaded { count: 2 })));
        assert!(store.read(one_time_upload).unwrap().is_none());

        // More keys, refused as over the relay's cap: deleted, not offered again.
        store
            .transaction(|tx| {
                super::super::account::generate_one_time_prekeys(tx, 3, &mut rng)?;
                Ok(())
            })
            .unwrap();
        let more = store.read(one_time_upload).unwrap().unwrap();
        let ids: Vec<u32> = more.frame.one_time_prekeys.iter().map(|k| k.id).collect();
        let refused = Err(ClientError::Relay {
            code: RelayErrorCode::TooLarge,
            message: "stock full".into(),
            retry_after_ms: 0,
        });
        assert!(
            store
                .transaction(|tx| uploaded(tx, more, refused, 6))
                .unwrap()
                .is_none()
        );
        assert!(store.read(one_time_upload).unwrap().is_none());
        for id in ids {
            assert!(store.read(|tx| tx.one_time_prekey(id)).unwrap().is_none());
        }
    }

    /// The signed prekey is uploaded when the device registers, rotated once it is
    /// `rotation_ms` old (an event says so), and not uploaded again while the relay has it.
    #[test]
    fn the_signed_prekey_rotates_and_is_uploaded_when_needed() {
        let mut rng = StdRng::seed_from_u64(2);
        let (dev, mut store) = test_device("alice", &mut rng);
        let step = |store: &mut crate::store::Sealed, registered, now, rng: &mut StdRng| {
            store
                .transaction(|tx| {
                    let (u, e) = signed_upload(&dev, tx, 1_000, registered, now, rng)?;
                    let id = u.as_ref().map(|u| u.frame.signed_prekey_id);
                    if let Some(u) = u {
                        uploaded(tx, u, status(0), now)?;
                    }
                    Ok((id, e.is_some()))
                })
                .unwrap()
        };
        assert_eq!(step(&mut store, true, 10, &mut rng), (Some(1), false));
        assert_eq!(step(&mut store, false, 500, &mut rng), (None, false));
        assert_eq!(step(&mut store, false, 1_010, &mut rng), (Some(2), true));
        assert_eq!(step(&mut store, false, 1_500, &mut rng), (None, false));
    }
}
