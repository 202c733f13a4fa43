//! The server under test runs in its own process, so that its CPU time and memory can be
//! read from `/proc/<pid>` apart from the load generator's.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::conn::{Kind, Result};

/// A running server process.
pub struct ServerProcess {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
}

impl ServerProcess {
    /// Starts `command`, which must print `listening <addr>` (or `listening <port>`) on a
    /// line of stdout once it accepts connections.
    pub async fn spawn(kind: Kind, mut command: Command) -> Result<ServerProcess> {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.trim().strip_prefix("listening ") {
                    let rest = rest.trim();
                    let addr: SocketAddr = match rest.parse::<u16>() {
                        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
                        Err(_) => rest.parse()?,
                    };
                    return Ok::<_, crate::conn::Error>(addr);
                }
            }
            Err("the server ended before listening".into())
        })
        .await
        .map_err(|_| "the server did not start listening within 60 s")??;
        // Keep draining its stdout so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess {
            kind,
            addr,
            pid,
            child,
        })
    }

    /// CPU time (user + system) the process used so far.
    pub fn cpu(&self) -> Result<Duration> {
        cpu_of(self.pid)
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .ok_or("no VmRSS")?;
        let kib: u64 = line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?;
        Ok(kib * 1024)
    }

    /// Stops the process.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The command that starts this same binary as a server of `kind` (`--serve chat|raw`).
pub fn self_as_server(kind: &str) -> Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["--serve", kind, "--addr", "127.0.0.1:0"]);
    Ok(command)
}

/// CPU time (user + system) process `pid` used so far (`std::process::id()`: the load
/// generator itself).
pub fn cpu_of(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the man page, so utime (14) is index 11, stime 12.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok(Duration::from_secs_f64(
        (utime + stime) as f64 / clock_ticks() as f64,
    ))
}
