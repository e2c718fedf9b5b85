//! Producer id allocation: never reused, also after a restart.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Ids reserved per durable write.
const BLOCK_SIZE: i64 = 1000;
const FILE_NAME: &str = "producer-ids";

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
    /// out before a crash are never given again.
    pub fn open(data_dir: &Path) -> io::Result<ProducerIds> {
        fs::create_dir_all(data_dir)?;
        let path = data_dir.join(FILE_NAME);
        let reserved = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<i64>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(ProducerIds {
            path,
            inner: Mutex::new(Inner {
                next: reserved,
                block_end: reserved,
            }),
        })
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
}
