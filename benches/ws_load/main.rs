//! The WebSocket load tool: the same scenarios against chat-engine, a raw tokio-tungstenite
//! broadcast server (the floor) and socket.io on Node, in one run, reported as ratios.
//!
//! ```sh
//! cargo bench --bench ws_load                        # every scenario, every server
//! cargo bench --bench ws_load -- --quick             # tiny sizes (what CI runs)
//! cargo bench --bench ws_load -- --scenarios fanout,idle --servers chat-engine,raw-tungstenite
//! cargo bench --bench ws_load -- --scenarios direct --dm-rate 5000   # another offered rate
//! cargo bench --bench ws_load -- --scenarios direct --dm-arrivals ticks  # 1 ms lockstep bursts
//! cargo bench --bench ws_load -- --rounds 5           # every scenario five times
//! ```
//!
//! A scenario runs in rounds, the servers alternating within each; the table gives each
//! figure's median over the rounds (the JSON keeps every round's). Fan-out, short and the
//! noisiest, runs three rounds unless `--rounds` says otherwise; the others one.
//!
//! Every server runs in its own process (this binary with `--serve chat|raw`, or
//! `node benches/peers/socketio/server.js`), so that its CPU time and memory are read from
//! `/proc/<pid>` apart from the load generator's. The load generator and the server share
//! this machine's cores: absolute figures drift with whatever else runs, ratios between
//! servers measured back to back in the same run are what to read.
//!
//! Scenarios (sizes with `--quick` in brackets):
//! - **fan-out**: one sender, one room of 1,000 [50] members, 100-byte bodies, 2,000 [100]
//!   messages with a window of 32 in flight: deliveries/s, server CPU per delivery, the
//!   load generator's own CPU per delivery (its clients share the cores with the server),
//!   send→receive latency percentiles.
//! - **direct**: 10,000 [200] connected users in pairs, messages between random pairs at
//!   20,000 [1,000] msg/s for 5 [1] s: latency p50/p99, server CPU per message.
//! - **idle**: 10,000 [200] idle connected clients: server memory growth per connection.
//! - **storm**: 5,000 [100] clients of one room drop at once, 100 [20] messages are sent,
//!   they reconnect resuming: time until all have caught up.
//!
//! Results: a table on stdout and `target/ws_load/results.json`.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod chat;
mod conn;
mod raw;
mod scenario;
mod server;
mod socketio;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use conn::{Kind, Result};
use scenario::{Arrivals, Better, Metric, Sizes};
use server::ServerProcess;

const SCENARIOS: [&str; 4] = ["fanout", "direct", "idle", "storm"];
const KINDS: [Kind; 3] = [Kind::Chat, Kind::Raw, Kind::SocketIo];

struct Options {
    quick: bool,
    dm_rate: Option<usize>,
    dm_arrivals: Option<Arrivals>,
    /// Rounds per scenario (`None`: three for fan-out, which is short and the noisiest,
    /// one for the others).
    rounds: Option<usize>,
    scenarios: Vec<String>,
    kinds: Vec<Kind>,
}

fn options() -> std::result::Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --bench ws_load` does not: a smoke run.
    let mut quick = !args.iter().any(|a| a == "--bench");
    let mut scenarios: Vec<String> = SCENARIOS.iter().map(|s| (*s).to_owned()).collect();
    let mut kinds = KINDS.to_vec();
    let mut dm_rate = None;
    let mut dm_arrivals = None;
    let mut rounds = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--dm-rate" => {
                let rate = it.next().ok_or("--dm-rate needs a number")?;
                dm_rate = Some(rate.parse().map_err(|_| format!("--dm-rate {rate}"))?);
            }
            "--dm-arrivals" => {
                dm_arrivals = Some(match it.next().map(String::as_str) {
                    Some("poisson") => Arrivals::Poisson,
                    Some("ticks") => Arrivals::Ticks,
                    _ => return Err("--dm-arrivals takes poisson or ticks".to_owned()),
                });
            }
            "--rounds" => {
                let n = it.next().ok_or("--rounds needs a number")?;
                rounds = Some(
                    n.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or(format!("--rounds {n}"))?,
                );
            }
            "--scenarios" => {
                let list = it.next().ok_or("--scenarios needs a list")?;
                scenarios = list.split(',').map(str::to_owned).collect();
                if let Some(bad) = scenarios.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                    return Err(format!("unknown scenario {bad:?}; known: {SCENARIOS:?}"));
                }
            }
            "--servers" => {
                let list = it.next().ok_or("--servers needs a list")?;
                kinds = list
                    .split(',')
                    .map(|name| {
                        KINDS
                            .into_iter()
                            .find(|k| k.name() == name)
                            .ok_or_else(|| format!("unknown server {name:?}"))
                    })
                    .collect::<std::result::Result<_, _>>()?;
            }
            _ => {}
        }
    }
    Ok(Options {
        quick,
        dm_rate,
        dm_arrivals,
        rounds,
        scenarios,
        kinds,
    })
}

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers/socketio")
}

/// Whether Node is here, with socket.io installed (`npm ci` on first use).
fn node_ready() -> std::result::Result<(), String> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("Node.js is not installed: socket.io is skipped".to_owned());
    }
    if !peers_dir().join("node_modules/socket.io").exists() {
        let npm = std::process::Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(peers_dir())
            .status();
        if !npm.is_ok_and(|s| s.success()) {
            return Err(
                "`npm ci` failed in benches/peers/socketio: socket.io is skipped".to_owned(),
            );
        }
    }
    Ok(())
}

async fn start(kind: Kind) -> Result<ServerProcess> {
    let command = match kind {
        Kind::Chat => server::self_as_server("chat")?,
        Kind::Raw => server::self_as_server("raw")?,
        Kind::SocketIo => {
            let mut command = tokio::process::Command::new("node");
            command
                .arg(peers_dir().join("server.js"))
                .args(["--port", "0"]);
            command
        }
    };
    ServerProcess::spawn(kind, command).await
}

async fn run_scenario(name: &str, kind: Kind, sizes: &Sizes) -> Result<Vec<Metric>> {
    let server = start(kind).await?;
    let result = match name {
        "fanout" => scenario::fanout(&server, sizes).await,
        "direct" => scenario::direct(&server, sizes).await,
        "idle" => scenario::idle(&server, sizes).await,
        _ => scenario::storm(&server, sizes).await,
    };
    server.stop().await;
    result
}

fn format_value(value: f64) -> String {
    if !value.is_finite() {
        "—".to_owned()
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// How many times better `peer` is than chat-engine's figure... reported the other way:
/// the ratio of chat-engine to the peer, oriented so that above 1 means chat-engine is
/// better.
fn advantage(ours: f64, theirs: f64, better: Better) -> f64 {
    match better {
        Better::Higher => ours / theirs,
        Better::Lower => theirs / ours,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve") {
        let kind = args.get(at + 1).cloned().unwrap_or_default();
        let addr = args
            .iter()
            .position(|a| a == "--addr")
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| "127.0.0.1:0".to_owned());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let served = runtime.block_on(async {
            match kind.as_str() {
                "chat" => chat::serve(&addr).await,
                "raw" => raw::serve(&addr).await,
                other => Err(format!("unknown server {other:?}").into()),
            }
        });
        if let Err(e) = served {
            eprintln!("server failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut sizes = if options.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(rate) = options.dm_rate {
        sizes.dm_rate = rate;
    }
    if let Some(arrivals) = options.dm_arrivals {
        sizes.dm_arrivals = arrivals;
    }
    let mut kinds = options.kinds.clone();
    if kinds.contains(&Kind::SocketIo) {
        if let Err(why) = node_ready() {
            println!("note: {why}");
            kinds.retain(|k| *k != Kind::SocketIo);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    println!(
        "ws_load: {} sizes, servers: {}",
        if options.quick { "quick" } else { "full" },
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // scenario → server → metrics
    let mut results: BTreeMap<
        String,
        BTreeMap<&'static str, std::result::Result<Vec<Metric>, String>>,
    > = BTreeMap::new();
    let mut failed = false;
    for name in &options.scenarios {
        let rounds = match options.rounds {
            Some(n) => n,
            None if name == "fanout" && !options.quick => 3,
            None => 1,
        };
        // Round after round, the servers alternating: drift on the machine lands on all.
        let mut runs: BTreeMap<&'static str, Vec<Vec<Metric>>> = BTreeMap::new();
        let mut errors: BTreeMap<&'static str, String> = BTreeMap::new();
        for _ in 0..rounds {
            for kind in &kinds {
                if errors.contains_key(kind.name()) {
                    continue;
                }
                match runtime.block_on(run_scenario(name, *kind, &sizes)) {
                    Ok(metrics) => runs.entry(kind.name()).or_default().push(metrics),
                    Err(e) => {
                        eprintln!("{name} on {}: {e}", kind.name());
                        failed = true;
                        errors.insert(kind.name(), e.to_string());
                    }
                }
            }
        }
        let by_kind = results.entry(name.clone()).or_default();
        for kind in &kinds {
            let outcome = match errors.remove(kind.name()) {
                Some(e) => Err(e),
                None => Ok(medians(runs.remove(kind.name()).unwrap_or_default())),
            };
            by_kind.insert(kind.name(), outcome);
        }
    }
    print_table(&results, &kinds);
    write_json(
        &results,
        &sizes,
        options.quick,
        started.elapsed().as_secs_f64(),
    );
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if failed {
        std::process::exit(1);
    }
}

/// Each metric's median over the rounds (the upper middle of an even count), with every
/// round's value kept for the JSON report.
fn medians(runs: Vec<Vec<Metric>>) -> Vec<Metric> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|metric| {
            let mut values: Vec<f64> = runs
                .iter()
                .filter_map(|run| run.iter().find(|m| m.name == metric.name))
                .map(|m| m.value)
                .collect();
            let rounds = values.clone();
            values.sort_by(f64::total_cmp);
            Metric {
                value: values[values.len() / 2],
                rounds,
                ..metric.clone()
            }
        })
        .collect()
}

type Results = BTreeMap<String, BTreeMap<&'static str, std::result::Result<Vec<Metric>, String>>>;

fn print_table(results: &Results, kinds: &[Kind]) {
    let mut header = format!("\n{:<36} {:>6}", "metric", "unit");
    for kind in kinds {
        header.push_str(&format!(" {:>16}", kind.name()));
    }
    for kind in kinds.iter().skip(1) {
        header.push_str(&format!(" {:>14}", format!("vs {}", kind.name())));
    }
    println!("{header}");
    for name in results.keys() {
        let by_kind = &results[name];
        let Some(Ok(ours)) = by_kind.get(Kind::Chat.name()) else {
            let first = by_kind.values().find_map(|r| r.as_ref().ok());
            for metric in first.into_iter().flatten() {
                let mut row = format!("{:<36} {:>6}", metric.name, metric.unit);
                for kind in kinds {
                    row.push_str(&format!(" {:>16}", value_of(by_kind, *kind, metric.name)));
                }
                println!("{row}");
            }
            continue;
        };
        for metric in ours {
            let mut row = format!("{:<36} {:>6}", metric.name, metric.unit);
            for kind in kinds {
                row.push_str(&format!(" {:>16}", value_of(by_kind, *kind, metric.name)));
            }
            for kind in kinds.iter().skip(1) {
                let theirs = lookup(by_kind, *kind, metric.name);
                let ratio = theirs.map(|t| advantage(metric.value, t, metric.better));
                row.push_str(&format!(
                    " {:>14}",
                    ratio
                        .filter(|r| r.is_finite())
                        .map_or("—".to_owned(), |r| format!("{r:.2}×"))
                ));
            }
            println!("{row}");
        }
    }
    println!(
        "\nratios: chat-engine's advantage over the peer (above 1× chat-engine is better, whichever way the metric goes)"
    );
}

fn lookup(
    by_kind: &BTreeMap<&'static str, std::result::Result<Vec<Metric>, String>>,
    kind: Kind,
    name: &str,
) -> Option<f64> {
    by_kind
        .get(kind.name())?
        .as_ref()
        .ok()?
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
}

fn value_of(
    by_kind: &BTreeMap<&'static str, std::result::Result<Vec<Metric>, String>>,
    kind: Kind,
    name: &str,
) -> String {
    match by_kind.get(kind.name()) {
        None => "skipped".to_owned(),
        Some(Err(_)) => "failed".to_owned(),
        Some(Ok(_)) => lookup(by_kind, kind, name).map_or("—".to_owned(), format_value),
    }
}

fn write_json(results: &Results, sizes: &Sizes, quick: bool, seconds: f64) {
    let mut scenarios = serde_json::Map::new();
    for (name, by_kind) in results {
        let mut servers = serde_json::Map::new();
        for (kind, outcome) in by_kind {
            let value = match outcome {
                Ok(metrics) => serde_json::Value::Object(
                    metrics
                        .iter()
                        .flat_map(|m| {
                            let key = format!("{} ({})", m.name, m.unit);
                            let rounds = (m.rounds.len() > 1).then(|| {
                                (format!("{key}, each round"), serde_json::json!(m.rounds))
                            });
                            std::iter::once((key, serde_json::json!(m.value))).chain(rounds)
                        })
                        .collect(),
                ),
                Err(e) => serde_json::json!({ "error": e }),
            };
            servers.insert((*kind).to_owned(), value);
        }
        scenarios.insert(name.clone(), serde_json::Value::Object(servers));
    }
    let report = serde_json::json!({
        "quick": quick,
        "sizes": format!("{sizes:?}"),
        "seconds": seconds,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "scenarios": scenarios,
    });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ws_load");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("results.json");
    if std::fs::write(
        &path,
        serde_json::to_vec_pretty(&report).unwrap_or_default(),
    )
    .is_ok()
    {
        println!("results: {}", path.display());
    }
}
