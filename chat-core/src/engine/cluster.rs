//! This node's side of a multi-node deployment: what crosses nodes goes through the
//! [`Broker`], and only that.
//!
//! - Outgoing: each newly stored message (`Topic::Room`), member changes (the room's topic
//!   for its other members, the user's topic for the user's own devices), receipts, typing
//!   and presence pushes. Publishing never blocks a request: events wait in a bounded
//!   queue for one publisher task; a full queue drops the event (counted), which receivers
//!   repair from the store like any lost event.
//! - Subscriptions: a room's topic while its hub exists on this node, a user's topic while
//!   the user has a connection here. Commands go to one task in the order they were
//!   decided, so a quick unsubscribe-then-subscribe ends subscribed. After a room is
//!   subscribed, its hub checks the store's latest seq: what was published before the
//!   subscription took effect is read from the store, not lost.
//! - Incoming: one task routes events to the hubs (messages, in seq order, deduplicated by
//!   seq) and to local connections.
//! - A probe task reads the store's latest seq of every room with a hub now and then, so
//!   that even the last message of a burst whose event was lost arrives (late, not never).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use super::hub::Attach;
use super::session::{Catchup, catch_up};
use super::{Inner, Typer, TypingKey};
use crate::broker::{Broker, BrokerEvent, EventKind, Topic};
use crate::delivery::Cursors;
use crate::id::{RoomId, Seq, UserId};
use crate::protocol::{Encoded, MemberAction, ServerFrame};

/// Events waiting for the publisher task; beyond, new ones are dropped (and repaired by
/// the receivers from the store).
const PUBLISH_QUEUE: usize = 65_536;
/// How long a new session waits for its user's topic to be subscribed before going on.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// A subscription change for the subscriber task.
pub(crate) struct TopicCommand {
    /// `None`: nothing to change, only `done` once every earlier command is applied.
    pub(crate) topic: Option<Topic>,
    pub(crate) subscribe: bool,
    pub(crate) done: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_failed: AtomicU64,
    received: AtomicU64,
}

/// The broker side of an engine.
pub(crate) struct Cluster {
    broker: Arc<dyn Broker>,
    outgoing: mpsc::Sender<BrokerEvent>,
    topics: mpsc::UnboundedSender<TopicCommand>,
    /// Local connections per user, for the user topics.
    users: Mutex<HashMap<UserId, usize>>,
    counters: Arc<Counters>,
    /// Dropped with the engine: ends the tasks that would otherwise wait forever.
    _stop: watch::Sender<()>,
    stopped: watch::Receiver<()>,
}

/// What the builder needs to start the cluster's tasks once the engine exists.
pub(crate) struct ClusterTasks {
    outgoing: mpsc::Receiver<BrokerEvent>,
    topics: mpsc::UnboundedReceiver<TopicCommand>,
}

impl Cluster {
    pub(crate) fn new(broker: Arc<dyn Broker>) -> (Cluster, ClusterTasks) {
        let (outgoing_tx, outgoing) = mpsc::channel(PUBLISH_QUEUE);
        let (topics_tx, topics) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(());
        (
            Cluster {
                broker,
                outgoing: outgoing_tx,
                topics: topics_tx,
                users: Mutex::default(),
                counters: Arc::default(),
                _stop: stop,
                stopped,
            },
            ClusterTasks { outgoing, topics },
        )
    }

    /// The channel the hubs send their room subscriptions to.
    pub(crate) fn topic_sender(&self) -> mpsc::UnboundedSender<TopicCommand> {
        self.topics.clone()
    }

    /// Queues an event for the other nodes; never waits.
    pub(crate) fn publish(&self, topic: Topic, kind: EventKind, frame: Encoded) {
        let event = BrokerEvent {
            origin: self.broker.node().clone(),
            topic,
            kind,
            frame,
        };
        if self.outgoing.try_send(event).is_err() {
            self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection of `user` registered here: the first one subscribes the user's topic.
    /// Returns once that subscription took effect (or after a short wait).
    pub(crate) async fn user_connected(&self, user: &UserId) {
        let done = {
            let mut users = self.users.lock();
            let count = users.entry(user.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                return;
            }
            let (tx, rx) = oneshot::channel();
            let _ = self.topics.send(TopicCommand {
                topic: Some(Topic::User(user.clone())),
                subscribe: true,
                done: Some(tx),
            });
            rx
        };
        let _ = tokio::time::timeout(SUBSCRIBE_WAIT, done).await;
    }

    /// Returns once every subscription change asked for so far took effect (or after a
    /// short wait): after a new hub, its room's events reach this node.
    pub(crate) async fn settle(&self) {
        let (tx, rx) = oneshot::channel();
        let _ = self.topics.send(TopicCommand {
            topic: None,
            subscribe: false,
            done: Some(tx),
        });
        let _ = tokio::time::timeout(SUBSCRIBE_WAIT, rx).await;
    }

    /// A connection of `user` went away: the last one unsubscribes the user's topic.
    pub(crate) fn user_disconnected(&self, user: &UserId) {
        let mut users = self.users.lock();
        let Some(count) = users.get_mut(user) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            users.remove(user);
            let _ = self.topics.send(TopicCommand {
                topic: Some(Topic::User(user.clone())),
                subscribe: false,
                done: None,
            });
        }
    }

    pub(crate) fn stats(&self) -> (u64, u64, u64) {
        (
            self.counters.published.load(Ordering::Relaxed),
            self.counters.publish_failed.load(Ordering::Relaxed),
            self.counters.received.load(Ordering::Relaxed),
        )
    }

    /// Starts the publisher, subscriber, events and probe tasks.
    pub(crate) fn start(&self, engine: &Arc<Inner>, tasks: ClusterTasks, probe: Duration) {
        let ClusterTasks {
            mut outgoing,
            mut topics,
        } = tasks;

        let broker = self.broker.clone();
        let counters = self.counters.clone();
        tokio::spawn(async move {
            while let Some(event) = outgoing.recv().await {
                match broker.publish(event).await {
                    Ok(()) => counters.published.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::debug!(error = %e, "broker publish failed; receivers repair");
                        counters.publish_failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });

        let broker = self.broker.clone();
        let weak = Arc::downgrade(engine);
        tokio::spawn(async move {
            while let Some(command) = topics.recv().await {
                let Some(topic) = &command.topic else {
                    if let Some(done) = command.done {
                        let _ = done.send(());
                    }
                    continue;
                };
                let result = if command.subscribe {
                    broker.subscribe(topic).await
                } else {
                    broker.unsubscribe(topic).await
                };
                if let Err(e) = result {
                    tracing::warn!(%topic, error = %e, "broker subscription change failed");
                }
                if let (true, Topic::Room(room)) = (command.subscribe, topic) {
                    if let Some(engine) = weak.upgrade() {
                        let room = room.clone();
                        tokio::spawn(async move { engine.probe(&room).await });
                    }
                }
                if let Some(done) = command.done {
                    let _ = done.send(());
                }
            }
        });

        let mut events = self.broker.events();
        let mut stopped = self.stopped.clone();
        let weak = Arc::downgrade(engine);
        let counters = self.counters.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    _ = stopped.changed() => return,
                };
                let Some(event) = event else { return };
                let Some(engine) = weak.upgrade() else { return };
                counters.received.fetch_add(1, Ordering::Relaxed);
                engine.on_event(event).await;
            }
        });

        if probe.is_zero() {
            return;
        }
        let mut stopped = self.stopped.clone();
        let weak: Weak<Inner> = Arc::downgrade(engine);
        let probe = probe.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + probe, probe);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                let Some(engine) = weak.upgrade() else { return };
                for room in engine.hubs.rooms() {
                    engine.probe(&room).await;
                }
            }
        });
    }
}

impl Inner {
    /// Reads the store's latest seq of `room` and lets its hub repair what it never heard of.
    pub(crate) async fn probe(&self, room: &RoomId) {
        match self.store.room(room).await {
            Ok(Some(info)) => self.hubs.note_latest(room, info.latest),
            Ok(None) => {}
            Err(e) => tracing::debug!(%room, error = %e, "probe failed; next round retries"),
        }
    }

    /// Attaches the local connections of `user` (who joined `room` on another node when the
    /// room was at `floor`) so that each receives every message after `floor`: buffered
    /// while the ones it missed are replayed from the store, then live — like a resume.
    async fn attach_from(self: &Arc<Self>, user: &UserId, room: &RoomId, floor: Seq) {
        for conn in self.connections.connections_of(user) {
            let attached = match self
                .hubs
                .attach(room, &conn, Attach::Buffered { floor })
                .await
            {
                Ok(attached) => attached,
                Err(crate::Error::Closed) => continue,
                Err(e) => {
                    tracing::warn!(%room, %user, error = %e, "remote join: attach failed");
                    continue;
                }
            };
            conn.rooms.lock().insert(room.clone());
            if attached.new_hub {
                if let Some(cluster) = &self.cluster {
                    cluster.settle().await;
                }
            }
            if !attached.created {
                continue;
            }
            let catchup = Catchup {
                replay: (floor < attached.at).then_some((floor, attached.at)),
                hub: attached.hub,
                generation: attached.generation,
                room: room.clone(),
            };
            let engine = self.clone();
            tokio::spawn(async move { catch_up(&engine, &conn, vec![catchup]).await });
        }
    }

    /// Keeps a remote typer's deadline: the typer's node pushes `active: false` after
    /// `typing_timeout`; if it dies first, this node does it a second later.
    fn remote_typing(self: &Arc<Self>, room: RoomId, user: UserId, active: bool) {
        let key: TypingKey = (room, user);
        if !active {
            self.remote_typing.lock().remove(&key);
            return;
        }
        let deadline =
            tokio::time::Instant::now() + self.config.typing_timeout + Duration::from_secs(1);
        if self
            .remote_typing
            .lock()
            .insert(key.clone(), deadline)
            .is_some()
        {
            return;
        }
        tokio::spawn(Self::expire_typing(
            Arc::downgrade(self),
            Typer::Remote,
            key,
            deadline,
        ));
    }

    /// Sends an event to the other nodes, if there are any.
    pub(crate) fn publish(&self, topic: Topic, kind: EventKind, frame: &Encoded) {
        if let Some(cluster) = &self.cluster {
            cluster.publish(topic, kind, frame.clone());
        }
    }

    /// Routes one event from another node.
    async fn on_event(self: &Arc<Self>, event: BrokerEvent) {
        let BrokerEvent {
            topic, kind, frame, ..
        } = event;
        match (topic, kind) {
            (Topic::Room(room), EventKind::Message { seq }) => {
                self.hubs.publish(&room, seq, frame);
            }
            // The room's other members; the user's own devices hear it on the user topic.
            (Topic::Room(room), EventKind::Member { user, .. }) => {
                if let Some(hub) = self.hubs.get(&room) {
                    hub.broadcast(&frame, |c| *c.user() != user);
                }
            }
            (Topic::User(target), EventKind::Member { user, action, at }) if target == user => {
                let Ok(ServerFrame::Member(push)) = ServerFrame::decode(frame.as_bytes()) else {
                    return;
                };
                let room = push.room;
                let _membership = self.membership_lock(&user).lock().await;
                match action {
                    MemberAction::Join => {
                        // Attached (and the room subscribed) first: whatever the devices
                        // hear after the push, they hear from the whole room.
                        match at {
                            Some(floor) => self.attach_from(&user, &room, floor).await,
                            None => {
                                if let Err(e) = self.attach_user(&user, &room, None).await {
                                    tracing::warn!(%room, %user, error = %e, "remote join: attach failed");
                                }
                            }
                        }
                        self.connections.send_to_user(&user, &frame, None);
                    }
                    MemberAction::Leave => {
                        self.connections.send_to_user(&user, &frame, None);
                        if let Some(hub) = self.hubs.get(&room) {
                            hub.forget_receipts(&user);
                        }
                        self.typing.lock().remove(&(room.clone(), user.clone()));
                        self.detach_user(&user, &room);
                    }
                }
            }
            (topic @ (Topic::Room(_) | Topic::User(_)), EventKind::Receipt) => {
                let Ok(ServerFrame::Receipt(push)) = ServerFrame::decode(frame.as_bytes()) else {
                    return;
                };
                let cursors = Cursors {
                    delivered: push.delivered,
                    read: push.read,
                };
                let everyone = matches!(topic, Topic::Room(_));
                match self.hubs.get(&push.room) {
                    Some(hub) => hub.push_receipt(&push.user, cursors, None, everyone),
                    None if !everyone => {
                        self.connections.send_to_user(&push.user, &frame, None);
                    }
                    None => {}
                }
            }
            (Topic::Room(room), EventKind::Typing) => {
                let Ok(ServerFrame::Typing(push)) = ServerFrame::decode(frame.as_bytes()) else {
                    return;
                };
                if let Some(hub) = self.hubs.get(&room) {
                    hub.broadcast(&frame, |c| *c.user() != push.user);
                }
                self.remote_typing(room, push.user, push.active);
            }
            (Topic::User(user), EventKind::Presence) => {
                self.connections.send_to_user(&user, &frame, None);
            }
            _ => {}
        }
    }
}
