//! The floor: a minimal broadcast server on tokio-tungstenite written for the benchmark —
//! one encode per message, batched writes (feed everything queued, one flush), no
//! validation, no storage beyond a short replay log per room, no presence, no receipts —
//! and its client.
//!
//! Wire (text frames): client → server `H <user>` (hello, answered `OK`), `J <room>` (join,
//! answered `OK`), `S <room> <body>` (to a room), `U <user> <body>` (to a user), `R <room> <seq>`
//! (join and replay what came after `seq`); server → client `OK`, `M <room> <seq> <body>`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::conn::{Conn, Delivered, Result, Resume, Rx, Setup, Tx, client_config, tcp_from};

/// Messages a room keeps for replays.
const LOG: usize = 1_000;

type Outbox = mpsc::UnboundedSender<Utf8Bytes>;

#[derive(Default)]
struct RawRoom {
    seq: u64,
    members: Vec<Outbox>,
    log: VecDeque<(u64, Utf8Bytes)>,
}

#[derive(Default)]
struct State {
    rooms: Mutex<HashMap<String, RawRoom>>,
    users: Mutex<HashMap<String, Vec<Outbox>>>,
}

/// Runs the raw broadcast server.
pub async fn serve(addr: &str) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    let state = Arc::new(State::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(4 * 1024)
                .write_buffer_size(16 * 1024);
            if let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            {
                connection(state, ws).await;
            }
        });
    }
}

async fn connection(state: Arc<State>, ws: WebSocketStream<TcpStream>) {
    let (mut sink, mut stream) = ws.split();
    let (outbox, mut queue) = mpsc::unbounded_channel::<Utf8Bytes>();
    let writer = async move {
        while let Some(first) = queue.recv().await {
            if sink.feed(Message::Text(first)).await.is_err() {
                return;
            }
            while let Ok(more) = queue.try_recv() {
                if sink.feed(Message::Text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        while let Some(Ok(read)) = stream.next().await {
            let Message::Text(text) = read else { continue };
            let text = text.as_str();
            let (op, rest) = text.split_at(text.len().min(2));
            match op {
                "H " => {
                    state
                        .users
                        .lock()
                        .entry(rest.to_owned())
                        .or_default()
                        .push(outbox.clone());
                    let _ = outbox.send(Utf8Bytes::from_static("OK"));
                }
                "J " => {
                    state
                        .rooms
                        .lock()
                        .entry(rest.to_owned())
                        .or_default()
                        .members
                        .push(outbox.clone());
                    let _ = outbox.send(Utf8Bytes::from_static("OK"));
                }
                "S " => {
                    let Some((room, body)) = rest.split_once(' ') else {
                        continue;
                    };
                    let mut rooms = state.rooms.lock();
                    let Some(room_state) = rooms.get_mut(room) else {
                        continue;
                    };
                    room_state.seq += 1;
                    let frame = Utf8Bytes::from(format!("M {room} {} {body}", room_state.seq));
                    if room_state.log.len() == LOG {
                        room_state.log.pop_front();
                    }
                    room_state.log.push_back((room_state.seq, frame.clone()));
                    room_state
                        .members
                        .retain(|member| member.send(frame.clone()).is_ok());
                }
                "U " => {
                    let Some((user, body)) = rest.split_once(' ') else {
                        continue;
                    };
                    let frame = Utf8Bytes::from(format!("M dm 0 {body}"));
                    if let Some(targets) = state.users.lock().get_mut(user) {
                        targets.retain(|target| target.send(frame.clone()).is_ok());
                    }
                }
                "R " => {
                    let Some((room, seq)) = rest.split_once(' ') else {
                        continue;
                    };
                    let after: u64 = seq.parse().unwrap_or(0);
                    let mut rooms = state.rooms.lock();
                    let room_state = rooms.entry(room.to_owned()).or_default();
                    for (_, frame) in room_state.log.iter().filter(|(s, _)| *s > after) {
                        let _ = outbox.send(frame.clone());
                    }
                    room_state.members.push(outbox.clone());
                }
                _ => {}
            }
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
}

/// A connected client.
pub async fn connect(addr: SocketAddr, user: &str, source: IpAddr, setup: Setup) -> Result<Conn> {
    let stream = tcp_from(source, addr).await?;
    let url = format!("ws://{addr}/");
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config())).await?;
    let (mut sink, mut stream) = ws.split();
    let mut rooms = HashMap::new();
    let mut early = VecDeque::new();
    let hello = format!("H {user}");
    let joins = setup.join.iter().map(|room| format!("J {room}"));
    for command in std::iter::once(hello).chain(joins) {
        sink.send(Message::Text(command.clone().into())).await?;
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == "OK" => break,
                Some(Ok(Message::Text(text))) => early.extend(parse(&text)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("closed during set-up".into()),
            }
        }
        if let Some(room) = command.strip_prefix("J ") {
            rooms.insert(room.to_owned(), 0);
        }
    }
    if let Some(Resume::Raw { room, seq }) = setup.resume {
        sink.send(Message::Text(format!("R {room} {seq}").into()))
            .await?;
        rooms.insert(room, seq);
    }
    Ok(Conn {
        tx: Box::new(RawTx { sink }),
        rx: Box::new(RawRx {
            stream,
            rooms,
            early,
        }),
    })
}

fn parse(text: &str) -> Option<Delivered> {
    let rest = text.strip_prefix("M ")?;
    let (room, rest) = rest.split_once(' ')?;
    let (seq, body) = rest.split_once(' ')?;
    Some(Delivered {
        room: room.to_owned(),
        seq: seq.parse().ok().filter(|s| *s > 0),
        body: body.to_owned(),
    })
}

struct RawTx {
    sink: SplitSink<WebSocketStream<TcpStream>, Message>,
}

#[async_trait]
impl Tx for RawTx {
    async fn send_room(&mut self, room: &str, body: &str) -> Result<()> {
        self.sink
            .send(Message::Text(format!("S {room} {body}").into()))
            .await?;
        Ok(())
    }

    async fn send_user(&mut self, user: &str, body: &str) -> Result<()> {
        self.sink
            .send(Message::Text(format!("U {user} {body}").into()))
            .await?;
        Ok(())
    }
}

struct RawRx {
    stream: SplitStream<WebSocketStream<TcpStream>>,
    rooms: HashMap<String, u64>,
    early: VecDeque<Delivered>,
}

#[async_trait]
impl Rx for RawRx {
    async fn next(&mut self) -> Result<Option<Delivered>> {
        if let Some(delivered) = self.early.pop_front() {
            return Ok(Some(delivered));
        }
        while let Some(read) = self.stream.next().await {
            match read {
                Ok(Message::Text(text)) => {
                    if let Some(delivered) = parse(&text) {
                        if let (Some(seq), Some(last)) =
                            (delivered.seq, self.rooms.get_mut(&delivered.room))
                        {
                            *last = (*last).max(seq);
                        }
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
        let (room, seq) = self.rooms.iter().next()?;
        Some(Resume::Raw {
            room: room.clone(),
            seq: *seq,
        })
    }
}
