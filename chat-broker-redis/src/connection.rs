//! A multiplexed Redis connection that is made again after it broke.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_core::Result;
use parking_lot::Mutex;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::{backend, timed_out};

/// One multiplexed connection shared by every call, replaced when a call finds it broken.
///
/// A call that fails on a connection (an I/O error, a timeout) forgets that connection,
/// so the next call makes a new one: a Redis that restarted, or a network path that died
/// without closing the socket, costs the calls that were in flight, not every call after.
/// A call is never retried here: it may have reached Redis before the connection broke.
pub(crate) struct Reconnecting {
    client: redis::Client,
    config: AsyncConnectionConfig,
    timeout: Duration,
    /// The connection and its generation.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Held while connecting, so that concurrent callers make one connection.
    connecting: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

impl Reconnecting {
    /// Connects now, so that a wrong URL or an unreachable Redis shows at start.
    pub(crate) async fn connect(client: redis::Client, timeout: Duration) -> Result<Reconnecting> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let this = Reconnecting {
            client,
            config,
            timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
        };
        this.get().await?;
        Ok(this)
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The current connection, made first if there is none.
    async fn get(&self) -> Result<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current.lock().clone() {
            return Ok(current);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(current) = self.current.lock().clone() {
            return Ok(current);
        }
        let conn = match tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&self.config),
        )
        .await
        {
            Ok(conn) => conn.map_err(backend)?,
            Err(_) => return Err(timed_out(self.timeout)),
        };
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *self.current.lock() = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Makes a connection now if there is none (after an outage), ignoring failure.
    pub(crate) async fn warm(&self) {
        let _ = tokio::time::timeout(self.timeout, self.get()).await;
    }

    /// Forgets the current connection, whichever it is: the next call makes a new one.
    pub(crate) fn forget(&self) {
        *self.current.lock() = None;
    }

    fn forget_generation(&self, generation: u64) {
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// Runs `call` on the connection, the whole (connecting included) within the timeout.
    pub(crate) async fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut used = None;
        let attempt = async {
            let (generation, conn) = self.get().await?;
            used = Some(generation);
            call(conn).await.map_err(|e| {
                if e.is_io_error() || e.is_unrecoverable_error() || e.is_timeout() {
                    self.forget_generation(generation);
                }
                backend(e)
            })
        };
        let outcome = tokio::time::timeout(self.timeout, attempt).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                if let Some(generation) = used {
                    self.forget_generation(generation);
                }
                Err(timed_out(self.timeout))
            }
        }
    }
}
