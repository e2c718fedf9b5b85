//! A small JSON document in `<data-dir>/.strom/` that both the broker and the offline CLI
//! change (ACLs, bearer tokens): replaced atomically and durably on every change, re-read when
//! its modification time or size changed on disk (looked at most once a second), so a change
//! made with `--data-dir` on a stopped or a running broker is seen without a restart.
//!
//! Two writers at the same instant (the broker and the offline CLI) race as two `mv` would;
//! within one process a change re-reads the file first and holds a lock while it writes.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How often a lookup looks whether the file changed on disk.
const RECHECK: Duration = Duration::from_secs(1);

/// One watched document of type `T` (its `Default` when the file does not exist).
pub(crate) struct Watched<T> {
    path: PathBuf,
    /// What the file holds, for error messages ("ACL", "token").
    what: &'static str,
    state: RwLock<Loaded<T>>,
    /// Serializes changes (read, modify, write of the file).
    write: Mutex<()>,
}

struct Loaded<T> {
    /// Modification time and length of the file as last read (`None`: no file).
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
    value: Arc<T>,
}

impl<T: Serialize + DeserializeOwned + Default + Clone + PartialEq> Watched<T> {
    /// The document `.strom/<file>` of `data_dir`, read now (a damaged file is an error:
    /// the broker does not start on security state it cannot read).
    pub(crate) fn open(data_dir: &Path, file: &str, what: &'static str) -> io::Result<Self> {
        let dir = data_dir.join(".strom");
        std::fs::create_dir_all(&dir)?;
        let w = Watched {
            path: dir.join(file),
            what,
            state: RwLock::new(Loaded {
                stamp: None,
                checked: None,
                value: Arc::new(T::default()),
            }),
            write: Mutex::new(()),
        };
        w.reload()?;
        Ok(w)
    }

    fn stamp(&self) -> io::Result<Option<(SystemTime, u64)>> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(Some((m.modified()?, m.len()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Re-reads the file if it changed.
    fn reload(&self) -> io::Result<()> {
        let stamp = self.stamp()?;
        if stamp.is_some() && self.state.read().stamp == stamp {
            self.state.write().checked = Some(Instant::now());
            return Ok(());
        }
        let value = match stamp {
            None => T::default(),
            Some(_) => serde_json::from_slice(&std::fs::read(&self.path)?).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a {} file: {e}", self.path.display(), self.what),
                )
            })?,
        };
        let mut s = self.state.write();
        s.stamp = stamp;
        s.checked = Some(Instant::now());
        s.value = Arc::new(value);
        Ok(())
    }

    /// The current document (re-read from disk if the file changed; looked at most once a
    /// second). A file that became unreadable keeps the last copy read, with an error logged.
    pub(crate) fn snapshot(&self) -> Arc<T> {
        let due = self
            .state
            .read()
            .checked
            .is_none_or(|t| t.elapsed() >= RECHECK);
        if due {
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, what = self.what, "security file not re-read; the last copy read is used");
                self.state.write().checked = Some(Instant::now());
            }
        }
        self.state.read().value.clone()
    }

    /// Re-reads the file, applies `change` and writes the result back durably when it
    /// differs; returns what `change` returned.
    pub(crate) fn modify<R>(&self, change: impl FnOnce(&mut T) -> R) -> io::Result<R> {
        let _w = self.write.lock();
        self.reload()?;
        let before = self.state.read().value.clone();
        let mut value = (*before).clone();
        let out = change(&mut value);
        if value == *before {
            return Ok(out);
        }
        let bytes = serde_json::to_vec_pretty(&value).map_err(io::Error::other)?;
        crate::topic::write_atomic(&self.path, &bytes)?;
        let stamp = self.stamp()?;
        let mut s = self.state.write();
        s.stamp = stamp;
        s.checked = Some(Instant::now());
        s.value = Arc::new(value);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Watched;
    use std::collections::BTreeMap;

    type Doc = BTreeMap<String, u32>;

    #[test]
    fn changes_are_durable_and_seen_by_another_reader() {
        let dir = tempfile::tempdir().unwrap();
        let a: Watched<Doc> = Watched::open(dir.path(), "doc.json", "test").unwrap();
        let b: Watched<Doc> = Watched::open(dir.path(), "doc.json", "test").unwrap();
        assert!(a.snapshot().is_empty());
        a.modify(|d| d.insert("x".into(), 1)).unwrap();
        // `b` re-reads on its next change at once, and on lookups within a second.
        b.modify(|d| assert_eq!(d.get("x"), Some(&1))).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        a.modify(|d| d.insert("y".into(), 2)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(b.snapshot().len(), 2);
    }

    #[test]
    fn a_damaged_file_refuses_to_open_and_keeps_the_last_copy_when_running() {
        let dir = tempfile::tempdir().unwrap();
        let a: Watched<Doc> = Watched::open(dir.path(), "doc.json", "test").unwrap();
        a.modify(|d| d.insert("x".into(), 1)).unwrap();
        std::fs::write(dir.path().join(".strom/doc.json"), b"{not json").unwrap();
        let err = Watched::<Doc>::open(dir.path(), "doc.json", "test")
            .err()
            .unwrap();
        assert!(err.to_string().contains("is not a test file"), "{err}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(a.snapshot().get("x"), Some(&1));
        assert!(a.modify(|d| d.clear()).is_err());
    }
}
