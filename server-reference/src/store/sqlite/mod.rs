//! The embedded SQLite implementation of [`Store`]: one database thread that commits
//! operations in batches (group commit), and the operations themselves, one file per
//! concern ([`schema`], [`ids`], [`memo`], [`wal`], [`mailbox`], [`directory`], [`presence`],
//! [`blobs`]).

mod blobs;
mod directory;
mod ids;
mod mailbox;
mod memo;
mod presence;
mod reports;
mod schema;
#[cfg(test)]
mod tests;
mod wal;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use self::ids::IdCounter;
use self::memo::Memos;
use self::schema::migrate;
use self::wal::{checkpoint, reset_wal_if_long};
use super::{
    Addr, Delivery, DeliveryHook, DeviceLookup, MailboxLimits, Outgoing, PrekeyCaps, PrekeyStock,
    PrekeyUpload, ReceiptLimits, Refusals, Store, StoreError, StoredBundle, StoredEnvelope,
    StoredReceipt, StoredReport,
};

type Reply = Box<dyn FnOnce(bool) + Send>;
/// A job runs on the database thread and returns its answer (to give once the batch's fate
/// is known) and whether it failed in the database, which rolls the whole batch back.
type Job = Box<dyn FnOnce(&mut Db) -> (Reply, bool) + Send>;

/// The database thread's connection, what it remembers of each device between operations
/// (forgotten whenever a batch rolls back), and the envelope and receipt ids it hands out.
struct Db {
    conn: Connection,
    memos: Memos,
    envelope_ids: IdCounter,
    receipt_ids: IdCounter,
}

impl Db {
    fn new(conn: Connection, clock_ms: u64) -> Result<Self, StoreError> {
        let envelope_ids = IdCounter::load(
            &conn,
            "envelope",
            "SELECT MAX(envelope_id) FROM mailbox",
            clock_ms,
        )?;
        let receipt_ids = IdCounter::load(
            &conn,
            "receipt",
            "SELECT MAX(receipt_id) FROM receipts",
            clock_ms,
        )?;
        Ok(Self {
            conn,
            memos: Memos::default(),
            envelope_ids,
            receipt_ids,
        })
    }

    /// After a rollback: what was remembered may no longer match the database.
    fn rolled_back(&mut self) {
        self.memos.forget_all();
        self.envelope_ids.unreserve();
        self.receipt_ids.unreserve();
    }
}

/// Most operations committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// A batch takes no more operations after running this long, so that under a steady load
/// its first caller does not wait for many more behind it.
const MAX_BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(20);

/// The embedded SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    hook: Arc<OnceLock<DeliveryHook>>,
}

/// Statements kept prepared on the database thread: more than the store uses, so none is
/// ever parsed twice.
const STATEMENT_CACHE: usize = 64;

impl SqliteStore {
    /// Operations queued for the database thread and not yet started.
    pub fn queue_depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Opens (creating and migrating if needed) the database at `path`, and starts its
    /// thread. `:memory:` gives a throw-away database.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let clock_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::open_at(path, clock_ms)
    }

    /// [`open`](Self::open), taking the clock (for the id counters) as an argument.
    fn open_at(path: &Path, clock_ms: u64) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // A plan that does not depend on bound values: otherwise SQLite may parse a cached
        // statement again each time a parameter changes (it did, for the acknowledgement).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        migrate(&mut conn)?;
        let db = Db::new(conn, clock_ms)?;
        let (tx, rx) = mpsc::channel::<Job>(8192);
        let mut checkpointer = None;
        let mut wal_frames = None;
        if path != Path::new(":memory:") {
            // Checkpoints run on their own thread and connection, not in the writer's commits.
            db.conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
            let checkpoints = Connection::open(path)?;
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let frames = Arc::new(std::sync::atomic::AtomicI64::new(0));
            wal_frames = Some(frames.clone());
            let thread = std::thread::Builder::new()
                .name("hush-relay-checkpoint".into())
                .spawn(move || checkpoint(checkpoints, stopped, frames))
                .map_err(StoreError::database)?;
            checkpointer = Some((stop, thread));
        }
        std::thread::Builder::new()
            .name("hush-relay-db".into())
            .spawn(move || {
                run(db, rx, wal_frames);
                // Both connections are closed before the database thread ends; closing the
                // last one checkpoints and removes the WAL, so by then the database file is
                // complete.
                if let Some((stop, thread)) = checkpointer {
                    drop(stop);
                    let _ = thread.join();
                }
            })
            .map_err(StoreError::database)?;
        Ok(Self {
            jobs: tx,
            hook: Arc::new(OnceLock::new()),
        })
    }

    /// Runs `f` in a savepoint of the next batch; answers after the batch commits.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call_delivering(move |db| f(&db.conn).map(|v| (v, Vec::new())))
            .await
    }

    /// Like [`call`](Self::call), and once the batch has committed, hands `f`'s deliveries
    /// to the hook (on the database thread, so in commit order) before answering.
    async fn call_delivering<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<(T, Vec<Delivery>), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let hook = self.hook.clone();
        let job: Job = Box::new(move |db: &mut Db| {
            // No savepoint: every operation checks before it writes, so an operation that
            // refuses has written nothing, and one that fails in the database fails its batch.
            let result = f(db);
            let failed = matches!(result, Err(StoreError::Database(_)));
            let reply: Reply = Box::new(move |committed: bool| {
                let answer = match result {
                    Ok((v, deliveries)) if committed => {
                        if let Some(hook) = hook.get()
                            && !deliveries.is_empty()
                        {
                            hook(deliveries);
                        }
                        Ok(v)
                    }
                    Ok(_) => Err(StoreError::CommitFailed),
                    Err(e) => Err(e),
                };
                let _ = tx.send(answer);
            });
            (reply, failed)
        });
        // The channel is bounded: a full queue makes callers wait (back-pressure).
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(
    mut db: Db,
    mut rx: mpsc::Receiver<Job>,
    wal_frames: Option<Arc<std::sync::atomic::AtomicI64>>,
) {
    while let Some(first) = rx.blocking_recv() {
        let begun = db
            .conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]));
        if begun.is_err() {
            first(&mut db).0(false);
            db.rolled_back();
            continue;
        }
        let started = std::time::Instant::now();
        let (reply, mut failed) = first(&mut db);
        let mut replies = vec![reply];
        while !failed && replies.len() < MAX_BATCH && started.elapsed() < MAX_BATCH_TIME {
            match rx.try_recv() {
                Ok(job) => {
                    let (reply, f) = job(&mut db);
                    replies.push(reply);
                    failed = f;
                }
                Err(_) => break,
            }
        }
        let committed = !failed
            && db
                .conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .is_ok();
        if !committed {
            db.rolled_back();
            let _ = db.conn.execute_batch("ROLLBACK");
            tracing::error!(
                "database operation or commit failed; {} operations refused",
                replies.len()
            );
        }
        for reply in replies {
            reply(committed);
        }
        reset_wal_if_long(&db.conn, wal_frames.as_deref());
    }
}

fn addr_params(a: &Addr) -> (String, u32) {
    (a.user.clone(), a.device)
}

impl Store for SqliteStore {
    fn queue_depth(&self) -> usize {
        SqliteStore::queue_depth(self)
    }

    async fn device(&self, addr: &Addr) -> Result<DeviceLookup, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| directory::device(c, user, device)).await
    }

    async fn register(
        &self,
        addr: &Addr,
        identity_key: &[u8],
        now_ms: u64,
        max_devices: usize,
    ) -> Result<bool, StoreError> {
        let (user, device) = addr_params(addr);
        let key = identity_key.to_vec();
        self.call(move |c| directory::register(c, user, device, key, now_ms, max_devices))
            .await
    }

    async fn franking_key(&self, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        self.call(move |c| reports::franking_key(c, fresh)).await
    }

    async fn put_report(&self, report: StoredReport, max_per_day: u32) -> Result<bool, StoreError> {
        self.call(move |c| reports::put_report(c, &report, max_per_day))
            .await
    }

    async fn reports(&self) -> Result<Vec<StoredReport>, StoreError> {
        self.call(reports::reports).await
    }

    async fn remove_device(&self, addr: &Addr) -> Result<bool, StoreError> {
        let addr = addr.clone();
        self.call_delivering(move |db| {
            let removed = directory::remove_device(&db.conn, &addr, crate::now_ms())?;
            db.memos.forget(&addr);
            Ok((removed, Vec::new()))
        })
        .await
    }

    async fn devices(&self, user: &str) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        let user = user.to_owned();
        self.call(move |c| directory::devices(c, user)).await
    }

    async fn rekey(&self, addr: &Addr, old_key: &[u8], new_key: &[u8]) -> Result<bool, StoreError> {
        let (user, device) = addr_params(addr);
        let (old, new) = (old_key.to_vec(), new_key.to_vec());
        self.call(move |c| directory::rekey(c, user, device, old, new))
            .await
    }

    async fn upload_prekeys(
        &self,
        addr: &Addr,
        upload: PrekeyUpload,
        caps: PrekeyCaps,
    ) -> Result<PrekeyStock, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| directory::upload_prekeys(c, user, device, upload, caps))
            .await
    }

    async fn take_bundle(
        &self,
        addr: &Addr,
        one_time: bool,
    ) -> Result<Option<StoredBundle>, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| directory::take_bundle(c, user, device, one_time))
            .await
    }

    async fn prekey_count(&self, addr: &Addr) -> Result<PrekeyStock, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| directory::prekey_count(c, user, device))
            .await
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
        let sender = sender.clone();
        let out = Outgoing {
            recipients,
            message_id,
            ciphertext,
            franking_commitment: None,
        };
        self.call_delivering(move |db| mailbox::store_envelope(db, &sender, out, now_ms, limits))
            .await
    }

    async fn enqueue_many(
        &self,
        sender: &Addr,
        batch: Vec<Outgoing>,
        now_ms: u64,
        limits: MailboxLimits,
    ) -> Vec<Result<Refusals, StoreError>> {
        let n = batch.len();
        let sender = sender.clone();
        // One job: each envelope is checked before any of its rows is written, so a refused
        // one leaves nothing behind; a database error fails the whole job.
        let result = self
            .call_delivering(move |db| mailbox::enqueue_many(db, sender, batch, now_ms, limits))
            .await;
        match result {
            Ok(results) => results,
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    fn deliver_on_commit(&self, hook: DeliveryHook) -> bool {
        // One database thread commits everything, and runs the hook after each commit in
        // the order the operations ran: the order this method promises.
        self.hook.set(hook).is_ok()
    }

    async fn pending(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
        now_ms: u64,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| mailbox::pending(c, user, device, after_id, limit, now_ms))
            .await
    }

    async fn ack(
        &self,
        addr: &Addr,
        envelope_ids: Vec<u64>,
        now_ms: u64,
        limits: ReceiptLimits,
    ) -> Result<Vec<Addr>, StoreError> {
        let me = addr.clone();
        self.call_delivering(move |db| mailbox::ack(db, me, envelope_ids, now_ms, limits))
            .await
    }

    async fn receipts(
        &self,
        addr: &Addr,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<StoredReceipt>, StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| mailbox::receipts(c, user, device, after_id, limit))
            .await
    }

    async fn ack_receipts(&self, addr: &Addr, receipt_ids: Vec<u64>) -> Result<(), StoreError> {
        let addr = addr.clone();
        self.call_delivering(move |db| {
            mailbox::ack_receipts(&db.conn, &addr, receipt_ids)?;
            db.memos.forget_receipts(&addr);
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn touch(&self, user: &str, now_ms: u64) -> Result<(), StoreError> {
        let user = user.to_string();
        self.call(move |c| presence::touch(c, user, now_ms)).await
    }

    async fn presence(&self, user: &str) -> Result<Option<(u64, bool)>, StoreError> {
        let user = user.to_string();
        self.call(move |c| presence::presence(c, user)).await
    }

    async fn grant_presence(
        &self,
        owner: &str,
        viewers: Vec<String>,
        until_ms: u64,
    ) -> Result<(), StoreError> {
        let owner = owner.to_string();
        self.call(move |c| presence::grant(c, owner, viewers, until_ms))
            .await
    }

    async fn presence_allowed(
        &self,
        owner: &str,
        viewer: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (owner, viewer) = (owner.to_string(), viewer.to_string());
        self.call(move |c| presence::allowed(c, owner, viewer, now_ms))
            .await
    }

    async fn set_hidden(&self, user: &str, hidden: bool) -> Result<(), StoreError> {
        let user = user.to_string();
        self.call(move |c| presence::set_hidden(c, user, hidden))
            .await
    }

    async fn expire(&self, now_ms: u64, receipts: ReceiptLimits) -> Result<u64, StoreError> {
        self.call_delivering(move |db| mailbox::expire(db, now_ms, receipts))
            .await
    }

    async fn put_blob(&self, id: &str, size: u64, expires_ms: u64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |c| blobs::put_blob(c, id, size, expires_ms))
            .await
    }

    async fn blob_usage(&self, addr: &Addr, day: u64) -> Result<u64, StoreError> {
        let addr = addr.clone();
        self.call(move |c| blobs::usage(c, &addr, day)).await
    }

    async fn add_blob_usage(
        &self,
        addr: &Addr,
        day: u64,
        bytes: u64,
        quota: u64,
    ) -> Result<bool, StoreError> {
        let addr = addr.clone();
        self.call(move |c| blobs::add_usage(c, &addr, day, bytes, quota))
            .await
    }

    async fn put_upload_token(
        &self,
        token_hash: [u8; 32],
        addr: &Addr,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let (user, device) = addr_params(addr);
        self.call(move |c| blobs::put_upload_token(c, token_hash, user, device, expires_ms))
            .await
    }

    async fn take_upload_token(
        &self,
        token_hash: [u8; 32],
        now_ms: u64,
    ) -> Result<Option<Addr>, StoreError> {
        self.call(move |c| blobs::take_upload_token(c, token_hash, now_ms))
            .await
    }

    async fn blob(&self, id: &str, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let id = id.to_string();
        self.call(move |c| blobs::blob(c, id, now_ms)).await
    }

    async fn expire_blobs(&self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        self.call(move |c| blobs::expire_blobs(c, now_ms)).await
    }
}
