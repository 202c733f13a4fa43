//! [`PostgresStore`]: the [`MessageStore`] and [`DeliveryTracker`] on PostgreSQL.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chat_core::delivery::{CursorChange, CursorUpdate, Cursors};
use chat_core::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use chat_core::{
    ClientMsgId, DeliveryTracker, Epoch, Error, Message, MessageStore, Meta, NewMessage, Result,
    RoomId, Seq, Timestamp, UserId,
};
use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::config::{PostgresConfig, valid_schema};
use crate::{backend, schema};

/// A shared [`MessageStore`] and [`DeliveryTracker`] on PostgreSQL: the sequencer of a
/// cluster, whichever node a message arrives at.
///
/// - **Sequencer.** A room's row holds its `last_seq`. An append locks that row, checks the
///   idempotency key, inserts the message at `last_seq + 1` and raises `last_seq`, all in
///   one transaction: concurrent appends from any number of processes queue on the row and
///   the log stays gapless. A unique index on `(room, sender, cid)` backs the idempotency
///   check.
/// - **Batched appends.** Appends go to a few appender tasks; each sends whatever is queued
///   (up to [`PostgresConfig::max_batch`]) as one call of the `chat_append` function: one
///   round trip and one commit for the whole batch. When a batch fails in the database,
///   each of its appends is retried alone, so one bad message never fails the others.
/// - Everything else is one pooled query (a transaction for cursor moves).
///
/// # Clone
///
/// Cloning is cheap and shares the pool and the appenders. The appenders run on the tokio
/// runtime that connected the store and stop when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: Option<String>,
    appends: mpsc::Sender<Pending>,
}

struct Pending {
    message: NewMessage,
    reply: oneshot::Sender<Result<Appended>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` with the defaults of [`PostgresConfig`].
    ///
    /// Cancel safety: cancel safe.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        PostgresConfig::new(url).connect().await
    }

    /// A store on a pool you built (for TLS, or your own pool settings), with the defaults
    /// of [`PostgresConfig`] for batching. Migrates the tables where the pool's connections
    /// put them.
    ///
    /// Cancel safety: cancel safe.
    pub async fn from_pool(pool: Pool) -> Result<PostgresStore> {
        PostgresStore::start(pool, &PostgresConfig::new("")).await
    }

    /// The schema the tables are in, when one was configured.
    pub fn schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    pub(crate) async fn connect_with(config: PostgresConfig) -> Result<PostgresStore> {
        let mut options: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| backend(format!("bad database url: {e}")))?;
        options.connect_timeout(config.connect_timeout);
        if let Some(schema) = &config.schema {
            if !valid_schema(schema) {
                return Err(backend(format!(
                    "schema {schema:?} is not a plain lowercase identifier"
                )));
            }
            // Create it on a connection of its own, before any pooled one needs it.
            let (client, connection) = options.connect(tokio_postgres::NoTls).await.map_err(pg)?;
            let task = tokio::spawn(connection);
            let created = client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await;
            drop(client);
            let _ = task.await;
            if let Err(e) = created {
                // Several nodes may race to create it; one wins, the others find it.
                if e.code() != Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    return Err(pg(e));
                }
            }
            let search_path = match options.get_options() {
                Some(options) => format!("{options} -c search_path={schema}"),
                None => format!("-c search_path={schema}"),
            };
            options.options(search_path);
        }
        let manager = Manager::from_config(
            options,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| backend(format!("database pool: {e}")))?;
        PostgresStore::start(pool, &config).await
    }

    async fn start(pool: Pool, config: &PostgresConfig) -> Result<PostgresStore> {
        let mut client = pool.get().await.map_err(pg)?;
        schema::migrate(&mut client)
            .await
            .map_err(|e| backend(format!("schema: {e}")))?;
        drop(client);
        let (tx, rx) = mpsc::channel(config.queue);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..config.appenders {
            tokio::spawn(appender(pool.clone(), rx.clone(), config.max_batch));
        }
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                schema: config.schema.clone(),
                appends: tx,
            }),
        })
    }

    async fn client(&self) -> Result<Client> {
        self.inner.pool.get().await.map_err(pg)
    }

    /// One query on a pooled connection, through the connection's statement cache.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg)?;
        client.query(&statement, params).await.map_err(pg)
    }
}

/// Takes whatever appends are queued and sends them as one batch, until the store is gone.
async fn appender(pool: Pool, queue: Arc<Mutex<mpsc::Receiver<Pending>>>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut batch, max_batch).await == 0 {
                return;
            }
        }
        match append_batch(&pool, &batch).await {
            Ok(answers) => {
                for (pending, answer) in batch.drain(..).zip(answers) {
                    let _ = pending.reply.send(answer);
                }
            }
            // The database refused the batch and rolled it back: retry each append alone,
            // so that one bad message fails only itself.
            Err(e) if e.as_db_error().is_some() && batch.len() > 1 => {
                tracing::warn!(error = %e, appends = batch.len(), "postgres append batch failed; retrying each alone");
                for pending in batch.drain(..) {
                    let answer = match append_batch(&pool, std::slice::from_ref(&pending)).await {
                        Ok(mut answers) => answers.pop().unwrap_or_else(|| {
                            Err(Error::Internal("chat_append gave no answer".to_owned()))
                        }),
                        Err(e) => Err(pg(e)),
                    };
                    let _ = pending.reply.send(answer);
                }
            }
            // Possibly committed (a lost reply): the caller retries with the same cid and
            // finds its message.
            Err(e) => {
                tracing::warn!(error = %e, appends = batch.len(), "postgres append batch failed");
                let message = e.to_string();
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(backend(message.clone())));
                }
            }
        }
    }
}

/// A failure on the way to the database or in it; `Display` includes the server's message
/// (which `tokio_postgres::Error`'s own leaves out).
#[derive(Debug)]
pub(crate) enum PgError {
    Pool(deadpool_postgres::PoolError),
    Db(tokio_postgres::Error),
}

impl PgError {
    /// The server's error: the statement failed and its transaction was rolled back.
    fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            PgError::Db(e) => e.as_db_error(),
            PgError::Pool(_) => None,
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> PgError {
        PgError::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> PgError {
        PgError::Pool(e)
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Pool(e) => write!(f, "{e}"),
            PgError::Db(e) => match e.as_db_error() {
                Some(db) => write!(
                    f,
                    "{}: {} ({})",
                    db.severity(),
                    db.message(),
                    db.code().code()
                ),
                None => write!(f, "{e}"),
            },
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgError::Pool(e) => Some(e),
            PgError::Db(e) => Some(e),
        }
    }
}

/// A database failure as the error of chat-core.
pub(crate) fn pg(e: impl Into<PgError>) -> Error {
    backend(e.into())
}

/// One call of `chat_append` for `batch`; one answer per append, in order.
async fn append_batch(
    pool: &Pool,
    batch: &[Pending],
) -> std::result::Result<Vec<Result<Appended>>, PgError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("SELECT idx, status, out_seq, out_body, out_meta, out_ts FROM chat_append($1, $2, $3, $4, $5, $6)")
        .await
        ?;
    let rooms: Vec<&str> = batch.iter().map(|p| p.message.room.as_str()).collect();
    let senders: Vec<&str> = batch.iter().map(|p| p.message.from.as_str()).collect();
    let cids: Vec<&[u8]> = batch
        .iter()
        .map(|p| p.message.cid.as_str().as_bytes())
        .collect();
    let bodies: Vec<&[u8]> = batch.iter().map(|p| p.message.body.as_bytes()).collect();
    let metas: Vec<Option<&str>> = batch
        .iter()
        .map(|p| p.message.meta.as_ref().map(Meta::as_str))
        .collect();
    let ts: Vec<i64> = batch
        .iter()
        .map(|p| to_i64(p.message.ts.as_millis()))
        .collect();
    let rows = client
        .query(&statement, &[&rooms, &senders, &cids, &bodies, &metas, &ts])
        .await?;
    let mut answers: Vec<Result<Appended>> = batch
        .iter()
        .map(|_| Err(Error::Internal("chat_append skipped an append".to_owned())))
        .collect();
    for row in rows {
        let Some(k) = usize::try_from(row.get::<_, i32>(0))
            .ok()
            .and_then(|k| k.checked_sub(1))
            .filter(|k| *k < batch.len())
        else {
            continue;
        };
        let message = &batch[k].message;
        answers[k] = match row.get::<_, i16>(1) {
            0 => Err(Error::RoomNotFound(message.room.clone())),
            1 => seq_of(row.get(2)).map(|seq| Appended {
                message: message.clone().into_message(seq),
                dup: false,
            }),
            _ => original(message, &row).map(|original| Appended {
                message: original,
                dup: true,
            }),
        };
    }
    Ok(answers)
}

/// The stored message a retry of `message` returns, from a `chat_append` row.
fn original(message: &NewMessage, row: &Row) -> Result<Message> {
    Ok(Message {
        room: message.room.clone(),
        seq: seq_of(row.get(2))?,
        from: message.from.clone(),
        cid: message.cid.clone(),
        body: text_of(row.get(3))?,
        ts: ts_of(row.get(5)),
        meta: meta_of(row.get(4))?,
    })
}

// ---- values ----

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn corrupt(what: &str, e: impl fmt::Display) -> Error {
    backend(format!("a stored {what} is invalid: {e}"))
}

fn seq_of(n: i64) -> Result<Seq> {
    Seq::new(u64::try_from(n).unwrap_or(u64::MAX)).map_err(|e| corrupt("seq", e))
}

fn ts_of(n: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(n).unwrap_or(0))
}

fn text_of(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| corrupt("text", e))
}

fn meta_of(text: Option<String>) -> Result<Option<Meta>> {
    text.map(|t| Meta::from_json(&t).map_err(|e| corrupt("meta", e)))
        .transpose()
}

fn id_of<T, E: fmt::Display>(
    text: &str,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> Result<T> {
    parse(text).map_err(|e| corrupt("id", e))
}

fn cursors_of(row: &Row, delivered: usize, read: usize) -> Result<Cursors> {
    Ok(Cursors {
        delivered: seq_of(row.get(delivered))?,
        read: seq_of(row.get(read))?,
    })
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

fn not_member(room: &RoomId, user: &UserId) -> Error {
    Error::NotMember {
        room: room.clone(),
        user: user.clone(),
    }
}

fn room_info(room: &RoomId, row: &Row) -> Result<RoomInfo> {
    Ok(RoomInfo {
        room: room.clone(),
        epoch: id_of(row.get(0), Epoch::new)?,
        latest: seq_of(row.get(1))?,
    })
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn ensure_room(&self, room: &RoomId) -> Result<(RoomInfo, bool)> {
        if let Some(info) = self.room(room).await? {
            return Ok((info, false));
        }
        let epoch = Epoch::random();
        let created = self
            .query(
                "INSERT INTO rooms (name, epoch) VALUES ($1, $2)
                 ON CONFLICT (name) DO NOTHING RETURNING epoch, last_seq",
                &[&room.as_str(), &epoch.as_str()],
            )
            .await?;
        if let Some(row) = created.first() {
            return Ok((room_info(room, row)?, true));
        }
        // Another node created it in between.
        let info = self
            .room(room)
            .await?
            .ok_or_else(|| Error::Internal(format!("room {room} vanished")))?;
        Ok((info, false))
    }

    async fn room(&self, room: &RoomId) -> Result<Option<RoomInfo>> {
        let rows = self
            .query(
                "SELECT epoch, last_seq FROM rooms WHERE name = $1",
                &[&room.as_str()],
            )
            .await?;
        rows.first().map(|row| room_info(room, row)).transpose()
    }

    async fn append(&self, message: NewMessage) -> Result<Appended> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .appends
            .send(Pending { message, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn history(
        &self,
        room: &RoomId,
        query: HistoryQuery,
        limit: usize,
    ) -> Result<HistoryPage> {
        let client = self.client().await?;
        let find = client
            .prepare_cached("SELECT id, last_seq FROM rooms WHERE name = $1")
            .await
            .map_err(pg)?;
        let Some(found) = client
            .query_opt(&find, &[&room.as_str()])
            .await
            .map_err(pg)?
        else {
            return Err(Error::RoomNotFound(room.clone()));
        };
        let (id, latest): (i64, i64) = (found.get(0), found.get(1));
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        let (start, end, more) = page_bounds(query, limit, u64::try_from(latest).unwrap_or(0));
        if end <= start {
            return Ok(HistoryPage {
                messages: Vec::new(),
                more,
            });
        }
        let page = client
            .prepare_cached(
                "SELECT seq, sender, cid, body, meta, ts FROM messages
                 WHERE room = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
            )
            .await
            .map_err(pg)?;
        let rows = client
            .query(&page, &[&id, &to_i64(start), &to_i64(end)])
            .await
            .map_err(pg)?;
        let messages = rows
            .iter()
            .map(|row| {
                Ok(Message {
                    room: room.clone(),
                    seq: seq_of(row.get(0))?,
                    from: id_of(row.get(1), UserId::new)?,
                    cid: id_of(&text_of(row.get(2))?, ClientMsgId::new)?,
                    body: text_of(row.get(3))?,
                    meta: meta_of(row.get(4))?,
                    ts: ts_of(row.get(5)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HistoryPage { messages, more })
    }

    async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        // The cursors row is made with the membership, in the same statement.
        let rows = self
            .query(
                "WITH r AS (SELECT id FROM rooms WHERE name = $1),
                      m AS (INSERT INTO members (room, user_id) SELECT id, $2 FROM r
                            ON CONFLICT DO NOTHING RETURNING room, user_id),
                      c AS (INSERT INTO cursors (room, user_id) SELECT room, user_id FROM m)
                 SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM m)",
                &[&room.as_str(), &user.as_str()],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::Internal("add_member gave no row".to_owned()))?;
        if row.get::<_, i64>(0) == 0 {
            return Err(Error::RoomNotFound(room.clone()));
        }
        Ok(row.get::<_, i64>(1) == 1)
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        // The member's cursors go with it (ON DELETE CASCADE).
        let rows = self
            .query(
                "DELETE FROM members USING rooms
                 WHERE rooms.id = members.room AND rooms.name = $1 AND members.user_id = $2
                 RETURNING 1",
                &[&room.as_str(), &user.as_str()],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        let rows = self
            .query(
                "SELECT 1 FROM members JOIN rooms ON rooms.id = members.room
                 WHERE rooms.name = $1 AND members.user_id = $2",
                &[&room.as_str(), &user.as_str()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>> {
        let rows = self
            .query(
                "SELECT members.user_id FROM rooms
                 LEFT JOIN members ON members.room = rooms.id
                 WHERE rooms.name = $1 ORDER BY members.user_id",
                &[&room.as_str()],
            )
            .await?;
        if rows.is_empty() {
            return Err(Error::RoomNotFound(room.clone()));
        }
        rows.iter()
            .filter_map(|row| row.get::<_, Option<&str>>(0))
            .map(|user| id_of(user, UserId::new))
            .collect()
    }

    async fn member_count(&self, room: &RoomId) -> Result<usize> {
        let rows = self
            .query(
                "SELECT count(*) FROM members JOIN rooms ON rooms.id = members.room
                 WHERE rooms.name = $1",
                &[&room.as_str()],
            )
            .await?;
        Ok(rows
            .first()
            .map_or(0, |row| usize::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomInfo>> {
        let rows = self
            .query(
                "SELECT rooms.name, rooms.epoch, rooms.last_seq
                 FROM members JOIN rooms ON rooms.id = members.room
                 WHERE members.user_id = $1 ORDER BY rooms.name",
                &[&user.as_str()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(RoomInfo {
                    room: id_of(row.get(0), RoomId::new)?,
                    epoch: id_of(row.get(1), Epoch::new)?,
                    latest: seq_of(row.get(2))?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl DeliveryTracker for PostgresStore {
    async fn cursors(&self, room: &RoomId, user: &UserId) -> Result<Cursors> {
        let rows = self
            .query(
                "SELECT cursors.delivered, cursors.read FROM cursors
                 JOIN rooms ON rooms.id = cursors.room
                 WHERE rooms.name = $1 AND cursors.user_id = $2",
                &[&room.as_str(), &user.as_str()],
            )
            .await?;
        let row = rows.first().ok_or_else(|| not_member(room, user))?;
        cursors_of(row, 0, 1)
    }

    async fn advance(
        &self,
        room: &RoomId,
        user: &UserId,
        update: CursorUpdate,
    ) -> Result<CursorChange> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // The row lock serializes concurrent moves of one member's cursors.
        let find = tx
            .prepare_cached(
                "SELECT cursors.delivered, cursors.read, rooms.last_seq, rooms.id
                 FROM cursors JOIN rooms ON rooms.id = cursors.room
                 WHERE rooms.name = $1 AND cursors.user_id = $2
                 FOR UPDATE OF cursors",
            )
            .await
            .map_err(pg)?;
        let row = tx
            .query_opt(&find, &[&room.as_str(), &user.as_str()])
            .await
            .map_err(pg)?
            .ok_or_else(|| not_member(room, user))?;
        let now = cursors_of(&row, 0, 1)?;
        let next = now.advanced(update, seq_of(row.get(2))?);
        let moved = next != now;
        if moved {
            let id: i64 = row.get(3);
            let write = tx
                .prepare_cached(
                    "UPDATE cursors SET delivered = $3, read = $4
                     WHERE room = $1 AND user_id = $2",
                )
                .await
                .map_err(pg)?;
            tx.execute(
                &write,
                &[
                    &id,
                    &user.as_str(),
                    &to_i64(next.delivered.get()),
                    &to_i64(next.read.get()),
                ],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(CursorChange {
            cursors: next,
            moved,
        })
    }

    async fn room_cursors(&self, room: &RoomId) -> Result<Vec<(UserId, Cursors)>> {
        let rows = self
            .query(
                "SELECT cursors.user_id, cursors.delivered, cursors.read FROM rooms
                 LEFT JOIN cursors ON cursors.room = rooms.id
                 WHERE rooms.name = $1 ORDER BY cursors.user_id",
                &[&room.as_str()],
            )
            .await?;
        if rows.is_empty() {
            return Err(Error::RoomNotFound(room.clone()));
        }
        rows.iter()
            .filter(|row| row.get::<_, Option<&str>>(0).is_some())
            .map(|row| Ok((id_of(row.get(0), UserId::new)?, cursors_of(row, 1, 2)?)))
            .collect()
    }

    async fn user_cursors(&self, user: &UserId) -> Result<Vec<(RoomId, Cursors)>> {
        let rows = self
            .query(
                "SELECT rooms.name, cursors.delivered, cursors.read
                 FROM cursors JOIN rooms ON rooms.id = cursors.room
                 WHERE cursors.user_id = $1 ORDER BY rooms.name",
                &[&user.as_str()],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((id_of(row.get(0), RoomId::new)?, cursors_of(row, 1, 2)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bounds_follow_the_contract() {
        let s = |n| Seq::new(n).unwrap_or(Seq::MAX);
        assert_eq!(page_bounds(HistoryQuery::Latest, 5, 12), (7, 12, true));
        assert_eq!(page_bounds(HistoryQuery::Latest, 0, 12), (12, 12, true));
        assert_eq!(page_bounds(HistoryQuery::Latest, 50, 0), (0, 0, false));
        assert_eq!(
            page_bounds(HistoryQuery::Before(s(1_000)), 3, 23),
            (20, 23, true)
        );
        assert_eq!(
            page_bounds(HistoryQuery::Before(s(1)), 3, 23),
            (0, 0, false)
        );
        assert_eq!(
            page_bounds(HistoryQuery::After(s(20)), 50, 23),
            (20, 23, false)
        );
        assert_eq!(page_bounds(HistoryQuery::After(s(3)), 0, 23), (3, 3, true));
    }
}
