//! The machine a benchmark ran on, as the report states it: kernel, CPU model, cores, memory,
//! and the date. Read from `/proc` and `uname(2)`; anything unreadable is reported as unknown
//! rather than failing the run.

use std::time::{SystemTime, UNIX_EPOCH};

/// What the report says about the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// The first `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// `MemTotal` of /proc/meminfo, in bytes.
    pub memory_bytes: u64,
    /// When the run started, as `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
}

impl Machine {
    /// Describes this machine now.
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            kernel: kernel_release(),
            cpu: cpuinfo
                .lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    (key.trim() == "model name").then(|| value.trim().to_string())
                })
                .unwrap_or_else(|| "unknown CPU".to_string()),
            cores: online_cpus(),
            memory_bytes: meminfo
                .lines()
                .find_map(|line| {
                    let rest = line.strip_prefix("MemTotal:")?;
                    let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
                    Some(kib * 1024)
                })
                .unwrap_or(0),
            date: utc_now(),
        }
    }

    /// One line: kernel, CPU, cores, memory.
    pub fn summary(&self) -> String {
        format!(
            "Linux {}, {} ({} cores), {:.1} GiB",
            self.kernel,
            self.cpu,
            self.cores,
            self.memory_bytes as f64 / (1u64 << 30) as f64
        )
    }
}

/// CPUs online (not only those this thread may run on).
fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

/// `uname -r`.
fn kernel_release() -> String {
    // SAFETY: all-zero is a valid utsname, and uname only writes it.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid, writable utsname.
    if unsafe { libc::uname(&mut name) } != 0 {
        return "unknown".to_string();
    }
    let bytes: Vec<u8> = name
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The current time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let minute_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        minute_of_day / 3600,
        minute_of_day % 3600 / 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn dates_from_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
