//! The running settings the XDP program reads on every packet from the single-entry `SETTINGS`
//! array. Userspace writes it before attaching and whenever the configuration changes, so
//! thresholds change live without reloading the program. Rates here are already in the units
//! the program uses: every [`Limit`] comes with its [`Pace`], compiled by [`Settings::compiled`]
//! when userspace writes the value, so the program never divides. Aggregate limits are the
//! host's: all CPUs share one bucket per class (see `crate::rate`), so a single-queue NIC whose
//! traffic all lands on one CPU still gets the whole limit, and RSS spreading it over many
//! CPUs does not multiply it.

use crate::rate::{Limit, Pace};

/// Bit in [`Settings::flags`]: count drops as would-drop and pass the packet.
pub const FLAG_DRY_RUN: u32 = 1;
/// Bit in [`Settings::flags`]: use [`Settings::clock_ns`] instead of the kernel clock (tests).
pub const FLAG_FIXED_CLOCK: u32 = 2;
/// Bit in [`Settings::flags`]: TCP SYNs to ports not marked open in `PORTS` are dropped.
pub const FLAG_ENFORCE_TCP_PORTS: u32 = 4;
/// Bit in [`Settings::flags`]: UDP to ports not marked open in `PORTS` is dropped.
pub const FLAG_ENFORCE_UDP_PORTS: u32 = 8;
/// Bit in [`Settings::flags`]: TCP must match a socket on the host. A SYN to a port nobody
/// listens on is dropped as `port_closed`; any other segment that matches no socket is dropped
/// as `no_socket`. Ports marked open in an enforced `PORTS` list pass without a socket (traffic
/// forwarded to containers has none on the host).
pub const FLAG_TCP_SOCKETS: u32 = 16;
/// Bit in [`Settings::flags`]: UDP to a port with no socket on the host (bound or connected) is
/// dropped as `port_closed`, unless an enforced UDP `PORTS` list decides instead.
pub const FLAG_UDP_SOCKETS: u32 = 32;

/// [`Settings::syn_cookies`]: moat never answers SYNs; unverified SYNs pass through the
/// aggregate SYN limit as before SYN cookies existed.
pub const SYN_COOKIES_OFF: u32 = 0;
/// [`Settings::syn_cookies`]: moat answers an unverified SYN with a SYN cookie exactly when the
/// kernel itself would (the listener's SYN queue is full); otherwise the kernel answers it with
/// every TCP option.
pub const SYN_COOKIES_AUTO: u32 = 1;
/// [`Settings::syn_cookies`]: moat answers every unverified SYN it can (with
/// `net.ipv4.tcp_syncookies = 2`, every one).
pub const SYN_COOKIES_ALWAYS: u32 = 2;

/// What to do with IP fragments.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentPolicy {
    /// Fragments go on through the later stages.
    Pass = 0,
    /// Fragments share one aggregate bucket ([`Settings::fragments`]); beyond it they drop.
    RateLimit = 1,
    /// Every fragment is dropped.
    Drop = 2,
}

impl FragmentPolicy {
    /// The policy with this discriminant; unknown values mean rate-limit, the safe middle.
    pub const fn from_u32(value: u32) -> FragmentPolicy {
        match value {
            0 => FragmentPolicy::Pass,
            2 => FragmentPolicy::Drop,
            _ => FragmentPolicy::RateLimit,
        }
    }
}

/// The value of the `SETTINGS` map. An all-zero value (what the kernel holds before userspace
/// writes anything) enforces nothing but malformed drops: no limits, no bans, all ports open.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Bit set of `FLAG_*` constants.
    pub flags: u32,
    /// A [`FragmentPolicy`] discriminant.
    pub fragment_policy: u32,
    /// The clock when [`FLAG_FIXED_CLOCK`] is set, in ns.
    pub clock_ns: u64,
    /// First automatic ban's length, in ns; each repeat offence doubles it.
    pub ban_base_ns: u64,
    /// Longest automatic ban, in ns.
    pub ban_max_ns: u64,
    /// Over-limit packets are counted as strikes within windows of this length, in ns.
    pub strike_window_ns: u64,
    /// Strikes within one window that ban the source; 0 disables automatic bans.
    pub ban_after_strikes: u32,
    /// IPv6 sources are tracked and banned per prefix of this length (64: one attacker holds a
    /// whole /64).
    pub v6_source_prefix: u32,
    /// [`Settings::v6_source_prefix`] as the two masks the program ANDs an IPv6 source with
    /// ([`crate::source::v6_mask`]), derived by [`Settings::compiled`].
    pub v6_source_mask: [u64; 2],
    /// Per-source limits, by [`crate::Class`].
    pub source: [Limit; crate::CLASS_COUNT],
    /// Aggregate limits over all sources and CPUs, by [`crate::Class`]. The SYN slot caps the
    /// SYN-ACKs answered with cookies (with cookies off, the SYNs of unverified sources).
    pub aggregate: [Limit; crate::CLASS_COUNT],
    /// Aggregate limit for fragments under [`FragmentPolicy::RateLimit`], over all CPUs.
    pub fragments: Limit,
    /// The refusal budget, over all CPUs: TCP and UDP that no socket takes (under
    /// [`FLAG_TCP_SOCKETS`] or [`FLAG_UDP_SOCKETS`]) passes within it as
    /// [`crate::Reason::Refusal`], so the kernel answers it with a reset or port unreachable.
    /// Unlike the other limits, a zero limit means no budget: every such packet is dropped.
    pub refusals: Limit,
    /// Every this-many-th dropped packet on each CPU is sampled into `SAMPLES`; 0 samples none.
    pub sample_every: u32,
    /// `SYN_COOKIES_*`: when moat answers unverified SYNs itself.
    pub syn_cookies: u32,
    /// A source whose ACK carried a valid SYN cookie counts as verified for this long, in ns;
    /// 0 marks nobody.
    pub verified_ttl_ns: u64,
    /// The policy slot this value is stored in (userspace sets it when writing): which half
    /// of `PORTS` and which trusted prefixes go with it.
    pub slot: u32,
    /// Sets in `SOURCES` (a power of two, see `crate::sources`); 0 means
    /// [`crate::sources::DEFAULT_SOURCE_SETS`].
    pub source_sets: u32,
    /// [`Settings::source`], compiled: what the program reads.
    pub source_pace: [Pace; crate::CLASS_COUNT],
    /// [`Settings::aggregate`], compiled.
    pub aggregate_pace: [Pace; crate::CLASS_COUNT],
    /// [`Settings::fragments`], compiled.
    pub fragments_pace: Pace,
    /// [`Settings::refusals`], compiled.
    pub refusals_pace: Pace,
    /// How jiffies turn into CLOCK_MONOTONIC (see `crate::clock`): the running filter's, not
    /// the policy's. Unset (before userspace calibrates, or in settings written by hand), the
    /// program reads the kernel's coarse clock instead. Kept here, in the value every packet
    /// reads anyway, so a packet that needs the time looks nothing more up; a policy written
    /// without one keeps the running one's.
    pub clock: crate::clock::ClockBase,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 744);
#[cfg(feature = "user")]
unsafe impl aya::Pod for Settings {}

impl Settings {
    /// Whether `--dry-run` is on.
    pub const fn dry_run(&self) -> bool {
        self.flags & FLAG_DRY_RUN != 0
    }

    /// The fragment policy.
    pub const fn fragment_policy(&self) -> FragmentPolicy {
        FragmentPolicy::from_u32(self.fragment_policy)
    }

    /// These settings with every pace compiled from its limit (userspace calls this before
    /// writing the value; it divides) and the IPv6 source mask derived from its prefix.
    pub const fn compiled(mut self) -> Settings {
        let mut class = 0;
        while class < crate::CLASS_COUNT {
            self.source_pace[class] = Pace::of(&self.source[class]);
            self.aggregate_pace[class] = Pace::of(&self.aggregate[class]);
            class += 1;
        }
        self.fragments_pace = Pace::of(&self.fragments);
        self.refusals_pace = Pace::of(&self.refusals);
        self.v6_source_mask = crate::source::v6_mask(self.v6_source_prefix);
        self
    }

    /// The current time: the fixed clock if set, else `kernel_now_ns`.
    pub const fn now_ns(&self, kernel_now_ns: u64) -> u64 {
        if self.flags & FLAG_FIXED_CLOCK != 0 {
            self.clock_ns
        } else {
            kernel_now_ns
        }
    }
}
