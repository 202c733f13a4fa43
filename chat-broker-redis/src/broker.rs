//! [`RedisBroker`]: the [`Broker`] of a cluster over Redis pub/sub.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::broker::{Broker, BrokerEvent, BrokerEvents, Topic};
use chat_core::{NodeId, Result};
use futures_util::StreamExt;
use futures_util::future::join_all;
use parking_lot::Mutex;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{AsyncCommands, Msg};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::connection::Reconnecting;
use crate::envelope;
use crate::{backend, timed_out};

/// How to connect a [`RedisBroker`]: the Redis URL and the node are required, the rest
/// has defaults.
///
/// ```no_run
/// # async fn demo() -> chat_core::Result<()> {
/// use std::time::Duration;
/// use chat_broker_redis::RedisBrokerConfig;
/// use chat_core::NodeId;
///
/// let broker = RedisBrokerConfig::new("redis://127.0.0.1:6379", NodeId::new("node-1")?)
///     .channel_prefix("myapp")
///     .capacity(4096)
///     .command_timeout(Duration::from_millis(500))
///     .connect()
///     .await?;
/// # drop(broker); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisBrokerConfig {
    url: String,
    node: NodeId,
    prefix: String,
    capacity: usize,
    command_timeout: Duration,
    ping_interval: Duration,
    max_reconnect_delay: Duration,
}

impl RedisBrokerConfig {
    /// The default channel prefix: `chat`.
    pub const DEFAULT_CHANNEL_PREFIX: &'static str = "chat";
    /// The default number of received events buffered before new ones are dropped.
    pub const DEFAULT_CAPACITY: usize = 16_384;
    /// The default time a Redis command may take.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
    /// The default interval between health pings on the subscription connection.
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
    /// The default longest wait between two reconnection attempts.
    pub const DEFAULT_MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

    /// The broker of `node` on the Redis server at `url` (`redis://[:password@]host[:port][/db]`).
    pub fn new(url: &str, node: NodeId) -> RedisBrokerConfig {
        RedisBrokerConfig {
            url: url.to_owned(),
            node,
            prefix: RedisBrokerConfig::DEFAULT_CHANNEL_PREFIX.to_owned(),
            capacity: RedisBrokerConfig::DEFAULT_CAPACITY,
            command_timeout: RedisBrokerConfig::DEFAULT_COMMAND_TIMEOUT,
            ping_interval: RedisBrokerConfig::DEFAULT_PING_INTERVAL,
            max_reconnect_delay: RedisBrokerConfig::DEFAULT_MAX_RECONNECT_DELAY,
        }
    }

    /// The start of every channel name (default [`DEFAULT_CHANNEL_PREFIX`](Self::DEFAULT_CHANNEL_PREFIX)):
    /// the channel of room `r` is `<prefix>:r:<r>`, of user `u` `<prefix>:u:<u>`. Nodes of
    /// one cluster use the same prefix; clusters (or tests) sharing a Redis use different
    /// ones, and do not hear each other.
    pub fn channel_prefix(mut self, prefix: &str) -> RedisBrokerConfig {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// How many received events wait for the consumer of [`Broker::events`] before new
    /// ones are dropped (default [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY), at least 1).
    pub fn capacity(mut self, capacity: usize) -> RedisBrokerConfig {
        self.capacity = capacity.max(1);
        self
    }

    /// How long connecting, publishing, subscribing or a ping may take before it counts as
    /// failed (default [`DEFAULT_COMMAND_TIMEOUT`](Self::DEFAULT_COMMAND_TIMEOUT)). This
    /// bounds how long a `publish` can wait while Redis is unreachable.
    pub fn command_timeout(mut self, timeout: Duration) -> RedisBrokerConfig {
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How often the subscription connection is pinged (default
    /// [`DEFAULT_PING_INTERVAL`](Self::DEFAULT_PING_INTERVAL)). A ping unanswered within
    /// the command timeout means the connection is dead (a Redis that vanished without
    /// closing it) and a new one is made.
    pub fn ping_interval(mut self, interval: Duration) -> RedisBrokerConfig {
        self.ping_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The longest wait between two attempts to reconnect (default
    /// [`DEFAULT_MAX_RECONNECT_DELAY`](Self::DEFAULT_MAX_RECONNECT_DELAY)); attempts start
    /// 50 ms apart and double up to it.
    pub fn max_reconnect_delay(mut self, delay: Duration) -> RedisBrokerConfig {
        self.max_reconnect_delay = delay.max(MIN_RECONNECT_DELAY);
        self
    }

    /// Connects: one multiplexed connection for publishing (made again after it broke),
    /// one pub/sub connection for receiving. Fails when Redis cannot be reached now; once
    /// connected, the broker reconnects by itself.
    ///
    /// Must be called within a tokio runtime: the broker spawns the task that reads the
    /// subscription connection (ended when the broker is dropped).
    ///
    /// Cancel safe: a dropped call leaves nothing behind.
    pub async fn connect(self) -> Result<RedisBroker> {
        let client = redis::Client::open(self.url.as_str()).map_err(backend)?;
        let publisher = Reconnecting::connect(client, self.command_timeout).await?;
        let inner = Arc::new(Inner {
            node: self.node,
            prefix: self.prefix,
            capacity: self.capacity,
            command_timeout: self.command_timeout,
            ping_interval: self.ping_interval,
            max_reconnect_delay: self.max_reconnect_delay,
            publisher,
            control: tokio::sync::Mutex::new(None),
            topics: Mutex::default(),
            events: Mutex::default(),
            connected: watch::Sender::new(false),
            reconnects: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        });
        let first = inner.open().await?;
        let task = tokio::spawn(inner.clone().supervise(first));
        Ok(RedisBroker { inner, task })
    }
}

const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(50);

/// Counters of a [`RedisBroker`], from [`RedisBroker::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisBrokerStats {
    /// Whether the subscription connection is up with every topic subscribed.
    pub connected: bool,
    /// How many times the subscription connection was made again after it broke.
    pub reconnects: u64,
    /// Events handed to the stream of [`Broker::events`].
    pub received: u64,
    /// Events dropped because that stream's buffer was full (a slow consumer).
    pub dropped: u64,
    /// Payloads on this broker's channels that were not an event it can read (another
    /// envelope version, or not chat-engine's), dropped.
    pub malformed: u64,
}

/// A [`Broker`] over Redis pub/sub: one per node, all nodes of a cluster on one Redis
/// and one [channel prefix](RedisBrokerConfig::channel_prefix).
///
/// # How
///
/// - Each [`Topic`] is a Redis channel. [`subscribe`](Broker::subscribe) returns once
///   Redis confirmed the subscription, so an event published after it returns arrives.
/// - A published payload carries the publishing node (see the crate docs' envelope), so
///   a node drops its own events, which Redis hands back to it like to any subscriber.
/// - One task reads the subscription connection and hands events to the stream of
///   [`events`](Broker::events) with `try_send`: when that stream's buffer is full the
///   event is dropped and counted ([`RedisBrokerStats::dropped`]). Publishers never wait
///   for a consumer, and Redis never has to buffer for this node.
/// - Received events are checked against the topics subscribed at that moment, so after
///   [`unsubscribe`](Broker::unsubscribe) returns, nothing more of that topic arrives.
///
/// # Reconnection
///
/// When the subscription connection breaks (Redis restarted, the network dropped, or a
/// ping went unanswered), the reading task reconnects with a backoff (50 ms doubling up to
/// [`max_reconnect_delay`](RedisBrokerConfig::max_reconnect_delay)) and subscribes every
/// topic again before it counts as connected; it then makes the publishing connection
/// anew too, which is otherwise made again by the first `publish` after one failed on it (a
/// failed publish is never retried: it may have reached Redis). Events published while a
/// node is cut off are lost to it: a doorbell may lose events, and the engine reads what
/// it missed from the store. Meanwhile:
///
/// - `publish` fails (within the [command timeout](RedisBrokerConfig::command_timeout))
///   with [`chat_core::Error::Backend`];
/// - `subscribe` and `unsubscribe` record the change and return `Ok`: the connection
///   made next subscribes exactly the topics recorded then.
///
/// # Clone
///
/// Not `Clone`: share it as `Arc<RedisBroker>` (or `Arc<dyn Broker>`). Dropping it stops
/// its reading task and closes its connections.
pub struct RedisBroker {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

struct Inner {
    node: NodeId,
    prefix: String,
    capacity: usize,
    command_timeout: Duration,
    ping_interval: Duration,
    max_reconnect_delay: Duration,
    /// The connection for publishing (its client also makes the subscription connections).
    publisher: Reconnecting,
    /// The live subscription connection's sink, if any. Held while (un)subscribing and
    /// while a new connection subscribes everything, so that those never interleave:
    /// while it is `Some`, every channel in `topics` is subscribed on that connection.
    control: tokio::sync::Mutex<Option<Live>>,
    /// Channel name → topic, for every topic this node wants.
    topics: Mutex<HashMap<String, Topic>>,
    /// The sending end of the stream most recently opened with `events`.
    events: Mutex<Option<mpsc::Sender<BrokerEvent>>>,
    connected: watch::Sender<bool>,
    reconnects: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    malformed: AtomicU64,
}

/// One subscription connection's control side.
struct Live {
    sink: PubSubSink,
    /// Ends that connection's reading loop (it then reconnects).
    kill: Arc<Notify>,
}

/// One subscription connection's reading side.
struct Reader {
    stream: PubSubStream,
    sink: PubSubSink,
    kill: Arc<Notify>,
}

impl RedisBroker {
    /// Connects the broker of `node` to the Redis server at `url` with the default
    /// settings of [`RedisBrokerConfig`].
    ///
    /// Cancel safe.
    pub async fn connect(url: &str, node: NodeId) -> Result<RedisBroker> {
        RedisBrokerConfig::new(url, node).connect().await
    }

    /// The channel prefix of this broker's cluster.
    pub fn channel_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The Redis channel that carries `topic`'s events.
    pub fn channel(&self, topic: &Topic) -> String {
        self.inner.channel(topic)
    }

    /// Whether the subscription connection is up with every topic subscribed.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Resolves once the subscription connection is up with every topic subscribed (at
    /// once if it is).
    ///
    /// Cancel safe.
    pub async fn wait_connected(&self) {
        let mut rx = self.inner.connected.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we borrow it.
        let _ = rx.wait_for(|up| *up).await;
    }

    /// The broker's counters.
    pub fn stats(&self) -> RedisBrokerStats {
        let inner = &self.inner;
        RedisBrokerStats {
            connected: *inner.connected.borrow(),
            reconnects: inner.reconnects.load(Ordering::Relaxed),
            received: inner.received.load(Ordering::Relaxed),
            dropped: inner.dropped.load(Ordering::Relaxed),
            malformed: inner.malformed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node", &self.inner.node)
            .field("channel_prefix", &self.inner.prefix)
            .field("topics", &self.inner.topics.lock().len())
            .field("stats", &self.stats())
            .finish()
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn node(&self) -> &NodeId {
        &self.inner.node
    }

    fn events(&self) -> BrokerEvents {
        let (tx, rx) = mpsc::channel(self.inner.capacity);
        *self.inner.events.lock() = Some(tx);
        BrokerEvents::new(rx)
    }

    /// Cancel safety: a dropped call may or may not have published.
    async fn publish(&self, event: BrokerEvent) -> Result<()> {
        let channel = self.inner.channel(&event.topic);
        let payload = envelope::encode(&self.inner.node, &event);
        let _receivers: i64 = self
            .inner
            .publisher
            .run(|mut conn| async move { conn.publish(channel, payload.as_ref()).await })
            .await?;
        Ok(())
    }

    /// Cancel safe: subscribing again is harmless.
    async fn subscribe(&self, topic: &Topic) -> Result<()> {
        let channel = self.inner.channel(topic);
        let mut control = self.inner.control.lock().await;
        let added = self
            .inner
            .topics
            .lock()
            .insert(channel.clone(), topic.clone())
            .is_none();
        if added {
            self.inner
                .command(&mut control, |mut sink| async move {
                    sink.subscribe(channel).await
                })
                .await;
        }
        Ok(())
    }

    /// Cancel safe: unsubscribing again is harmless.
    async fn unsubscribe(&self, topic: &Topic) -> Result<()> {
        let channel = self.inner.channel(topic);
        let mut control = self.inner.control.lock().await;
        let removed = self.inner.topics.lock().remove(&channel).is_some();
        if removed {
            self.inner
                .command(&mut control, |mut sink| async move {
                    sink.unsubscribe(channel).await
                })
                .await;
        }
        Ok(())
    }
}

impl Inner {
    fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(room) => format!("{}:r:{room}", self.prefix),
            Topic::User(user) => format!("{}:u:{user}", self.prefix),
        }
    }

    /// Runs a (un)subscribe on the live connection, if there is one. On failure the
    /// connection is ended: the next one subscribes what `topics` says.
    async fn command<F, Fut>(&self, control: &mut Option<Live>, run: F)
    where
        F: FnOnce(PubSubSink) -> Fut,
        Fut: Future<Output = redis::RedisResult<()>>,
    {
        let Some(live) = control.as_ref() else {
            return;
        };
        if let Err(e) = within(self.command_timeout, run(live.sink.clone())).await {
            tracing::warn!(node = %self.node, error = %e, "redis subscription connection failed; reconnecting");
            live.kill.notify_one();
            *control = None;
            self.connected.send_replace(false);
        }
    }

    /// Makes a subscription connection and subscribes every wanted topic on it.
    async fn open(&self) -> Result<Reader> {
        let pubsub = within(
            self.command_timeout,
            self.publisher.client().get_async_pubsub(),
        )
        .await?;
        let (sink, stream) = pubsub.split();
        let mut control = self.control.lock().await;
        let channels: Vec<String> = self.topics.lock().keys().cloned().collect();
        // One SUBSCRIBE per channel, all sent before the first reply is awaited: redis-rs
        // pairs each request with one reply, and a SUBSCRIBE of n channels gets n. The
        // timeout grows by one command timeout per 10,000 channels.
        let batches = u32::try_from(channels.len() / 10_000 + 1).unwrap_or(u32::MAX);
        let all = join_all(channels.into_iter().map(|channel| {
            let mut sink = sink.clone();
            async move { sink.subscribe(channel).await }
        }));
        within(self.command_timeout.saturating_mul(batches), async {
            all.await.into_iter().collect::<redis::RedisResult<()>>()
        })
        .await?;
        let kill = Arc::new(Notify::new());
        *control = Some(Live {
            sink: sink.clone(),
            kill: kill.clone(),
        });
        self.connected.send_replace(true);
        Ok(Reader { stream, sink, kill })
    }

    /// Reads subscription connections for as long as the broker lives, making a new one
    /// whenever one breaks.
    async fn supervise(self: Arc<Self>, first: Reader) {
        let mut reader = Some(first);
        let mut delay = MIN_RECONNECT_DELAY;
        loop {
            let current = match reader.take() {
                Some(reader) => reader,
                None => match self.open().await {
                    Ok(reader) => {
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                        // Redis is back: have the publishing connection ready too.
                        self.publisher.warm().await;
                        tracing::info!(node = %self.node, "redis subscription connection restored");
                        delay = MIN_RECONNECT_DELAY;
                        reader
                    }
                    Err(e) => {
                        tracing::debug!(node = %self.node, error = %e, "redis still unreachable");
                        tokio::time::sleep(delay).await;
                        delay = delay.saturating_mul(2).min(self.max_reconnect_delay);
                        continue;
                    }
                },
            };
            let kill = current.kill.clone();
            self.read(current).await;
            let mut control = self.control.lock().await;
            if control
                .as_ref()
                .is_some_and(|live| Arc::ptr_eq(&live.kill, &kill))
            {
                *control = None;
            }
            self.connected.send_replace(false);
            drop(control);
            // The publishing connection most likely broke with this one: the next publish
            // makes a new one rather than finding out by failing.
            self.publisher.forget();
            tracing::warn!(node = %self.node, "redis subscription connection lost; reconnecting");
        }
    }

    /// Hands the connection's events on until it breaks or is killed.
    async fn read(&self, reader: Reader) {
        let Reader {
            mut stream,
            sink,
            kill,
        } = reader;
        let _pinger = AbortOnDrop(tokio::spawn(ping(
            sink,
            kill.clone(),
            self.ping_interval,
            self.command_timeout,
        )));
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.dispatch(&message),
                    None => break,
                },
                () = kill.notified() => break,
            }
        }
    }

    fn dispatch(&self, message: &Msg) {
        let payload = message.get_payload_bytes();
        let event = match envelope::split(payload) {
            // Our own event, handed back by Redis: dropped before parsing it.
            Ok((publisher, _)) if publisher == self.node.as_str().as_bytes() => return,
            Ok(_) => envelope::decode(payload),
            Err(e) => Err(e),
        };
        let event = match event {
            Ok((_, event)) => event,
            Err(e) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.node, channel = message.get_channel_name(), "dropped a broker payload: {e}");
                return;
            }
        };
        // Only topics wanted now, and only on their own channel.
        if self.topics.lock().get(message.get_channel_name()) != Some(&event.topic) {
            return;
        }
        let events = self.events.lock();
        let Some(tx) = events.as_ref() else {
            return;
        };
        // Counted before it is handed on, so that a consumer who has read an event never
        // sees a count without it.
        match tx.try_reserve() {
            Ok(permit) => {
                self.received.fetch_add(1, Ordering::Relaxed);
                permit.send(event);
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(())) => {}
        }
    }
}

/// Aborts a task when dropped (also when the task that holds it is aborted).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pings the subscription connection every `interval`; kills it when a ping fails.
async fn ping(mut sink: PubSubSink, kill: Arc<Notify>, interval: Duration, timeout: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if within(timeout, sink.ping::<redis::Value>()).await.is_err() {
            kill.notify_one();
            return;
        }
    }
}

/// `fut`'s result, or a backend error once `timeout` has passed.
async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(backend),
        Err(_) => Err(timed_out(timeout)),
    }
}
