//! Which CPUs this process may run on, and pinning a thread to one of them: the lab's senders
//! run one per CPU, since a veth end receives on its sender's CPU.

/// The CPUs the calling thread may run on, in order.
pub fn allowed() -> std::io::Result<Vec<usize>> {
    // SAFETY: all-zero is a valid, empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let result =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE; CPU_ISSET only reads `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Restricts the calling thread to `cpu` (one of [`allowed`]); threads it creates later
/// inherit the restriction.
pub fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: all-zero is a valid, empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above); CPU_SET only writes `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let result =
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sender `index`'s share of `rate` per second among `senders`: the remainder spread over the
/// first ones, so the shares add up to the rate, and never 0 (which means "as fast as
/// possible"), unless `rate` itself is 0.
pub fn share(rate: u64, senders: usize, index: usize) -> u64 {
    let senders = senders.max(1) as u64;
    if rate == 0 {
        0
    } else {
        (rate / senders + u64::from((index as u64) < rate % senders)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_rate_and_never_mean_as_fast_as_possible() {
        let shares: Vec<u64> = (0..3).map(|index| share(10, 3, index)).collect();
        assert_eq!(shares, [4, 3, 3]);
        assert_eq!(share(1, 2, 1), 1, "never 0 for a rate above 0");
        assert_eq!(share(0, 2, 0), 0);
    }
}
