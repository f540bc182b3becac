//! The lab's origin: a real web server (Debian's nginx) serving a small page in the origin
//! namespace, and an nftables counter of the attack packets that reach its kernel stack
//! (prerouting, after XDP has had its say). Dropping the [`Origin`] stops nginx.

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::topology::{ORIGIN_IPV4, SPOOFED_V4, SPOOFED_V6};
use moat::netns::{NetNs, NetNsError, run};

/// The page the origin serves.
pub const PAGE: &str = "moat lab origin: hello, visitor\n";

/// The origin's HTTP port.
pub const HTTP_PORT: u16 = 80;

/// The nftables table the lab creates in the origin namespace.
const TABLE: &str = "moat_lab";

/// A running nginx and the origin's attack counter.
pub struct Origin {
    nginx: Option<Child>,
    dir: PathBuf,
}

impl Origin {
    /// Starts nginx in `ns`, confined to `cpu` (the small origin's one CPU), and installs the
    /// counter of attack packets.
    pub fn start(ns: &NetNs, cpu: usize) -> Result<Origin, NetNsError> {
        let dir =
            std::env::temp_dir().join(format!("moat-lab-nginx-{}", moat::netns::unique_suffix()));
        let shown = dir.display().to_string();
        let io = |source| NetNsError::Spawn {
            command: format!("preparing {shown}"),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let config = format!(
            "worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n  \
             fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n  \
             server {{\n    listen {ORIGIN_IPV4}:{HTTP_PORT} backlog=4096;\n    \
             location / {{ default_type text/plain; return 200 {PAGE:?}; }}\n  }}\n}}\n",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).map_err(io)?;
        // taskset execs nginx in place, so the child's pid is nginx's master.
        let child = ns
            .command("taskset")
            .args(["-c", &cpu.to_string(), "nginx"])
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| NetNsError::Spawn {
                command: "nginx".into(),
                source,
            })?;
        let mut origin = Origin {
            nginx: Some(child),
            dir,
        };
        origin.wait_listening(ns)?;
        let (v4, v4_len) = SPOOFED_V4;
        let (v6, v6_len) = SPOOFED_V6;
        let (bots, bots_len) = crate::botnet::BOTNET_V4;
        let rules = format!(
            "table inet {TABLE} {{\n  chain pre {{\n    type filter hook prerouting priority -400; policy accept;\n    \
             ip saddr {v4}/{v4_len} counter\n    ip6 saddr {v6}/{v6_len} counter\n    \
             ip saddr {bots}/{bots_len} counter\n  }}\n}}\n"
        );
        let script = origin.dir.join("counters.nft");
        std::fs::write(&script, rules).map_err(io)?;
        run(ns.command("nft").arg("-f").arg(&script))?;
        Ok(origin)
    }

    fn wait_listening(&mut self, ns: &NetNs) -> Result<(), NetNsError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let up = ns
                .enter(|| {
                    std::net::TcpStream::connect_timeout(
                        &(ORIGIN_IPV4, HTTP_PORT).into(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })
                .unwrap_or(false);
            if up {
                return Ok(());
            }
            if let Some(child) = self.nginx.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(NetNsError::Failed {
                    command: "nginx".into(),
                    stderr: format!(
                        "exited with {status}: {}",
                        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(NetNsError::Failed {
            command: "nginx".into(),
            stderr: "not listening after 10 s".into(),
        })
    }

    /// Attack packets (from the spoofed prefixes and the botnet's) that reached the origin's
    /// stack so far.
    pub fn attack_packets(ns: &NetNs) -> Result<u64, NetNsError> {
        let text = run(ns.command("nft").args(["list", "table", "inet", TABLE]))?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once("counter packets ")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum())
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(mut child) = self.nginx.take() {
            // SIGTERM makes the master stop its workers before it exits; SIGKILL would orphan
            // them (and keep the deleted namespace alive), so it is only the last resort.
            // SAFETY: plain kill(2) on our own child's pid (nsenter execs nginx in place).
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time of one CPU (or of the whole machine), in jiffies, from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// Time in softirq (the network stack's receive work, XDP included).
    pub softirq: u64,
    /// Time not idle (user, system, interrupts, softirq...).
    pub busy: u64,
    /// All time.
    pub total: u64,
}

impl CpuTime {
    /// `cpu`'s time so far (`None`: the whole machine's).
    pub fn read(cpu: Option<usize>) -> CpuTime {
        let label = cpu.map_or_else(|| "cpu".to_string(), |n| format!("cpu{n}"));
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(values) = text.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(label.as_str())).then(|| {
                fields
                    .filter_map(|v| v.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
        }) else {
            return CpuTime::default();
        };
        let field = |index: usize| values.get(index).copied().unwrap_or(0);
        let total: u64 = values.iter().sum();
        CpuTime {
            softirq: field(6),
            // idle and iowait
            busy: total.saturating_sub(field(3) + field(4)),
            total,
        }
    }

    /// The shares (softirq, busy) of the time between `self` and `later`, in percent.
    pub fn shares_until(self, later: CpuTime) -> (f64, f64) {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        (
            100.0 * later.softirq.saturating_sub(self.softirq) as f64 / total,
            100.0 * later.busy.saturating_sub(self.busy) as f64 / total,
        )
    }
}

/// Frames the kernel dropped so far because a CPU's input backlog was full (the second
/// column of `/proc/net/softnet_stat`, summed over CPUs): with RPS, what the small origin's
/// CPU could not take.
pub fn backlog_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|hex| u64::from_str_radix(hex, 16).ok())
        .sum()
}

/// Confines every thread of process `pid` to `cpu` (`taskset -a -p`), for the small origin's
/// daemon.
pub fn confine(pid: u32, cpu: usize) -> Result<(), NetNsError> {
    run(std::process::Command::new("taskset").args([
        "-a",
        "-p",
        "-c",
        &cpu.to_string(),
        &pid.to_string(),
    ]))
    .map(drop)
}
