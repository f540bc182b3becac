//! A real CrowdSec Local API (LAPI) for the root tests and the benchmark: Debian's `crowdsec`
//! 1.4.6, API only, with its configuration, SQLite database and logs in a temporary directory,
//! listening on an address inside a network namespace.
//!
//! [`Lapi`] starts it, hands out bouncer keys, drives it with `cscli`, imports decisions in bulk,
//! reads the bouncer stream, restarts it on the same database and stops it on drop. Every step
//! that can fail returns a [`LapiError`] saying what went wrong, with the LAPI's output and
//! logs where they explain it; the tests wrap these in panics. It does not run moat or any
//! other bouncer, and it never talks to CrowdSec's online API (`-no-capi`).

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use moat::netns::NetNs;

/// The CrowdSec daemon; with `-no-cs -no-capi` it runs only the Local API.
const CROWDSEC_BIN: &str = "/usr/bin/crowdsec";

/// CrowdSec's command line, which writes bouncers and machines to the database directly and
/// adds, lists and imports decisions through the LAPI.
const CSCLI_BIN: &str = "/usr/bin/cscli";

/// The machine (watcher) the harness registers; its credentials file is
/// [`Lapi::credentials_file`].
const MACHINE_ID: &str = "moat";

/// The machine's password: a throwaway LAPI on a namespace's address needs no secret.
const MACHINE_PASSWORD: &str = "moat-test-Passw0rd";

/// The bouncer whose key the harness itself polls to see the LAPI ready, so the "since" point
/// of every key handed out stays untouched.
const READINESS_BOUNCER: &str = "moat-harness-readiness";

/// How long the LAPI may take to answer after it starts (it usually takes ~0.1 s).
const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long the LAPI may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Time between two readiness or exit checks.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long one HTTP request may take (a 100,000-decision startup stream takes ~1.5 s).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of the LAPI's output and logs quoted when it fails to start.
const LOG_TAIL_LINES: usize = 30;

/// The stream path a bouncer polls, with `?startup=true` for everything in force.
const STREAM_PATH: &str = "/v1/decisions/stream";

/// A LAPI that could not be started, driven or read.
#[derive(Debug, thiserror::Error)]
pub enum LapiError {
    /// `crowdsec` or `cscli` is not installed.
    #[error("crowdsec is not installed ({binary} is missing): run `cargo xtask setup`")]
    NotInstalled {
        /// The missing executable.
        binary: &'static str,
    },
    /// A file, a directory or a process could not be handled.
    #[error("{action} {target}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// What it was done to.
        target: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `cscli` failed.
    #[error("cscli {args} failed ({status}): {stderr}")]
    Cscli {
        /// Its arguments, space-separated.
        args: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on standard error.
        stderr: String,
    },
    /// `cscli bouncers add` printed something other than one key.
    #[error("cscli bouncers add {name} printed no single key: {output:?}")]
    NoKey {
        /// The bouncer's name.
        name: String,
        /// What it printed.
        output: String,
    },
    /// A decision handed to [`Lapi::import`] cannot be imported.
    #[error("decision {value:?}: {problem}")]
    BadDecision {
        /// The decision's value.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `cscli decisions import` succeeded without reporting every line imported.
    #[error(
        "cscli decisions import of {count} {scope} decisions did not report {wanted:?}: {stderr}"
    )]
    ImportShort {
        /// Decisions of that scope handed to it.
        count: usize,
        /// The scope (`Ip`, `Range`).
        scope: &'static str,
        /// The line it should have printed.
        wanted: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// [`Lapi::restart`] (or a launch) found the LAPI already running.
    #[error("the LAPI is already running")]
    AlreadyRunning,
    /// `crowdsec` exited before it answered.
    #[error("crowdsec exited ({status}) before answering:\n{logs}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its output and the tails of its logs.
        logs: String,
    },
    /// `crowdsec` did not answer in time; it has been stopped.
    #[error("the LAPI at {url} did not answer within {START_DEADLINE:?} ({last}):\n{logs}")]
    NotAnswering {
        /// Its URL.
        url: String,
        /// The last answer or error.
        last: String,
        /// Its output and the tails of its logs.
        logs: String,
    },
    /// An HTTP request to the LAPI failed.
    #[error("GET {path} from the LAPI at {url}: {source}")]
    Http {
        /// The path requested.
        path: String,
        /// The LAPI's URL.
        url: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The LAPI answered with a status other than 200.
    #[error("GET {path}: HTTP {status}: {body}")]
    Status {
        /// The path requested.
        path: String,
        /// The status code.
        status: u16,
        /// The body, as text.
        body: String,
    },
    /// The LAPI's answer was not JSON.
    #[error("GET {path} answered no JSON ({source}): {body}")]
    Json {
        /// The path requested.
        path: String,
        /// What the parser said.
        source: serde_json::Error,
        /// The body, as text (shortened).
        body: String,
    },
}

/// A running CrowdSec Local API in a network namespace; stopped, and its directory removed,
/// on drop.
pub struct Lapi {
    /// The namespace's handle, for `nsenter --net=` and `setns`.
    ns_path: PathBuf,
    /// Where it listens, inside the namespace.
    listen: SocketAddr,
    /// The key of [`READINESS_BOUNCER`].
    readiness_key: String,
    /// The daemon, while it runs.
    child: Option<Child>,
    /// Configuration, database, logs and scratch files; dropped (removed) after the daemon
    /// stops, since the fields drop after [`Drop::drop`] has run.
    dir: ScratchDir,
}

impl Lapi {
    /// Configures a LAPI in a new temporary directory, registers the machine
    /// [`MACHINE_ID`] (see [`Self::credentials_file`]), starts `crowdsec` inside `ns` listening
    /// on `listen`, and returns once it answers a bouncer's stream request. Fails if crowdsec
    /// is not installed, or exits or does not answer within 20 s.
    pub fn start(ns: &NetNs, listen: SocketAddr) -> Result<Lapi, LapiError> {
        for binary in [CROWDSEC_BIN, CSCLI_BIN] {
            if !Path::new(binary).is_file() {
                return Err(LapiError::NotInstalled { binary });
            }
        }
        let dir = ScratchDir::new("crowdsec")?;
        let root = dir.0.display().to_string();
        let log_dir = dir.0.join("log");
        std::fs::create_dir_all(&log_dir).map_err(|source| LapiError::Io {
            action: "creating",
            target: log_dir.display().to_string(),
            source,
        })?;
        dir.write("profiles.yaml", PROFILES_YAML)?;
        dir.write("config.yaml", &config_yaml(&root, listen))?;
        let mut lapi = Lapi {
            ns_path: ns.path(),
            listen,
            readiness_key: String::new(),
            child: None,
            dir,
        };
        lapi.readiness_key = lapi.bouncer_key(READINESS_BOUNCER)?;
        let credentials = lapi.credentials_file().display().to_string();
        let url = lapi.url();
        lapi.cscli(&[
            "machines",
            "add",
            MACHINE_ID,
            "--password",
            MACHINE_PASSWORD,
            "--file",
            &credentials,
            "--url",
            &url,
        ])?;
        lapi.launch()?;
        Ok(lapi)
    }

    /// Registers the bouncer `name` and returns its API key. Each moat instance needs its own
    /// key: the stream remembers, per key, what it has already sent.
    pub fn bouncer_key(&self, name: &str) -> Result<String, LapiError> {
        let output = self.cscli(&["bouncers", "add", name, "-o", "raw"])?;
        let key = output.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(LapiError::NoKey {
                name: name.to_string(),
                output,
            });
        }
        Ok(key.to_owned())
    }

    /// The machine's credentials (`url`, `login`, `password`), as `cscli machines add` wrote
    /// them; `url` is [`Self::url`].
    pub fn credentials_file(&self) -> PathBuf {
        self.dir.0.join("local_api_credentials.yaml")
    }

    /// The LAPI's base URL, e.g. `http://127.0.0.1:8080/`, reachable inside the namespace; for
    /// a LAPI listening on every address (`0.0.0.0`, `::`), the loopback one.
    pub fn url(&self) -> String {
        format!("http://{}/", self.connect_addr())
    }

    /// Where a client inside the namespace reaches the LAPI: the listen address, with loopback
    /// in place of an unspecified IP.
    fn connect_addr(&self) -> SocketAddr {
        let mut addr = self.listen;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        addr
    }

    /// Runs `cscli -c CONFIG ARGS...` inside the namespace (the commands that go through the
    /// LAPI reach it at [`Self::url`] there) and returns its standard output; fails with its
    /// standard error unless it succeeds.
    pub fn cscli(&self, args: &[&str]) -> Result<String, LapiError> {
        let output = self.cscli_output(args)?;
        if !output.status.success() {
            return Err(LapiError::Cscli {
                args: args.join(" "),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Imports decisions with `cscli decisions import`, each `(value, scope, duration)`: the
    /// scope is `Ip` or `Range`, exactly as the stream spells them (a lowercase `ip` is stored
    /// but never streamed), the duration a Go duration such as `1h` or `90m`. cscli 1.4.6 takes
    /// the scope of every line from its `--scope` flag, ignoring a CSV column, so this runs one
    /// import per scope. Fails, before importing anything, on a scope other than those two or
    /// a field that does not fit in CSV, and fails unless cscli reports every line imported.
    pub fn import(&self, decisions: &[(String, &str, &str)]) -> Result<(), LapiError> {
        for (value, scope, duration) in decisions {
            let problem = if !matches!(*scope, "Ip" | "Range") {
                format!("scope {scope:?} is neither Ip nor Range")
            } else if value.contains([',', '\n']) || duration.contains([',', '\n']) {
                format!("it or its duration {duration:?} does not fit in a CSV field")
            } else {
                continue;
            };
            return Err(LapiError::BadDecision {
                value: value.clone(),
                problem,
            });
        }
        for scope in ["Ip", "Range"] {
            let mut csv = String::from("duration,value\n");
            let mut count = 0usize;
            for (value, _, duration) in decisions.iter().filter(|(_, s, _)| *s == scope) {
                csv.push_str(&format!("{duration},{value}\n"));
                count += 1;
            }
            if count == 0 {
                continue;
            }
            let file = self.dir.write(&format!("import-{scope}.csv"), &csv)?;
            let file = file.display().to_string();
            let args = ["decisions", "import", "-i", &file, "--scope", scope];
            let output = self.cscli_output(&args)?;
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            if !output.status.success() {
                return Err(LapiError::Cscli {
                    args: args.join(" "),
                    status: output.status,
                    stderr,
                });
            }
            let wanted = format!("{count} decisions successfully imported");
            if !stderr.contains(&wanted) {
                return Err(LapiError::ImportShort {
                    count,
                    scope,
                    wanted,
                    stderr,
                });
            }
        }
        Ok(())
    }

    /// `GET /v1/decisions/stream` with bouncer `key` (`?startup=true` if `startup`), from inside
    /// the namespace: the body, unparsed, as a bouncer receives it. Fails unless the LAPI
    /// answers 200.
    pub fn stream_body(&self, key: &str, startup: bool) -> Result<Vec<u8>, LapiError> {
        let path = stream_path(startup);
        let (status, body) = self.get(&path, key).map_err(|source| LapiError::Http {
            path: path.clone(),
            url: self.url(),
            source,
        })?;
        if status != 200 {
            return Err(LapiError::Status {
                path,
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }

    /// [`Self::stream_body`], parsed. Note that empty lists come back as `null`.
    pub fn decisions_stream(
        &self,
        key: &str,
        startup: bool,
    ) -> Result<serde_json::Value, LapiError> {
        let body = self.stream_body(key, startup)?;
        serde_json::from_slice(&body).map_err(|source| LapiError::Json {
            path: stream_path(startup),
            source,
            body: String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned(),
        })
    }

    /// Stops the LAPI: SIGTERM, then SIGKILL if it has not exited within 10 s. Does nothing if
    /// it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child, so the
        // pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < until => std::thread::sleep(POLL_INTERVAL),
                _ => break,
            }
        }
        log::warn!("crowdsec ignored SIGTERM, killing it pid={pid} waited={STOP_DEADLINE:?}");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the LAPI if it runs, then starts it again on the same directory, database and
    /// address, and waits until it answers.
    pub fn restart(&mut self) -> Result<(), LapiError> {
        self.stop();
        self.launch()
    }

    /// Starts `crowdsec` in the namespace, its output appended to `crowdsec.out`, and waits
    /// until a bouncer's stream request succeeds; fails with its output and logs if it exits
    /// or does not answer within [`START_DEADLINE`] (then it is stopped).
    fn launch(&mut self) -> Result<(), LapiError> {
        if self.child.is_some() {
            return Err(LapiError::AlreadyRunning);
        }
        let out_path = self.dir.0.join("crowdsec.out");
        let io = |action: &'static str| {
            let target = out_path.display().to_string();
            move |source| LapiError::Io {
                action,
                target,
                source,
            }
        };
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .map_err(io("opening"))?;
        let err = out.try_clone().map_err(io("duplicating"))?;
        let config = self.dir.0.join("config.yaml");
        let child = self
            .netns_command(CROWDSEC_BIN)
            .arg("-c")
            .arg(&config)
            .args(["-no-cs", "-no-capi"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LapiError::Io {
                action: "starting crowdsec through nsenter in",
                target: self.ns_path.display().to_string(),
                source,
            })?;
        self.child = Some(child);
        let until = Instant::now() + START_DEADLINE;
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("launched above; only stop() takes it")
                .try_wait()
                .map_err(|source| LapiError::Io {
                    action: "checking on",
                    target: "crowdsec".to_string(),
                    source,
                })?;
            if let Some(status) = exited {
                self.child = None;
                return Err(LapiError::Exited {
                    status,
                    logs: self.logs(),
                });
            }
            let answered = self.get(&stream_path(true), &self.readiness_key);
            if matches!(answered, Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() >= until {
                let last = match answered {
                    Ok((status, _)) => format!("HTTP {status}"),
                    Err(error) => error.to_string(),
                };
                let logs = self.logs();
                self.stop();
                return Err(LapiError::NotAnswering {
                    url: self.url(),
                    last,
                    logs,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `cscli -c CONFIG ARGS...` run inside the namespace, whatever its outcome.
    fn cscli_output(&self, args: &[&str]) -> Result<Output, LapiError> {
        self.netns_command(CSCLI_BIN)
            .arg("-c")
            .arg(self.dir.0.join("config.yaml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LapiError::Io {
                action: "running cscli through nsenter in",
                target: self.ns_path.display().to_string(),
                source,
            })
    }

    /// A command running `program` in the namespace, as `NetNs::command` builds it:
    /// `nsenter --net`, which, unlike `ip netns exec`, leaves /sys alone.
    fn netns_command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.ns_path.display()))
            .arg("--")
            .arg(program);
        command
    }

    /// A plain HTTP/1.0 `GET path` with the bouncer header `X-Api-Key: key`, from a thread in
    /// the namespace: the status code and the body. HTTP/1.0 makes the server close the
    /// connection after one unchunked response, so the body is everything after the headers.
    fn get(&self, path: &str, key: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let to = self.connect_addr();
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {to}\r\nX-Api-Key: {key}\r\nUser-Agent: \
             moat-lab\r\n\r\n"
        );
        let response = in_netns(&self.ns_path, move || -> std::io::Result<Vec<u8>> {
            let mut stream = TcpStream::connect_timeout(&to, HTTP_TIMEOUT)?;
            stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
            stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
            stream.write_all(request.as_bytes())?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response)?;
            Ok(response)
        })??;
        parse_response(&response)
    }

    /// The daemon's output and the tail of each of its logs, for an error message.
    fn logs(&self) -> String {
        ["crowdsec.out", "log/crowdsec_api.log", "log/crowdsec.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
                format!("--- {name}:\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The stream's path, with `?startup=true` if `startup`.
fn stream_path(startup: bool) -> String {
    if startup {
        format!("{STREAM_PATH}?startup=true")
    } else {
        STREAM_PATH.to_string()
    }
}

/// A temporary directory, removed with everything in it on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new, empty directory named after `name`, this process and a counter.
    fn new(name: &str) -> Result<ScratchDir, LapiError> {
        let dir =
            std::env::temp_dir().join(format!("moat-{name}-{}", moat::netns::unique_suffix()));
        std::fs::create_dir_all(&dir).map_err(|source| LapiError::Io {
            action: "creating",
            target: dir.display().to_string(),
            source,
        })?;
        Ok(ScratchDir(dir))
    }

    /// Writes `text` to the file `name` in it and returns the file's path.
    fn write(&self, name: &str, text: &str) -> Result<PathBuf, LapiError> {
        let path = self.0.join(name);
        std::fs::write(&path, text).map_err(|source| LapiError::Io {
            action: "writing",
            target: path.display().to_string(),
            source,
        })?;
        Ok(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The one profile the LAPI needs: alerts on an IP get a 4 h ban (decisions that arrive with
/// an alert, as moat's and cscli's do, keep their own duration).
const PROFILES_YAML: &str = "\
name: default_ip_remediation
filters:
 - Alert.Remediation == true && Alert.GetScope() == \"Ip\"
decisions:
 - type: ban
   duration: 4h
on_success: break
";

/// The LAPI's `config.yaml`: everything under `root`, listening on `listen`, trusting
/// loopback and the listen address (unless unspecified). Log level `warning`, since at `info`
/// every imported decision writes a line; no `flush:` block, since flushing deletes alerts
/// after a minute without the stream ever reporting those deletions.
fn config_yaml(root: &str, listen: SocketAddr) -> String {
    let mut trusted: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    if !listen.ip().is_unspecified() && !trusted.contains(&listen.ip()) {
        trusted.push(listen.ip());
    }
    let trusted = trusted
        .iter()
        .map(|ip| format!("\"{ip}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "\
common: {{daemonize: false, log_media: file, log_level: warning, log_dir: {root}/log/}}
config_paths: {{config_dir: {root}/, data_dir: {root}/, hub_dir: {root}/hub/, \
index_path: {root}/hub/.index.json, simulation_path: {root}/simulation.yaml, \
notification_dir: {root}/notifications/, plugin_dir: /usr/lib/crowdsec/plugins/}}
db_config: {{type: sqlite, db_path: {root}/crowdsec.db, use_wal: true}}
api:
  client: {{credentials_path: {root}/local_api_credentials.yaml}}
  server:
    listen_uri: \"{listen}\"
    profiles_path: {root}/profiles.yaml
    trusted_ips: [{trusted}]
prometheus: {{enabled: false}}
"
    )
}

/// Runs `f` on a new thread that has entered the network namespace at `ns_path` (sockets it
/// opens live there) and returns its result.
fn in_netns<T: Send>(ns_path: &Path, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let handle = File::open(ns_path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: `handle` is an open namespace file; setns changes only this thread,
                // which ends with `f`.
                if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Splits an HTTP/1.x response into its status code and body.
fn parse_response(response: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{what} in {:?}",
                String::from_utf8_lossy(&response[..response.len().min(200)])
            ),
        )
    };
    let end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    Ok((status, response[end + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_response_into_status_and_body() {
        let (status, body) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n{\"new\":null}")
                .expect("a response");
        assert_eq!((status, body.as_slice()), (200, &b"{\"new\":null}"[..]));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n").is_err(),
            "no end of headers"
        );
    }

    #[test]
    fn trusts_loopback_and_a_specific_listen_address() {
        let yaml = config_yaml("/r", "10.0.0.1:8080".parse().expect("literal"));
        assert!(
            yaml.contains("trusted_ips: [\"127.0.0.1\", \"::1\", \"10.0.0.1\"]"),
            "{yaml}"
        );
        let any = config_yaml("/r", "0.0.0.0:8080".parse().expect("literal"));
        assert!(
            any.contains("trusted_ips: [\"127.0.0.1\", \"::1\"]"),
            "{any}"
        );
    }
}
