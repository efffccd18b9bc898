//! The account: the signed prekey, one-time prekeys and KEM prekeys this device keeps, and
//! the identity keys of the devices it knows (SPEC §16.7, §16.8).

use hush_crypto::kem::KEM_SEED_LEN;
use hush_crypto::{
    CryptoRng, IdentityKeyPair, IdentityPublicKey, SecretBytes, Signature, Zeroizing,
};
use hush_sessions::{KemPrekey, OneTimePrekey, SignedPrekey, Suite};

use super::Device;
use crate::error::ClientError;
use crate::event::{Address, Event};
use crate::store::{Tx, label};

/// Opens the account kept in this store, or creates it on first use: the identity key, signed
/// prekey 1 and a batch of one-time prekeys, and, unless post-quantum keys are off, a
/// last-resort KEM prekey and a batch of one-time KEM prekeys (signed prekey 1 is then
/// signed for PQXDH). A store belongs to one address.
pub(crate) fn open<R: CryptoRng + ?Sized>(
    tx: &Tx<'_>,
    me: &Address,
    policy: &PrekeyPolicy,
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
    let suite = if policy.post_quantum {
        new_last_resort(tx, &identity, now_ms, rng)?;
        generate_kem_prekeys(tx, &identity, policy.kem_batch, rng)?;
        Suite::PostQuantum
    } else {
        Suite::Classical
    };
    let spk = SignedPrekey::generate_for(suite, 1, &identity, rng);
    store_signed_prekey(tx, &spk, now_ms)?;
    tx.set_meta_u64("spk_current", 1)?;
    generate_one_time_prekeys(tx, policy.batch, rng)?;
    Ok(identity)
}

/// Last-resort KEM prekey ids are `LAST_RESORT_BASE + n`, one-time KEM prekey ids are below
/// it: a prekey message's KEM prekey id says which kind it names (SPEC §16.8).
pub(crate) const LAST_RESORT_BASE: u32 = 1 << 31;

/// A KEM prekey record: flags (bit 0: last resort) ‖ seed (64) ‖ signature (64).
fn kem_record(k: &KemPrekey) -> Zeroizing<Vec<u8>> {
    let mut record = Zeroizing::new(Vec::with_capacity(1 + KEM_SEED_LEN + 64));
    record.push(u8::from(k.is_last_resort()));
    record.extend_from_slice(k.seed().expose());
    record.extend_from_slice(k.signature().as_bytes());
    record
}

fn kem_from_record(id: u32, record: &[u8]) -> Result<KemPrekey, ClientError> {
    let (&flags, rest) = record.split_first().ok_or(ClientError::Corrupt)?;
    let (seed, sig) = rest
        .split_at_checked(KEM_SEED_LEN)
        .ok_or(ClientError::Corrupt)?;
    let seed = SecretBytes::<KEM_SEED_LEN>::from_slice(seed).ok_or(ClientError::Corrupt)?;
    let sig = Signature::from_slice(sig).ok_or(ClientError::Corrupt)?;
    Ok(KemPrekey::from_parts(id, flags & 1 == 1, seed, sig))
}

/// Generates and stores the next last-resort KEM prekey and makes it current; returns its id.
pub(crate) fn new_last_resort<R: CryptoRng + ?Sized>(
    tx: &Tx<'_>,
    identity: &IdentityKeyPair,
    now_ms: u64,
    rng: &mut R,
) -> Result<u32, ClientError> {
    let n = tx.meta_u64("kem_lr_next")?.max(1);
    let id = LAST_RESORT_BASE | ((n % u64::from(LAST_RESORT_BASE - 1)) as u32).max(1);
    let k = KemPrekey::generate_last_resort(id, identity, rng);
    tx.put_last_resort_kem_prekey(id, &kem_record(&k), now_ms)?;
    tx.set_meta_u64("kem_lr_next", n + 1)?;
    tx.set_meta_u64("kem_lr_current", u64::from(id))?;
    tx.set_meta_u64("kem_lr_created", now_ms)?;
    Ok(id)
}

/// Generates `n` one-time KEM prekeys (not uploaded yet), numbered on from the last.
pub(crate) fn generate_kem_prekeys<R: CryptoRng + ?Sized>(
    tx: &Tx<'_>,
    identity: &IdentityKeyPair,
    n: u32,
    rng: &mut R,
) -> Result<(), ClientError> {
    let mut next = tx.meta_u64("next_kem")?.max(1);
    for _ in 0..n {
        let id = ((next % u64::from(LAST_RESORT_BASE - 1)) as u32).max(1);
        let k = KemPrekey::generate_one_time(id, identity, rng);
        tx.put_kem_prekey(id, &kem_record(&k))?;
        next += 1;
    }
    tx.set_meta_u64("next_kem", next)
}

/// The KEM prekey `id` names: one-time (below [`LAST_RESORT_BASE`]) or last-resort.
pub(crate) fn load_kem_prekey(tx: &Tx<'_>, id: u32) -> Result<Option<KemPrekey>, ClientError> {
    let record = if id >= LAST_RESORT_BASE {
        tx.last_resort_kem_prekey(id)?
    } else {
        tx.kem_prekey(id)?
    };
    record.map(|r| kem_from_record(id, &r)).transpose()
}

/// One-time KEM prekeys waiting for upload, with their public parts.
pub(crate) fn unuploaded_kem_prekeys(
    tx: &Tx<'_>,
    limit: usize,
) -> Result<Vec<KemPrekey>, ClientError> {
    tx.unuploaded_kem_prekeys(limit)?
        .into_iter()
        .map(|(id, r)| kem_from_record(id, &r))
        .collect()
}

pub(crate) fn store_signed_prekey(
    tx: &Tx<'_>,
    spk: &SignedPrekey,
    now: u64,
) -> Result<(), ClientError> {
    let secret = spk.secret_bytes();
    let mut record = Vec::with_capacity(97);
    record.extend_from_slice(secret.expose());
    record.extend_from_slice(spk.signature().as_bytes());
    // A classical record is the 96 bytes alone (as written before PQXDH); a post-quantum
    // one ends with 0x01.
    if spk.suite() == Suite::PostQuantum {
        record.push(1);
    }
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
    let suite = match record.len() {
        96 => Suite::Classical,
        97 if record[96] == 1 => Suite::PostQuantum,
        _ => return Err(ClientError::Corrupt),
    };
    let (secret, sig) = record[..96]
        .split_at_checked(32)
        .ok_or(ClientError::Corrupt)?;
    let secret = SecretBytes::<32>::from_slice(secret).ok_or(ClientError::Corrupt)?;
    let sig = Signature::from_slice(sig).ok_or(ClientError::Corrupt)?;
    Ok(Some(SignedPrekey::from_parts(suite, id, &secret, sig)))
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
    /// this device start from the signed prekey alone until the day is over. One-time KEM
    /// prekeys have a budget of their own, the same size.
    pub(crate) daily_budget: u32,
    /// Whether this device publishes KEM prekeys (and signs its signed prekeys for PQXDH).
    pub(crate) post_quantum: bool,
    /// One-time KEM prekeys generated and uploaded per refill.
    pub(crate) kem_batch: u32,
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

/// The relay's report of this device's one-time KEM prekey stock: as [`prekey_stock`], for
/// KEM prekeys (batch `kem_batch`, a daily budget of their own). Returns whether keys wait
/// for upload.
pub(crate) fn kem_stock<R: CryptoRng + ?Sized>(
    tx: &Tx<'_>,
    identity: &IdentityKeyPair,
    policy: &PrekeyPolicy,
    remaining: u64,
    now_ms: u64,
    rng: &mut R,
) -> Result<bool, ClientError> {
    if !policy.post_quantum {
        return Ok(false);
    }
    tx.set_kem_stock(remaining, now_ms)?;
    tx.prune_kem_handed_out(now_ms.saturating_sub(policy.grace_ms))?;
    if !tx.unuploaded_kem_prekeys(1)?.is_empty() {
        return Ok(true);
    }
    // Refill below half a batch. The relay reports the stock when it falls under its own
    // low-water mark (default 20, under half the default batch of 50).
    if remaining >= u64::from(policy.kem_batch / 2).max(1) {
        return Ok(false);
    }
    let (mut day, mut used) = (tx.meta_u64("kem_day")?, tx.meta_u64("kem_day_used")?);
    if now_ms.saturating_sub(day) >= DAY_MS {
        (day, used) = (now_ms, 0);
    }
    let n = u64::from(policy.kem_batch).min(u64::from(policy.daily_budget).saturating_sub(used));
    if n == 0 {
        return Ok(false);
    }
    generate_kem_prekeys(tx, identity, n as u32, rng)?;
    tx.set_meta_u64("kem_day", day)?;
    tx.set_meta_u64("kem_day_used", used + n)?;
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
