//! A connection to an engine in process, through its Stream/Sink interface: frames in,
//! frames out, no socket.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use chat_core::Engine;
use chat_core::engine::{Inbound, Outbound, Peer};
use chat_core::protocol::Encoded;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

/// A connection as the engine sees it.
pub struct Conn {
    pub to_engine: mpsc::Sender<Inbound>,
    pub from_engine: mpsc::Receiver<Outbound>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Conn {
    /// Admits a connection and serves it on a task of its own.
    pub fn open(engine: &Engine) -> Conn {
        let (to_engine, inbound) = mpsc::channel(64);
        let (outbound, from_engine) = mpsc::channel(4096);
        let admission = engine.admit().unwrap();
        let engine = engine.clone();
        let task = tokio::spawn(async move {
            engine
                .serve(admission, Peer::default(), inbound, outbound)
                .await;
        });
        Conn {
            to_engine,
            from_engine,
            task,
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.to_engine
            .send(Inbound::Text(Bytes::from(frame.to_string())))
            .await
            .unwrap();
    }

    /// The next text frame (heartbeats skipped), within 10 s.
    pub async fn next_frame(&mut self) -> Encoded {
        loop {
            let item = tokio::time::timeout(Duration::from_secs(10), self.from_engine.next())
                .await
                .expect("no frame within 10 s")
                .expect("the engine closed the sink");
            if let Outbound::Frame(frame) = item {
                return frame;
            }
        }
    }

    pub async fn next_value(&mut self) -> Value {
        serde_json::from_slice(self.next_frame().await.as_bytes()).unwrap()
    }

    /// The next frame whose JSON satisfies `pick`, with that JSON.
    pub async fn frame_where(&mut self, pick: impl Fn(&Value) -> bool) -> (Encoded, Value) {
        loop {
            let frame = self.next_frame().await;
            let value: Value = serde_json::from_slice(frame.as_bytes()).unwrap();
            if pick(&value) {
                return (frame, value);
            }
        }
    }

    /// The JSON of the next frame that satisfies `pick`.
    pub async fn value_where(&mut self, pick: impl Fn(&Value) -> bool) -> Value {
        self.frame_where(pick).await.1
    }

    /// Says hello as `user` (request id 1); the reply.
    pub async fn hello(&mut self, user: &str) -> Value {
        self.send(json!({"type":"hello","id":1,"token":format!("dev:{user}")}))
            .await;
        self.value_where(|v| v["id"] == 1).await
    }

    /// Joins `room` (request id 2); the reply.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type":"join","id":2,"room":room})).await;
        self.value_where(|v| v["id"] == 2).await
    }
}
