//! Limits that keep the broker alive whatever its clients do, each with its reason.
//!
//! - [`FdBudget`]: how the process's open-files limit is shared. The log keeps a reserve
//!   (segment files, indexes, snapshots, internal logs) that no door may take, and each door
//!   has a connection cap, so one door's crowd cannot starve the other door or the storage.
//! - [`PerIp`]: connections one client address may hold on a door
//!   (`--max-connections-per-ip`, Kafka's `max.connections.per.ip`), so one host cannot take
//!   a door's whole connection cap.
//! - [`LogEvery`]: a log line at most once per interval for events that can repeat thousands
//!   of times per second (refused connections, accept errors, storage errors), with the count
//!   of what was suppressed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Descriptors kept for the storage engine and internal use whatever the doors hold: at
/// least this many.
pub const FD_RESERVE_MIN: u64 = 256;
/// ...and at least this share of the limit (1/10).
pub const FD_RESERVE_DIVISOR: u64 = 10;
/// The share of the reserve the segment files of all logs may hold open at once (3/4); the
/// rest is for snapshots, state files and internal use. Past it, the least recently used
/// segment files are closed and opened again when needed ([`strom_log::set_open_files_budget`]).
pub const LOG_FILES_SHARE: (u64, u64) = (3, 4);
/// The Kafka door's default share of what is left after the reserve (1/4); the HTTP door
/// gets the rest (browsers and push subscribers are the crowds).
pub const KAFKA_FD_SHARE_DIVISOR: u64 = 4;

/// How the open-files limit is divided between the log's reserve and the doors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    /// The process's open-files limit (after raising the soft limit to the hard one).
    pub limit: u64,
    /// Descriptors no door may take.
    pub reserve: u64,
    /// Segment files (data and indexes) the logs keep open at most.
    pub log_files: usize,
    /// Connections the Kafka door holds at most.
    pub kafka_max_connections: usize,
    /// Connections the HTTP door holds at most.
    pub http_max_connections: usize,
}

impl FdBudget {
    /// The budget for `limit` open files; an explicit cap replaces that door's default.
    pub fn for_limit(limit: u64, kafka: Option<usize>, http: Option<usize>) -> FdBudget {
        let reserve = FD_RESERVE_MIN
            .max(limit / FD_RESERVE_DIVISOR)
            .min(limit / 2);
        let doors = limit.saturating_sub(reserve);
        let kafka_default = (doors / KAFKA_FD_SHARE_DIVISOR).max(1) as usize;
        let kafka_max_connections = kafka.unwrap_or(kafka_default);
        let http_default = doors.saturating_sub(kafka_max_connections as u64).max(1) as usize;
        let log_files = ((reserve * LOG_FILES_SHARE.0 / LOG_FILES_SHARE.1) as usize)
            .max(strom_log::MIN_OPEN_FILES_BUDGET);
        FdBudget {
            limit,
            reserve,
            log_files,
            kafka_max_connections,
            http_max_connections: http.unwrap_or(http_default),
        }
    }

    /// The budget for this process's current open-files limit.
    pub fn current(kafka: Option<usize>, http: Option<usize>) -> FdBudget {
        FdBudget::for_limit(open_files_limit(), kafka, http)
    }
}

/// The soft open-files limit of this process (1024 if it cannot be read).
pub use strom_log::open_files_limit;

/// A TCP listener on `addr` with a listen backlog of `backlog` connections (tokio's default
/// is 1024 through mio; a burst of connects beyond the backlog waits for SYN retransmits of
/// 1 s and 3 s). The kernel caps it at `net.core.somaxconn`.
pub fn listen(
    addr: std::net::SocketAddr,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Whether an accept error means the process (EMFILE) or the system (ENFILE) is out of
/// descriptors.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A descriptor kept open to be given up when accept runs out of descriptors, so that a door
/// can still take the waiting connection, refuse it and close it (clients learn at once
/// instead of waiting in the backlog), then take the spare back.
pub struct SpareFd(Option<std::fs::File>);

impl SpareFd {
    /// Opens the spare (`/dev/null`).
    pub fn open() -> SpareFd {
        let mut spare = SpareFd(None);
        spare.reopen();
        spare
    }

    /// Closes the spare; whether there was one to close.
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Opens the spare again if it is closed; whether there is one now.
    pub fn reopen(&mut self) -> bool {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
        }
        self.0.is_some()
    }
}

/// Rate limit for a repeated log line: [`LogEvery::ready`] says yes at most once per interval
/// and tells how many calls were suppressed since the last yes.
pub struct LogEvery {
    interval_ms: u64,
    /// Milliseconds since `epoch()` of the last line, plus one (0 = never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogEvery {
    /// At most one line per `interval`.
    pub const fn new(interval: Duration) -> LogEvery {
        LogEvery {
            interval_ms: interval.as_millis() as u64,
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// One line per second.
    pub const fn per_second() -> LogEvery {
        LogEvery::new(Duration::from_secs(1))
    }

    /// `Some(suppressed)` if a line may be written now (with the number of calls that were
    /// not logged since the previous one), `None` otherwise.
    pub fn ready(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::AcqRel))
    }
}

/// Connections per client address on one door, at most `max` each.
pub struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted against its address until dropped.
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    /// At most `max` connections per address (`usize::MAX`: no limit).
    pub fn new(max: usize) -> PerIp {
        PerIp {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip`, or `None` when it holds `max` already.
    pub fn admit(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn per_ip_slots_are_counted_and_given_back() {
        let limit = super::PerIp::new(2);
        let a: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let b: std::net::IpAddr = "127.0.0.3".parse().unwrap();
        let s1 = limit.admit(a).unwrap();
        let _s2 = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none());
        assert!(limit.admit(b).is_some(), "other addresses are not affected");
        drop(s1);
        assert!(limit.admit(a).is_some());
        assert!(super::PerIp::new(0).admit(a).is_none());
    }

    use super::*;

    #[test]
    fn budget_keeps_a_reserve_and_splits_the_rest() {
        let b = FdBudget::for_limit(20_000, None, None);
        assert_eq!(b.reserve, 2_000);
        assert_eq!(b.log_files, 1_500);
        assert_eq!(b.kafka_max_connections, 4_500);
        assert_eq!(b.http_max_connections, 13_500);
        assert!(b.reserve + (b.kafka_max_connections + b.http_max_connections) as u64 <= b.limit);
        let small = FdBudget::for_limit(1024, None, None);
        assert_eq!(small.reserve, 256);
        assert_eq!(small.log_files, 192);
        assert_eq!(small.kafka_max_connections, 192);
        assert_eq!(small.http_max_connections, 576);
        let tiny = FdBudget::for_limit(64, None, None);
        assert_eq!(tiny.reserve, 32);
        assert!(tiny.kafka_max_connections >= 1 && tiny.http_max_connections >= 1);
        let set = FdBudget::for_limit(20_000, Some(100), None);
        assert_eq!(set.kafka_max_connections, 100);
        assert_eq!(set.http_max_connections, 17_900);
        assert_eq!(
            FdBudget::for_limit(20_000, Some(1), Some(2)).http_max_connections,
            2
        );
    }

    #[test]
    fn emfile_and_enfile_are_out_of_descriptors_and_the_spare_comes_back() {
        use std::io::Error;
        assert!(out_of_descriptors(&Error::from_raw_os_error(libc::EMFILE)));
        assert!(out_of_descriptors(&Error::from_raw_os_error(libc::ENFILE)));
        assert!(!out_of_descriptors(&Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        let mut spare = SpareFd::open();
        assert!(spare.release());
        assert!(!spare.release());
        assert!(spare.reopen());
    }

    #[test]
    fn log_every_says_yes_once_per_interval_and_counts_the_rest() {
        let every = LogEvery::new(Duration::from_millis(200));
        assert_eq!(every.ready(), Some(0));
        assert_eq!(every.ready(), None);
        assert_eq!(every.ready(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(every.ready(), Some(2));
        assert_eq!(every.ready(), None);
    }
}
