//! The public types, and the futures of their async methods, can cross threads: they are
//! held in `Arc`s shared by tasks on a multi-threaded runtime.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;

use chat_broker_redis::{
    RedisBroker, RedisBrokerConfig, RedisBrokerStats, RedisPresence, RedisPresenceConfig,
};
use chat_core::NodeId;

fn send_sync<T: Send + Sync>() {}
fn send<F: Future + Send>(_: F) {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<RedisBroker>();
    send_sync::<RedisBrokerConfig>();
    send_sync::<RedisBrokerStats>();
    send_sync::<RedisPresence>();
    send_sync::<RedisPresenceConfig>();
}

fn futures_are_send(broker: &RedisBroker, presence: &RedisPresence, node: NodeId) {
    send(RedisBrokerConfig::new("redis://127.0.0.1", node.clone()).connect());
    send(RedisBroker::connect("redis://127.0.0.1", node));
    send(RedisPresenceConfig::new("redis://127.0.0.1").connect());
    send(RedisPresence::connect("redis://127.0.0.1"));
    send(broker.wait_connected());
    let _ = presence;
}
