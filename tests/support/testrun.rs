//! The BPF_PROG_TEST_RUN harness every program-level test shares: load the real object, run a
//! frame through it, read its counters summed over CPUs, write its settings, put prefixes on
//! its lists (with their list index counts), pin the test thread to a CPU. Each function
//! panics with a message saying what failed and why, so a test that cannot run fails.

use std::error::Error;

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, Map, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{TestRun, TestRunOptions, Xdp},
};
use filter_common::{
    COUNTER_SLOTS, Counter, Settings,
    lists::{LIST_PRESENT, ListValue},
    maps::{COUNTERS, LIST_INDEX, PROGRAM_NAME, SETTINGS},
};
use moat::cidr::Cidr;

/// The shipped object, loaded with its XDP program, for BPF_PROG_TEST_RUN.
pub struct Loaded {
    /// The object and its maps (one per test, so parallel tests never share state).
    pub ebpf: Ebpf,
}

impl Loaded {
    /// Loads `moat::FILTER_OBJECT` as it is, or panics saying why it cannot.
    pub fn load() -> Loaded {
        Loaded::load_with(&mut EbpfLoader::new())
    }

    /// Loads `moat::FILTER_OBJECT` through `loader` (which may resize maps).
    pub fn load_with(loader: &mut EbpfLoader<'_>) -> Loaded {
        super::require_root();
        let mut ebpf = loader.load(moat::FILTER_OBJECT).unwrap_or_else(|error| {
            panic!(
                "loading moat::FILTER_OBJECT failed: {}",
                error_chain(&error)
            )
        });
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .unwrap_or_else(|| panic!("the object has no program named {PROGRAM_NAME:?}"))
            .try_into()
            .unwrap_or_else(|error| panic!("program {PROGRAM_NAME:?} is not XDP: {error}"));
        program.load().unwrap_or_else(|error| {
            panic!(
                "the kernel refused program {PROGRAM_NAME:?}: {}",
                error_chain(&error)
            )
        });
        Loaded { ebpf }
    }

    /// The map `name`.
    pub fn map(&self, name: &str) -> &Map {
        self.ebpf
            .map(name)
            .unwrap_or_else(|| panic!("the object has no map {name:?}"))
    }

    /// The map `name`, writable.
    pub fn map_mut(&mut self, name: &str) -> &mut Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("the object has no map {name:?}"))
    }

    /// Runs one frame through the program and returns its XDP action.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.test_run(frame, None)
    }

    /// Runs one frame and returns the action and the frame as the program left it.
    pub fn run_with_output(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; 256];
        let mut size = 0;
        let action = self.test_run(frame, Some((&mut out, &mut size)));
        out.truncate(size);
        (action, out)
    }

    fn test_run(&self, frame: &[u8], output: Option<(&mut Vec<u8>, &mut usize)>) -> u32 {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .expect("Loaded::load found the program")
            .try_into()
            .expect("Loaded::load checked that it is XDP");
        let (data_out, size) = match output {
            Some((out, size)) => (Some(out.as_mut_slice()), Some(size)),
            None => (None, None),
        };
        let options = TestRunOptions {
            data_in: Some(frame),
            data_out,
            ..TestRunOptions::default()
        };
        let result = program.test_run(options).unwrap_or_else(|error| {
            panic!(
                "BPF_PROG_TEST_RUN failed on a {}-byte frame: {}",
                frame.len(),
                error_chain(&error)
            )
        });
        if let Some(size) = size {
            *size = result.data_size_out as usize;
        }
        result.return_value
    }

    /// Every counter slot, summed over CPUs, indexed like the `COUNTERS` map.
    pub fn counters(&self) -> Vec<Counter> {
        let counters =
            PerCpuArray::<_, Counter>::try_from(self.map(COUNTERS)).unwrap_or_else(|error| {
                panic!("{COUNTERS} is not a per-CPU array of Counter: {error}")
            });
        (0..COUNTER_SLOTS)
            .map(|index| {
                counters
                    .get(&index, 0)
                    .unwrap_or_else(|error| panic!("reading {COUNTERS}[{index}]: {error}"))
                    .iter()
                    .fold(Counter::default(), |sum, cpu| sum.add(*cpu))
            })
            .collect()
    }

    /// Writes `settings`, compiled, to `SETTINGS[0]` (the slot the program reads until
    /// `ACTIVE` is written).
    pub fn write_settings(&mut self, settings: &Settings) {
        Array::<_, Settings>::try_from(self.map_mut(SETTINGS))
            .unwrap_or_else(|error| panic!("{SETTINGS} is not an array of Settings: {error}"))
            .set(0, settings.compiled(), 0)
            .unwrap_or_else(|error| panic!("writing {SETTINGS}[0]: {error}"));
    }

    /// Inserts `cidr` into `v4` or `v6` (an allow or deny trie, whose list index counts go up
    /// first and whose generation advances after, as every list writer's do, or any other trie
    /// of plain address keys).
    pub fn list(&mut self, maps: (&str, &str), cidr: Cidr) {
        moat::listindex::note_insert(&self.ebpf, maps.0, &cidr)
            .unwrap_or_else(|error| panic!("indexing {cidr}: {error}"));
        self.list_unindexed(maps, cidr);
        self.index().advance_generation();
    }

    /// The list index, mapped.
    pub fn index(&self) -> moat::listindex::ListIndex {
        moat::listindex::ListIndex::of_map(self.map(LIST_INDEX))
            .unwrap_or_else(|error| panic!("mapping {LIST_INDEX}: {error}"))
    }

    /// Inserts `cidr` into `v4` or `v6` alone, leaving the list index as it is.
    pub fn list_unindexed(&mut self, (v4, v6): (&str, &str), cidr: Cidr) {
        match cidr {
            Cidr::V4 { addr, prefix } => self.insert_key(v4, prefix, addr),
            Cidr::V6 { addr, prefix } => self.insert_key(v6, prefix, addr),
        }
    }

    /// Takes `cidr` off an allow or deny trie, then lowers its list index counts and advances
    /// its generation (the reverse of [`Loaded::list`]).
    pub fn unlist(&mut self, maps: (&str, &str), cidr: Cidr) {
        self.unlist_unindexed(maps, cidr);
        let counted = moat::listindex::counted_as(maps.0)
            .unwrap_or_else(|| panic!("{} is not an allow or deny trie", maps.0));
        let index = self.index();
        index.note(counted, &cidr, false);
        index.advance_generation();
    }

    /// Takes `cidr` off `v4` or `v6` alone, leaving the list index as it is.
    pub fn unlist_unindexed(&mut self, (v4, v6): (&str, &str), cidr: Cidr) {
        match cidr {
            Cidr::V4 { addr, prefix } => self.remove_key(v4, prefix, addr),
            Cidr::V6 { addr, prefix } => self.remove_key(v6, prefix, addr),
        }
    }

    /// Inserts `key` with an LPM prefix of `prefix_len` bits into the trie `name`, and nothing
    /// else (no list index count).
    pub fn insert_key<const N: usize>(&mut self, name: &str, prefix_len: u32, key: [u8; N]) {
        LpmTrie::<_, [u8; N], ListValue>::try_from(self.map_mut(name))
            .unwrap_or_else(|error| panic!("{name} is not an LPM trie of {N}-byte keys: {error}"))
            .insert(&Key::new(prefix_len, key), LIST_PRESENT, 0)
            .unwrap_or_else(|error| panic!("inserting into {name}: {error}"));
    }

    /// Removes the entry `key` with an LPM prefix of `prefix_len` bits from the trie `name`.
    pub fn remove_key<const N: usize>(&mut self, name: &str, prefix_len: u32, key: [u8; N]) {
        LpmTrie::<_, [u8; N], ListValue>::try_from(self.map_mut(name))
            .unwrap_or_else(|error| panic!("{name} is not an LPM trie of {N}-byte keys: {error}"))
            .remove(&Key::new(prefix_len, key))
            .unwrap_or_else(|error| panic!("removing from {name}: {error}"));
    }
}

/// `error` and its sources, joined by ": ".
pub fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Pins the calling thread to the `index`-th CPU this process may use (BPF_PROG_TEST_RUN runs
/// the program on the calling thread's CPU, so per-CPU maps follow it).
pub fn pin_to_cpu(index: usize) {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is a valid (empty) value.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // The process's main thread (its pid) is never pinned by a test, so its set is every CPU
    // the tests may use, whatever this thread was pinned to before.
    // SAFETY: getpid cannot fail; `allowed` is a valid cpu_set_t of `size` bytes.
    let status = unsafe { libc::sched_getaffinity(libc::getpid(), size, &mut allowed) };
    assert_eq!(
        status,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    let cpu = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the number of bits in a cpu_set_t.
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &allowed) })
        .nth(index)
        .unwrap_or_else(|| {
            panic!(
                "this test needs {} CPUs to run on; the thread may use fewer",
                index + 1
            )
        });
    // SAFETY: as above, all zeroes is the empty set.
    let mut only: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut only) };
    // SAFETY: pid 0 is the calling thread; `only` is a valid cpu_set_t of `size` bytes.
    let status = unsafe { libc::sched_setaffinity(0, size, &only) };
    assert_eq!(
        status,
        0,
        "pinning the test thread to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}
