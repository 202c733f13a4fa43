//! An application that embeds the Rust client: a bot that answers every message with
//! `echo: <body>`.
//!
//! ```sh
//! cargo run --example server                                   # in one terminal
//! cargo run --example echo_bot -- --room general
//! cargo run --example cli -- --user alice    # say something
//! ```
//!
//! Options: `--user NAME` (default `echo-bot`), `--room ROOM` (default `general`),
//! `--url URL` (default `ws://127.0.0.1:8080/ws`). It also answers direct messages, in the
//! direct room they came from.

use chat_client::{ConnectionState, Event, connect};
use chat_engine::{RoomId, UserId};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut url, mut user, mut room) = (
        "ws://127.0.0.1:8080/ws".to_owned(),
        "echo-bot".to_owned(),
        "general".to_owned(),
    );
    const USAGE: &str = "usage: echo_bot [--user NAME] [--room ROOM] [--url URL]";
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => url = value()?,
            "--user" => user = value()?,
            "--room" => room = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}").into()),
        }
    }
    let me = UserId::new(&user)?;
    let room = RoomId::new(&room)?;

    // Connect and log in (the demo server's development token is `dev:<user>`). From here on
    // the client reconnects by itself and resumes every room without a gap or a duplicate.
    let (client, mut events) = connect(url.as_str(), format!("dev:{me}")).await?;
    client.join(&room).await?;
    println!("{me} is listening in {room}");

    // Every event comes through this one stream, in order: messages (each exactly once,
    // ours included, as the server echoes them), presence, typing, connection changes…
    while let Some(event) = events.next().await {
        match event {
            // Never answer ourselves: our own replies come back as messages too, and
            // answering them would loop forever. (Two echo bots would still answer each
            // other; a real bot would also skip other bots.)
            Event::Message(message) if message.from != me => {
                let reply = format!("echo: {}", message.body);
                // `send` returns once the server stored the reply. Awaiting it here keeps
                // the replies in order; a busy bot would hand them to a task of its own,
                // so that events keep being read meanwhile.
                if let Err(e) = client.send(&message.room, reply).await {
                    eprintln!("could not answer #{} in {}: {e}", message.seq, message.room);
                }
            }
            Event::State(ConnectionState::Disconnected { reason }) => {
                eprintln!("connection lost ({reason}); reconnecting");
            }
            // Closed for good (a refused token, say): the stream ends after this.
            Event::State(ConnectionState::Closed { reason }) => eprintln!("stopped: {reason}"),
            _ => {}
        }
    }
    Ok(())
}
