//! The command line, as clap types only. Every doc comment here is `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::config::Mode;

/// moat: an XDP packet filter that keeps a self-hosted origin up under DDoS floods.
///
/// Errors print one line on stderr and exit with code 2.
#[derive(Debug, Parser)]
#[command(name = "moat", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// moat's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the filter, attach it to an interface and keep it there until SIGINT or SIGTERM.
    ///
    /// Pins the program link and maps under /sys/fs/bpf/moat/IFACE/ so `moat stats` can read
    /// them from another process; removes the pins and detaches on exit. SIGHUP re-reads the
    /// configuration file.
    Run(RunArgs),
    /// Print the counters of the filter running on an interface, the rates per reason, the top
    /// sources, prefixes and ports among sampled drops, and the bans in force.
    Stats(StatsArgs),
    /// The same as stats, refreshing in place like top(1) until Ctrl-C.
    Top(TopArgs),
    /// Edit or show the allowlist: sources passed before every other stage.
    Allow(ListArgs),
    /// Edit or show the denylist: sources dropped.
    Deny(ListArgs),
    /// Ban a source for a while, lift a ban, or list bans in force.
    Ban(BanArgs),
    /// Change one threshold of a running filter live (the configuration file's dotted keys,
    /// e.g. `limits.source.syn.pps`). A SIGHUP reload replaces it with the file's value.
    Set(SetArgs),
    /// Check a configuration file, or show the effective configuration.
    Config(ConfigArgs),
    /// Remove the filter a killed `moat run` left attached to an interface, and its pins.
    ///
    /// Refuses while a `moat run` holds the interface. `--purge` also removes the persistent
    /// counters, which otherwise carry over to the next run.
    Detach(DetachArgs),
    /// Print a shell completion script (for packaging).
    #[command(hide = true)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page in roff (for packaging).
    #[command(hide = true)]
    Man,
}

/// Arguments of `moat ban`.
#[derive(Debug, Args)]
pub struct BanArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: BanAction,
}

/// Ban commands.
#[derive(Debug, Subcommand)]
pub enum BanAction {
    /// Ban an address (an IPv6 ban covers its /64, or `bans.ipv6_prefix`).
    Add {
        /// The interface whose filter to edit.
        #[arg(long, value_name = "IFACE")]
        iface: String,
        /// How long: e.g. 90s, 10m, 2h, 1d.
        #[arg(
            long = "for",
            value_name = "DURATION",
            default_value = "1h",
            allow_hyphen_values = true
        )]
        length: String,
        /// The address.
        #[arg(value_name = "ADDR")]
        addr: String,
        /// Ban even the SSH client running this command (or its IPv6 prefix).
        #[arg(long)]
        force: bool,
    },
    /// Lift the ban on an address.
    Del {
        /// The interface whose filter to edit.
        #[arg(long, value_name = "IFACE")]
        iface: String,
        /// The address.
        #[arg(value_name = "ADDR")]
        addr: String,
    },
    /// List bans in force, longest remaining first.
    List(IfaceArgs),
}

/// Arguments of `moat set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The interface whose filter to tune.
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// The key, e.g. limits.source.syn.pps, bans.base, fragments.policy, dry_run.
    #[arg(value_name = "KEY")]
    pub key: String,
    /// The value, e.g. 100, 10m, rate-limit, true.
    #[arg(value_name = "VALUE", allow_hyphen_values = true)]
    pub value: String,
}

/// Arguments of `moat config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// Configuration commands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate a file: every problem is printed with its line and key; exit 2 if any.
    Check {
        /// The file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the effective configuration (defaults filled in) as TOML; with --iface, the
    /// running filter's value of every key `moat set` changes instead.
    Show {
        /// The file; /etc/moat/moat.toml if it exists, else the defaults.
        #[arg(long, value_name = "FILE", conflicts_with = "iface")]
        config: Option<PathBuf>,
        /// The interface whose running values to print, after `moat set` or a reload.
        #[arg(long, value_name = "IFACE")]
        iface: Option<String>,
    },
    /// Print every configuration key, whether `moat set` changes it live, and what it means,
    /// as a markdown table (README.md's table is this output).
    Keys,
    /// Print the packaged, commented configuration file: every key at its default, under a
    /// comment that explains it (/etc/moat/moat.toml as installed is this output).
    Example,
}

/// Arguments of `moat allow` and `moat deny`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// What to do with the list.
    #[command(subcommand)]
    pub action: ListAction,
}

/// Edits of a list. Every prefix is validated before any is applied, and a failure (a full
/// list, an absent prefix) leaves the list exactly as it was.
#[derive(Debug, Subcommand)]
pub enum ListAction {
    /// Add prefixes (already-present ones are reported, not errors).
    Add(ListAddArgs),
    /// Delete prefixes; every one must be on the list.
    Del(ListEditArgs),
    /// Print every prefix on the list, one a line.
    List(IfaceArgs),
}

/// Prefixes to add or delete.
#[derive(Debug, Args)]
pub struct ListEditArgs {
    /// The interface whose filter to edit.
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// A file of prefixes, one a line; `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Prefixes such as 203.0.113.0/24, 2001:db8::/32, or a bare address for one host.
    #[arg(value_name = "CIDR", required_unless_present = "file")]
    pub cidrs: Vec<String>,
}

/// Prefixes to add.
#[derive(Debug, Args)]
pub struct ListAddArgs {
    /// The prefixes.
    #[command(flatten)]
    pub edit: ListEditArgs,
    /// Add even a whole address family (0.0.0.0/0, ::/0: denied, it drops the family; allowed,
    /// it passes the family unfiltered) or, to the denylist, a prefix holding the address of
    /// the SSH client running this command, which would lock that client out.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `moat detach`.
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The interface whose orphaned filter to remove.
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// Remove the persistent counters too, and save nothing (the package's purge does).
    #[arg(long)]
    pub purge: bool,
    /// Where the lists and bans of the filter are saved before it is detached (IFACE.json, as
    /// `moat run --state-dir` saves them), so the next `moat run` restores every change made
    /// since the daemon last saved.
    #[arg(long, value_name = "DIR", default_value = crate::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// Just an interface.
#[derive(Debug, Args)]
pub struct IfaceArgs {
    /// The interface whose filter to read.
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
}

/// Arguments of `moat run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The interface to protect, e.g. eth0.
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// Attach mode; overrides `mode` in the configuration file (itself auto unless set).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Configuration file. Without it, /etc/moat/moat.toml is read if it exists, else the
    /// built-in defaults apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Judge and count every packet, but pass the ones that would be dropped (counted as
    /// would_drop).
    #[arg(long)]
    pub dry_run: bool,
    /// Replace an XDP program that another tool attached to the interface.
    #[arg(long)]
    pub force: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics, or `off`.
    #[arg(long, value_name = "ADDR:PORT", default_value = crate::metrics::DEFAULT_ADDR)]
    pub metrics: String,
    /// Where the allow and deny lists and the bans are saved (IFACE.json), every minute and
    /// at stop, and restored from when a fresh filter attaches.
    #[arg(long, value_name = "DIR", default_value = crate::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Load the build of the program that logs every verdict through aya-log (at debug level:
    /// RUST_LOG=debug). Much slower; for finding out why packets get their verdicts. A
    /// running filter is taken over by it, and back, with no gap.
    #[arg(long)]
    pub debug_log: bool,
}

/// Arguments of `moat stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The interface whose filter to read.
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// Print JSON instead of a table: {"iface", "total", "counters": {VERDICT: {REASON:
    /// {"packets", "bytes"}}}, "rates" ([{"verdict", "reason", "pps", "bps"}], packets and bits
    /// per second), "sample_every", "samples_lost", "top_sources", "top_prefixes",
    /// "top_ports", "crowdsec" (null without a bouncer), "bans"}, every counter pair present.
    #[arg(long)]
    pub json: bool,
    /// Measure rates over this many seconds first (0: counters only, no rates).
    #[arg(long, value_name = "SECONDS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub window: u64,
}

/// Arguments of `moat top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The interface whose filter to watch.
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// Seconds between refreshes.
    #[arg(long, value_name = "SECONDS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// Stop after this many refreshes (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}
