//! WAL checkpoints: a thread beside the writer, and the writer's own between transactions.

use std::sync::Arc;

use rusqlite::Connection;

/// WAL frames (pages) past which the writer finishes a checkpoint itself between two
/// transactions, so that the next one starts the log again from its beginning (64 MiB with
/// 4 KiB pages; 1 MiB in unit tests). Under a load that never pauses, the checkpoint thread
/// alone never catches up with the writer, and the log grew by about 100 MB/s.
pub(super) const WAL_RESET_FRAMES: i64 = if cfg!(test) { 256 } else { 16_384 };

/// Copies committed pages from the WAL into the database file every 50 ms, beside the
/// writer (a passive checkpoint never blocks it), and tells the writer how long the log is.
/// Stops when `stop` is dropped (by the database thread, as it ends).
pub(super) fn checkpoint(
    conn: Connection,
    stop: std::sync::mpsc::Receiver<()>,
    wal_frames: Arc<std::sync::atomic::AtomicI64>,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(std::time::Duration::from_millis(50))
    {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) => wal_frames.store(frames, std::sync::atomic::Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

/// The writer's part of checkpointing: once the checkpoint thread reports a log longer than
/// [`WAL_RESET_FRAMES`], a passive checkpoint between transactions copies the few frames the
/// checkpoint thread has not (no commit can come in meanwhile), after which the next
/// transaction writes the log from its start and SQLite cuts the file back to
/// `journal_size_limit`.
pub(super) fn reset_wal_if_long(
    conn: &Connection,
    wal_frames: Option<&std::sync::atomic::AtomicI64>,
) {
    let Some(frames) = wal_frames else { return };
    if frames.load(std::sync::atomic::Ordering::Relaxed) <= WAL_RESET_FRAMES {
        return;
    }
    frames.store(0, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed");
    }
}
