//! [`PostgresConfig`]: where the database is and how the store uses it.

use std::time::Duration;

use chat_core::Result;

use crate::store::PostgresStore;

/// Connects a [`PostgresStore`]: the URL is required, the rest has defaults.
///
/// ```no_run
/// use chat_store_postgres::PostgresConfig;
///
/// # async fn demo() -> chat_core::Result<()> {
/// let store = PostgresConfig::new("postgres://chat@db.internal/chat")
///     .schema("chat")
///     .pool_size(16)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub(crate) url: String,
    pub(crate) schema: Option<String>,
    pub(crate) pool_size: usize,
    pub(crate) appenders: usize,
    pub(crate) max_batch: usize,
    pub(crate) queue: usize,
    pub(crate) connect_timeout: Duration,
}

impl PostgresConfig {
    /// The database at `url` (`postgres://user:password@host:port/database?…`, or the
    /// `key=value` form of libpq). Connections are plain TCP or Unix sockets; for TLS, build
    /// a `deadpool_postgres::Pool` with your TLS connector and use
    /// [`PostgresStore::from_pool`].
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            schema: None,
            pool_size: 16,
            appenders: 4,
            max_batch: 256,
            queue: 8_192,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Keeps the tables in this schema, created if missing (default: none, the tables go
    /// where the connection's `search_path` puts them, usually `public`). The store sets
    /// `search_path` to it on every connection. A lowercase SQL identifier:
    /// `[a-z_][a-z0-9_]{0,62}`; anything else is refused by
    /// [`connect`](Self::connect).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The most connections the pool opens (default 16; at least 2).
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size.max(2);
        self
    }

    /// How many append batches may be in flight at once, each on its own connection
    /// (default 4; at least 1). Appends that arrive while they are busy queue up and go
    /// together in the next batch.
    pub fn appenders(mut self, appenders: usize) -> Self {
        self.appenders = appenders.max(1);
        self
    }

    /// The most appends one batch (one transaction, one round trip) carries (default 256;
    /// at least 1).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// How many appends may wait for a batch (default 8,192; at least 1); further ones wait
    /// for room in the queue.
    pub fn queue(mut self, queue: usize) -> Self {
        self.queue = queue.max(1);
        self
    }

    /// How long opening one connection may take (default 5 s).
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Connects, creates the schema if one is set, brings the tables up to date (under an
    /// advisory lock, so that nodes starting together migrate once) and starts the
    /// appenders on the current tokio runtime.
    ///
    /// Cancel safety: cancel safe; a cancelled connect leaves at most a migrated database.
    pub async fn connect(self) -> Result<PostgresStore> {
        PostgresStore::connect_with(self).await
    }
}

/// Whether `schema` is a plain lowercase identifier (never needs quoting).
pub(crate) fn valid_schema(schema: &str) -> bool {
    let mut bytes = schema.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && schema.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::valid_schema;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema("chat"));
        assert!(valid_schema("_chat_2"));
        for bad in [
            "",
            "2chat",
            "Chat",
            "chat-x",
            "a\"b",
            "chat; drop",
            &"a".repeat(64),
        ] {
            assert!(!valid_schema(bad), "{bad:?}");
        }
    }
}
