//! A terminal chat client on the Rust client (`chat-client`, `chat_engine::client` in the facade): one line per event on
//! stdout, one message per line typed on stdin.
//!
//! ```sh
//! cargo run --example server                                     # in one terminal
//! cargo run --example cli -- --user alice --room general
//! cargo run --example cli -- --user bob --room general
//! cargo run --example cli -- --user bob --to alice   # a direct chat
//! ```
//!
//! `--url ws://HOST:PORT/ws` for another server than `ws://127.0.0.1:8080/ws`, `--history N`
//! for more or fewer earlier messages (default 20), `--help` for the usage.
//!
//! It logs in with the development token `dev:<user>`, joins the room (with `--to`, the
//! direct room of the two users, `dm:<a>:<b>`, needs no join: the first message makes both
//! members), prints the room's latest messages, then everything that happens live (in every
//! room of the user: a direct message arrives wherever you are chatting):
//!
//! ```text
//! [general] alice: hello              a message (yours too: the server's echo, shown once)
//! * bob joined general                a member came or left
//! * bob is online                     presence
//! * bob is typing…                    shown when it starts; nothing is printed when it stops
//! * reconnecting… (…)                 the connection was lost; the client resumes by itself
//! * connected                         …and is back, without a gap or a duplicate
//! ```
//!
//! If the room is gone when the client reconnects (a demo server restarted with an empty
//! store), it joins it again.
//!
//! Lines starting with `* ` are status; every other stdout line is a message,
//! `[room] user: body`, with control characters of the body escaped (`\n`), so that each
//! event is exactly one line. Errors go to stderr.
//!
//! Each line you type is sent; `/quit` or end of input (Ctrl-D) sends what is still
//! waiting, closes the connection and exits 0. `/who` lists the members, `/help` the
//! commands. The terminal hands over a line only when you press Enter, so this client
//! cannot tell when you are typing and sends no typing indicator (it shows other people's).
//! Messages shown are marked read, so other members see read receipts.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::time::Duration;

use chat_client::{
    Client, ClientBuilder, ConnectionState, Event, Events, HistoryQuery, MemberInfo, Reset,
};
use chat_engine::core::protocol::{ErrorCode, MemberAction, PresenceStatus};
use chat_engine::{Message, RoomId, Seq, UserId};
use tokio::sync::mpsc;

const USAGE: &str = "\
usage: cli --user NAME [--room ROOM | --to USER] [--url URL] [--history N]

  --user NAME   who you are (logs in with the development token dev:NAME)
  --room ROOM   the room to chat in (default: general)
  --to USER     a direct chat with USER instead of a room
  --url URL     the server (default: ws://127.0.0.1:8080/ws)
  --history N   how many earlier messages to show (default: 20)

Type a line and Enter to send it. /who lists the members, /quit (or Ctrl-D) exits.";

const HELP: &str = "\
* type a line and press Enter to send it
* /who    the members and who is online
* /quit   leave (Ctrl-D too); //text sends \"/text\"";

/// How long the reload of a reset room may hold up the display.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing may take at exit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the typed lines go.
#[derive(Debug, Clone)]
enum Target {
    Room(RoomId),
    To(UserId),
}

#[derive(Debug)]
struct Args {
    url: String,
    user: UserId,
    target: Target,
    history: u32,
}

/// `Ok(None)`: `--help` was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut url = "ws://127.0.0.1:8080/ws".to_owned();
    let (mut user, mut room, mut to) = (None, None, None);
    let mut history = 20;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--user" => {
                let v = value("--user")?;
                user = Some(UserId::new(&v).map_err(|e| format!("--user {v:?}: {e}"))?);
            }
            "--room" => {
                let v = value("--room")?;
                room = Some(RoomId::new(&v).map_err(|e| format!("--room {v:?}: {e}"))?);
            }
            "--to" => {
                let v = value("--to")?;
                to = Some(UserId::new(&v).map_err(|e| format!("--to {v:?}: {e}"))?);
            }
            "--url" => url = value("--url")?,
            "--history" => {
                let v = value("--history")?;
                history = v.parse().map_err(|e| format!("--history {v:?}: {e}"))?;
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let user = user.ok_or("--user is required")?;
    let target = match (room, to) {
        (Some(_), Some(_)) => return Err("use either --room or --to, not both".to_owned()),
        (_, Some(to)) => Target::To(to),
        (Some(room), None) => Target::Room(room),
        (None, None) => Target::Room(RoomId::new("general").map_err(|e| e.to_string())?),
    };
    Ok(Some(Args {
        url,
        user,
        target,
        history,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => match run(args).await {
            Ok(code) => code,
            Err(message) => {
                eprintln!("cli: {message}");
                ExitCode::FAILURE
            }
        },
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("cli: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let token = format!("dev:{}", args.user);
    let (client, mut events) = ClientBuilder::new(args.url.as_str(), token)
        .connect()
        .await
        .map_err(|e| format!("{}: {e}", args.url))?;
    let me = client.user().unwrap_or(args.user);
    let room = match &args.target {
        Target::Room(room) => room.clone(),
        Target::To(peer) => RoomId::direct(&me, peer),
    };
    // A room is joined. A direct room is not: the first message sent to the other user,
    // from either side, makes both of them members.
    if let Target::Room(room) = &args.target {
        client
            .join(room)
            .await
            .map_err(|e| format!("cannot join {room}: {e}"))?;
    }
    println!("* connected to {} as {me}", args.url);

    let mut view = View::new(me.clone(), room.clone(), args.history);
    view.reload(&client, &room).await;
    match &args.target {
        Target::Room(room) => {
            match client.members(room).await {
                Ok(members) => println!("* {}", members_line(room, &members)),
                Err(e) => eprintln!("cli: members of {room}: {e}"),
            }
            println!("* chatting in {room} as {me} (/help for commands)");
        }
        Target::To(peer) => {
            match client.presence(std::slice::from_ref(peer)).await {
                Ok(users) => {
                    for user in users {
                        println!("* {} is {}", user.user, status(user.status));
                    }
                }
                Err(e) => eprintln!("cli: presence of {peer}: {e}"),
            }
            println!("* chatting with {peer} in {room} as {me} (/help for commands)");
        }
    }
    view.mark_read(&client);

    // Lines from stdin, read on a thread of their own: a blocking read cannot be cancelled,
    // and the process must be able to exit while one is waiting.
    let (line_tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Sends go out one after another from a task of their own, in the order typed, while
    // this task keeps showing events (a request awaited here would hold up the display).
    let (send_tx, send_rx) = mpsc::unbounded_channel();
    let mut sender = tokio::spawn(send_lines(client.clone(), args.target.clone(), send_rx));
    let mut send_tx = Some(send_tx);

    let code = 'main: loop {
        tokio::select! {
            line = lines.recv(), if send_tx.is_some() => {
                let Some(line) = line else {
                    send_tx = None; // end of input: finish sending, then leave
                    continue;
                };
                match line.trim_end() {
                    "" => {}
                    "/quit" | "/exit" => send_tx = None,
                    "/help" => println!("{HELP}"),
                    "/who" => {
                        let (client, room) = (client.clone(), room.clone());
                        tokio::spawn(async move {
                            match client.members(&room).await {
                                Ok(members) => println!("* {}", members_line(&room, &members)),
                                Err(e) => eprintln!("cli: members of {room}: {e}"),
                            }
                        });
                    }
                    text => {
                        let text = match text.strip_prefix('/') {
                            Some(rest) if rest.starts_with('/') => rest,
                            Some(_) => {
                                eprintln!("cli: unknown command {text:?} (/help lists them)");
                                continue;
                            }
                            None => text,
                        };
                        if let Some(tx) = &send_tx {
                            let _ = tx.send(text.to_owned());
                        }
                    }
                }
            }
            // Everything typed was sent (or refused): leave.
            _ = &mut sender, if send_tx.is_none() => break ExitCode::SUCCESS,
            event = events.next() => {
                let Some(event) = event else { break ExitCode::FAILURE };
                if let Some(code) = view.show(&client, event).await {
                    break code;
                }
                // Show whatever else is waiting before marking it read.
                while let Some(event) = events.try_next() {
                    if let Some(code) = view.show(&client, event).await {
                        break 'main code;
                    }
                }
                view.mark_read(&client);
            }
        }
    };
    close(&client, &mut events).await;
    Ok(code)
}

/// Sends each line, in order; reports the ones the server refused.
async fn send_lines(client: Client, target: Target, mut lines: mpsc::UnboundedReceiver<String>) {
    while let Some(line) = lines.recv().await {
        let sent = match &target {
            Target::Room(room) => client.send(room, line.as_str()).await,
            Target::To(user) => client.send_to(user, line.as_str()).await,
        };
        if let Err(e) = sent {
            eprintln!("cli: not sent ({e}): {line}");
        }
    }
}

/// Closes the client and waits (a little) until the connection is closed.
async fn close(client: &Client, events: &mut Events) {
    client.close().await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while events.next().await.is_some() {}
    })
    .await;
}

/// What is on the screen.
#[derive(Debug)]
struct View {
    me: UserId,
    room: RoomId,
    history: u32,
    /// The last seq printed per room: messages at or below it are not printed again
    /// (the history shown at start may overlap the first live messages).
    shown: HashMap<RoomId, Seq>,
    /// Shown but not yet marked read.
    unread: HashMap<RoomId, Seq>,
    /// Who is typing, per room, as last printed.
    typing: HashSet<(RoomId, UserId)>,
    online: bool,
}

impl View {
    fn new(me: UserId, room: RoomId, history: u32) -> View {
        View {
            me,
            room,
            history,
            shown: HashMap::new(),
            unread: HashMap::new(),
            typing: HashSet::new(),
            online: true,
        }
    }

    /// `(in ROOM)` for another room than the one chatted in.
    fn elsewhere(&self, room: &RoomId) -> String {
        if *room == self.room {
            String::new()
        } else {
            format!(" (in {room})")
        }
    }

    fn print_message(&mut self, message: &Message) {
        if self
            .shown
            .get(&message.room)
            .is_some_and(|&last| message.seq <= last)
        {
            return;
        }
        println!(
            "[{}] {}: {}",
            message.room,
            message.from,
            escape(&message.body)
        );
        self.shown.insert(message.room.clone(), message.seq);
        self.unread.insert(message.room.clone(), message.seq);
        self.typing
            .remove(&(message.room.clone(), message.from.clone()));
    }

    /// Prints the latest messages of `room`.
    async fn reload(&mut self, client: &Client, room: &RoomId) {
        if self.history == 0 {
            return;
        }
        let page = tokio::time::timeout(
            RELOAD_TIMEOUT,
            client.history(room, HistoryQuery::Latest, Some(self.history)),
        )
        .await;
        match page {
            Ok(Ok(page)) => {
                if page.more {
                    println!("* earlier messages of {room} not shown");
                }
                for message in &page.messages {
                    self.print_message(message);
                }
            }
            // Not a member of the direct room yet: nothing was said in it.
            Ok(Err(e)) if room.is_direct() && e.code() == Some(ErrorCode::Forbidden) => {}
            Ok(Err(e)) => eprintln!("cli: history of {room}: {e}"),
            Err(_) => eprintln!("cli: history of {room}: no answer in time"),
        }
    }

    /// Prints one event; `Some(code)` when the client stopped by itself.
    async fn show(&mut self, client: &Client, event: Event) -> Option<ExitCode> {
        match event {
            Event::Message(message) => self.print_message(&message),
            Event::Typing(typing) if typing.user != self.me => {
                let key = (typing.room.clone(), typing.user.clone());
                if !typing.active {
                    self.typing.remove(&key);
                } else if self.typing.insert(key) {
                    let at = self.elsewhere(&typing.room);
                    println!("* {} is typing…{at}", typing.user);
                }
            }
            Event::Presence(presence) if presence.user != self.me => {
                println!("* {} is {}", presence.user, status(presence.status));
            }
            Event::Member(member) if member.user != self.me => match member.action {
                MemberAction::Join => println!("* {} joined {}", member.user, member.room),
                MemberAction::Leave => println!("* {} left {}", member.user, member.room),
            },
            Event::Reset(reset) => self.reset(client, reset).await,
            Event::State(state) => return self.state(state),
            _ => {}
        }
        None
    }

    async fn reset(&mut self, client: &Client, reset: Reset) {
        let Reset { room, epoch, .. } = reset;
        self.shown.remove(&room);
        self.unread.remove(&room);
        if epoch.is_some() {
            println!("* {room} was reset on the server; its latest messages follow");
            self.reload(client, &room).await;
        } else if room != self.room {
            println!("* you are no longer a member of {room}");
        } else if room.is_direct() {
            // The next message, from either side, makes both members again.
            println!("* {room} is gone from the server (restarted?)");
        } else {
            // The room chatted in is gone (a server restarted with an empty store, say):
            // join it again, as at start.
            println!("* {room} is gone from the server (restarted?); joining it again");
            match tokio::time::timeout(RELOAD_TIMEOUT, client.join(&room)).await {
                Ok(Ok(_)) => self.reload(client, &room).await,
                Ok(Err(e)) => eprintln!("cli: cannot join {room}: {e}"),
                Err(_) => eprintln!("cli: cannot join {room}: no answer in time"),
            }
        }
    }

    fn state(&mut self, state: ConnectionState) -> Option<ExitCode> {
        match state {
            ConnectionState::Disconnected { reason } if self.online => {
                self.online = false;
                self.typing.clear();
                println!("* reconnecting… ({reason})");
            }
            ConnectionState::Connecting { attempt } if !self.online && attempt % 10 == 0 => {
                println!("* still reconnecting… (attempt {attempt})");
            }
            ConnectionState::Connected { .. } if !self.online => {
                self.online = true;
                println!("* connected");
            }
            ConnectionState::Closed { reason } => {
                println!("* closed: {reason}");
                return Some(ExitCode::FAILURE);
            }
            _ => {}
        }
        None
    }

    /// Marks what was shown as read (in the background: the display goes on).
    fn mark_read(&mut self, client: &Client) {
        for (room, seq) in self.unread.drain() {
            let client = client.clone();
            tokio::spawn(async move {
                let _ = client.mark_read(&room, seq).await;
            });
        }
    }
}

fn members_line(room: &RoomId, members: &[MemberInfo]) -> String {
    let list: Vec<String> = members
        .iter()
        .map(|m| format!("{} ({})", m.user, status(m.status)))
        .collect();
    format!("members of {room}: {}", list.join(", "))
}

fn status(status: PresenceStatus) -> &'static str {
    match status {
        PresenceStatus::Online => "online",
        PresenceStatus::Offline => "offline",
    }
}

/// The body on one line: control characters (newlines, terminal escapes) escaped.
fn escape(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    for c in body.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
