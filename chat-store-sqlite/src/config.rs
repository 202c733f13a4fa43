//! [`SqliteConfig`]: where the database lives and how hard it tries to keep it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_core::Result;

use crate::store::SqliteStore;

/// How durable an acknowledged append is: SQLite's `synchronous` setting for the write-ahead
/// log.
///
/// | level | an acked append survives | cost |
/// |---|---|---|
/// | [`Full`](Durability::Full) (default) | a crash of the process, of the operating system, a power loss | one `fsync` of the log per commit (per *batch* of appends: the writer commits many at once) |
/// | [`Normal`](Durability::Normal) | a crash of the process (`SIGKILL`, a panic, an abort) | no `fsync` per commit; a power loss may drop the last commits, never corrupt the database |
///
/// `Full` is what "ack means stored" promises a client. `Normal` trades the last moments of
/// a power loss for speed where the disk's `fsync` is slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `PRAGMA synchronous = FULL`: every commit is on disk before the appends are acked.
    #[default]
    Full,
    /// `PRAGMA synchronous = NORMAL`: commits reach the operating system before the ack and
    /// the disk at the next checkpoint.
    Normal,
}

impl Durability {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// Opens a [`SqliteStore`]: the path is required, the rest has defaults.
///
/// ```no_run
/// use chat_store_sqlite::{Durability, SqliteConfig};
///
/// # async fn demo() -> chat_core::Result<()> {
/// let store = SqliteConfig::new("chat.db")
///     .durability(Durability::Full)
///     .readers(4)
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub(crate) path: PathBuf,
    pub(crate) durability: Durability,
    pub(crate) readers: usize,
    pub(crate) max_batch: usize,
    pub(crate) queue: usize,
    pub(crate) busy_timeout: Duration,
}

impl SqliteConfig {
    /// The database at `path` (created when missing).
    pub fn new(path: impl AsRef<Path>) -> SqliteConfig {
        SqliteConfig {
            path: path.as_ref().to_owned(),
            durability: Durability::default(),
            readers: 4,
            max_batch: 512,
            queue: 8_192,
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// How durable an acked append is (default: [`Durability::Full`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How many reads run at once, each on its own connection on the blocking thread pool
    /// (default 4; at least 1).
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// The most writes the writer commits in one transaction (default 512; at least 1).
    /// The writer takes whatever is queued, up to this many, so a lone append is committed
    /// at once and a burst shares one commit.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// How many writes may wait for the writer (default 8,192; at least 1); further ones
    /// wait for room in the queue.
    pub fn queue(mut self, queue: usize) -> Self {
        self.queue = queue.max(1);
        self
    }

    /// How long a connection waits for a lock held by another process before it fails
    /// (default 5 s). Within one process the store never waits for itself.
    pub fn busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// Opens (or creates) the database, brings its schema up to date and starts the writer
    /// thread. The file work runs on tokio's blocking pool.
    ///
    /// Cancel safety: cancel safe; a cancelled open leaves at most a migrated database.
    pub async fn open(self) -> Result<SqliteStore> {
        SqliteStore::open_with(self).await
    }
}
