//! Presence: when each user was last seen, whether it hides that, and who may see it.

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

/// [`Store::grant_presence`](crate::store::Store::grant_presence), on the database thread.
pub(super) fn grant(
    c: &Connection,
    owner: String,
    viewers: Vec<String>,
    until_ms: u64,
) -> Result<(), StoreError> {
    let mut insert = c.prepare_cached(
        "INSERT INTO presence_grants (owner, viewer, until_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (owner, viewer) DO UPDATE SET until_ms = MAX(until_ms, ?3)",
    )?;
    for v in viewers {
        insert.execute(params![owner, v, until_ms as i64])?;
    }
    Ok(())
}

/// [`Store::presence_allowed`](crate::store::Store::presence_allowed), on the database
/// thread.
pub(super) fn allowed(
    c: &Connection,
    owner: String,
    viewer: String,
    now_ms: u64,
) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "SELECT 1 FROM presence_grants WHERE owner = ?1 AND viewer = ?2 AND until_ms > ?3",
    )?
    .query_row(params![owner, viewer, now_ms as i64], |_| Ok(()))
    .optional()?
    .is_some())
}
