//! chat-engine: the server (this binary with `--serve chat`) and a lean protocol v1 client.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{
    Conn, Delivered, Result, Resume, Rx, Setup, Tx, client_config, json_fields, tcp_from,
};

type Ws = WebSocketStream<TcpStream>;

/// Runs the chat-engine server the demo server runs (in-memory store, development
/// authentication), with the per-connection rate limit lifted: one benchmark sender sends
/// far more than 200 frames/s. Every guarantee stays as it is.
pub async fn serve(addr: &str) -> Result<()> {
    use chat_engine::EngineConfig;
    use chat_engine::core::auth::DevAuthenticator;
    use chat_engine::ws::WsServer;

    let mut config = EngineConfig::default();
    config.rate_burst = u32::MAX / 2;
    config.rate_per_sec = u32::MAX / 2;
    config.max_connections = 1_000_000;
    let engine = chat_engine::memory::engine_builder(Arc::new(DevAuthenticator))
        .config(config)
        .build();
    let server = WsServer::bind(addr, engine).await?;
    println!("listening {}", server.local_addr()?);
    server.run_until(std::future::pending()).await?;
    Ok(())
}

/// A connected client.
pub async fn connect(addr: SocketAddr, user: &str, source: IpAddr, setup: Setup) -> Result<Conn> {
    let stream = tcp_from(source, addr).await?;
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config())).await?;
    let mut early = VecDeque::new();
    let mut rooms: HashMap<String, (String, u64)> = HashMap::new();
    let resume = match &setup.resume {
        Some(Resume::Chat { room, epoch, seq }) => {
            json!({ room.as_str(): {"epoch": epoch, "seq": seq} })
        }
        _ => json!({}),
    };
    let hello = request(
        &mut ws,
        &mut early,
        json!({"type":"hello","id":1,"token":format!("dev:{user}"),"resume":resume}),
    )
    .await?;
    for state in hello["rooms"].as_array().into_iter().flatten() {
        if let (Some(room), Some(epoch), Some(seq)) = (
            state["room"].as_str(),
            state["epoch"].as_str(),
            state["seq"].as_u64(),
        ) {
            rooms.insert(room.to_owned(), (epoch.to_owned(), seq));
        }
    }
    if let Some(Resume::Chat { room, epoch, seq }) = setup.resume {
        // Replayed messages follow the reply: the client holds `seq`.
        rooms.insert(room, (epoch, seq));
    }
    for (i, room) in setup.join.iter().enumerate() {
        let joined = request(
            &mut ws,
            &mut early,
            json!({"type":"join","id":2 + i,"room":room}),
        )
        .await?;
        let epoch = joined["epoch"].as_str().ok_or("join: no epoch")?.to_owned();
        let seq = joined["seq"].as_u64().ok_or("join: no seq")?;
        rooms.insert(room.clone(), (epoch, seq));
    }
    let (sink, stream) = ws.split();
    static CIDS: AtomicU64 = AtomicU64::new(0);
    let tx = ChatTx {
        sink,
        cid_prefix: format!("{user}-{}", CIDS.fetch_add(1, Ordering::Relaxed)),
        next_cid: 0,
    };
    let mut rx = ChatRx {
        stream,
        early: VecDeque::new(),
        rooms: rooms.into_iter().collect(),
        skip_from: setup.skip_own.then(|| user.to_owned()),
    };
    for text in early {
        if let Some(delivered) = rx.message(&text) {
            rx.early.push_back(delivered);
        }
    }
    Ok(Conn {
        tx: Box::new(tx),
        rx: Box::new(rx),
    })
}

/// Sends a request and waits for its reply; message pushes read meanwhile are kept.
async fn request(
    ws: &mut Ws,
    early: &mut VecDeque<String>,
    frame: serde_json::Value,
) -> Result<serde_json::Value> {
    let id = frame["id"].clone();
    ws.send(Message::Text(frame.to_string().into())).await?;
    while let Some(read) = ws.next().await {
        if let Message::Text(text) = read? {
            if text.contains("\"id\":") {
                let reply: serde_json::Value = serde_json::from_str(&text)?;
                if reply["id"] == id {
                    if reply["type"] != "ok" {
                        return Err(format!("refused: {reply}").into());
                    }
                    return Ok(reply);
                }
            } else if text.starts_with(r#"{"type":"message""#) {
                early.push_back(text.to_string());
            }
        }
    }
    Err("closed during set-up".into())
}

struct ChatTx {
    sink: SplitSink<Ws, Message>,
    cid_prefix: String,
    next_cid: u64,
}

impl ChatTx {
    fn cid(&mut self) -> String {
        self.next_cid += 1;
        format!("{}-{}", self.cid_prefix, self.next_cid)
    }
}

#[async_trait]
impl Tx for ChatTx {
    async fn send_room(&mut self, room: &str, body: &str) -> Result<()> {
        let cid = self.cid();
        let frame = format!(r#"{{"type":"send","room":"{room}","cid":"{cid}","body":"{body}"}}"#);
        self.sink.send(Message::Text(frame.into())).await?;
        Ok(())
    }

    async fn send_user(&mut self, user: &str, body: &str) -> Result<()> {
        let cid = self.cid();
        let frame = format!(r#"{{"type":"send","to":"{user}","cid":"{cid}","body":"{body}"}}"#);
        self.sink.send(Message::Text(frame.into())).await?;
        Ok(())
    }
}

struct ChatRx {
    stream: SplitStream<Ws>,
    early: VecDeque<Delivered>,
    /// room → (epoch, last seq received). A client is in one room or a few: a list looked
    /// through beats hashing the room of every delivery.
    rooms: Vec<(String, (String, u64))>,
    /// This client's user, when its own messages are to be skipped.
    skip_from: Option<String>,
}

impl ChatRx {
    fn message(&mut self, text: &str) -> Option<Delivered> {
        if !text.starts_with(r#"{"type":"message""#) {
            return None;
        }
        let (mut room, mut seq, mut from, mut body) = (None, None, None, None);
        for (key, value) in json_fields(text) {
            match key {
                "room" => room = Some(value),
                "seq" => seq = value.parse::<u64>().ok(),
                "from" => from = Some(value),
                "body" => body = Some(value),
                _ => {}
            }
            if room.is_some() && seq.is_some() && from.is_some() && body.is_some() {
                break;
            }
        }
        let (room, seq) = (room?, seq?);
        if let Some((_, (_, last))) = self.rooms.iter_mut().find(|(r, _)| r == room) {
            *last = (*last).max(seq);
        }
        if self.skip_from.is_some() && from == self.skip_from.as_deref() {
            return None;
        }
        Some(Delivered {
            room: room.to_owned(),
            seq: Some(seq),
            body: body?.to_owned(),
        })
    }
}

#[async_trait]
impl Rx for ChatRx {
    async fn next(&mut self) -> Result<Option<Delivered>> {
        if let Some(delivered) = self.early.pop_front() {
            return Ok(Some(delivered));
        }
        while let Some(read) = self.stream.next().await {
            match read {
                Ok(Message::Text(text)) => {
                    if let Some(delivered) = self.message(&text) {
                        return Ok(Some(delivered));
                    }
                }
                Ok(Message::Close(_)) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    fn resume(&self) -> Option<Resume> {
        let (room, (epoch, seq)) = self.rooms.first()?;
        Some(Resume::Chat {
            room: room.clone(),
            epoch: epoch.clone(),
            seq: *seq,
        })
    }
}
