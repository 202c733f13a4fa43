//! Readers: a few read-only connections, used on tokio's blocking pool, never the writer's.
//!
//! In WAL mode a read sees every transaction committed before it began and never waits for
//! the writer, nor the writer for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use chat_core::{Error, Result};

use crate::backend;
use crate::writer::Outcome;

#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration, readers: usize) -> Readers {
        Readers {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::with_capacity(readers)),
            permits: Arc::new(Semaphore::new(readers)),
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.execute_batch("PRAGMA query_only = ON")?;
        Ok(conn)
    }

    /// Runs `read` on an idle reader connection (opened if none is idle) on the blocking
    /// pool. Cancel safe: a dropped call finishes its read in the background and returns
    /// the connection.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Outcome<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed)?;
        let readers = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = readers.idle.lock().pop();
            let conn = match idle {
                Some(conn) => conn,
                None => readers.connect().map_err(|e| backend(e.to_string()))?,
            };
            let outcome = read(&conn);
            if outcome.is_ok() {
                readers.idle.lock().push(conn);
            }
            // A connection that failed is dropped; the next read opens a fresh one.
            outcome.map_err(backend)?
        });
        done.await
            .map_err(|e| Error::Internal(format!("a sqlite read panicked: {e}")))?
    }
}
