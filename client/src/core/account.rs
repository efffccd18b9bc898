//! The account: the signed prekey and one-time prekeys this device keeps, and the identity
//! keys of the devices it knows (SPEC §16.7).

use hush_crypto::{
    CryptoRng, IdentityKeyPair, IdentityPublicKey, SecretBytes, Signature, Zeroizing,
};
use hush_sessions::{OneTimePrekey, SignedPrekey};

use super::Device;
use crate::error::ClientError;
use crate::event::{Address, Event};
use crate::store::{Tx, label};

/// Opens the account kept in this store, or creates it on first use: the identity key, signed
/// prekey 1 and `batch` one-time prekeys. A store belongs to one address.
pub(crate) fn open<R: CryptoRng + ?Sized>(
    tx: &Tx<'_>,
    me: &Address,
    batch: u32,
    now_ms: u64,
    rng: &mut R,
) -> Result<IdentityKeyPair, ClientError> {
    if let Some(blob) = tx.meta("identity")? {
        let user = tx.meta("user")?.unwrap_or_default();
        let device = tx.meta_u64("device")?;
        if user != me.user.as_bytes() || device != u64::from(me.device) {
            return Err(ClientError::Invalid("this store belongs to another device"));
        }
        let seed = tx.open(label::IDENTITY, &blob)?;
        let seed = SecretBytes::<32>::from_slice(&seed).ok_or(ClientError::Corrupt)?;
        return Ok(IdentityKeyPair::from_seed(&seed));
    }
    let identity = IdentityKeyPair::generate(rng);
    tx.set_meta(
        "identity",
        &tx.seal(label::IDENTITY, identity.seed().expose())?,
    )?;
    tx.set_meta("user", me.user.as_bytes())?;
    tx.set_meta_u64("device", u64::from(me.device))?;
    let spk = SignedPrekey::generate(1, &identity, rng);
    store_signed_prekey(tx, &spk, now_ms)?;
    tx.set_meta_u64("spk_current", 1)?;
    generate_one_time_prekeys(tx, batch, rng)?;
    Ok(identity)
}

pub(crate) fn store_signed_prekey(
    tx: &Tx<'_>,
    spk: &SignedPrekey,
    now: u64,
) -> Result<(), ClientError> {
    let secret = spk.secret_bytes();
    let mut record = Vec::with_capacity(96);
    record.extend_from_slice(secret.expose());
    record.extend_from_slice(spk.signature().as_bytes());
    let record = Zeroizing::new(record);
    tx.put_signed_prekey(spk.id(), &record, now)
}

pub(crate) fn load_signed_prekey(
    tx: &Tx<'_>,
    id: u32,
) -> Result<Option<SignedPrekey>, ClientError> {
    let Some(record) = tx.signed_prekey(id)? else {
        return Ok(None);
    };
    let (secret, sig) = record.split_at_checked(32).ok_or(ClientError::Corrupt)?;
    let secret = SecretBytes::<32>::from_slice(secret).ok_or(ClientError::Corrupt)?;
    let sig = Signature::from_slice(sig).ok_or(ClientError::Corrupt)?;
    Ok(Some(SignedPrekey::from_parts(
        hush_sessions::Suite::Classical,
        id,
        &secret,
        sig,
    )))
}

/// Generates `n` one-time prekeys (not uploaded yet), numbered on from the last.
pub(crate) fn generate_one_time_prekeys<R: CryptoRng + ?Sized>(
    tx: &Tx<'_>,
    n: u32,
    rng: &mut R,
) -> Result<(), ClientError> {
    let mut next = tx.meta_u64("next_opk")?.max(1);
    for _ in 0..n {
        let id = (next % u64::from(u32::MAX)) as u32;
        let k = OneTimePrekey::generate(id, rng);
        tx.put_one_time_prekey(id, k.secret_bytes().expose())?;
        next += 1;
    }
    tx.set_meta_u64("next_opk", next)
}

/// How this device keeps its one-time prekeys (SPEC §16.8).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PrekeyPolicy {
    /// Keys generated and uploaded per refill.
    pub(crate) batch: u32,
    /// How long a handed-out key is kept for a prekey message still in flight.
    pub(crate) grace_ms: u64,
    /// Most keys generated in any 24 hours: past it the stock stays empty and sessions to
    /// this device start from the signed prekey alone until the day is over.
    pub(crate) daily_budget: u32,
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// The relay's report of this device's one-time prekey stock (`remaining` keys, `low` if
/// under its watermark): records which keys it handed out, deletes those handed out before
/// the grace window, and if the stock is low and nothing waits for upload, generates a
/// batch within the daily budget. Returns whether keys wait for upload.
pub(crate) fn prekey_stock<R: CryptoRng + ?Sized>(
    tx: &Tx<'_>,
    policy: &PrekeyPolicy,
    remaining: u64,
    low: bool,
    now_ms: u64,
    rng: &mut R,
) -> Result<bool, ClientError> {
    tx.set_prekey_stock(remaining, now_ms)?;
    tx.prune_handed_out(now_ms.saturating_sub(policy.grace_ms))?;
    if !tx.unuploaded_prekeys()?.is_empty() {
        return Ok(true);
    }
    if !low {
        return Ok(false);
    }
    let (mut day, mut used) = (tx.meta_u64("opk_day")?, tx.meta_u64("opk_day_used")?);
    if now_ms.saturating_sub(day) >= DAY_MS {
        (day, used) = (now_ms, 0);
    }
    let n = u64::from(policy.batch).min(u64::from(policy.daily_budget).saturating_sub(used));
    if n == 0 {
        return Ok(false);
    }
    generate_one_time_prekeys(tx, n as u32, rng)?;
    tx.set_meta_u64("opk_day", day)?;
    tx.set_meta_u64("opk_day_used", used + n)?;
    Ok(true)
}

/// Records listed device keys; a changed key drops the old session and reports the change.
pub(crate) fn record_devices(
    tx: &Tx<'_>,
    dev: &Device,
    listed: &[(Address, IdentityPublicKey)],
) -> Result<Vec<Event>, ClientError> {
    let mut events = Vec::new();
    for (a, k) in listed {
        match tx.device_key(a)? {
            Some(old) if old == k.as_bytes() => {}
            Some(_) => {
                tx.forget_device(a)?;
                tx.set_device_key(a, k.as_bytes())?;
                events.push(Event::IdentityChanged {
                    address: a.clone(),
                    safety_number: dev.safety_number(&a.user, k),
                });
            }
            None => tx.set_device_key(a, k.as_bytes())?,
        }
    }
    Ok(events)
}
