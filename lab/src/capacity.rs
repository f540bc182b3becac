//! The origin's spare capacity: a closed-loop client that asks nginx for its page over
//! keep-alive connections, each request as soon as the last one is answered, and counts the
//! answers in 100 ms buckets. The rate it gets is what the origin still has to give while an
//! attack runs; a slower origin answers fewer. It never sends to anything but the origin.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    origin::{HTTP_PORT, PAGE},
    topology::ORIGIN_IPV4,
};
use moat::netns::NetNs;

/// Width of one counting bucket.
const BUCKET: Duration = Duration::from_millis(100);

/// How long one request may take before its connection is dropped and a new one opened.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A running closed-loop client; dropping it stops it.
pub struct Prober {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    buckets: Arc<Mutex<Vec<u32>>>,
}

impl Prober {
    /// Starts `connections` closed loops in `ns`, each from `source`, counting answers from
    /// `since` on.
    pub fn start(
        ns: &NetNs,
        source: Ipv4Addr,
        connections: usize,
        since: Instant,
    ) -> std::io::Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let buckets = Arc::new(Mutex::new(Vec::new()));
        let netns = std::fs::File::open(ns.path())?;
        let mut threads = Vec::new();
        for _ in 0..connections {
            let stop = Arc::clone(&stop);
            let buckets = Arc::clone(&buckets);
            let netns = netns.try_clone()?;
            threads.push(std::thread::spawn(move || {
                use std::os::fd::AsRawFd as _;
                // SAFETY: `netns` is an open namespace handle; setns changes only this thread.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return;
                }
                while !stop.load(Ordering::Relaxed) {
                    // A broken or slow connection is replaced; the loop goes on until stopped.
                    if let Ok(stream) = connect(source) {
                        let _ = ask_until(&stream, &stop, |at| {
                            let index = (at.duration_since(since).as_millis() / BUCKET.as_millis())
                                as usize;
                            if let Ok(mut all) = buckets.lock() {
                                if all.len() <= index {
                                    all.resize(index + 1, 0);
                                }
                                all[index] += 1;
                            }
                        });
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }));
        }
        Ok(Prober {
            stop,
            threads,
            buckets,
        })
    }

    /// Answers per second between `from` and `to` (times since `since`), counted in whole
    /// buckets.
    pub fn rate(&self, from: Duration, to: Duration) -> f64 {
        let first = (from.as_millis() / BUCKET.as_millis()) as usize;
        let last = (to.as_millis() / BUCKET.as_millis()) as usize;
        if last <= first {
            return 0.0;
        }
        let answered: u64 = self
            .buckets
            .lock()
            .map(|all| {
                all.iter()
                    .skip(first)
                    .take(last - first)
                    .map(|&n| u64::from(n))
                    .sum()
            })
            .unwrap_or(0);
        answered as f64 / (BUCKET.as_secs_f64() * (last - first) as f64)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A keep-alive connection to the origin from `source`.
fn connect(source: Ipv4Addr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
    let origin = SocketAddr::V4(SocketAddrV4::new(ORIGIN_IPV4, HTTP_PORT));
    socket.connect_timeout(&origin.into(), TIMEOUT)?;
    socket.set_tcp_nodelay(true)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// Asks for the page over `stream` again and again, calling `answered` with the time of each
/// whole answer, until `stop` or a failure.
fn ask_until(
    mut stream: &TcpStream,
    stop: &AtomicBool,
    mut answered: impl FnMut(Instant),
) -> std::io::Result<()> {
    let request = b"GET / HTTP/1.1\r\nHost: origin.lab\r\n\r\n";
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        stream.write_all(request)?;
        buffer.clear();
        // nginx answers with a Content-Length, so the page's last bytes end the answer.
        while !buffer.ends_with(PAGE.as_bytes()) {
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        answered(Instant::now());
    }
    Ok(())
}
