//! [`SqliteStore`]: the [`MessageStore`] and [`DeliveryTracker`] on one SQLite file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chat_core::delivery::{CursorChange, CursorUpdate, Cursors};
use chat_core::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use chat_core::{
    ClientMsgId, DeliveryTracker, Epoch, Error, Message, MessageStore, Meta, NewMessage, Result,
    RoomId, Seq, Timestamp, UserId,
};
use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::mpsc;

use crate::config::{Durability, SqliteConfig};
use crate::reader::Readers;
use crate::writer::{self, Job, Outcome, Task};
use crate::{backend, schema};

/// A durable [`MessageStore`] and [`DeliveryTracker`] in one SQLite database file.
///
/// - **One writer, group commit.** Every write (a new room, an append, a membership change,
///   a cursor move) goes to one writer thread over a channel. The writer takes everything
///   queued (up to [`SqliteConfig::max_batch`]) and commits it in one transaction, then
///   answers each caller: the fsync is shared by the whole batch, and no two writers ever
///   contend for SQLite's lock. A room's next `seq` is read and written inside that
///   transaction, so the sequence is gapless by construction.
/// - **Readers beside it.** Reads run on a few other connections on tokio's blocking pool;
///   in WAL mode they see every committed write and never block the writer.
/// - **Never blocks the runtime.** Callers only await channels.
///
/// Durability is [`Durability::Full`] unless configured otherwise: an `Ok` from `append` means
/// the message is on disk.
///
/// # Clone
///
/// Cloning is cheap and shares the writer and the readers. The writer thread stops when the
/// last clone is dropped, after finishing the writes already queued.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    durability: Durability,
    writer: mpsc::Sender<Box<dyn Job>>,
    readers: Arc<Readers>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` with the defaults of [`SqliteConfig`].
    ///
    /// Cancel safety: cancel safe.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        SqliteConfig::new(path).open().await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The durability level of acked writes.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    pub(crate) async fn open_with(config: SqliteConfig) -> Result<SqliteStore> {
        let setup = config.clone();
        let conn = tokio::task::spawn_blocking(move || open_writer(&setup))
            .await
            .map_err(|e| Error::Internal(format!("opening sqlite panicked: {e}")))??;
        let (tx, rx) = mpsc::channel(config.queue);
        let max_batch = config.max_batch;
        std::thread::Builder::new()
            .name("chat-sqlite-writer".to_owned())
            .spawn(move || writer::run(conn, rx, max_batch))
            .map_err(backend)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                readers: Arc::new(Readers::new(
                    config.path.clone(),
                    config.busy_timeout,
                    config.readers,
                )),
                path: config.path,
                durability: config.durability,
                writer: tx,
            }),
        })
    }

    /// Queues a write and waits for its commit.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Outcome<T> + Send + 'static,
    {
        let (job, answer) = Task::boxed(work);
        self.inner
            .writer
            .send(job)
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Outcome<T> + Send + 'static,
    {
        self.inner.readers.read(read).await
    }
}

/// Opens the writer's connection: WAL, the durability level, the schema.
fn open_writer(config: &SqliteConfig) -> Result<Connection> {
    let fail = |what: &str, e: &dyn fmt::Display| {
        backend(format!("{}: {what}: {e}", config.path.display()))
    };
    let mut conn = Connection::open_with_flags(
        &config.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail("open", &e))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| fail("busy_timeout", &e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| fail("journal_mode", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(fail("journal_mode", &format!("WAL refused, got {mode}")));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON;",
        config.durability.pragma()
    ))
    .map_err(|e| fail("pragmas", &e))?;
    schema::migrate(&mut conn).map_err(|e| fail("schema", &e))?;
    Ok(conn)
}

// ---- rows ----

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn column_error(
    index: usize,
    kind: Type,
    e: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, kind, Box::new(e))
}

fn seq_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Seq> {
    let n: i64 = row.get(index)?;
    Seq::new(u64::try_from(n).unwrap_or(u64::MAX))
        .map_err(|e| column_error(index, Type::Integer, e))
}

fn ts_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    let n: i64 = row.get(index)?;
    Ok(Timestamp::from_millis(u64::try_from(n).unwrap_or(0)))
}

fn text_id<T>(
    row: &Row<'_>,
    index: usize,
    parse: impl FnOnce(&str) -> std::result::Result<T, chat_core::id::InvalidId>,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).map_err(|e| column_error(index, Type::Text, e))
}

fn meta_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Meta>> {
    let text: Option<String> = row.get(index)?;
    text.map(|t| Meta::from_json(&t).map_err(|e| column_error(index, Type::Text, e)))
        .transpose()
}

/// The columns `MESSAGE_COLUMNS` selects, as a message of `room`.
fn message_row(room: &RoomId, row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        room: room.clone(),
        seq: seq_at(row, 0)?,
        from: text_id(row, 1, UserId::new)?,
        cid: text_id(row, 2, ClientMsgId::new)?,
        body: row.get(3)?,
        ts: ts_at(row, 5)?,
        meta: meta_at(row, 4)?,
    })
}

const MESSAGE_COLUMNS: &str = "seq, sender, cid, body, meta, ts";

/// The latest seq of the room with row id `id` (0 when empty).
fn latest(conn: &Connection, id: i64) -> rusqlite::Result<Seq> {
    conn.prepare_cached("SELECT coalesce(max(seq), 0) FROM messages WHERE room = ?1")?
        .query_row([id], |row| seq_at(row, 0))
}

/// The room's row id and info.
fn room_info(conn: &Connection, room: &RoomId) -> rusqlite::Result<Option<(i64, RoomInfo)>> {
    conn.prepare_cached(
        "SELECT id, epoch, coalesce((SELECT max(seq) FROM messages WHERE room = rooms.id), 0)
         FROM rooms WHERE name = ?1",
    )?
    .query_row([room.as_str()], |row| {
        Ok((
            row.get(0)?,
            RoomInfo {
                room: room.clone(),
                epoch: text_id(row, 1, Epoch::new)?,
                latest: seq_at(row, 2)?,
            },
        ))
    })
    .optional()
}

/// The room's row id.
fn room_id(conn: &Connection, room: &RoomId) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM rooms WHERE name = ?1")?
        .query_row([room.as_str()], |row| row.get(0))
        .optional()
}

fn member_cursors(conn: &Connection, id: i64, user: &UserId) -> rusqlite::Result<Option<Cursors>> {
    conn.prepare_cached("SELECT delivered, read FROM members WHERE room = ?1 AND user = ?2")?
        .query_row(params![id, user.as_str()], |row| {
            Ok(Cursors {
                delivered: seq_at(row, 0)?,
                read: seq_at(row, 1)?,
            })
        })
        .optional()
}

fn append_in(conn: &Connection, message: &NewMessage) -> Outcome<Appended> {
    let Some(id) = room_id(conn, &message.room)? else {
        return Ok(Err(Error::RoomNotFound(message.room.clone())));
    };
    let original = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND sender = ?2 AND cid = ?3"
        ))?
        .query_row(
            params![id, message.from.as_str(), message.cid.as_str()],
            |row| message_row(&message.room, row),
        )
        .optional()?;
    if let Some(original) = original {
        return Ok(Ok(Appended {
            message: original,
            dup: true,
        }));
    }
    let seq = latest(conn, id)?.next();
    conn.prepare_cached(
        "INSERT INTO messages (room, seq, sender, cid, body, meta, ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        to_i64(seq.get()),
        message.from.as_str(),
        message.cid.as_str(),
        message.body,
        message.meta.as_ref().map(Meta::as_str),
        to_i64(message.ts.as_millis()),
    ])?;
    Ok(Ok(Appended {
        message: message.clone().into_message(seq),
        dup: false,
    }))
}

/// Which seqs (exclusive start, inclusive end) a page covers, and whether more exist in its
/// direction, in a gapless log ending at `latest`.
fn page_bounds(query: HistoryQuery, limit: u64, latest: u64) -> (u64, u64, bool) {
    match query {
        HistoryQuery::Latest => {
            let start = latest.saturating_sub(limit);
            (start, latest, start > 0)
        }
        HistoryQuery::Before(before) => {
            let end = before.get().saturating_sub(1).min(latest);
            let start = end.saturating_sub(limit);
            (start, end, start > 0)
        }
        HistoryQuery::After(after) => {
            let start = after.get().min(latest);
            let end = start.saturating_add(limit).min(latest);
            (start, end, end < latest)
        }
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn ensure_room(&self, room: &RoomId) -> Result<(RoomInfo, bool)> {
        let name = room.clone();
        if let Some((_, info)) = self
            .read(move |conn| room_info(conn, &name).map(Ok))
            .await?
        {
            return Ok((info, false));
        }
        let room = room.clone();
        self.write(move |conn| {
            let created =
                conn.prepare_cached(
                    "INSERT INTO rooms (name, epoch, created_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO NOTHING",
                )?
                .execute(params![
                    room.as_str(),
                    Epoch::random().as_str(),
                    to_i64(Timestamp::now().as_millis())
                ])? == 1;
            match room_info(conn, &room)? {
                Some((_, info)) => Ok(Ok((info, created))),
                None => Ok(Err(Error::Internal("a created room is missing".to_owned()))),
            }
        })
        .await
    }

    async fn room(&self, room: &RoomId) -> Result<Option<RoomInfo>> {
        let room = room.clone();
        self.read(move |conn| Ok(Ok(room_info(conn, &room)?.map(|(_, info)| info))))
            .await
    }

    async fn append(&self, message: NewMessage) -> Result<Appended> {
        self.write(move |conn| append_in(conn, &message)).await
    }

    async fn history(
        &self,
        room: &RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage> {
        let room = room.clone();
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let Some((id, info)) = room_info(&tx, &room)? else {
                return Ok(Err(Error::RoomNotFound(room)));
            };
            let limit = u64::try_from(limit).unwrap_or(u64::MAX);
            let (start, end, more) = page_bounds(query, limit, info.latest.get());
            let mut messages = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
            if end > start {
                let mut statement = tx.prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE room = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq"
                ))?;
                let rows = statement.query_map(params![id, to_i64(start), to_i64(end)], |row| {
                    message_row(&room, row)
                })?;
                for message in rows {
                    messages.push(message?);
                }
            }
            Ok(Ok(HistoryPage { messages, more }))
        })
        .await
    }

    async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        let (room, user) = (room.clone(), user.clone());
        self.write(move |conn| {
            let Some(id) = room_id(conn, &room)? else {
                return Ok(Err(Error::RoomNotFound(room.clone())));
            };
            let added = conn
                .prepare_cached(
                    "INSERT INTO members (room, user) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, user.as_str()])?;
            Ok(Ok(added == 1))
        })
        .await
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        let (room, user) = (room.clone(), user.clone());
        self.write(move |conn| {
            let Some(id) = room_id(conn, &room)? else {
                return Ok(Ok(false));
            };
            // The member's cursors live in its row and go with it.
            let removed = conn
                .prepare_cached("DELETE FROM members WHERE room = ?1 AND user = ?2")?
                .execute(params![id, user.as_str()])?;
            Ok(Ok(removed == 1))
        })
        .await
    }

    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        let (room, user) = (room.clone(), user.clone());
        self.read(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT 1 FROM members JOIN rooms ON rooms.id = members.room
                     WHERE rooms.name = ?1 AND members.user = ?2",
                )?
                .exists(params![room.as_str(), user.as_str()])?;
            Ok(Ok(found))
        })
        .await
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>> {
        let room = room.clone();
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let Some(id) = room_id(&tx, &room)? else {
                return Ok(Err(Error::RoomNotFound(room)));
            };
            let mut statement =
                tx.prepare_cached("SELECT user FROM members WHERE room = ?1 ORDER BY user")?;
            let users = statement
                .query_map([id], |row| text_id(row, 0, UserId::new))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Ok(users))
        })
        .await
    }

    async fn member_count(&self, room: &RoomId) -> Result<usize> {
        let room = room.clone();
        self.read(move |conn| {
            let count: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM members JOIN rooms ON rooms.id = members.room
                     WHERE rooms.name = ?1",
                )?
                .query_row([room.as_str()], |row| row.get(0))?;
            Ok(Ok(usize::try_from(count).unwrap_or(0)))
        })
        .await
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomInfo>> {
        let user = user.clone();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT rooms.name, rooms.epoch,
                        coalesce((SELECT max(seq) FROM messages WHERE room = rooms.id), 0)
                 FROM members JOIN rooms ON rooms.id = members.room
                 WHERE members.user = ?1 ORDER BY rooms.name",
            )?;
            let rooms = statement
                .query_map([user.as_str()], |row| {
                    Ok(RoomInfo {
                        room: text_id(row, 0, RoomId::new)?,
                        epoch: text_id(row, 1, Epoch::new)?,
                        latest: seq_at(row, 2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Ok(rooms))
        })
        .await
    }
}

fn not_member(room: &RoomId, user: &UserId) -> Error {
    Error::NotMember {
        room: room.clone(),
        user: user.clone(),
    }
}

#[async_trait]
impl DeliveryTracker for SqliteStore {
    async fn cursors(&self, room: &RoomId, user: &UserId) -> Result<Cursors> {
        let (room, user) = (room.clone(), user.clone());
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let found = match room_id(&tx, &room)? {
                Some(id) => member_cursors(&tx, id, &user)?,
                None => None,
            };
            Ok(found.ok_or_else(|| not_member(&room, &user)))
        })
        .await
    }

    async fn advance(
        &self,
        room: &RoomId,
        user: &UserId,
        update: CursorUpdate,
    ) -> Result<CursorChange> {
        let (room, user) = (room.clone(), user.clone());
        self.write(move |conn| {
            let Some(id) = room_id(conn, &room)? else {
                return Ok(Err(not_member(&room, &user)));
            };
            let Some(now) = member_cursors(conn, id, &user)? else {
                return Ok(Err(not_member(&room, &user)));
            };
            let next = now.advanced(update, latest(conn, id)?);
            let moved = next != now;
            if moved {
                conn.prepare_cached(
                    "UPDATE members SET delivered = ?3, read = ?4 WHERE room = ?1 AND user = ?2",
                )?
                .execute(params![
                    id,
                    user.as_str(),
                    to_i64(next.delivered.get()),
                    to_i64(next.read.get())
                ])?;
            }
            Ok(Ok(CursorChange {
                cursors: next,
                moved,
            }))
        })
        .await
    }

    async fn room_cursors(&self, room: &RoomId) -> Result<Vec<(UserId, Cursors)>> {
        let room = room.clone();
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let Some(id) = room_id(&tx, &room)? else {
                return Ok(Err(Error::RoomNotFound(room)));
            };
            let mut statement = tx.prepare_cached(
                "SELECT user, delivered, read FROM members WHERE room = ?1 ORDER BY user",
            )?;
            let cursors = statement
                .query_map([id], |row| {
                    Ok((
                        text_id(row, 0, UserId::new)?,
                        Cursors {
                            delivered: seq_at(row, 1)?,
                            read: seq_at(row, 2)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Ok(cursors))
        })
        .await
    }

    async fn user_cursors(&self, user: &UserId) -> Result<Vec<(RoomId, Cursors)>> {
        let user = user.clone();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT rooms.name, members.delivered, members.read
                 FROM members JOIN rooms ON rooms.id = members.room
                 WHERE members.user = ?1 ORDER BY rooms.name",
            )?;
            let cursors = statement
                .query_map([user.as_str()], |row| {
                    Ok((
                        text_id(row, 0, RoomId::new)?,
                        Cursors {
                            delivered: seq_at(row, 1)?,
                            read: seq_at(row, 2)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Ok(cursors))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bounds_follow_the_contract() {
        assert_eq!(page_bounds(HistoryQuery::Latest, 5, 12), (7, 12, true));
        assert_eq!(page_bounds(HistoryQuery::Latest, 0, 12), (12, 12, true));
        assert_eq!(page_bounds(HistoryQuery::Latest, 50, 0), (0, 0, false));
        let s = |n| Seq::new(n).unwrap_or(Seq::MAX);
        assert_eq!(
            page_bounds(HistoryQuery::Before(s(1_000)), 3, 23),
            (20, 23, true)
        );
        assert_eq!(
            page_bounds(HistoryQuery::Before(s(1)), 3, 23),
            (0, 0, false)
        );
        assert_eq!(
            page_bounds(HistoryQuery::Before(Seq::ZERO), 3, 23),
            (0, 0, false)
        );
        assert_eq!(
            page_bounds(HistoryQuery::After(s(20)), 50, 23),
            (20, 23, false)
        );
        assert_eq!(
            page_bounds(HistoryQuery::After(s(500)), 5, 23),
            (23, 23, false)
        );
        assert_eq!(page_bounds(HistoryQuery::After(s(3)), 0, 23), (3, 3, true));
    }
}
