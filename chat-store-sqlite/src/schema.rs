//! The schema and its embedded migrations, tracked by `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

/// `PRAGMA application_id` of a chat-engine database ("chat"): a database another program
/// made is refused rather than written into.
const APPLICATION_ID: i64 = 0x6368_6174;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only: a released
/// migration never changes.
const MIGRATIONS: &[&str] = &[
    // 1: rooms, their logs and their members with their cursors.
    "CREATE TABLE rooms (
         id INTEGER PRIMARY KEY,
         name TEXT NOT NULL UNIQUE,
         epoch TEXT NOT NULL,
         created_ms INTEGER NOT NULL
     );
     CREATE TABLE messages (
         id INTEGER PRIMARY KEY,
         room INTEGER NOT NULL REFERENCES rooms (id),
         seq INTEGER NOT NULL,
         sender TEXT NOT NULL,
         cid TEXT NOT NULL,
         body TEXT NOT NULL,
         meta TEXT,
         ts INTEGER NOT NULL,
         UNIQUE (room, seq)
     );
     CREATE UNIQUE INDEX messages_by_cid ON messages (room, sender, cid);
     CREATE TABLE members (
         room INTEGER NOT NULL REFERENCES rooms (id),
         user TEXT NOT NULL,
         delivered INTEGER NOT NULL DEFAULT 0,
         read INTEGER NOT NULL DEFAULT 0,
         PRIMARY KEY (room, user)
     ) WITHOUT ROWID;
     CREATE INDEX members_by_user ON members (user, room);",
];

/// The schema version this build writes.
pub(crate) const VERSION: usize = MIGRATIONS.len();

/// Applies the missing migrations in one transaction. Refuses a database of another
/// application or of a newer schema version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("begin migration: {e}"))?;
    let read = |pragma: &str| -> Result<i64, String> {
        tx.query_row(&format!("PRAGMA {pragma}"), [], |row| row.get(0))
            .map_err(|e| format!("read {pragma}: {e}"))
    };
    let application = read("application_id")?;
    let version = read("user_version")?;
    let tables: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(|e| format!("read the schema: {e}"))?;
    if application != APPLICATION_ID && (application != 0 || tables > 0) {
        return Err(format!(
            "not a chat-engine database (application_id {application:#x}, {tables} schema objects)"
        ));
    }
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > VERSION {
        return Err(format!(
            "the database has schema version {version}; this build knows up to {VERSION}"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)
            .map_err(|e| format!("migration {}: {e}", i + 1))?;
    }
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {VERSION};"
    ))
    .map_err(|e| format!("record schema version: {e}"))?;
    tx.commit().map_err(|e| format!("commit migration: {e}"))
}
