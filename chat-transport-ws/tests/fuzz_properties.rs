//! The fuzz targets' harnesses (`chat_transport_ws::fuzzing`, run by `fuzz/` with
//! cargo-fuzz) under `cargo test`: over the seed inputs committed in `fuzz/corpus/`, and
//! over inputs proptest generates in their shape. Each harness panics when an invariant
//! breaks; see `chat_transport_ws::fuzzing` for what each checks.

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use chat_core::auth::DevAuthenticator;
use chat_core::{Clock, Engine, EngineConfig};
use chat_transport_ws::fuzzing::{self, ConnectionHarness, EngineHarness, HandshakeHarness};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The committed seeds of a fuzz target: `fuzz/corpus/<target>/seed-*`.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("seed-"))
        })
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Runs `harness` over every seed, naming the seed that fails.
fn over_seeds(target: &str, mut harness: impl FnMut(&[u8])) {
    for (name, data) in seeds(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness(&data)));
        if let Err(panic) = outcome {
            eprintln!("seed {name} failed");
            std::panic::resume_unwind(panic);
        }
    }
}

/// Runs `harness` over `cases` generated inputs (a fixed seed: the same inputs each run).
fn over_generated<S: Strategy<Value = Vec<u8>>>(
    cases: u32,
    strategy: S,
    harness: impl FnMut(&[u8]),
) {
    let harness = RefCell::new(harness);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    runner
        .run(&strategy, |data| {
            (harness.borrow_mut())(&data);
            Ok(())
        })
        .unwrap();
}

fn memory_engine(config: EngineConfig) -> Engine {
    chat_store_memory::engine_builder(Arc::new(DevAuthenticator))
        .config(config)
        .build()
}

fn paused_engine(config: EngineConfig) -> Engine {
    chat_store_memory::engine_builder(Arc::new(DevAuthenticator))
        .config(config)
        .clock(Clock::tokio())
        .build()
}

fn engine_harness() -> EngineHarness {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    EngineHarness::new(runtime, paused_engine)
}

// --- Generated inputs, in the shapes the targets take ---------------------------------

/// A JSON value of the kinds protocol v1 fields take, valid or not.
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "7",
            "1.5",
            "1e3",
            "9007199254740991",
            "9007199254740992",
            "18446744073709551616",
            "null",
            "true",
            "false",
            "[]",
            "{}",
            r#""""#,
            r#""general""#,
            r#""dm:alice:bob""#,
            r#""dm:fz1:bob""#,
            r#""bob""#,
            r#""no spaces allowed""#,
            r#""dev:alice""#,
            r#""\u0000\ud800""#,
            r#"["alice","bob"]"#,
            r#"[1,2]"#,
            r#"{"general":{"epoch":"e","seq":1}}"#,
            r#"{"k":{"deep":[1,{"x":null}]}}"#,
        ])
        .prop_map(str::to_owned),
        "[a-z0-9 é\"\\\\]{0,80}".prop_map(|s| format!("{s:?}")),
    ]
}

/// A JSON object with protocol v1's field names, in any combination.
fn json_request() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        "hello", "join", "leave", "send", "history", "members", "presence", "ping", "receipt",
        "typing", "nope",
    ]);
    let field = prop::sample::select(vec![
        "id",
        "room",
        "to",
        "cid",
        "body",
        "meta",
        "before",
        "after",
        "limit",
        "users",
        "token",
        "resume",
        "delivered",
        "read",
        "active",
        "type",
    ]);
    (
        kind,
        prop::option::of(0..20u64),
        prop::collection::vec((field, json_value()), 0..6),
    )
        .prop_map(|(kind, id, fields)| {
            let mut parts = vec![format!(r#""type":"{kind}""#)];
            if let Some(id) = id {
                parts.push(format!(r#""id":{id}"#));
            }
            parts.extend(fields.into_iter().map(|(k, v)| format!(r#""{k}":{v}"#)));
            format!("{{{}}}", parts.join(","))
        })
}

/// Client frames: headers of every kind (some broken), payloads of requests or bytes.
fn client_stream() -> impl Strategy<Value = Vec<u8>> {
    let payload = prop_oneof![
        json_request().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..40),
        Just(vec![0x03, 0xE8]),
        (1000..5000u16, "[a-z]{0,4}").prop_map(|(code, reason)| {
            let mut out = code.to_be_bytes().to_vec();
            out.extend_from_slice(reason.as_bytes());
            out
        }),
    ];
    let opcode = prop_oneof![
        4 => prop::sample::select(vec![0x0u8, 0x1, 0x2, 0x8, 0x9, 0xA]),
        1 => 0..16u8,
    ];
    let frame = (
        any::<bool>(),
        opcode,
        payload,
        any::<[u8; 4]>(),
        prop_oneof![8 => Just(0u8), 1 => 0..4u8],
    );
    (
        prop::collection::vec(frame, 0..8),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(frames, tail)| {
            let mut out = Vec::new();
            for (fin, opcode, payload, mask, quirk) in frames {
                let fin = fin || quirk != 1;
                out.push(u8::from(fin) << 7 | opcode);
                let len = payload.len();
                match quirk {
                    // The long forms for a short length.
                    2 => {
                        out.push(0x80 | 126);
                        out.extend_from_slice(&(len as u16).to_be_bytes());
                    }
                    3 => {
                        out.push(0x80 | 127);
                        out.extend_from_slice(&(len as u64).to_be_bytes());
                    }
                    _ if len < 126 => out.push(0x80 | len as u8),
                    _ => {
                        out.push(0x80 | 126);
                        out.extend_from_slice(&(len as u16).to_be_bytes());
                    }
                }
                out.extend_from_slice(&mask);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            }
            out.extend_from_slice(&tail);
            out
        })
}

/// A request head of the WebSocket upgrade, and variations, after the 3 setting bytes.
fn handshake_input() -> impl Strategy<Value = Vec<u8>> {
    let header = prop::sample::select(vec![
        "Host: a",
        "Upgrade: websocket",
        "Upgrade: h2c, WebSocket",
        "Upgrade: web socket",
        "Connection: Upgrade",
        "Connection: keep-alive, upgrade",
        "Connection: close",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Version: 8",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Key:  AQIDBAUGBwgJCgsMDQ4PEA== ",
        "Sec-WebSocket-Key: short",
        "Origin: https://chat.example",
        "Origin: HTTPS://CHAT.EXAMPLE",
        "Origin: https://evil.example",
        "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "Bad Header: x",
        "Héader: x",
    ]);
    (
        any::<[u8; 3]>(),
        prop::sample::select(vec!["GET", "HEAD", "POST", "G T", ""]),
        prop::sample::select(vec!["/ws", "/", "/ws?x=1", "/chat", "/other", "*"]),
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x"]),
        prop::collection::vec(header, 0..10),
        prop::sample::select(vec!["\r\n\r\n", "\r\n", "\n\n", ""]),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(settings, method, path, version, headers, end, tail)| {
            let mut out = settings.to_vec();
            out.extend_from_slice(format!("{method} {path} {version}").as_bytes());
            for header in headers {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(header.as_bytes());
            }
            out.extend_from_slice(end.as_bytes());
            out.extend_from_slice(&tail);
            out
        })
}

/// `\n`-separated frames for the engine: requests, garbage, and the tag bytes (1 binary,
/// 2 heartbeat, 3 over the limit).
fn engine_input() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        8 => json_request().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
        1 => prop::sample::select(vec![vec![1u8], vec![2], vec![3]]),
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join(&b'\n'))
}

// --- The seeds ----------------------------------------------------------------------

#[test]
fn protocol_decode_seeds() {
    over_seeds("protocol_decode", fuzzing::protocol_decode);
}

#[test]
fn ws_frames_seeds() {
    over_seeds("ws_frames", fuzzing::ws_frames);
}

#[test]
fn ws_handshake_seeds() {
    let mut harness = HandshakeHarness::new();
    over_seeds("ws_handshake", |data| harness.run(data));
}

#[test]
fn ws_connection_seeds() {
    let mut harness = ConnectionHarness::new(memory_engine);
    over_seeds("ws_connection", |data| harness.run(data));
}

#[test]
fn engine_requests_seeds() {
    let mut harness = engine_harness();
    over_seeds("engine_requests", |data| harness.run(data));
}

// --- Generated inputs ---------------------------------------------------------------

#[test]
fn protocol_decode_generated() {
    over_generated(
        400,
        prop_oneof![
            json_request().prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..256),
        ],
        fuzzing::protocol_decode,
    );
}

#[test]
fn ws_frames_generated() {
    over_generated(
        400,
        prop_oneof![
            3 => client_stream(),
            1 => prop::collection::vec(any::<u8>(), 0..64),
        ],
        fuzzing::ws_frames,
    );
}

#[test]
fn ws_handshake_generated() {
    let mut harness = HandshakeHarness::new();
    over_generated(150, handshake_input(), |data| harness.run(data));
}

#[test]
fn ws_connection_generated() {
    let mut harness = ConnectionHarness::new(memory_engine);
    let input =
        (prop_oneof![3 => Just(0u8), 1 => 1..8u8], client_stream()).prop_map(|(piece, stream)| {
            let mut out = vec![piece];
            out.extend(stream);
            out
        });
    over_generated(80, input, |data| harness.run(data));
}

#[test]
fn engine_requests_generated() {
    let mut harness = engine_harness();
    over_generated(150, engine_input(), |data| harness.run(data));
}
