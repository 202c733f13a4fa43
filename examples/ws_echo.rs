//! A WebSocket echo server on chat-engine's own RFC 6455 implementation (the transport of
//! `WsServer`, without the chat engine), for conformance suites: `scripts/autobahn_check.sh`
//! runs the Autobahn fuzzing client against it.
//!
//! ```sh
//! cargo run --release --example ws_echo -- 127.0.0.1:9001
//! ```

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(local) => println!("echo ws://{local}/"),
        Err(_) => println!("echo ws://{addr}/"),
    }
    // Autobahn's largest messages in cases 1-7 and 10 are 64 KiB; leave room.
    match chat_engine::ws::conformance::echo(listener, 16 << 20).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
