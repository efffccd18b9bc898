//! Sharding: users' state on several PostgreSQL databases (shards), each possibly its own
//! server, routed by user id ([`shard_of`]).
//!
//! A user's devices, prekeys, mailboxes, receipt queues, presence and the presence grants
//! it gives live on its shard. What belongs to no user (the franking key, abuse reports,
//! blobs, upload tokens and blob quotas) lives on shard 0. Each shard is a [`PgStore`] with
//! its own pool, batchers and migrations; each keeps every promise of one database for its
//! own users.
//!
//! Across shards:
//! - a send whose recipients live on several shards is stored on each shard in that shard's
//!   own transaction, all at once: all-or-nothing per shard, not across shards
//!   ([`ShardedPgStore::enqueue_many`] says what the sender is told);
//! - a "delivered" receipt for a sender on another shard is queued there after the
//!   acknowledgement commits on the recipient's shard; if the sender's shard fails at that
//!   moment the receipt is lost (logged), never the acknowledgement.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::join_all;

use super::{PgStore, Routing, Unplaced, db};
use crate::store::{
    Addr, DeliveryHook, DeviceLookup, MailboxLimits, Outgoing, PrekeyCaps, PrekeyStock,
    PrekeyUpload, ReceiptLimits, Refusals, Store, StoreError, StoredBundle, StoredEnvelope,
    StoredReceipt, StoredReport,
};

/// Longest an acknowledgement waits for its receipts to be queued on other shards.
pub const FORWARD_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Most shards a relay may use.
pub const MAX_SHARDS: usize = 1024;

/// The shard (`0 .. shards`) that holds `user`: the first 8 bytes of
/// `SHA-256("hush shard v1" ‖ user)`, big-endian, as the key of a jump consistent hash
/// (Lamping and Veach, 2014) over `shards` buckets, in integer arithmetic:
///
/// ```text
/// b = -1, j = 0
/// while j < shards:
///     b = j
///     key = key × 2862933555777941757 + 1   (mod 2^64)
///     j = ⌊(b + 1) × 2^31 / (⌊key / 2^33⌋ + 1)⌋
/// return b
/// ```
///
/// Going from `n` shards to `n + 1` moves about `1 / (n + 1)` of the users, each to the new
/// shard, and no user between old shards. Migration 12 defines the same function in SQL,
/// `hush_shard(user_id, shards)`, for resharding (docs/DEPLOYMENT.md).
pub fn shard_of(user: &str, shards: usize) -> usize {
    let digest = hush_crypto::hash::sha256(&[b"hush shard v1", user.as_bytes()]);
    let mut key = u64::from_be_bytes(
        digest[..8]
            .try_into()
            .unwrap_or_else(|_| unreachable!("a SHA-256 digest has 32 bytes")),
    );
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < shards as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as u128) << 31).div_euclid(u128::from(key >> 33) + 1) as i64;
    }
    b.max(0) as usize
}

/// The PostgreSQL store over several databases, routed by user id (see the module
/// documentation). With one shard it behaves as that shard's [`PgStore`].
#[derive(Clone)]
pub struct ShardedPgStore {
    shards: Arc<[PgStore]>,
}

impl ShardedPgStore {
    /// Connects to every shard (in this order: a user's shard depends on the list's length
    /// and order, so every node must be given the same list), each with a pool of at most
    /// `max_connections` and the tables in `schema` if given, and applies pending
    /// migrations on each.
    pub async fn connect(
        urls: &[&str],
        schema: Option<&str>,
        max_connections: usize,
    ) -> Result<Self, StoreError> {
        Self::connect_with(urls, schema, max_connections, Routing::ByMailbox).await
    }

    /// [`ShardedPgStore::connect`], with each shard's batches' [`Routing`].
    pub async fn connect_with(
        urls: &[&str],
        schema: Option<&str>,
        max_connections: usize,
        routing: Routing,
    ) -> Result<Self, StoreError> {
        if urls.is_empty() || urls.len() > MAX_SHARDS {
            return Err(StoreError::database(std::io::Error::other(format!(
                "a sharded store needs 1 to {MAX_SHARDS} databases"
            ))));
        }
        if listed_twice(urls) {
            return Err(misplaced("a database is listed twice".to_string()));
        }
        let mut shards = Vec::with_capacity(urls.len());
        for url in urls {
            shards.push(PgStore::connect_with(url, schema, max_connections, routing).await?);
        }
        settle(&shards, false).await?;
        Ok(Self::from_shards(shards))
    }

    /// Adds a shard, offline (every relay node stopped): connects to the `urls` of the
    /// shards in use and to `new`, copies the users that [`shard_of`] gives to shard
    /// `urls.len()` once there are `urls.len() + 1` shards (about one in `urls.len() + 1`,
    /// from every shard) with everything they have (devices, revoked keys, prekeys,
    /// mailboxes with their ids, receipts, counts, presence, the presence grants they give)
    /// into `new` in one transaction, then deletes them from the old shards. `new` must hold
    /// no users. Started again after an interruption with the same arguments, it finishes
    /// the job (the copy is all or nothing; the deletes find nothing left to delete). Then
    /// start the nodes with `new` last in the shard list.
    pub async fn add_shard(
        urls: &[&str],
        new: &str,
        schema: Option<&str>,
    ) -> Result<Moved, StoreError> {
        if listed_twice(&[urls, &[new]].concat()) {
            return Err(misplaced("a database is listed twice".to_string()));
        }
        if urls.is_empty() || urls.len() >= MAX_SHARDS {
            return Err(misplaced(format!(
                "a deployment has 1 to {MAX_SHARDS} shards"
            )));
        }
        let mut shards = Vec::with_capacity(urls.len());
        for url in urls {
            shards.push(PgStore::connect(url, schema, 2).await?);
        }
        settle(&shards, true).await?;
        let old = Self::from_shards(shards);
        let fresh = PgStore::connect(new, schema, 2).await?;
        let (n, total) = (urls.len(), urls.len() + 1);
        let mut moved = Moved::default();
        match shard_index(&**fresh.client().await?).await? {
            Some((k, t)) if k == n && t == total => {} // copied before; the deletes remain.
            Some((k, t)) => {
                return Err(misplaced(format!(
                    "the new database is already shard {k} of {t}, not {n} of {total}"
                )));
            }
            None => {
                let mut dst = fresh.client().await?;
                let to = dst.transaction().await.map_err(db)?;
                let users: i64 = to
                    .query_one("SELECT COUNT(*) FROM devices", &[])
                    .await
                    .map_err(db)?
                    .get(0);
                if users > 0 {
                    return Err(misplaced(
                        "the new database already holds users".to_string(),
                    ));
                }
                let mut above = 0;
                for shard in old.shards.iter() {
                    let mut src = shard.client().await?;
                    above = above.max(highest_id(&**src).await?);
                    let from = src
                        .build_transaction()
                        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start()
                        .await
                        .map_err(db)?;
                    for (table, column) in USER_TABLES {
                        let rows = copy(
                            &from,
                            &to,
                            &format!(
                                "SELECT * FROM {table} WHERE hush_shard({column}, {total}) = {n}"
                            ),
                            table,
                        )
                        .await?;
                        moved.count(table, rows);
                    }
                    moved.messages += copy(
                        &from,
                        &to,
                        &format!(
                            "SELECT * FROM messages WHERE id IN (SELECT message FROM mailbox
                             WHERE message IS NOT NULL AND hush_shard(user_id, {total}) = {n})"
                        ),
                        "messages",
                    )
                    .await?;
                    from.commit().await.map_err(db)?;
                }
                to.batch_execute(RECOUNT_MESSAGES).await.map_err(db)?;
                settle_sequences(&to, n, total, above).await?;
                to.commit().await.map_err(db)?;
            }
        }
        for shard in old.shards.iter() {
            let mut c = shard.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            for (table, column) in USER_TABLES {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE hush_shard({column}, {total}) = {n}"),
                    &[],
                )
                .await
                .map_err(db)?;
            }
            tx.batch_execute(RECOUNT_MESSAGES).await.map_err(db)?;
            // Now one of `total`: nodes given the old list refuse to start.
            let (index, _) = shard_index(&*tx).await?.unwrap_or_default();
            set_index(&tx, index, total).await?;
            tx.commit().await.map_err(db)?;
        }
        Ok(moved)
    }

    /// A sharded store over stores already connected, shard 0 first.
    pub fn from_shards(shards: Vec<PgStore>) -> Self {
        Self {
            shards: shards.into(),
        }
    }

    /// How many shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard that holds `user`.
    fn home(&self, user: &str) -> &PgStore {
        &self.shards[shard_of(user, self.shards.len())]
    }

    /// Shard 0: what belongs to no user.
    fn first(&self) -> &PgStore {
        &self.shards[0]
    }

    /// `items` grouped by the shard of each one's user, keeping their order in each group.
    fn by_shard<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        user: impl Fn(&T) -> &str,
    ) -> BTreeMap<usize, Vec<T>> {
        let mut groups: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        for item in items {
            let shard = shard_of(user(&item), self.shards.len());
            groups.entry(shard).or_default().push(item);
        }
        groups
    }
}

/// What [`ShardedPgStore::add_shard`] copied to the new shard (zero when it only finished
/// an interrupted run's deletes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Devices (registrations).
    pub devices: u64,
    /// Queued envelopes (mailbox rows).
    pub envelopes: u64,
    /// Messages shared by several recipients' mailbox rows.
    pub messages: u64,
    /// Queued receipts.
    pub receipts: u64,
    /// Every other row (prekeys, revoked keys, counts, presence, grants).
    pub other_rows: u64,
}

impl Moved {
    fn count(&mut self, table: &str, rows: u64) {
        match table {
            "devices" => self.devices += rows,
            "mailbox" => self.envelopes += rows,
            "receipts" => self.receipts += rows,
            _ => self.other_rows += rows,
        }
    }
}

/// Every table of a user's state, with the column naming the user. (`messages` holds the
/// ciphertext shared by several mailbox rows: it goes with them.)
const USER_TABLES: [(&str, &str); 13] = [
    ("devices", "user_id"),
    ("revoked_keys", "user_id"),
    ("signed_prekeys", "user_id"),
    ("one_time_prekeys", "user_id"),
    ("kem_prekeys", "user_id"),
    ("last_resort_kem_prekeys", "user_id"),
    ("mailbox", "user_id"),
    ("mailbox_usage", "user_id"),
    ("mailbox_share", "user_id"),
    ("receipts", "user_id"),
    ("receipt_queue", "user_id"),
    ("presence", "user_id"),
    ("presence_grants", "owner"),
];

/// A shared message's reference count is its mailbox rows on this shard; one with none
/// goes.
const RECOUNT_MESSAGES: &str = "UPDATE messages m SET refs = c.n
     FROM (SELECT message, COUNT(*) AS n FROM mailbox WHERE message IS NOT NULL GROUP BY message) c
     WHERE c.message = m.id AND m.refs <> c.n;
     DELETE FROM messages m WHERE NOT EXISTS (SELECT 1 FROM mailbox b WHERE b.message = m.id);";

/// The sequences that draw ids, with the table and column they fill. On shard `i` each
/// draws ids `≡ i (mod MAX_SHARDS)`, above every id any shard held when it was set, so ids
/// are unique across shards and a user's rows move to another shard with their ids (and a
/// mailbox's later ids stay above them).
const SEQUENCES: [(&str, &str, &str); 4] = [
    ("messages_id_seq", "messages", "id"),
    ("mailbox_envelope_id_seq", "mailbox", "envelope_id"),
    ("receipts_receipt_id_seq", "receipts", "receipt_id"),
    ("reports_id_seq", "reports", "id"),
];

/// Key of the advisory lock (on shard 0) under which nodes starting together settle the
/// shards.
const SHARD_LOCK: i64 = 0x6875_7368_0002;

/// Whether two of `urls` are the same string.
fn listed_twice(urls: &[&str]) -> bool {
    let mut seen = std::collections::HashSet::new();
    !urls.iter().all(|u| seen.insert(*u))
}

fn misplaced(what: String) -> StoreError {
    StoreError::database(std::io::Error::other(what))
}

/// Which shard a database is, of how many (`None`: not yet one).
async fn shard_index(
    c: &impl tokio_postgres::GenericClient,
) -> Result<Option<(usize, usize)>, StoreError> {
    Ok(
        c.query_opt("SELECT shard, shards FROM hush_shard_index", &[])
            .await
            .map_err(db)?
            .map(|r| (r.get::<_, i32>(0) as usize, r.get::<_, i32>(1) as usize)),
    )
}

/// The highest id a database has drawn or holds.
async fn highest_id(c: &impl tokio_postgres::GenericClient) -> Result<i64, StoreError> {
    let mut sql = String::from("SELECT GREATEST(0");
    for (sequence, table, column) in SEQUENCES {
        sql.push_str(&format!(
            ", (SELECT last_value FROM {sequence}), (SELECT MAX({column}) FROM {table})"
        ));
    }
    sql.push(')');
    Ok(c.query_one(&sql, &[]).await.map_err(db)?.get(0))
}

/// Whether a database holds any registered device.
async fn holds_users(c: &impl tokio_postgres::GenericClient) -> Result<bool, StoreError> {
    Ok(c.query_one("SELECT EXISTS (SELECT 1 FROM devices)", &[])
        .await
        .map_err(db)?
        .get(0))
}

/// Makes `tx`'s database shard `index` of `shards`: its sequences draw ids
/// `≡ index (mod MAX_SHARDS)` from above `above`.
async fn settle_sequences(
    tx: &tokio_postgres::Transaction<'_>,
    index: usize,
    shards: usize,
    above: i64,
) -> Result<(), StoreError> {
    // A database listed twice would wait for its own lock: fail instead.
    tx.batch_execute("SET LOCAL lock_timeout = '10s'")
        .await
        .map_err(db)?;
    let stride = MAX_SHARDS as i64;
    let start = (above / stride + 1) * stride + index as i64;
    for (sequence, _, _) in SEQUENCES {
        tx.batch_execute(&format!(
            "ALTER SEQUENCE {sequence} INCREMENT BY {stride} RESTART WITH {start}"
        ))
        .await
        .map_err(db)?;
    }
    set_index(tx, index, shards).await
}

async fn set_index(
    tx: &tokio_postgres::Transaction<'_>,
    index: usize,
    shards: usize,
) -> Result<(), StoreError> {
    tx.batch_execute(&format!(
        "DELETE FROM hush_shard_index; INSERT INTO hush_shard_index (shard, shards) VALUES ({index}, {shards})"
    ))
    .await
    .map_err(db)
}

/// Checks that the list is the deployment's: each database the shard its place says, of
/// as many shards as the list has (or, with `adding`, of one more: an interrupted
/// [`ShardedPgStore::add_shard`]). A list in another order, shorter or longer would send
/// users to databases that do not hold them: refused. On the first start with sharding
/// the databases become shards, unless more than one is given and one of them already
/// holds users (those users' rows would be on the wrong shard: add shards with
/// `add_shard` instead). Nodes starting together do this under a lock on shard 0.
async fn settle(shards: &[PgStore], adding: bool) -> Result<(), StoreError> {
    let n = shards.len();
    let mut c0 = shards[0].client().await?;
    let lock = c0.transaction().await.map_err(db)?;
    lock.execute("SELECT pg_advisory_xact_lock($1)", &[&SHARD_LOCK])
        .await
        .map_err(db)?;
    let mut places = vec![shard_index(&*lock).await?];
    for shard in &shards[1..] {
        places.push(shard_index(&**shard.client().await?).await?);
    }
    // The first start with sharding (or one that stopped half way: some databases settled,
    // none serving yet).
    let first = places.iter().any(Option::is_none)
        && places
            .iter()
            .enumerate()
            .all(|(i, p)| p.is_none_or(|p| p == (i, n)));
    if first {
        if n > 1 {
            let mut users = holds_users(&*lock).await?;
            for shard in &shards[1..] {
                users |= holds_users(&**shard.client().await?).await?;
            }
            if users {
                return Err(misplaced(
                    "these databases already hold users: start with the one that holds them \
                     alone, then add the others with --add-shard"
                        .to_string(),
                ));
            }
        }
        let mut above = highest_id(&*lock).await?;
        for shard in &shards[1..] {
            above = above.max(highest_id(&**shard.client().await?).await?);
        }
        if places[0].is_none() {
            settle_sequences(&lock, 0, n, above).await?;
        }
        for (i, shard) in shards.iter().enumerate().skip(1) {
            if places[i].is_some() {
                continue;
            }
            let mut c = shard.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            settle_sequences(&tx, i, n, above).await?;
            tx.commit().await.map_err(db)?;
        }
        return lock.commit().await.map_err(db);
    }
    for (i, place) in places.into_iter().enumerate() {
        match place {
            Some((k, total)) if k == i && (total == n || (adding && total == n + 1)) => {}
            Some((k, total)) => {
                return Err(misplaced(format!(
                    "database {i} of the list is shard {k} of {total}, but the list has {n}: \
                     give every shard, in order"
                )));
            }
            None => {
                return Err(misplaced(format!(
                    "database {i} of the list is not a shard of this deployment: add it with \
                     --add-shard"
                )));
            }
        }
    }
    lock.commit().await.map_err(db)
}

/// Copies the rows `select` gives on `from` into `table` on `to` (PostgreSQL's binary COPY,
/// streamed); returns how many.
async fn copy(
    from: &tokio_postgres::Transaction<'_>,
    to: &tokio_postgres::Transaction<'_>,
    select: &str,
    table: &str,
) -> Result<u64, StoreError> {
    use futures_util::SinkExt;
    let out = from
        .copy_out(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
        .await
        .map_err(db)?;
    let sink = to
        .copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
        .await
        .map_err(db)?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    sink.send_all(&mut out).await.map_err(db)?;
    sink.finish().await.map_err(db)
}

/// One shard's outcome for its part of one envelope.
struct Part {
    /// The recipients on that shard.
    recipients: Vec<Addr>,
    result: Result<Refusals, StoreError>,
}

/// Merges the shards' outcomes for one envelope into what the sender is told: see
/// [`ShardedPgStore::enqueue_many`].
fn merge(recipients: &[Addr], parts: Vec<Part>) -> Result<Refusals, StoreError> {
    let mut refused: Refusals = Vec::new();
    let (mut stored, mut failed, mut full) = (false, false, None);
    for part in parts {
        match part.result {
            Ok(r) => {
                stored |= r.len() < part.recipients.len();
                refused.extend(r);
            }
            Err(e @ StoreError::UnknownRecipient(_)) => return Err(e),
            Err(e @ (StoreError::MailboxFull(_) | StoreError::SenderShareFull(_))) => {
                // Every recipient on that shard was refused; the store names one reason.
                let share = matches!(e, StoreError::SenderShareFull(_));
                refused.extend(part.recipients.into_iter().map(|r| {
                    if share {
                        StoreError::SenderShareFull(r)
                    } else {
                        StoreError::MailboxFull(r)
                    }
                }));
                full.get_or_insert(e);
            }
            Err(e) => {
                if matches!(e, StoreError::Unavailable(_)) {
                    tracing::warn!(error = %crate::store::error_chain(&e), "a recipient's shard is unavailable");
                } else {
                    tracing::error!(error = %crate::store::error_chain(&e), "a recipient's shard failed");
                }
                refused.extend(
                    part.recipients
                        .into_iter()
                        .map(StoreError::RecipientUnavailable),
                );
                failed = true;
            }
        }
    }
    match full {
        // Stored for nobody, and no shard failed: every mailbox was full.
        Some(e) if !stored && !failed => Err(e),
        _ => {
            let at = |e: &StoreError| match e {
                StoreError::MailboxFull(a)
                | StoreError::SenderShareFull(a)
                | StoreError::RecipientUnavailable(a) => recipients.iter().position(|r| r == a),
                _ => None,
            };
            refused.sort_by_key(|e| at(e));
            Ok(refused)
        }
    }
}

impl Store for ShardedPgStore {
    fn queue_depth(&self) -> usize {
        self.shards.iter().map(Store::queue_depth).sum()
    }

    /// Ready while any shard answers: every node reaches the same shards, so one shard
    /// down is no reason to take a node out of its load balancer (its users are refused
    /// with a retry delay, everyone else is served); a node that reaches none is not ready.
    /// The shards that do not answer are logged.
    async fn ready(&self) -> Result<(), StoreError> {
        let answers = join_all(self.shards.iter().map(|s| s.presence(""))).await;
        let (mut down, mut first_error) = (0, None);
        for (shard, answer) in answers.into_iter().enumerate() {
            if let Err(e) = answer {
                tracing::warn!(shard, error = %crate::store::error_chain(&e), "shard not ready");
                down += 1;
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) if down == self.shards.len() => Err(e),
            _ => Ok(()),
        }
    }

    fn deliver_on_commit(&self, hook: DeliveryHook) -> bool {
        self.shards
            .iter()
            .all(|s| s.deliver_on_commit(hook.clone()))
    }

    async fn device(&self, addr: &Addr) -> Result<DeviceLookup, StoreError> {
        self.home(&addr.user).device(addr).await
    }

    async fn devices(&self, user: &str) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        self.home(user).devices(user).await
    }

    async fn rekey(&self, addr: &Addr, old_key: &[u8], new_key: &[u8]) -> Result<bool, StoreError> {
        self.home(&addr.user).rekey(addr, old_key, new_key).await
    }

    async fn register(
        &self,
        addr: &Addr,
        identity_key: &[u8],
        now_ms: u64,
        max_devices: usize,
    ) -> Result<bool, StoreError> {
        self.home(&addr.user)
            .register(addr, identity_key, now_ms, max_devices)
            .await
    }

    /// Removes the device on its shard, and its blob upload tokens on shard 0.
    async fn remove_device(&self, addr: &Addr) -> Result<bool, StoreError> {
        let removed = self.home(&addr.user).remove_device(addr).await?;
        if removed && shard_of(&addr.user, self.shards.len()) != 0 {
            self.first().forget_upload_tokens(addr).await?;
        }
        Ok(removed)
    }

    async fn upload_prekeys(
        &self,
        addr: &Addr,
        upload: PrekeyUpload,
        caps: PrekeyCaps,
    ) -> Result<PrekeyStock, StoreError> {
        self.home(&addr.user)
            .upload_prekeys(addr, upload, caps)
            .await
    }

    async fn take_bundle(
        &self,
        addr: &Addr,
        one_time: bool,
    ) -> Result<Option<StoredBundle>, StoreError> {
        self.home(&addr.user).take_bundle(addr, one_time).await
    }

    async fn prekey_count(&self, addr: &Addr) -> Result<PrekeyStock, StoreError> {
        self.home(&addr.user).prekey_count(addr).await
    }

    async fn enqueue(
        &self,
        sender: &Addr,
        recipients: Vec<Addr>,
        message_id: Vec<u8>,
        ciphertext: Vec<u8>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> Result<Refusals, StoreError> {
        let out = Outgoing {
            recipients,
            message_id,
            ciphertext,
            franking_commitment: None,
        };
        self.enqueue_many(sender, vec![out], now_ms, limits)
            .await
            .pop()
            .unwrap_or(Err(StoreError::CommitFailed))
    }

    /// Each envelope is split by its recipients' shards, and every shard stores its parts
    /// of the whole batch at once, in order. For each envelope the sender is told:
    /// - `UnknownRecipient` if a shard found a recipient not registered (other shards may
    ///   have stored it);
    /// - else, if every recipient's mailbox was full and no shard failed, the full
    ///   mailbox's error;
    /// - else the refused recipients: full mailboxes (or shares), and
    ///   [`StoreError::RecipientUnavailable`] for each recipient on a shard that failed,
    ///   even when that leaves nobody it was stored for. The sender sends to them again
    ///   later, and goes on meanwhile with its other mail: a shard's outage holds up only
    ///   mail to that shard's users.
    async fn enqueue_many(
        &self,
        sender: &Addr,
        batch: Vec<Outgoing>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> Vec<Result<Refusals, StoreError>> {
        if self.shards.len() == 1 {
            return self.shards[0]
                .enqueue_many(sender, batch, now_ms, limits)
                .await;
        }
        // Per shard: (envelope index, its part for that shard).
        let mut per_shard: BTreeMap<usize, Vec<(usize, Outgoing)>> = BTreeMap::new();
        for (i, out) in batch.iter().enumerate() {
            for (shard, recipients) in self.by_shard(out.recipients.iter().cloned(), |a| &a.user) {
                per_shard.entry(shard).or_default().push((
                    i,
                    Outgoing {
                        recipients,
                        message_id: out.message_id.clone(),
                        ciphertext: out.ciphertext.clone(),
                        franking_commitment: out.franking_commitment,
                    },
                ));
            }
        }
        let runs = per_shard.into_iter().map(|(shard, parts)| async move {
            let (index, outs): (Vec<usize>, Vec<Outgoing>) = parts.into_iter().unzip();
            let recipients: Vec<Vec<Addr>> = outs.iter().map(|o| o.recipients.clone()).collect();
            let results = self.shards[shard]
                .enqueue_many(sender, outs, now_ms, limits)
                .await;
            index
                .into_iter()
                .zip(recipients)
                .zip(results)
                .map(|((i, recipients), result)| (i, Part { recipients, result }))
                .collect::<Vec<_>>()
        });
        let mut parts: Vec<Vec<Part>> = batch.iter().map(|_| Vec::new()).collect();
        for (i, part) in join_all(runs).await.into_iter().flatten() {
            parts[i].push(part);
        }
        batch
            .iter()
            .zip(parts)
            .map(|(out, parts)| merge(&out.recipients, parts))
            .collect()
    }

    async fn franking_key(&self, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        self.first().franking_key(fresh).await
    }

    async fn put_report(&self, report: StoredReport, max_per_day: u32) -> Result<bool, StoreError> {
        self.first().put_report(report, max_per_day).await
    }

    async fn reports(&self) -> Result<Vec<StoredReport>, StoreError> {
        self.first().reports().await
    }

    async fn pending(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        self.home(&addr.user)
            .pending(addr, after_id, limit, now_ms)
            .await
    }

    /// Acknowledges on `addr`'s shard, then queues the "delivered" receipts for senders on
    /// other shards there, waiting for that at most [`FORWARD_WAIT`] (so that senders woken
    /// after this returns usually find them; past it they are still queued, and found by
    /// the senders' next read). A shard that fails to queue them loses them (logged); the
    /// acknowledgement stands.
    async fn ack(
        &self,
        addr: &Addr,
        envelope_ids: Vec<u64>,
        now_ms: u64,
        limits: ReceiptLimits,
    ) -> Result<Vec<Addr>, StoreError> {
        let home = shard_of(&addr.user, self.shards.len());
        // Receipts of the parts that committed are forwarded even if a later part failed.
        let (result, unplaced) = self.shards[home]
            .ack_placing(addr, envelope_ids, now_ms, limits)
            .await;
        let forwards = self
            .by_shard(unplaced, |u: &Unplaced| &u.owner.user)
            .into_iter()
            // A sender of this shard without a queue here is no longer registered.
            .filter(|(shard, _)| *shard != home)
            .map(|(shard, list)| {
                let store = self.shards[shard].clone();
                tokio::spawn(async move {
                    let n = list.len();
                    if let Err(e) = store.queue_receipts(list, limits).await {
                        tracing::warn!(
                            shard,
                            receipts = n,
                            error = %crate::store::error_chain(&e),
                            "delivered receipts for another shard lost"
                        );
                    }
                })
            })
            .collect::<Vec<_>>();
        if !forwards.is_empty() {
            let _ = tokio::time::timeout(FORWARD_WAIT, join_all(forwards)).await;
        }
        result
    }

    async fn receipts(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<StoredReceipt>, StoreError> {
        self.home(&addr.user).receipts(addr, after_id, limit).await
    }

    async fn ack_receipts(&self, addr: &Addr, receipt_ids: Vec<u64>) -> Result<(), StoreError> {
        self.home(&addr.user).ack_receipts(addr, receipt_ids).await
    }

    async fn touch(&self, user: &str, now_ms: u64) -> Result<(), StoreError> {
        self.home(user).touch(user, now_ms).await
    }

    async fn presence(&self, user: &str) -> Result<Option<(u64, bool)>, StoreError> {
        self.home(user).presence(user).await
    }

    async fn grant_presence(
        &self,
        owner: &str,
        viewers: Vec<String>,
        until_ms: u64,
    ) -> Result<(), StoreError> {
        self.home(owner)
            .grant_presence(owner, viewers, until_ms)
            .await
    }

    async fn presence_allowed(
        &self,
        owner: &str,
        viewer: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.home(owner)
            .presence_allowed(owner, viewer, now_ms)
            .await
    }

    async fn set_hidden(&self, user: &str, hidden: bool) -> Result<(), StoreError> {
        self.home(user).set_hidden(user, hidden).await
    }

    /// Every shard, at once; a shard that fails does not stop the others (the first error
    /// is answered after all have run).
    async fn expire(&self, now_ms: u64, receipts: ReceiptLimits) -> Result<u64, StoreError> {
        let mut total = 0;
        let mut failed = None;
        for r in join_all(self.shards.iter().map(|s| s.expire(now_ms, receipts))).await {
            match r {
                Ok(n) => total += n,
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(total), Err)
    }

    async fn put_blob(&self, id: &str, size: u64, expires_ms: u64) -> Result<(), StoreError> {
        self.first().put_blob(id, size, expires_ms).await
    }

    async fn blob(&self, id: &str, now_ms: u64) -> Result<Option<u64>, StoreError> {
        self.first().blob(id, now_ms).await
    }

    async fn expire_blobs(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        self.first().expire_blobs(now_ms).await
    }

    async fn put_upload_token(
        &self,
        token_hash: [u8; 32],
        addr: &Addr,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.first()
            .put_upload_token(token_hash, addr, expires_ms)
            .await
    }

    async fn take_upload_token(
        &self,
        token_hash: [u8; 32],
        now_ms: u64,
    ) -> Result<Option<Addr>, StoreError> {
        self.first().take_upload_token(token_hash, now_ms).await
    }

    async fn blob_usage(&self, addr: &Addr, day: u64) -> Result<u64, StoreError> {
        self.first().blob_usage(addr, day).await
    }

    async fn add_blob_usage(
        &self,
        addr: &Addr,
        day: u64,
        bytes: u64,
        quota: u64,
    ) -> Result<bool, StoreError> {
        self.first().add_blob_usage(addr, day, bytes, quota).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every user has one shard, in range, and adding a shard moves users only onto the new
    /// one, about `1 / (n + 1)` of them.
    #[test]
    fn shard_of_is_a_jump_hash() {
        let users: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        assert!(users.iter().all(|u| shard_of(u, 1) == 0));
        for n in 1..8 {
            let mut counts = vec![0usize; n + 1];
            let mut moved: usize = 0;
            for u in &users {
                let (before, after) = (shard_of(u, n), shard_of(u, n + 1));
                assert!(before < n && after <= n);
                if before != after {
                    assert_eq!(after, n, "a user moved between old shards");
                    moved += 1;
                }
                counts[after] += 1;
            }
            let expected = users.len() / (n + 1);
            assert!(
                moved.abs_diff(expected) < expected / 10,
                "{n}: moved {moved}"
            );
            for c in counts {
                assert!(
                    c.abs_diff(expected) < expected / 10,
                    "{n}: {c} vs {expected}"
                );
            }
        }
    }
}
