//! A chat server on 127.0.0.1:0 (in memory) that tests can stop and start again, and the
//! fault proxy to put between it and the clients.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_core::auth::DevAuthenticator;
use chat_core::{Engine, EngineConfig};
use chat_store_memory::{MemoryPresence, MemoryStore};
use chat_transport_ws::WsServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Server {
    pub addr: SocketAddr,
    pub engine: Engine,
    /// The server's store: still readable after [`Server::kill`] (what the dead server held).
    pub store: Arc<MemoryStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// A fresh server with an empty in-memory store.
    pub async fn start(config: EngineConfig) -> Server {
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::builder(
            store.clone(),
            store.clone(),
            Arc::new(MemoryPresence::default()),
            Arc::new(DevAuthenticator),
        )
        .config(config)
        .build();
        let server = WsServer::bind("127.0.0.1:0", engine.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            engine,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Graceful stop (clients get 1001).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
    }

    /// Killed: the listener and every connection dropped at once, no goodbye.
    pub fn kill(mut self) {
        self.engine.shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
