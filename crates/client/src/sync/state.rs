//! The account's sync state: named values in the `sync_state` table of its encrypted
//! database (the cursor, `device_seq`, the clock offset, the last sync).

use rusqlite::{Connection, OptionalExtension, params};

// Where the account logged in and the session it holds (secrets among them: this table is
// in the account's SQLCipher database, under its database key, which the lease wraps).
pub(crate) const SERVER: &str = "server";
pub(crate) const PINS: &str = "pins";
pub(crate) const USER: &str = "user";
pub(crate) const DEVICE_ID: &str = "device_id";
pub(crate) const DEVICE_NAME: &str = "device_name";
pub(crate) const KEY_ID: &str = "key_id";
pub(crate) const SESSION_SECRET: &str = "session_secret";
pub(crate) const ACCESS_TOKEN: &str = "access_token";
pub(crate) const ACCESS_EXP: &str = "access_exp";
pub(crate) const ACCESS_TTL: &str = "access_ttl";
pub(crate) const REFRESH_TOKEN: &str = "refresh_token";
pub(crate) const REFRESH_ATTEMPT: &str = "refresh_attempt";
pub(crate) const OFFLINE_TOKEN: &str = "offline_token";
pub(crate) const JWKS: &str = "jwks";
pub(crate) const LOGIN_AT: &str = "login_at";
pub(crate) const ONLINE: &str = "online";
pub(crate) const SEEN_DIRECTIVES: &str = "seen_directives";

/// What a session holds: dropped together when it ends (a remote logout, `logout
/// --keep-data`); the device, the server and the data stay.
pub(crate) const SESSION: [&str; 7] =
    [KEY_ID, SESSION_SECRET, ACCESS_TOKEN, ACCESS_EXP, REFRESH_TOKEN, REFRESH_ATTEMPT, OFFLINE_TOKEN];

/// The learned clock offset (server minus device), in milliseconds.
pub(crate) const CLOCK_OFFSET_MS: &str = "clock_offset_ms";
/// The opaque pull cursor the server last sent.
pub(crate) const CURSOR: &str = "cursor";
/// The per-account sync counter (rollback detection).
pub(crate) const DEVICE_SEQ: &str = "device_seq";
/// Set while a pull from the start after a change of device id is under way.
pub(crate) const RECONCILE: &str = "reconcile";
/// Set when the server detected a rollback: sync stops until a login.
pub(crate) const ROLLBACK: &str = "rollback";
/// When the last sync completed, Unix milliseconds.
pub(crate) const LAST_SYNC_MS: &str = "last_sync_ms";

/// A named value, if set.
pub(crate) fn get(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM sync_state WHERE name = ?1")?.query_row([name], |r| r.get(0)).optional()
}

/// Sets a named value (inside the caller's transaction, if any).
pub(crate) fn set(conn: &Connection, name: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO sync_state (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![name, value])
    .map(|_| ())
}

/// Removes a named value.
pub(crate) fn clear(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM sync_state WHERE name = ?1", [name]).map(|_| ())
}

/// A named integer, if set and well-formed.
pub(crate) fn get_i64(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    Ok(get(conn, name)?.and_then(|v| v.parse().ok()))
}

/// The learned clock offset, if any.
pub(crate) fn clock_offset_ms(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    get_i64(conn, CLOCK_OFFSET_MS)
}
