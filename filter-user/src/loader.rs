//! Loads the XDP object, attaches it to an interface and pins its link and maps; detaches and
//! unpins on the way out.
//!
//! Attaching either completes (program attached, every map and the link pinned) or leaves the
//! interface as it was: each step that fails undoes the ones before it.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    pin::PinError,
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use filter_common::maps::{
    ALL_MAPS, ALLOW_V4, ALLOW_V6, BANS, DENY_V4, DENY_V6, LIST_INDEX, PERSISTENT_MAPS, PIN_ROOT,
    PROGRAM_NAME, SOURCES,
};
use log::{debug, warn};

use crate::{
    FILTER_OBJECT, FILTER_OBJECT_DEBUG_LOG,
    bansummary::BanSummary,
    config::Mode,
    listindex::{IndexError, ListIndex},
    migrate::{self, Fit, MigrateError, Pinned},
    pins::{PinDir, remove_if_present},
    policy::{self, ControlError, Policy, PolicyLock, PolicyMaps},
};

/// Environment variable naming a build of the XDP object to load instead of the ones embedded
/// in this binary (for developers trying a program build; the tests load a broken one).
pub const OBJECT_ENV: &str = "MOAT_OBJECT";

/// The XDP object to load: the embedded one (with `debug_log`, its aya-log build), or the file
/// [`OBJECT_ENV`] names.
fn filter_object(debug_log: bool) -> Result<std::borrow::Cow<'static, [u8]>, LoadError> {
    match std::env::var_os(OBJECT_ENV) {
        None if debug_log => Ok(std::borrow::Cow::Borrowed(FILTER_OBJECT_DEBUG_LOG)),
        None => Ok(std::borrow::Cow::Borrowed(FILTER_OBJECT)),
        Some(path) => std::fs::read(&path)
            .map(std::borrow::Cow::Owned)
            .map_err(|source| LoadError::Io {
                action: "reading the XDP object",
                path: PathBuf::from(path),
                source,
            }),
    }
}

pub use crate::pins::LOCK_DIR;

/// What to attach where.
#[derive(Clone, Debug)]
pub struct AttachRequest {
    /// Interface name (validated by [`crate::preflight`]).
    pub iface: String,
    /// Interface index in the current network namespace.
    pub ifindex: u32,
    /// Requested mode.
    pub mode: Mode,
    /// Replace a foreign XDP program.
    pub force: bool,
    /// Settings, ports and trusted upstreams, written before the program sees a packet.
    pub policy: Policy,
    /// Map capacities, fixed at load.
    pub capacities: Capacities,
    /// Load the aya-log build of the program.
    pub debug_log: bool,
}

/// Map capacities fixed when the program loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Each allowlist trie.
    pub allow: u32,
    /// Each denylist trie.
    pub deny: u32,
    /// Tracked sources (`SOURCES` gets as many sets, rounded up to a power of two: twice the ways).
    pub sources: u32,
    /// Bans.
    pub bans: u32,
}

impl Capacities {
    /// The `max_entries` each sized map gets.
    pub fn overrides(&self) -> [(&'static str, u32); 6] {
        [
            (ALLOW_V4, self.allow),
            (ALLOW_V6, self.allow),
            (DENY_V4, self.deny),
            (DENY_V6, self.deny),
            (SOURCES, filter_common::sources::sets_for(self.sources)),
            (BANS, self.bans),
        ]
    }

    /// The capacities a configuration asks for.
    pub fn of(config: &crate::config::Config) -> Capacities {
        Capacities {
            allow: config.allow_capacity,
            deny: config.deny_capacity,
            sources: config.max_tracked_sources,
            bans: config.max_bans,
        }
    }

    /// `config` with these capacities in place of its own: what a reload, which cannot resize
    /// the maps, compiles its policy from, since the policy describes the maps (the settings
    /// name the `SOURCES` sets a source hashes into, and a set past the map's end would abort
    /// its packets).
    pub fn kept_in(&self, mut config: crate::config::Config) -> crate::config::Config {
        config.allow_capacity = self.allow;
        config.deny_capacity = self.deny;
        config.max_tracked_sources = self.sources;
        config.max_bans = self.bans;
        config
    }
}

/// Why the filter could not be attached or detached.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `moat detach` could not save what the filter it was to detach holds.
    #[error(
        "saving the lists and bans of {iface} failed, so its filter stays attached: {source}; \
         fix that, or pass --purge to detach without saving"
    )]
    SaveBeforeDetach {
        /// The interface.
        iface: String,
        /// Why saving failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another `moat run` holds the interface.
    #[error("moat is already running on {iface} (lock {lock} is held); stop it first")]
    AlreadyRunning {
        /// The interface.
        iface: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The instance lock could not be taken.
    #[error("locking {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another XDP program is attached and `--force` was not given.
    #[error(
        "{iface} already has an XDP program attached by another tool; pass --force to replace it"
    )]
    OtherProgram {
        /// The interface.
        iface: String,
    },
    /// `--force` could not remove the other program.
    #[error(
        "could not remove the XDP program already on {iface}: it is held by a BPF link of another \
         process; stop that process"
    )]
    OtherProgramStuck {
        /// The interface.
        iface: String,
    },
    /// The driver cannot run XDP natively.
    #[error(
        "the driver of {iface} does not support native XDP; use --mode skb (or --mode auto to \
         fall back)"
    )]
    NativeUnsupported {
        /// The interface.
        iface: String,
    },
    /// The driver refused native mode for this interface's MTU (too large for XDP without
    /// multi-buffer support).
    #[error(
        "the driver of {iface} refuses native XDP at its MTU{} (a jumbo MTU is too large for \
         XDP on this driver); lower the MTU, or use --mode skb (or --mode auto to fall back)",
        mtu.map(|mtu| format!(" of {mtu}")).unwrap_or_default()
    )]
    NativeMtu {
        /// The interface.
        iface: String,
        /// Its MTU, if it could be read.
        mtu: Option<u32>,
    },
    /// The object could not be parsed or its maps created.
    #[error(
        "loading the XDP object (if counters pinned by another moat version are incompatible, \
         remove {persistent}): {source}"
    )]
    Load {
        /// Where the persistent maps are pinned.
        persistent: PathBuf,
        /// What aya reported (boxed: `EbpfError` is large).
        source: Box<EbpfError>,
    },
    /// The program failed to load (verifier) or attach.
    #[error("{action} on {iface}: {source}")]
    Program {
        /// What was being done.
        action: &'static str,
        /// The interface.
        iface: String,
        /// What aya reported.
        source: ProgramError,
    },
    /// The object lacks the program (the object and this binary disagree).
    #[error("the XDP object has no program named {PROGRAM_NAME}")]
    MissingProgram,
    /// Writing the initial settings failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A pin could not be created.
    #[error("pinning {path}: {source}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// What aya reported.
        source: PinError,
    },
    /// The kernel attached through netlink, whose attachments cannot be pinned.
    #[error("the kernel attached {iface} without a BPF link (Linux 5.9 or newer is required)")]
    NoLink {
        /// The interface.
        iface: String,
    },
    /// Taking over the filter an earlier run left attached failed before the swap; that filter
    /// is still attached and protecting.
    #[error(
        "taking over the filter already attached to {iface} failed, so it stays attached and \
         protecting (moat detach --iface {iface} removes it): {reason}"
    )]
    TakeOver {
        /// The interface.
        iface: String,
        /// What failed.
        reason: String,
    },
    /// The maps an earlier run pinned cannot be carried over.
    #[error(
        "{source} (to start afresh: `moat detach --iface {iface}`, then start moat again; with \
         --state-dir, the saved lists and bans come back, as many as the new capacities hold)"
    )]
    Migrate {
        /// The interface.
        iface: String,
        /// What could not be carried over (boxed: it is large).
        source: Box<MigrateError>,
    },
    /// Pins could not be created or removed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A filter attached to an interface, with its link and maps pinned.
#[derive(Debug)]
pub struct Filter {
    ebpf: Ebpf,
    iface: String,
    mode: Mode,
    pins: PinDir,
    link: Option<PinnedLink>,
    taken_over: bool,
    handed_over: bool,
    _lock: InstanceLock,
}

impl Filter {
    /// Loads the embedded object and attaches it as `request` says, under `lock` if the caller
    /// already holds the interface's instance lock.
    pub fn attach(
        request: &AttachRequest,
        lock: Option<InstanceLock>,
    ) -> Result<Filter, LoadError> {
        let iface = request.iface.as_str();
        let lock = match lock {
            Some(lock) => lock,
            None => InstanceLock::acquire(iface)?,
        };
        let pins = PinDir::for_iface(iface);
        let running = pins.link().exists();
        if running {
            match PinnedLink::from_pin(pins.link()) {
                Ok(link) => return Filter::take_over(request, lock, pins, link),
                Err(error) => warn!(
                    "the pinned link of an earlier run is unreadable, replacing it iface={iface} \
                     error={error}"
                ),
            }
        }
        if pins.exists() {
            warn!(
                "removing pins of an earlier run that did not exit cleanly iface={iface} path={}",
                pins.path().display()
            );
            remove_pins(&pins)?;
        }

        let capacities = request.capacities;
        std::fs::create_dir_all(pins.persistent_path()).map_err(|source| LoadError::Io {
            action: "creating",
            path: pins.persistent_path().to_path_buf(),
            source,
        })?;
        // The persistent maps are reused if an earlier run pinned them, so counters continue;
        // if their layout changed, they are carried over into new ones.
        let object = filter_object(request.debug_log)?;
        let planned = plan_pins(
            iface,
            &object,
            capacities,
            PERSISTENT_MAPS.iter().map(|name| (*name, pins.map(name))),
        )?;
        let mut loader = EbpfLoader::new();
        // Reused where they fit; created and pinned by aya where nothing is pinned yet.
        for name in PERSISTENT_MAPS {
            let replaced = planned
                .iter()
                .any(|pinned| pinned.name == *name && matches!(pinned.fit, Fit::Replace { .. }));
            if !replaced {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = load_object(&mut loader, &object, capacities, &pins)?;
        let policy = with_clock(iface, &mut ebpf, &request.policy);
        let replaced = carry_over(iface, &mut ebpf, planned)?;
        repin_all(&ebpf, &pins, &replaced)?;
        policy::write_policy(&ebpf, &policy)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(LoadError::MissingProgram)?
            .try_into()
            .map_err(|source| program_error("loading the program", iface, source))?;
        program
            .load()
            .map_err(|source| program_error("loading the program", iface, source))?;
        let (link_id, mode) = attach_in_mode(program, request)?;
        let link = program
            .take_link(link_id)
            .map_err(|source| program_error("taking the link", iface, source))?;
        // From here on, dropping `link` detaches the program, so an early return leaves the
        // interface as it was.
        let link = FdLink::try_from(link).map_err(|_| LoadError::NoLink {
            iface: iface.to_string(),
        })?;

        let mut filter = Filter {
            ebpf,
            iface: iface.to_string(),
            mode,
            pins,
            link: None,
            taken_over: false,
            handed_over: false,
            _lock: lock,
        };
        // Maps first and the link last: a pinned link means everything is ready.
        filter.pin_maps()?;
        let link_path = filter.pins.link();
        filter.link = Some(link.pin(&link_path).map_err(|source| LoadError::Pin {
            path: link_path,
            source,
        })?);
        Ok(filter)
    }

    /// Takes over the filter an earlier `moat run` left attached (it crashed or was killed):
    /// loads this binary's program on the pinned maps, so lists, bans, verified sources,
    /// per-source state and counters carry on, writes the policy, and swaps the program in on
    /// the pinned link with one `bpf_link_update`, so no packet meets an interface without a
    /// filter. Maps this version adds are created and pinned. If anything fails before the
    /// swap, the running filter stays attached, untouched: the new program is verified before
    /// anything it shares with the running one changes, and a swap that fails after the new
    /// policy went into the shared policy maps makes packets read the running one's again.
    fn take_over(
        request: &AttachRequest,
        lock: InstanceLock,
        pins: PinDir,
        running: PinnedLink,
    ) -> Result<Filter, LoadError> {
        let iface = request.iface.as_str();
        let refused = |reason: String| LoadError::TakeOver {
            iface: iface.to_string(),
            reason,
        };
        let object =
            filter_object(request.debug_log).map_err(|error| refused(error.to_string()))?;
        let planned = plan_pins(
            iface,
            &object,
            request.capacities,
            ALL_MAPS.iter().map(|name| (*name, pins.map(name))),
        )
        .map_err(|error| refused(error.to_string()))?;
        let mut loader = EbpfLoader::new();
        reuse(&mut loader, &planned);
        let mut ebpf = load_object(&mut loader, &object, request.capacities, &pins)
            .map_err(|error| refused(error.to_string()))?;
        let policy = with_clock(iface, &mut ebpf, &request.policy);
        // No list edit from here until the new maps are pinned: one made while the lists are
        // copied would go to a map about to be replaced, or miss the rebuilt index.
        let lists_lock =
            crate::control::lists_lock(iface).map_err(|error| refused(error.to_string()))?;
        let replaced =
            carry_over(iface, &mut ebpf, planned).map_err(|error| refused(error.to_string()))?;
        // An index this version creates beside lists an earlier one filled starts empty, which
        // would hide every entry: mark them all before the program can read it.
        if replaced.contains(&LIST_INDEX) || !pins.map(LIST_INDEX).exists() {
            let marked = ebpf
                .map(LIST_INDEX)
                .ok_or(IndexError::Missing)
                .and_then(ListIndex::of_map)
                .and_then(|index| index.rebuild(&ebpf))
                .map_err(|error| refused(error.to_string()))?;
            log::info!("built the list index from the lists iface={iface} entries={marked}");
        }
        // Verified first: a program the kernel refuses must leave the maps the running program
        // shares with it (the policy, the bans summary) as they were.
        xdp_program(&mut ebpf)
            .map_err(refused)?
            .load()
            .map_err(|error| refused(format!("loading the new program: {error}")))?;
        // The program looks every ban up until this daemon's sweep rebuilds the summary: the
        // table may hold bans copied or restored into it, or a summary an earlier run left.
        BanSummary::of_object(&ebpf)
            .map_err(|error| refused(error.to_string()))?
            .look_up_all();
        // Under the policy lock until the swap, so no `moat set` lands between the policy
        // written here and the program that reads it.
        let policy_lock = PolicyLock::acquire(iface).map_err(|error| refused(error.to_string()))?;
        let mut policy_maps =
            PolicyMaps::of_object(&ebpf).map_err(|error| refused(error.to_string()))?;
        let running_slot = policy_maps
            .active_slot()
            .map_err(|error| refused(error.to_string()))?;
        policy_maps
            .write(&policy)
            .map_err(|error| refused(error.to_string()))?;
        // From here on a failure before the swap puts the running policy back.
        let restore = |policy_maps: &mut PolicyMaps, error: String| {
            if let Err(restoring) = policy_maps.activate(running_slot) {
                log::error!(
                    "the running filter now reads the new policy: putting its own back failed \
                     iface={iface} error=\"{restoring}\""
                );
            }
            refused(error)
        };
        let program = match xdp_program(&mut ebpf) {
            Ok(program) => program,
            Err(error) => return Err(restore(&mut policy_maps, error)),
        };
        let link = XdpLink::try_from(FdLink::from(running))
            .map_err(|error| refused(format!("the pinned link is not an XDP link: {error}")))?;
        let mode = attached_mode(iface);
        // A take-over keeps the attachment, and with it the mode: changing it means detaching.
        if request.mode != Mode::Auto && request.mode != mode {
            warn_mode_kept(iface, mode, request.mode);
        }
        // The swap: from here on this program judges every packet.
        let id = match program.attach_to_link(link) {
            Ok(id) => id,
            Err(error) => {
                return Err(restore(
                    &mut policy_maps,
                    format!("swapping the program in: {error}"),
                ));
            }
        };
        let link = program
            .take_link(id)
            .map_err(|source| program_error("taking the link", iface, source))?;
        let link = FdLink::try_from(link).map_err(|_| LoadError::NoLink {
            iface: iface.to_string(),
        })?;
        drop(policy_lock);
        // Maps this version replaced or adds get their pins now that the old program is gone.
        let fresh: Vec<&'static str> = ALL_MAPS
            .iter()
            .copied()
            .filter(|name| replaced.contains(name) || !pins.map(name).exists())
            .collect();
        repin_all(&ebpf, &pins, &fresh)?;
        drop(lists_lock);
        // The old pin names the same link; pin it again as ours (the link stays attached).
        let link_path = pins.link();
        remove_if_present(&link_path).map_err(|source| LoadError::Io {
            action: "removing",
            path: link_path.clone(),
            source,
        })?;
        let link = link.pin(&link_path).map_err(|source| LoadError::Pin {
            path: link_path,
            source,
        })?;
        log::info!("took over the running filter iface={iface}");
        Ok(Filter {
            ebpf,
            iface: iface.to_string(),
            mode,
            pins,
            link: Some(link),
            taken_over: true,
            handed_over: false,
            _lock: lock,
        })
    }

    /// Whether this filter was taken over from a daemon that died, its maps kept.
    pub fn taken_over(&self) -> bool {
        self.taken_over
    }

    /// The interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The mode the program is attached in (never [`Mode::Auto`]).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The pin directory.
    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// Replaces the running policy (settings, ports, trusted upstreams) in one step, under
    /// the interface's policy lock.
    pub fn write_policy(&mut self, policy: &Policy) -> Result<(), ControlError> {
        let _lock = PolicyLock::acquire(&self.iface)?;
        policy::write_policy(&self.ebpf, policy)
    }

    /// The loaded object, for reading its maps.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Detaches the program and removes every pin.
    pub fn detach(mut self) -> Result<(), LoadError> {
        self.cleanup()
    }

    /// Leaves the program attached and every map and the link pinned, for the next
    /// `moat run` on the interface to take over (an upgrade, a restart).
    pub fn hand_over(mut self) {
        self.handed_over = true;
    }

    fn pin_maps(&mut self) -> Result<(), LoadError> {
        std::fs::create_dir_all(self.pins.path()).map_err(|source| LoadError::Io {
            action: "creating",
            path: self.pins.path().to_path_buf(),
            source,
        })?;
        for name in ALL_MAPS
            .iter()
            .filter(|name| !PERSISTENT_MAPS.contains(name))
        {
            let path = self.pins.map(name);
            let map = self.ebpf.map(name).ok_or(LoadError::MissingProgram)?;
            map.pin(&path)
                .map_err(|source| LoadError::Pin { path, source })?;
        }
        Ok(())
    }

    /// Unpins the link (which detaches the program once its last reference goes) and removes
    /// the map pins. Idempotent, so `Drop` can call it after `detach`.
    fn cleanup(&mut self) -> Result<(), LoadError> {
        if self.handed_over {
            return Ok(());
        }
        if let Some(link) = self.link.take() {
            let path = self.pins.link();
            let fd_link = link.unpin().map_err(|source| LoadError::Io {
                action: "unpinning",
                path,
                source,
            })?;
            drop(fd_link);
        }
        self.pins.remove_maps().map_err(|source| LoadError::Io {
            action: "removing pins in",
            path: self.pins.path().to_path_buf(),
            source,
        })
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        if let Err(error) = self.cleanup() {
            warn!("cleanup failed iface={} error={error}", self.iface);
        }
    }
}

/// The XDP program of `ebpf`.
fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, String> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or_else(|| LoadError::MissingProgram.to_string())?
        .try_into()
        .map_err(|error: ProgramError| error.to_string())
}

/// `policy` with the program's clock calibrated, for writing before the program judges a
/// packet; on failure the program reads the kernel's coarse clock instead (as correct, slower),
/// so this only warns, and the policy keeps whatever clock base the running one had.
fn with_clock(iface: &str, ebpf: &mut Ebpf, policy: &Policy) -> Policy {
    let mut policy = policy.clone();
    match crate::clock::set_up(ebpf) {
        Ok(clock) => {
            debug!(
                "clock calibrated iface={iface} jiffy_ns={} base_ns={}",
                clock.jiffy_ns, clock.base_ns
            );
            policy.settings.clock = clock;
        }
        Err(error) => warn!(
            "the program reads the kernel's coarse clock, about 20 ns more per packet \
             iface={iface} error={error}"
        ),
    }
    policy
}

/// Loads the object with the configured capacities through `loader` (which names any pinned
/// maps to reuse).
fn load_object(
    loader: &mut EbpfLoader<'_>,
    object: &[u8],
    capacities: Capacities,
    pins: &PinDir,
) -> Result<Ebpf, LoadError> {
    for (name, max_entries) in capacities.overrides() {
        loader.map_max_entries(name, max_entries);
    }
    loader.load(object).map_err(|source| LoadError::Load {
        persistent: pins.persistent_path().to_path_buf(),
        source: Box::new(source),
    })
}

/// Compares the maps pinned at `paths` with what `object` declares.
fn plan_pins(
    iface: &str,
    object: &[u8],
    capacities: Capacities,
    paths: impl IntoIterator<Item = (&'static str, PathBuf)>,
) -> Result<Vec<Pinned>, LoadError> {
    let migrate_error = |source| LoadError::Migrate {
        iface: iface.to_string(),
        source: Box::new(source),
    };
    let declared = migrate::declared(object, &capacities.overrides()).map_err(migrate_error)?;
    migrate::plan(&declared, paths).map_err(migrate_error)
}

/// Tells `loader` to load the object on every pinned map that fits it.
fn reuse<'a>(loader: &mut EbpfLoader<'a>, planned: &'a [Pinned]) {
    for pinned in planned {
        if matches!(pinned.fit, Fit::Reuse) {
            loader.map_pin_path(pinned.name, &pinned.path);
        }
    }
}

/// Copies the entries of every replaced pinned map into the loaded object's new one; returns
/// the names replaced.
fn carry_over(
    iface: &str,
    ebpf: &mut Ebpf,
    planned: Vec<Pinned>,
) -> Result<Vec<&'static str>, LoadError> {
    let mut replaced = Vec::new();
    for pinned in planned {
        let Fit::Replace { old, why, copy } = pinned.fit else {
            continue;
        };
        if copy {
            let copied = migrate::copy_entries(pinned.name, old, ebpf).map_err(|source| {
                LoadError::Migrate {
                    iface: iface.to_string(),
                    source: Box::new(source),
                }
            })?;
            log::info!(
                "carried a map over to a new layout iface={iface} map={} entries={copied} \
                 change=\"{why}\"",
                pinned.name
            );
        } else {
            log::info!(
                "replaced a map by one of a new layout, its entries to be rebuilt iface={iface} \
                 map={} change=\"{why}\"",
                pinned.name
            );
        }
        replaced.push(pinned.name);
    }
    Ok(replaced)
}

/// Pins the named maps of `ebpf` at `pins`, replacing whatever is pinned there.
fn repin_all(ebpf: &Ebpf, pins: &PinDir, names: &[&'static str]) -> Result<(), LoadError> {
    for name in names {
        let path = pins.map(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| LoadError::Io {
                action: "creating",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        remove_if_present(&path).map_err(|source| LoadError::Io {
            action: "removing",
            path: path.clone(),
            source,
        })?;
        let map = ebpf.map(name).ok_or(LoadError::MissingProgram)?;
        map.pin(&path)
            .map_err(|source| LoadError::Pin { path, source })?;
    }
    Ok(())
}

/// The mode the XDP program on `iface` runs in, as iproute2 reports it (`xdpgeneric` for skb
/// mode); native when it cannot tell.
fn attached_mode(iface: &str) -> Mode {
    let output = Command::new("ip")
        .args(["link", "show", "dev", iface])
        .output();
    match output {
        Ok(output) if String::from_utf8_lossy(&output.stdout).contains("xdpgeneric") => Mode::Skb,
        _ => Mode::Native,
    }
}

fn program_error(action: &'static str, iface: &str, source: ProgramError) -> LoadError {
    LoadError::Program {
        action,
        iface: iface.to_string(),
        source,
    }
}

/// Logs that the filter on `iface` stays attached in `attached` mode though `requested` was
/// asked for (by a reload or a take-over, neither of which can change it: the pinned link keeps
/// its mode), and how to change it.
pub fn warn_mode_kept(iface: &str, attached: Mode, requested: Mode) {
    warn!(
        "mode change needs a detach, keeping mode iface={iface} mode={} requested={} (a restart \
         takes the filter over and keeps its mode: run `moat detach --iface {iface}`, then \
         `moat run` in the new mode)",
        attached.name(),
        requested.name()
    );
}

/// Attaches in the requested mode; `auto` tries native first and falls back to skb.
fn attach_in_mode(
    program: &mut Xdp,
    request: &AttachRequest,
) -> Result<(aya::programs::xdp::XdpLinkId, Mode), LoadError> {
    match request.mode {
        Mode::Native => Ok((
            attach_once(program, request, XdpMode::Driver)?,
            Mode::Native,
        )),
        Mode::Skb => Ok((attach_once(program, request, XdpMode::Skb)?, Mode::Skb)),
        Mode::Auto => match attach_once(program, request, XdpMode::Driver) {
            Ok(id) => Ok((id, Mode::Native)),
            Err(LoadError::NativeUnsupported { iface }) => {
                warn!("native xdp unsupported, falling back to skb mode iface={iface}");
                Ok((attach_once(program, request, XdpMode::Skb)?, Mode::Skb))
            }
            Err(LoadError::NativeMtu { iface, mtu }) => {
                let mtu = mtu.map_or_else(|| "unknown".to_string(), |mtu| mtu.to_string());
                warn!(
                    "native xdp refused at this MTU, falling back to skb mode iface={iface} \
                     mtu={mtu} (lower the MTU for native mode)"
                );
                Ok((attach_once(program, request, XdpMode::Skb)?, Mode::Skb))
            }
            Err(error) => Err(error),
        },
    }
}

fn attach_once(
    program: &mut Xdp,
    request: &AttachRequest,
    xdp_mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId, LoadError> {
    let iface = request.iface.as_str();
    let error = match program.attach_to_if_index(request.ifindex, xdp_mode) {
        Ok(id) => return Ok(id),
        Err(error) => error,
    };
    match os_error(&error) {
        Some(libc::EBUSY | libc::EEXIST) if request.force => {
            warn!("replacing another tool's xdp program iface={iface}");
            remove_foreign_program(iface);
            program
                .attach_to_if_index(request.ifindex, xdp_mode)
                .map_err(|error| match os_error(&error) {
                    Some(libc::EBUSY | libc::EEXIST) => LoadError::OtherProgramStuck {
                        iface: iface.to_string(),
                    },
                    _ => program_error("attaching", iface, error),
                })
        }
        Some(libc::EBUSY | libc::EEXIST) => Err(LoadError::OtherProgram {
            iface: iface.to_string(),
        }),
        Some(libc::ERANGE) if xdp_mode == XdpMode::Driver => Err(LoadError::NativeMtu {
            iface: iface.to_string(),
            mtu: crate::preflight::iface_mtu(iface),
        }),
        Some(libc::EOPNOTSUPP) if xdp_mode == XdpMode::Driver => {
            Err(LoadError::NativeUnsupported {
                iface: iface.to_string(),
            })
        }
        _ => Err(program_error("attaching", iface, error)),
    }
}

/// The errno behind an attach failure, through aya's wrappers.
fn os_error(error: &ProgramError) -> Option<i32> {
    match error {
        ProgramError::SyscallError(syscall) => syscall.io_error.raw_os_error(),
        ProgramError::XdpError(aya::programs::xdp::XdpError::NetlinkError(netlink)) => {
            netlink.raw_os_error()
        }
        _ => None,
    }
}

/// Detaches whatever XDP program is attached through netlink, in both modes, with iproute2.
/// Programs held by another process's BPF link cannot be removed this way; the retried attach
/// then reports them.
fn remove_foreign_program(iface: &str) {
    for mode in ["xdpgeneric", "xdpdrv"] {
        let status = Command::new("ip")
            .args(["link", "set", "dev", iface, mode, "off"])
            .stderr(std::process::Stdio::null())
            .status();
        if let Err(error) = status {
            warn!("running ip failed iface={iface} error={error}");
        }
    }
}

/// `moat detach`: under the interface's instance lock (so never while a `moat run` holds it),
/// removes the filter an earlier run left attached and its pins; with `purge`, the persistent
/// counters too. Returns whether a filter was attached.
///
/// `save` runs first when a filter is attached, on the interface's name, with its maps still
/// pinned (the caller saves the lists and bans, as a stopping daemon does); if it fails,
/// nothing is detached.
pub fn detach_orphan<E>(
    iface: &str,
    purge: bool,
    save: impl FnOnce(&str) -> Result<(), E>,
) -> Result<bool, LoadError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let _lock = InstanceLock::acquire(iface)?;
    let pins = PinDir::for_iface(iface);
    let attached = pins.link().exists();
    if attached {
        save(iface).map_err(|source| LoadError::SaveBeforeDetach {
            iface: iface.to_string(),
            source: Box::new(source),
        })?;
    }
    if pins.exists() {
        remove_pins(&pins)?;
    }
    if purge {
        pins.remove_persistent().map_err(|source| LoadError::Io {
            action: "removing",
            path: pins.persistent_path().to_path_buf(),
            source,
        })?;
    }
    Ok(attached)
}

/// Removes the pins an earlier run left behind; unpinning its link detaches its program.
fn remove_pins(pins: &PinDir) -> Result<(), LoadError> {
    let link_path = pins.link();
    if link_path.exists() {
        match PinnedLink::from_pin(&link_path) {
            Ok(link) => {
                let fd_link = link.unpin().map_err(|source| LoadError::Io {
                    action: "unpinning",
                    path: link_path.clone(),
                    source,
                })?;
                drop(fd_link);
            }
            Err(error) => {
                warn!(
                    "stale link pin unreadable, removing it path={} error={error}",
                    link_path.display()
                );
                remove_if_present(&link_path).map_err(|source| LoadError::Io {
                    action: "removing",
                    path: link_path.clone(),
                    source,
                })?;
            }
        }
    }
    pins.remove_maps().map_err(|source| LoadError::Io {
        action: "removing pins in",
        path: pins.path().to_path_buf(),
        source,
    })
}

/// An exclusive lock on `/run/moat/IFACE.lock`, held while a `moat run` owns the interface.
/// The kernel releases it when the process dies, however it dies.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock for `iface`, or fails with [`LoadError::AlreadyRunning`].
    pub fn acquire(iface: &str) -> Result<InstanceLock, LoadError> {
        let dir = Path::new(LOCK_DIR);
        let path = dir.join(format!("{iface}.lock"));
        let io_error = |source| LoadError::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        std::fs::create_dir_all(PIN_ROOT).map_err(io_error)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        // SAFETY: `file` owns a valid descriptor for the duration of the call.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result == 0 {
            log::debug!("locked iface={iface} lock={}", path.display());
            Ok(InstanceLock { _file: file })
        } else {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Err(LoadError::AlreadyRunning {
                    iface: iface.to_string(),
                    lock: path,
                })
            } else {
                Err(io_error(error))
            }
        }
    }
}
