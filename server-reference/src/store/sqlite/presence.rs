//! Presence: when each user was last seen, and whether it hides that.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreError;

/// [`Store::touch`](crate::store::Store::touch), on the database thread.
pub(super) fn touch(c: &Connection, user: String, now_ms: u64) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO presence (user_id, last_seen_ms, hidden) VALUES (?1, ?2, 0)
                 ON CONFLICT (user_id) DO UPDATE SET last_seen_ms = MAX(last_seen_ms, ?2)",
        params![user, now_ms as i64],
    )?;
    Ok(())
}

/// [`Store::presence`](crate::store::Store::presence), on the database thread.
pub(super) fn presence(c: &Connection, user: String) -> Result<Option<(u64, bool)>, StoreError> {
    Ok(c.query_row(
        "SELECT last_seen_ms, hidden FROM presence WHERE user_id = ?1",
        params![user],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? != 0)),
    )
    .optional()?)
}

/// [`Store::set_hidden`](crate::store::Store::set_hidden), on the database thread.
pub(super) fn set_hidden(c: &Connection, user: String, hidden: bool) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO presence (user_id, last_seen_ms, hidden) VALUES (?1, 0, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET hidden = ?2",
        params![user, i64::from(hidden)],
    )?;
    Ok(())
}
