//! Producer id allocation: never reused, also after a restart.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Ids reserved per durable write.
const BLOCK_SIZE: i64 = 1000;
const FILE_NAME: &str = "producer-ids";

/// Ids per millisecond of wall-clock time assumed when `producer-ids` is unreadable: the
/// allocator restarts at `now_ms × RESET_IDS_PER_MS`, above every id issued before.
///
/// Why that holds: ids start at 0 and grow by one per InitProducerId, so an id issued at
/// time `t` is below `t × RESET_IDS_PER_MS` as long as fewer than 1000 ids were handed out
/// per millisecond on average since 1970 (a broker hands out a few thousand per second at
/// most: each is a request, and every block of 1000 costs an fsync). After an earlier reset
/// at `t0` ids continued from `t0 × 1000`, again by fewer than 1000 per millisecond, so they
/// stay below `now × 1000` too. It fails only if the clock was set back across the reset,
/// which is why the broker also raises the allocator above the largest id found in the
/// partitions' producer state ([`ProducerIds::ensure_above`]). Range: `now_ms × 1000` is
/// about 1.8e15 today, i64 lasts until the year 292,000.
pub const RESET_IDS_PER_MS: i64 = 1000;

struct Inner {
    next: i64,
    block_end: i64,
}

/// The broker's producer id allocator, persisted in `<data-dir>/producer-ids`.
pub struct ProducerIds {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl ProducerIds {
    /// Loads the allocator; the next id is the end of the last reserved block, so ids handed
    /// out before a crash are never given again. An unreadable file (garbage, empty, an I/O
    /// error) restarts the allocator from the wall clock ([`RESET_IDS_PER_MS`]) with a
    /// warning; the temporary file of an interrupted write is removed.
    pub fn open(data_dir: &Path) -> io::Result<ProducerIds> {
        fs::create_dir_all(data_dir)?;
        let path = data_dir.join(FILE_NAME);
        let tmp = path.with_extension("tmp");
        match fs::remove_file(&tmp) {
            Ok(()) => {
                tracing::info!(path = %tmp.display(), "removed the temporary file of an interrupted producer-ids write")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %tmp.display(), error = %e, "could not remove a temporary file")
            }
        }
        let reserved = match fs::read(&path) {
            Ok(bytes) => match parse(&bytes) {
                Some(v) => v,
                None => reset(
                    &path,
                    &format!("{} bytes that are not a decimal id", bytes.len()),
                ),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => reset(&path, &e.to_string()),
        };
        Ok(ProducerIds {
            path,
            inner: Mutex::new(Inner {
                next: reserved,
                block_end: reserved,
            }),
        })
    }

    /// Makes the next id larger than `id` (one seen in a partition's producer state), and
    /// every id up to it count as issued.
    pub fn ensure_above(&self, id: i64) {
        let mut inner = self.inner.lock();
        let next = id.saturating_add(1);
        if next > inner.next {
            inner.next = next;
        }
        inner.block_end = inner.block_end.max(inner.next);
    }

    /// A fresh producer id.
    pub fn allocate(&self) -> io::Result<i64> {
        let mut inner = self.inner.lock();
        if inner.next >= inner.block_end {
            let end = inner.next + BLOCK_SIZE;
            persist(&self.path, end)?;
            inner.block_end = end;
        }
        let id = inner.next;
        inner.next += 1;
        Ok(id)
    }

    /// Whether `id` was ever handed out by this broker (before or after a restart).
    pub fn was_issued(&self, id: i64) -> bool {
        id >= 0 && id < self.inner.lock().block_end
    }
}

fn parse(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes)
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|&v| v >= 0)
}

/// The restart value after an unreadable file (see [`RESET_IDS_PER_MS`]).
fn reset(path: &Path, why: &str) -> i64 {
    let value = strom_log::now_ms().max(0).saturating_mul(RESET_IDS_PER_MS);
    tracing::warn!(
        path = %path.display(),
        reason = why,
        next_id = value,
        "the producer id file is unreadable: ids restart from the wall clock (milliseconds \
         since 1970 × {RESET_IDS_PER_MS}), above every id issued before, and above the largest \
         id in the partitions' producer state; it is rewritten before the next id is handed out"
    );
    value
}

fn persist(path: &Path, value: i64) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(value.to_string().as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..5).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        assert!(a.was_issued(4));
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        let next = b.allocate().unwrap();
        assert!(next > 4, "id {next} reused after reopen");
        assert!(!b.was_issued(-1));
    }

    #[test]
    fn an_unreadable_file_restarts_above_every_earlier_id() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let before: Vec<i64> = (0..3).map(|_| a.allocate().unwrap()).collect();
        drop(a);
        let path = dir.path().join(FILE_NAME);
        fs::write(dir.path().join("producer-ids.tmp"), b"4000").unwrap();
        for garbage in [&b""[..], b"garbage", &[0xff, 0xfe], b"-7"] {
            fs::write(&path, garbage).unwrap();
            let b = ProducerIds::open(dir.path()).unwrap();
            assert!(!dir.path().join("producer-ids.tmp").exists());
            let id = b.allocate().unwrap();
            let floor = (strom_log::now_ms() - 60_000) * RESET_IDS_PER_MS;
            assert!(id > floor && before.iter().all(|&old| id > old), "{id}");
            assert!(b.was_issued(before[2]), "earlier ids still count as issued");
            // The reset value was made durable before the id was handed out.
            let saved: i64 = fs::read_to_string(&path).unwrap().trim().parse().unwrap();
            assert!(saved > id);
        }
        // Raised above ids seen in the logs.
        let c = ProducerIds::open(dir.path()).unwrap();
        let seen = i64::MAX / 2;
        c.ensure_above(seen);
        assert!(c.was_issued(seen));
        assert_eq!(c.allocate().unwrap(), seen + 1);
    }
}
