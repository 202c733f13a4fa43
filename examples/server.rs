//! The chat-engine demo server: protocol v1 over WebSocket, in-memory store, development
//! authentication.
//!
//! ```sh
//! cargo run --release --example server                 # ws://127.0.0.1:8080/ws
//! cargo run --release --example server -- --addr 0.0.0.0:9000
//! ```
//!
//! Logs go through `tracing` (`RUST_LOG=debug` for more). Ctrl-C shuts down gracefully:
//! every client gets close 1001 and may reconnect elsewhere.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use chat_engine::core::auth::DevAuthenticator;
use chat_engine::ws::WsServer;

const USAGE: &str = "usage: server [--addr HOST:PORT]   (default 127.0.0.1:8080)";

fn parse_args() -> Result<SocketAddr, String> {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let value = args.next().ok_or("--addr needs HOST:PORT")?;
                addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(addr)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = match parse_args() {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };

    let engine = chat_engine::memory::engine_builder(Arc::new(DevAuthenticator)).build();
    let server = match WsServer::bind(addr, engine).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = server.local_addr().unwrap_or(addr);
    tracing::warn!(
        "DEVELOPMENT AUTHENTICATION: any token \"dev:<user>\" logs in as <user>; \
         anyone can be anyone. Do not expose this server."
    );
    println!(
        "chat-engine demo server
  WebSocket  ws://{local}/ws   (protocol v1: docs/protocol.md)
  store      in memory: history is lost when the server stops
  auth       development: the token \"dev:<user>\" logs in as <user>

Chat from any WebSocket client, e.g. `websocat ws://{local}/ws`, one JSON object per line:
  {{\"type\":\"hello\",\"id\":1,\"token\":\"dev:alice\"}}
  {{\"type\":\"join\",\"id\":2,\"room\":\"general\"}}
  {{\"type\":\"send\",\"id\":3,\"room\":\"general\",\"cid\":\"c-1\",\"body\":\"hello\"}}
Ctrl-C stops the server."
    );
    let result = server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: closing every connection with 1001");
        })
        .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
