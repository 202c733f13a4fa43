//! The four scenarios. Each gets a fresh server process and returns its metrics.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::conn::{Conn, Result, Rx, Setup, Tx, connect};
use crate::server::{ServerProcess, cpu_of};

/// How the direct scenario spreads its messages over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Each message at its own time, as many independent users make it (a Poisson
    /// process at the offered rate).
    Poisson,
    /// Every millisecond, the messages due by then back to back.
    Ticks,
}

/// Sizes of every scenario.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub fanout_members: usize,
    pub fanout_messages: usize,
    pub fanout_window: usize,
    pub dm_users: usize,
    pub dm_rate: usize,
    pub dm_seconds: u64,
    pub dm_arrivals: Arrivals,
    pub idle_connections: usize,
    pub storm_clients: usize,
    pub storm_missed: usize,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            fanout_members: 1_000,
            fanout_messages: 2_000,
            fanout_window: 32,
            dm_users: 10_000,
            dm_rate: 20_000,
            dm_seconds: 5,
            dm_arrivals: Arrivals::Poisson,
            idle_connections: 10_000,
            storm_clients: 5_000,
            storm_missed: 100,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            fanout_members: 50,
            fanout_messages: 100,
            fanout_window: 16,
            dm_users: 200,
            dm_rate: 1_000,
            dm_seconds: 1,
            dm_arrivals: Arrivals::Poisson,
            idle_connections: 200,
            storm_clients: 100,
            storm_missed: 20,
        }
    }
}

/// Whether a larger value is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    /// The figure; over several rounds, their median.
    pub value: f64,
    pub better: Better,
    /// Each round's figure, when there were several.
    pub rounds: Vec<f64>,
}

fn metric(name: &'static str, unit: &'static str, value: f64, better: Better) -> Metric {
    Metric {
        name,
        unit,
        value,
        better,
        rounds: Vec::new(),
    }
}

/// Generous upper bound for any wait of a scenario.
const WAIT: Duration = Duration::from_secs(180);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// A 100-byte body carrying the message index and its send time.
fn body(index: u64) -> String {
    let sent = base().elapsed().as_nanos() as u64;
    let mut body = format!("{index:010}-{sent:020}-");
    body.extend(std::iter::repeat_n('x', 100 - body.len()));
    body
}

/// (index, nanoseconds since sent) of a body made by [`body`].
fn read_body(body: &str) -> Option<(u64, u64)> {
    let index = body.get(0..10)?.parse().ok()?;
    let sent: u64 = body.get(11..31)?.parse().ok()?;
    let now = base().elapsed().as_nanos() as u64;
    Some((index, now.saturating_sub(sent)))
}

/// Source addresses 127.0.0.2 … 127.0.0.61, so that tens of thousands of connections (and
/// their TIME_WAITs across runs) never run out of ephemeral ports.
fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 60) as u8))
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("  {prefix:<34} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// Connects `n` clients named `prefix{i}`, 256 handshakes at a time.
async fn connect_many(
    server: &ServerProcess,
    n: usize,
    prefix: &str,
    setup: impl Fn(usize) -> Setup,
) -> Result<Vec<Conn>> {
    let progress = bar(n, &format!("{} connecting", server.kind.name()));
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    while next < n || !pending.is_empty() {
        while next < n && pending.len() < 256 {
            let i = next;
            next += 1;
            let user = format!("{prefix}{i}");
            let setup = setup(i);
            let (kind, addr) = (server.kind, server.addr);
            pending.push(async move { (i, connect(kind, addr, &user, source(i), setup).await) });
        }
        if let Some((i, conn)) = pending.next().await {
            conns[i] = Some(conn?);
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    Ok(conns.into_iter().flatten().collect())
}

/// A count that one task waits on while many add to it. Only an addition that reaches
/// what the waiter wants wakes it: a wake-up per delivery would cost the load generator
/// more than the delivery itself.
#[derive(Default)]
struct Tally {
    count: AtomicU64,
    /// The count the waiter waits for (`u64::MAX`: nobody waits).
    wanted: AtomicU64,
    notify: Notify,
}

impl Tally {
    fn new() -> Arc<Tally> {
        Arc::new(Tally {
            wanted: AtomicU64::new(u64::MAX),
            ..Tally::default()
        })
    }

    fn add(&self) {
        let count = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if count >= self.wanted.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
    }

    /// Waits until the count reaches `target`; errors after `WAIT`.
    async fn reach(&self, target: u64, what: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let reached = async {
            loop {
                let mut notified = std::pin::pin!(self.notify.notified());
                notified.as_mut().enable();
                // Set after `enable`, checked after setting: an addition either sees the
                // target and wakes us, or happened before the check below.
                self.wanted.store(target, Ordering::SeqCst);
                if self.get() >= target {
                    return;
                }
                notified.await;
            }
        };
        let outcome = tokio::time::timeout_at(deadline, reached).await;
        self.wanted.store(u64::MAX, Ordering::SeqCst);
        outcome.map_err(|_| format!("{what}: {} of {target} after {WAIT:?}", self.get()).into())
    }
}

fn percentiles(mut latencies: Vec<u64>) -> (f64, f64, f64) {
    if latencies.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    latencies.sort_unstable();
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    for ns in &latencies {
        let _ = histogram.record((*ns).max(1));
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1e6;
    (ms(0.5), ms(0.99), ms(0.999))
}

/// Keeps reading a client's messages so that its server never sees a slow consumer.
fn drain(mut rx: Box<dyn Rx>) {
    tokio::spawn(async move { while let Ok(Some(_)) = rx.next().await {} });
}

/// One sender, one room of `fanout_members` readers, 100-byte bodies; a window bounds how
/// far the sender runs ahead of the slowest reader.
pub async fn fanout(server: &ServerProcess, sizes: &Sizes) -> Result<Vec<Metric>> {
    const ROOM: &str = "fanout";
    let n = sizes.fanout_members;
    let warm = (sizes.fanout_messages / 10).max(10);
    let total = warm + sizes.fanout_messages;
    let join = |_| Setup {
        join: vec![ROOM.to_owned()],
        ..Setup::default()
    };
    let members = connect_many(server, n, "member", join).await?;
    let mut sender = connect(server.kind, server.addr, "sender", source(n), join(0)).await?;
    let delivered = Tally::new();
    let mut readers = Vec::with_capacity(n);
    for Conn { rx: mut reader, tx } in members {
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            let _keep = tx;
            let mut latencies = Vec::with_capacity(total - warm);
            let mut got = 0;
            while got < total {
                let Ok(Some(message)) = reader.next().await else {
                    break;
                };
                let Some((index, latency)) = read_body(&message.body) else {
                    continue;
                };
                if index as usize >= warm {
                    latencies.push(latency);
                }
                got += 1;
                delivered.add();
            }
            latencies
        }));
    }
    drain(sender.rx);
    let progress = bar(total, &format!("{} fan-out", server.kind.name()));
    let own = std::process::id();
    let (mut cpu0, mut own0, mut t0) = (server.cpu()?, cpu_of(own)?, Instant::now());
    for i in 0..total {
        if i == warm {
            delivered.reach((warm * n) as u64, "warm-up").await?;
            (cpu0, own0, t0) = (server.cpu()?, cpu_of(own)?, Instant::now());
        }
        if i >= sizes.fanout_window {
            let floor = ((i + 1 - sizes.fanout_window) * n) as u64;
            delivered.reach(floor, "window").await?;
        }
        sender.tx.send_room(ROOM, &body(i as u64)).await?;
        progress.inc(1);
    }
    delivered.reach((total * n) as u64, "deliveries").await?;
    let (cpu1, own1, t1) = (server.cpu()?, cpu_of(own)?, Instant::now());
    progress.finish_and_clear();
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(reader.await?);
    }
    let deliveries = (sizes.fanout_messages * n) as f64;
    let elapsed = t1.duration_since(t0).as_secs_f64();
    let (p50, p99, p999) = percentiles(latencies);
    Ok(vec![
        metric(
            "fan-out deliveries/s",
            "/s",
            deliveries / elapsed,
            Better::Higher,
        ),
        metric(
            "fan-out server CPU per delivery",
            "ns",
            (cpu1 - cpu0).as_nanos() as f64 / deliveries,
            Better::Lower,
        ),
        // The clients share the cores with the server: what they spend on each delivery
        // (reading a larger frame costs more) is time the server does not get.
        metric(
            "fan-out client CPU per delivery",
            "ns",
            (own1 - own0).as_nanos() as f64 / deliveries,
            Better::Lower,
        ),
        metric("fan-out latency p50", "ms", p50, Better::Lower),
        metric("fan-out latency p99", "ms", p99, Better::Lower),
        metric("fan-out latency p999", "ms", p999, Better::Lower),
    ])
}

/// `dm_users` connected users in fixed pairs; messages between random pairs at a fixed
/// offered rate.
pub async fn direct(server: &ServerProcess, sizes: &Sizes) -> Result<Vec<Metric>> {
    let n = sizes.dm_users & !1;
    let users = connect_many(server, n, "user", |_| Setup {
        skip_own: true,
        ..Setup::default()
    })
    .await?;
    let delivered = Tally::new();
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The schedule's loop sends itself: a sending task per user, woken through a channel
    // for each message, cost the load generator a task wake-up per message on cores it
    // shares with the server.
    let mut senders = Vec::with_capacity(n);
    for (i, Conn { tx, rx: mut reader }) in users.into_iter().enumerate() {
        let (delivered, latencies, measuring) =
            (delivered.clone(), latencies.clone(), measuring.clone());
        tokio::spawn(async move {
            while let Ok(Some(message)) = reader.next().await {
                if let Some((_, latency)) = read_body(&message.body) {
                    if measuring.load(Ordering::Acquire) {
                        latencies.lock().push(latency);
                    }
                    delivered.add();
                }
            }
        });
        senders.push((tx, format!("user{}", i ^ 1)));
    }
    // Warm-up: one message in each pair (chat-engine creates the direct rooms here).
    for pair in 0..n / 2 {
        let (tx, partner) = &mut senders[pair * 2];
        tx.send_user(partner, &body(0)).await?;
    }
    delivered.reach((n / 2) as u64, "warm-up").await?;
    delivered.reset();
    measuring.store(true, Ordering::Release);

    let total = sizes.dm_rate as u64 * sizes.dm_seconds;
    let progress = bar(
        total as usize,
        &format!("{} direct messages", server.kind.name()),
    );
    let own = std::process::id();
    let (cpu0, own0, t0) = (server.cpu()?, cpu_of(own)?, Instant::now());
    // The senders stay open until every delivery is in: dropping them closes connections.
    let (sent, _senders) = match sizes.dm_arrivals {
        Arrivals::Ticks => (
            send_on_ticks(&mut senders, sizes, t0, &progress).await?,
            senders,
        ),
        Arrivals::Poisson => {
            let (rate, runtime) = (sizes.dm_rate, tokio::runtime::Handle::current());
            let progress = progress.clone();
            let (sent, back) = tokio::task::spawn_blocking(move || {
                let sent = send_poisson(&mut senders, rate, total, t0, &progress, &runtime);
                (sent, senders)
            })
            .await?;
            (sent?, back)
        }
    };
    let offered = sent as f64 / t0.elapsed().as_secs_f64();
    delivered.reach(total, "deliveries").await?;
    let (cpu1, own1) = (server.cpu()?, cpu_of(own)?);
    progress.finish_and_clear();
    let (p50, p99, _) = percentiles(std::mem::take(&mut latencies.lock()));
    Ok(vec![
        metric("direct offered rate", "msg/s", offered, Better::Higher),
        metric("direct latency p50", "ms", p50, Better::Lower),
        metric("direct latency p99", "ms", p99, Better::Lower),
        metric(
            "direct server CPU per message",
            "µs",
            (cpu1 - cpu0).as_nanos() as f64 / 1e3 / total as f64,
            Better::Lower,
        ),
        // What the clients spend is time the server does not get on shared cores.
        metric(
            "direct client CPU per message",
            "µs",
            (own1 - own0).as_nanos() as f64 / 1e3 / total as f64,
            Better::Lower,
        ),
    ])
}

/// Picks senders at random (xorshift: the same sequence for every server).
struct Picker(u64);

impl Picker {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    /// A uniform draw in (0, 1].
    fn unit(&mut self) -> f64 {
        (self.next(1 << 30) as f64 + 1.0) / (1u64 << 30) as f64
    }
}

/// The schedule in lockstep bursts: every millisecond tick sends the messages due by then,
/// back to back (`--dm-arrivals ticks`).
async fn send_on_ticks(
    senders: &mut [(Box<dyn Tx>, String)],
    sizes: &Sizes,
    t0: Instant,
    progress: &ProgressBar,
) -> Result<u64> {
    let total = sizes.dm_rate as u64 * sizes.dm_seconds;
    let mut picker = Picker(0x9e37_79b9_7f4a_7c15);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let per_tick = (sizes.dm_rate as u64).div_ceil(1_000);
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        // Catch up to the schedule (a late tick sends what it owes).
        let due = ((t0.elapsed().as_secs_f64() * sizes.dm_rate as f64) as u64)
            .max(sent + per_tick)
            .min(total);
        while sent < due {
            let (tx, partner) = &mut senders[picker.next(senders.len())];
            tx.send_user(partner, &body(sent + 1)).await?;
            sent += 1;
        }
        progress.set_position(sent);
    }
    Ok(sent)
}

/// Linux's default timer slack for a thread.
const TIMER_SLACK: Duration = Duration::from_micros(50);

/// The schedule as independent users make it: a Poisson process at `rate`, each message
/// sent at its own time (the default). Runs on a thread of its own, which sleeps between
/// sends: tokio's timers tick by the millisecond.
fn send_poisson(
    senders: &mut [(Box<dyn Tx>, String)],
    rate: usize,
    total: u64,
    t0: Instant,
    progress: &ProgressBar,
    runtime: &tokio::runtime::Handle,
) -> Result<u64> {
    let mut picker = Picker(0x9e37_79b9_7f4a_7c15);
    let mut at = 0.0f64;
    for sent in 0..total {
        at += -picker.unit().ln() / rate as f64;
        let due = t0 + Duration::from_secs_f64(at);
        // A sleep overshoots by the kernel's timer slack (50 µs by default), so a shorter
        // one buys no precision: the message goes now.
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            if wait > TIMER_SLACK {
                std::thread::sleep(wait);
            }
        }
        let (tx, partner) = &mut senders[picker.next(senders.len())];
        runtime.block_on(tx.send_user(partner, &body(sent + 1)))?;
        if sent % 1_000 == 0 {
            progress.set_position(sent);
        }
    }
    Ok(total)
}

/// `idle_connections` clients connect (and, where the protocol has it, authenticate) and
/// stay idle: server memory growth per connection.
pub async fn idle(server: &ServerProcess, sizes: &Sizes) -> Result<Vec<Metric>> {
    let before = server.rss()?;
    let conns = connect_many(server, sizes.idle_connections, "idle", |_| Setup::default()).await?;
    // Let the server finish what each connection's set-up started.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss()?;
    let per_connection = after.saturating_sub(before) as f64 / conns.len() as f64;
    drop(conns);
    Ok(vec![metric(
        "idle memory per connection",
        "KiB",
        per_connection / 1024.0,
        Better::Lower,
    )])
}

/// `storm_clients` clients of one room drop at once, `storm_missed` messages are sent, and
/// they all come back resuming: time until every one has every missed message.
pub async fn storm(server: &ServerProcess, sizes: &Sizes) -> Result<Vec<Metric>> {
    const ROOM: &str = "storm";
    const BEFORE: usize = 5;
    let n = sizes.storm_clients;
    let join = |_| Setup {
        join: vec![ROOM.to_owned()],
        ..Setup::default()
    };
    let clients = connect_many(server, n, "storm", join).await?;
    let mut sender = connect(server.kind, server.addr, "storm-sender", source(n), join(0)).await?;
    let echoes = Tally::new();
    {
        let echoes = echoes.clone();
        let mut rx = sender.rx;
        tokio::spawn(async move {
            while let Ok(Some(_)) = rx.next().await {
                echoes.add();
            }
        });
    }
    // Everyone holds the first messages, and so a point to resume from.
    let mut readers = Vec::with_capacity(n);
    for Conn { rx: mut reader, tx } in clients {
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < BEFORE {
                if reader.next().await?.is_none() {
                    return Err("closed".into());
                }
                got += 1;
            }
            Ok::<_, crate::conn::Error>((reader.resume(), tx))
        }));
    }
    for i in 0..BEFORE {
        sender.tx.send_room(ROOM, &body(i as u64)).await?;
    }
    let mut points = Vec::with_capacity(n);
    for reader in readers {
        let (point, tx) = reader.await??;
        // Dropping both halves closes the connection: all of them at once, below.
        points.push((point.ok_or("no resume point")?, tx));
    }
    let points: Vec<_> = points
        .into_iter()
        .map(|(point, tx)| {
            drop(tx);
            point
        })
        .collect();
    echoes.reach(BEFORE as u64, "first messages").await?;
    // The storm: every client is gone; messages are sent meanwhile.
    for i in 0..sizes.storm_missed {
        sender
            .tx
            .send_room(ROOM, &body((BEFORE + i) as u64))
            .await?;
    }
    echoes
        .reach((BEFORE + sizes.storm_missed) as u64, "missed messages sent")
        .await?;
    let progress = bar(n, &format!("{} reconnect storm", server.kind.name()));
    let started = Instant::now();
    let missed = sizes.storm_missed;
    let mut pending = FuturesUnordered::new();
    for (i, point) in points.into_iter().enumerate() {
        let (kind, addr) = (server.kind, server.addr);
        pending.push(tokio::spawn(async move {
            let setup = Setup {
                resume: Some(point),
                ..Setup::default()
            };
            let mut conn = connect(kind, addr, &format!("storm{i}"), source(i), setup).await?;
            let mut got = 0;
            while got < missed {
                match conn.rx.next().await? {
                    Some(message) => {
                        if read_body(&message.body)
                            .is_some_and(|(index, _)| index as usize >= BEFORE)
                        {
                            got += 1;
                        }
                    }
                    None => {
                        return Err::<Conn, crate::conn::Error>("closed before catching up".into());
                    }
                }
            }
            Ok(conn)
        }));
    }
    let mut back = Vec::with_capacity(n);
    while let Some(done) = pending.next().await {
        back.push(done??);
        progress.inc(1);
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    drop(back);
    Ok(vec![metric(
        "reconnect storm: all caught up",
        "s",
        elapsed.as_secs_f64(),
        Better::Lower,
    )])
}
