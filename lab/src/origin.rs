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
    /// Starts nginx in `ns` and installs the counter of packets from spoofed sources.
    pub fn start(ns: &NetNs) -> Result<Origin, NetNsError> {
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
        let child = ns
            .command("nginx")
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
        let rules = format!(
            "table inet {TABLE} {{\n  chain pre {{\n    type filter hook prerouting priority -400; policy accept;\n    \
             ip saddr {v4}/{v4_len} counter\n    ip6 saddr {v6}/{v6_len} counter\n  }}\n}}\n"
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

    /// Attack packets (from the spoofed prefixes) that reached the origin's stack so far.
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

/// The machine's CPU time so far as (softirq, total) jiffies, from `/proc/stat`. In a one-machine
/// lab every namespace shares the CPUs, so this is the whole machine's softirq share.
pub fn cpu_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|line| line.starts_with("cpu ")) else {
        return (0, 0);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let softirq = values.get(6).copied().unwrap_or(0);
    (softirq, values.iter().sum())
}
