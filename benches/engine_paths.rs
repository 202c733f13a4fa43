//! Criterion benchmarks of the engine's hot paths, each beside a baseline measured in the
//! same group of the same run, so that the report reads as ratios (the machine is shared
//! and noisy; absolute times drift).
//!
//! | group | engine | baseline |
//! |---|---|---|
//! | `store_append` | `MemoryStore::append` through `Arc<dyn MessageStore>` | the same trait over one mutex around a `Vec` and a `HashMap` per room |
//! | `encode` | `ServerFrame::Message(..).encode()`, 100-byte body | the same push built as a `serde_json::Value`, then `serde_json::to_vec` |
//! | `encode` | encode once, clone for 1,000 recipients | encode for each of 1,000 recipients |
//! | `fanout` | one `send` into a room of N sessions through `Engine::serve`, until every session's sink got the push | N tokio channels fed a clone of the same bytes by a plain loop (the floor) |
//!
//! The fan-out sessions are driven in process through futures channels, as in
//! `chat-core/tests/engine_fanout.rs`: `hello` and `join` for every session happen once per
//! N, outside the timed part; each timed iteration is one `send` and ends when the last of
//! the N sessions' sinks got its `message` push (bounded by a 10 s timeout).
//!
//! After the groups a summary prints, for each pair, the medians criterion measured and
//! their ratio, and a *paired* ratio: the median over rounds that alternate engine and
//! baseline back to back, which drift on a shared machine moves much less.
//!
//! Run: `cargo bench --bench engine_paths` (about 70 s); one group:
//! `cargo bench --bench engine_paths -- fanout`. Without `--bench` (`cargo test --benches`,
//! the CI smoke run) criterion runs each benchmark once and no summary is printed.

#![allow(clippy::unwrap_used)]

#[path = "support/naive_store.rs"]
mod naive_store;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_engine::core::auth::DevAuthenticator;
use chat_engine::core::engine::{Inbound, Outbound, Peer};
use chat_engine::core::protocol::{Encoded, ServerFrame};
use chat_engine::core::{
    ClientMsgId, Engine, EngineConfig, Message, MessageStore, NewMessage, RoomId, Seq, Timestamp,
    UserId,
};
use chat_engine::memory::MemoryStore;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use naive_store::NaiveStore;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Measured samples per benchmark, in the groups that take many short iterations …
const SAMPLES: usize = 50;
/// … and in `fanout`, whose iterations are long (flat sampling).
const FANOUT_SAMPLES: usize = 30;
/// Recipients in the `encode` pair that shows why the engine encodes once.
const RECIPIENTS: usize = 1_000;
/// Room sizes of the `fanout` group.
const FANOUT_SIZES: [usize; 3] = [10, 100, 1_000];
/// Appends per fresh store in `store_append`: keeps memory bounded however many iterations
/// criterion asks for.
const APPEND_CHUNK: u64 = 10_000;
/// The longest one fan-out iteration (or setup step) may take before the bench fails.
const ITERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds of the paired ratio (engine and baseline alternate, each first in turn) …
const PAIRED_ROUNDS: usize = 9;
/// … each side of a round running about this long.
const PAIRED_ROUND: Duration = Duration::from_millis(40);

fn body() -> String {
    "x".repeat(100)
}

// ---------------------------------------------------------------------------------------
// Benchmarks as pairs of routines, shared by criterion and the paired ratio.

/// A routine: runs `iters` iterations and returns the time of its timed part. Routines
/// with a fixture set it up on their first call (`iters` 0 does only that).
type Routine<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// One benchmark of a pair.
struct Bench<'a> {
    function: &'static str,
    run: Routine<'a>,
}

/// An engine path and its baseline, benchmarked side by side in one criterion group.
struct Pair<'a> {
    label: String,
    /// Criterion's parameter (the room size in `fanout`), also the throughput in elements.
    parameter: Option<usize>,
    ours: Bench<'a>,
    theirs: Bench<'a>,
}

impl<'a> Pair<'a> {
    fn new(
        label: impl Into<String>,
        parameter: Option<usize>,
        ours: (&'static str, Routine<'a>),
        theirs: (&'static str, Routine<'a>),
    ) -> Pair<'a> {
        Pair {
            label: label.into(),
            parameter,
            ours: Bench {
                function: ours.0,
                run: ours.1,
            },
            theirs: Bench {
                function: theirs.0,
                run: theirs.1,
            },
        }
    }
}

/// A group of pairs under one criterion group name.
struct Group<'a> {
    name: &'static str,
    samples: usize,
    flat: bool,
    pairs: Vec<Pair<'a>>,
}

/// A benchmark's name as criterion prints it: `group/function[/parameter]`.
fn key(group: &str, function: &str, parameter: Option<usize>) -> String {
    match parameter {
        Some(p) => format!("{group}/{function}/{p}"),
        None => format!("{group}/{function}"),
    }
}

impl Group<'_> {
    fn bench(&mut self, c: &mut Criterion, recorder: &Recorder) {
        let mut group = c.benchmark_group(self.name);
        group.sample_size(self.samples);
        if self.flat {
            group.sampling_mode(SamplingMode::Flat);
        }
        let name = self.name;
        for pair in &mut self.pairs {
            if let Some(n) = pair.parameter {
                group.throughput(Throughput::Elements(n as u64));
            }
            for bench in [&mut pair.ours, &mut pair.theirs] {
                let key = key(name, bench.function, pair.parameter);
                let id = match pair.parameter {
                    Some(p) => BenchmarkId::new(bench.function, p),
                    None => BenchmarkId::from_parameter(bench.function),
                };
                let run = &mut bench.run;
                group.bench_function(id, |b| {
                    // Zero iterations: the set-up, if any, outside criterion's clock.
                    run(0);
                    b.iter_custom(|iters| {
                        let elapsed = run(iters);
                        recorder.record(&key, elapsed, iters);
                        elapsed
                    });
                });
            }
        }
        group.finish();
    }
}

/// Every sample criterion took of each benchmark (warm-up calls included; the measured ones
/// are the last `samples`), as nanoseconds per iteration.
#[derive(Debug, Default)]
struct Recorder {
    samples: RefCell<HashMap<String, Vec<f64>>>,
}

impl Recorder {
    fn record(&self, key: &str, elapsed: Duration, iters: u64) {
        self.samples
            .borrow_mut()
            .entry(key.to_owned())
            .or_default()
            .push(elapsed.as_nanos() as f64 / iters.max(1) as f64);
    }

    /// Criterion calls a routine for its warm-up, then exactly `samples` times to measure.
    fn median(&self, key: &str, samples: usize) -> Option<f64> {
        let all = self.samples.borrow();
        let taken = all.get(key)?;
        if taken.len() < samples {
            return None;
        }
        Some(median(taken[taken.len() - samples..].to_vec()))
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

// ---------------------------------------------------------------------------------------
// store_append

/// `iters` appends of 100-byte messages by one task into one room, in chunks of
/// [`APPEND_CHUNK`], each into a fresh store; only the appends are timed.
async fn append_timed(new_store: fn() -> Arc<dyn MessageStore>, iters: u64) -> Duration {
    let room = RoomId::new("bench").unwrap();
    let from = UserId::new("alice").unwrap();
    let body = body();
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(APPEND_CHUNK);
        left -= chunk;
        let store = new_store();
        store.ensure_room(&room).await.unwrap();
        let messages: Vec<NewMessage> = (0..chunk)
            .map(|i| NewMessage {
                room: room.clone(),
                from: from.clone(),
                cid: ClientMsgId::new(&format!("c{i}")).unwrap(),
                body: body.clone(),
                meta: None,
                ts: Timestamp::from_millis(i),
            })
            .collect();
        let started = Instant::now();
        for message in messages {
            black_box(store.append(message).await.unwrap());
        }
        total += started.elapsed();
    }
    total
}

fn store_append(rt: &Runtime) -> Group<'_> {
    Group {
        name: "store_append",
        samples: SAMPLES,
        flat: false,
        pairs: vec![Pair::new(
            "store_append (1 task): memory / naive",
            None,
            (
                "memory",
                Box::new(|iters| rt.block_on(append_timed(|| Arc::new(MemoryStore::new()), iters))),
            ),
            (
                "naive",
                Box::new(|iters| {
                    rt.block_on(append_timed(|| Arc::new(NaiveStore::default()), iters))
                }),
            ),
        )],
    }
}

// ---------------------------------------------------------------------------------------
// encode

fn sample_message() -> Message {
    Message {
        room: RoomId::new("general").unwrap(),
        seq: Seq::new(4_242).unwrap(),
        from: UserId::new("alice").unwrap(),
        cid: ClientMsgId::new("c-0192-7f3a").unwrap(),
        body: body(),
        ts: Timestamp::from_millis(1_767_225_600_000),
        meta: None,
    }
}

/// The naive way: the push built as a `Value` (the strings copied into it), then written.
fn naive_push(m: &Message) -> Bytes {
    let value = json!({
        "type": "message",
        "room": m.room.as_str(),
        "seq": m.seq.get(),
        "from": m.from.as_str(),
        "cid": m.cid.as_str(),
        "body": m.body,
        "ts": m.ts.as_millis(),
    });
    Bytes::from(serde_json::to_vec(&value).unwrap())
}

/// Encodes `frame` for `RECIPIENTS` queues, once or once per queue, `iters` times.
fn fan_encode(frame: ServerFrame, once: bool) -> Routine<'static> {
    let mut queues: Vec<Encoded> = Vec::with_capacity(RECIPIENTS);
    Box::new(move |iters| {
        let started = Instant::now();
        for _ in 0..iters {
            if once {
                let encoded = black_box(&frame).encode();
                for _ in 0..RECIPIENTS {
                    queues.push(encoded.clone());
                }
            } else {
                for _ in 0..RECIPIENTS {
                    queues.push(black_box(&frame).encode());
                }
            }
            black_box(&queues);
            queues.clear();
        }
        started.elapsed()
    })
}

fn encode() -> Group<'static> {
    let message = sample_message();
    let frame = ServerFrame::Message(message.clone());
    // Both sides write the same push (key order aside).
    let ours: Value = serde_json::from_slice(frame.encode().as_bytes()).unwrap();
    let naive: Value = serde_json::from_slice(&naive_push(&message)).unwrap();
    assert_eq!(ours, naive, "the baseline writes a different push");
    let single = frame.clone();
    Group {
        name: "encode",
        samples: SAMPLES,
        flat: false,
        pairs: vec![
            Pair::new(
                "encode: frame.encode / Value + to_vec",
                None,
                (
                    "frame_encode",
                    Box::new(move |iters| {
                        let started = Instant::now();
                        for _ in 0..iters {
                            black_box(black_box(&single).encode());
                        }
                        started.elapsed()
                    }),
                ),
                (
                    "value_to_vec",
                    Box::new(move |iters| {
                        let started = Instant::now();
                        for _ in 0..iters {
                            black_box(naive_push(black_box(&message)));
                        }
                        started.elapsed()
                    }),
                ),
            ),
            Pair::new(
                format!("encode x{RECIPIENTS}: once + clones / each"),
                None,
                ("once_clone_x1000", fan_encode(frame.clone(), true)),
                ("per_recipient_x1000", fan_encode(frame, false)),
            ),
        ],
    }
}

// ---------------------------------------------------------------------------------------
// fanout

/// Counts the receivers that got the message in flight; the last one rings.
#[derive(Debug, Default)]
struct Arrivals {
    remaining: AtomicUsize,
    done: Notify,
}

impl Arrivals {
    fn expect(&self, n: usize) {
        self.remaining.store(n, Ordering::Release);
    }

    fn arrived(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        tokio::time::timeout(ITERATION_TIMEOUT, self.done.notified())
            .await
            .expect("a fan-out iteration took longer than its timeout");
    }
}

/// A `message` push (`"type"` is always the first key of an encoded frame).
fn is_message(frame: &[u8]) -> bool {
    frame.starts_with(br#"{"type":"message""#)
}

/// A room of `n` sessions on a real engine, one of which sends.
struct EngineRoom {
    engine: Engine,
    n: usize,
    sender: mpsc::Sender<Inbound>,
    /// The other sessions' inbound streams, kept open.
    _inputs: Vec<mpsc::Sender<Inbound>>,
    tasks: Vec<JoinHandle<()>>,
    arrivals: Arc<Arrivals>,
    next_id: u64,
}

/// Reads `from_engine` until the reply to request `id`; an `error` fails the bench.
async fn reply(from_engine: &mut mpsc::Receiver<Outbound>, id: u64) {
    loop {
        let item = tokio::time::timeout(ITERATION_TIMEOUT, from_engine.next())
            .await
            .expect("no reply from the engine")
            .expect("the engine closed the sink");
        if let Outbound::Frame(frame) = item {
            let value: Value = serde_json::from_slice(frame.as_bytes()).unwrap();
            if value["id"] == id {
                assert_eq!(value["type"], "ok", "request {id} refused: {value}");
                return;
            }
        }
    }
}

impl EngineRoom {
    async fn open(n: usize) -> EngineRoom {
        let mut config = EngineConfig::default();
        // One sender sends for the whole run: no rate limit in the way; and the sessions
        // stay silent (they never answer a ping) for longer than two default heartbeats.
        config.rate_burst = u32::MAX;
        config.rate_per_sec = u32::MAX;
        config.heartbeat = Duration::from_secs(3_600);
        let engine = chat_engine::memory::engine_builder(Arc::new(DevAuthenticator))
            .config(config)
            .build();
        let arrivals = Arc::new(Arrivals::default());
        let mut inputs = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(2 * n);
        for i in 0..n {
            let (mut to_engine, inbound) = mpsc::channel(64);
            let (outbound, mut from_engine) = mpsc::channel(1024);
            let admission = engine.admit().unwrap();
            let serving = engine.clone();
            tasks.push(tokio::spawn(async move {
                serving
                    .serve(admission, Peer::default(), inbound, outbound)
                    .await;
            }));
            let hello = format!(r#"{{"type":"hello","id":1,"token":"dev:user{i}"}}"#);
            to_engine.send(Inbound::Text(hello.into())).await.unwrap();
            reply(&mut from_engine, 1).await;
            let join = r#"{"type":"join","id":2,"room":"bench"}"#;
            to_engine
                .send(Inbound::Text(Bytes::from_static(join.as_bytes())))
                .await
                .unwrap();
            reply(&mut from_engine, 2).await;
            let arrivals = arrivals.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(item) = from_engine.next().await {
                    if matches!(&item, Outbound::Frame(f) if is_message(f.as_bytes())) {
                        arrivals.arrived();
                    }
                }
            }));
            inputs.push(to_engine);
        }
        let sender = inputs.pop().unwrap();
        EngineRoom {
            engine,
            n,
            sender,
            _inputs: inputs,
            tasks,
            arrivals,
            next_id: 10,
        }
    }

    /// `iters` sends, each timed from the send to the last session's sink.
    async fn run(&mut self, iters: u64) -> Duration {
        let body = body();
        let frames: Vec<Bytes> = (0..iters)
            .map(|_| {
                self.next_id += 1;
                let id = self.next_id;
                format!(
                    r#"{{"type":"send","id":{id},"room":"bench","cid":"c{id}","body":"{body}"}}"#
                )
                .into()
            })
            .collect();
        let started = Instant::now();
        for frame in frames {
            self.arrivals.expect(self.n);
            self.sender.send(Inbound::Text(frame)).await.unwrap();
            self.arrivals.wait().await;
        }
        started.elapsed()
    }
}

impl Drop for EngineRoom {
    fn drop(&mut self) {
        self.engine.shutdown();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The floor: `n` receivers, each a tokio channel drained by its own task, fed one shared
/// buffer by a plain loop.
struct PlainRoom {
    n: usize,
    queues: Vec<tokio::sync::mpsc::Sender<Bytes>>,
    tasks: Vec<JoinHandle<()>>,
    arrivals: Arc<Arrivals>,
    frame: Bytes,
}

impl PlainRoom {
    fn open(n: usize) -> PlainRoom {
        let arrivals = Arc::new(Arrivals::default());
        let mut queues = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (queue, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(1024);
            let arrivals = arrivals.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(frame) = receiver.recv().await {
                    if is_message(&frame) {
                        arrivals.arrived();
                    }
                }
            }));
            queues.push(queue);
        }
        let frame = ServerFrame::Message(sample_message()).encode().into_bytes();
        PlainRoom {
            n,
            queues,
            tasks,
            arrivals,
            frame,
        }
    }

    async fn run(&self, iters: u64) -> Duration {
        let started = Instant::now();
        for _ in 0..iters {
            self.arrivals.expect(self.n);
            for queue in &self.queues {
                queue.try_send(self.frame.clone()).unwrap();
            }
            self.arrivals.wait().await;
        }
        started.elapsed()
    }
}

impl Drop for PlainRoom {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn fanout(rt: &Runtime) -> Group<'_> {
    let mut pairs = Vec::new();
    for n in FANOUT_SIZES {
        // Set up on first use, once per N (a filtered-out benchmark sets up nothing), and
        // kept for the paired ratio after the groups.
        let mut engine_room: Option<EngineRoom> = None;
        let mut plain_room: Option<PlainRoom> = None;
        pairs.push(Pair::new(
            format!("fanout N={n}: engine / channels"),
            Some(n),
            (
                "engine",
                Box::new(move |iters| {
                    let room = engine_room.get_or_insert_with(|| rt.block_on(EngineRoom::open(n)));
                    rt.block_on(room.run(iters))
                }),
            ),
            (
                "channels",
                Box::new(move |iters| {
                    let room = plain_room.get_or_insert_with(|| {
                        let _runtime = rt.enter();
                        PlainRoom::open(n)
                    });
                    rt.block_on(room.run(iters))
                }),
            ),
        ));
    }
    Group {
        name: "fanout",
        samples: FANOUT_SAMPLES,
        flat: true,
        pairs,
    }
}

// ---------------------------------------------------------------------------------------
// The summary

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Alternates `PAIRED_ROUNDS` rounds of both sides, each side first in turn, sized from the
/// medians; returns the sorted per-round ratios of ours over theirs.
fn paired(pair: &mut Pair<'_>, ours_ns: f64, theirs_ns: f64) -> Vec<f64> {
    let iters = |ns: f64| ((PAIRED_ROUND.as_nanos() as f64 / ns.max(1.0)).ceil() as u64).max(1);
    let (ours_iters, theirs_iters) = (iters(ours_ns), iters(theirs_ns));
    let mut ratios = Vec::with_capacity(PAIRED_ROUNDS);
    for round in 0..PAIRED_ROUNDS {
        let (ours, theirs) = if round % 2 == 0 {
            let ours = (pair.ours.run)(ours_iters);
            (ours, (pair.theirs.run)(theirs_iters))
        } else {
            let theirs = (pair.theirs.run)(theirs_iters);
            ((pair.ours.run)(ours_iters), theirs)
        };
        let per_iter = |d: Duration, iters: u64| d.as_nanos() as f64 / iters as f64;
        ratios.push(per_iter(ours, ours_iters) / per_iter(theirs, theirs_iters));
    }
    ratios.sort_by(f64::total_cmp);
    ratios
}

fn summary(groups: &mut [Group<'_>], recorder: &Recorder) {
    println!();
    println!("ratio summary (this run): engine time / baseline time, below 1 = engine faster");
    println!(
        "{:<40} {:>10} {:>10} {:>7} {:>7} {:>14}",
        "pair", "engine", "baseline", "ratio", "paired", "paired range"
    );
    for group in groups {
        for i in 0..group.pairs.len() {
            let parameter = group.pairs[i].parameter;
            let ours = key(group.name, group.pairs[i].ours.function, parameter);
            let theirs = key(group.name, group.pairs[i].theirs.function, parameter);
            let (Some(ours), Some(theirs)) = (
                recorder.median(&ours, group.samples),
                recorder.median(&theirs, group.samples),
            ) else {
                continue;
            };
            let pair = &mut group.pairs[i];
            let ratios = paired(pair, ours, theirs);
            println!(
                "{:<40} {:>10} {:>10} {:>6.2}x {:>6.2}x {:>6.2}-{:<6.2}",
                pair.label,
                human(ours),
                human(theirs),
                ours / theirs,
                ratios[ratios.len() / 2],
                ratios[0],
                ratios[ratios.len() - 1],
            );
            if let Some(n) = parameter {
                println!(
                    "{:<40} {:>10} {:>10}",
                    "  per recipient",
                    human(ours / n as f64),
                    human(theirs / n as f64)
                );
            }
        }
    }
    println!(
        "ratio: of criterion's medians; paired: median of {PAIRED_ROUNDS} back-to-back rounds (min-max)"
    );
}

fn main() {
    // Criterion's own rule: without `--bench` (as under `cargo test --benches`), or with
    // `--test`, each benchmark runs once and nothing is measured.
    let args: Vec<String> = std::env::args().collect();
    let measuring =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .unwrap();
    let recorder = Recorder::default();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut groups = [store_append(&rt), encode(), fanout(&rt)];
    for group in &mut groups {
        group.bench(&mut c, &recorder);
    }
    c.final_summary();
    if measuring {
        summary(&mut groups, &recorder);
    }
    // The fan-out rooms end inside the runtime.
    let _runtime = rt.enter();
    drop(groups);
}
