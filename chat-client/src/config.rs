//! How a client connects and reconnects.

use std::time::Duration;

use chat_core::auth::Token;
use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, Shared};
use crate::driver::Driver;
use crate::error::{ClientError, Result};
use crate::event::{Backlog, Events};

/// Settings of a [`Client`], with [`ClientBuilder`] to change them.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) url: String,
    pub(crate) token: Token,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) queue_limit: usize,
    pub(crate) event_buffer: usize,
    pub(crate) max_frame_bytes: usize,
}

/// Builds a [`Client`].
///
/// ```no_run
/// # async fn demo() -> chat_client::Result<()> {
/// use std::time::Duration;
/// let (client, mut events) = chat_client::ClientBuilder::new("ws://127.0.0.1:8080/ws", "dev:alice")
///     .backoff(Duration::from_millis(50), Duration::from_secs(5))
///     .connect()
///     .await?;
/// # drop((client, events)); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    config: ClientConfig,
}

impl ClientBuilder {
    /// A client of the server at `url` (`ws://host:port/ws`) with credentials `token`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            config: ClientConfig {
                url: url.into(),
                token: Token::new(token),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(60),
                queue_limit: 1_000,
                event_buffer: 4_096,
                max_frame_bytes: 64 * 1024,
            },
        }
    }

    /// Reconnect delays: from `min`, doubling, up to `max`, each with random jitter (a
    /// delay is between half and all of its step). Defaults 100 ms and 10 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff_min = min.max(Duration::from_millis(1));
        self.config.backoff_max = max.max(self.config.backoff_min);
        self
    }

    /// How long a connection attempt (and its `hello`) may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long a request waits for its reply, reconnections included (default 60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How many requests may wait for a connection (default 1,000); beyond,
    /// [`ClientError::QueueFull`].
    pub fn queue_limit(mut self, limit: usize) -> Self {
        self.config.queue_limit = limit.max(1);
        self
    }

    /// The largest request frame the server takes (default 64 KiB, the protocol's default
    /// frame limit). A larger request fails at once with [`ClientError::Refused`] and
    /// `too_large`, rather than making the server close the connection (1009) each time
    /// it is sent again after a reconnect.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.config.max_frame_bytes = bytes;
        self
    }

    /// How many events wait for the application before the client stops reading the
    /// connection (default 4,096; see [`Events`]). A server whose pushes are not read
    /// closes the connection (4008); the client then resumes, losing nothing.
    pub fn event_buffer(mut self, events: usize) -> Self {
        self.config.event_buffer = events.max(1);
        self
    }

    /// Starts the client and waits for its first session: `Err` if the first attempt
    /// fails or the token is refused. After that it reconnects by itself.
    ///
    /// Cancel safe: dropping the future stops the client.
    pub async fn connect(self) -> Result<(Client, Events)> {
        let (first_tx, first_rx) = oneshot::channel();
        let (client, events) = self.spawn(Some(first_tx));
        match first_rx.await {
            Ok(Ok(())) => Ok((client, events)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Starts the client without waiting: it connects (and reconnects) in the background,
    /// queueing requests until a session is open.
    pub fn start(self) -> (Client, Events) {
        self.spawn(None)
    }

    fn spawn(self, first: Option<oneshot::Sender<Result<()>>>) -> (Client, Events) {
        let (command_tx, command_rx) = mpsc::channel(256);
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let backlog = std::sync::Arc::new(Backlog::default());
        let shared = std::sync::Arc::new(Shared::default());
        let driver = Driver::new(
            self.config,
            command_rx,
            event_tx,
            backlog.clone(),
            shared.clone(),
            first,
        );
        tokio::spawn(driver.run());
        (
            Client::new(command_tx, shared),
            Events::new(event_rx, backlog),
        )
    }
}

/// Connects to `url` with `token` (default settings; see [`ClientBuilder`]).
///
/// ```no_run
/// # async fn demo() -> chat_client::Result<()> {
/// use chat_client::Event;
/// let (client, mut events) = chat_client::connect("ws://127.0.0.1:8080/ws", "dev:alice").await?;
/// let general = "general".parse().expect("a valid room id");
/// client.join(&general).await?;
/// client.send(&general, "hello").await?;
/// while let Some(event) = events.next().await {
///     if let Event::Message(m) = event {
///         println!("{}: {}", m.from, m.body);
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn connect(url: impl Into<String>, token: impl Into<String>) -> Result<(Client, Events)> {
    ClientBuilder::new(url, token).connect().await
}
