//! Segment files opened on demand, within a process-wide budget of open descriptors.
//!
//! A broker with thousands of partitions cannot keep every segment's data and index files
//! open: the open-files limit (20,000 on some machines, and it may not be raised) must also
//! hold every client connection. Each segment file is a [`LazyFile`]: opened on first use and
//! kept open while it is used, closed again when the process holds more than
//! [`open_files_budget`] of them. Which file is closed is chosen by the CLOCK rule (an
//! approximation of least recently used that costs a relaxed store per access): every access
//! sets the file's `used` bit; the evicting hand clears set bits and closes the first file
//! whose bit was already clear. A file being used (a read holding its read lock, an append
//! holding its `Arc<File>`) is never closed under it: the descriptor is closed when the last
//! holder lets it go.
//!
//! A reopened file must be the same file: the cleaner renames new segment files over old ones,
//! and retention deletes them. The first open records the file's device and inode; a reopen
//! that finds another file, or none, fails with [`gone`] instead of reading another file's
//! bytes at this segment's positions. [`crate::Log`]'s reads then read again from the current
//! segments.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, RwLock};

/// The budget when [`set_open_files_budget`] was never called: a quarter of the soft
/// open-files limit, at least [`MIN_BUDGET`].
const DEFAULT_LIMIT_DIVISOR: u64 = 4;
/// The smallest budget: a log needs its active segment's three files at once.
pub const MIN_BUDGET: usize = 16;

static BUDGET: AtomicUsize = AtomicUsize::new(0);
/// Descriptors held by [`LazyFile`]s right now.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Files closed to stay within the budget, since start.
static EVICTIONS: AtomicUsize = AtomicUsize::new(0);

/// The open segment files, for the evicting hand (entries of dropped files are skipped and
/// pruned).
struct Clock {
    files: Vec<Weak<LazyFile>>,
    hand: usize,
}

fn clock() -> &'static Mutex<Clock> {
    static CLOCK: OnceLock<Mutex<Clock>> = OnceLock::new();
    CLOCK.get_or_init(|| {
        Mutex::new(Clock {
            files: Vec::new(),
            hand: 0,
        })
    })
}

/// Sets how many segment files (data and indexes of every log of the process) may be open at
/// once; at least [`MIN_BUDGET`]. Files above it are closed by the next open.
pub fn set_open_files_budget(files: usize) {
    BUDGET.store(files.max(MIN_BUDGET), Ordering::Release);
}

/// The soft open-files limit of this process (1024 if it cannot be read).
pub fn open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain syscall filling a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// How many segment files may be open at once (see [`set_open_files_budget`]).
pub fn open_files_budget() -> usize {
    match BUDGET.load(Ordering::Acquire) {
        0 => {
            let n = ((open_files_limit() / DEFAULT_LIMIT_DIVISOR) as usize).max(MIN_BUDGET);
            let _ = BUDGET.compare_exchange(0, n, Ordering::AcqRel, Ordering::Acquire);
            BUDGET.load(Ordering::Acquire)
        }
        n => n,
    }
}

/// Segment files open right now, and how many were closed to stay within the budget.
pub fn open_files() -> (usize, usize) {
    (
        OPEN.load(Ordering::Acquire),
        EVICTIONS.load(Ordering::Acquire),
    )
}

/// A segment file deleted or replaced while it was closed.
#[derive(Debug)]
struct Gone(PathBuf);

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} was deleted or replaced", self.0.display())
    }
}

impl std::error::Error for Gone {}

/// The error of a segment file that was deleted or replaced while it was closed.
pub(crate) fn gone(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, Gone(path.to_path_buf()))
}

/// Whether `e` is [`gone`]'s error: the caller reads again from the current segments.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Gone>())
}

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Read and positioned writes (a segment's data).
    ReadWrite,
    /// Appends (an index).
    Append,
}

/// One segment file, open while used (see the module documentation).
pub(crate) struct LazyFile {
    path: PathBuf,
    mode: Mode,
    file: RwLock<Option<Arc<File>>>,
    used: AtomicBool,
    /// Device and inode of the file: a reopen must find this one.
    ident: (u64, u64),
}

impl LazyFile {
    /// A file at `path`, already open as `file` (just created or checked).
    pub(crate) fn opened(path: PathBuf, mode: Mode, file: File) -> io::Result<Arc<LazyFile>> {
        let meta = file.metadata()?;
        let lazy = Arc::new(LazyFile {
            path,
            mode,
            file: RwLock::new(Some(Arc::new(file))),
            used: AtomicBool::new(true),
            ident: (meta.dev(), meta.ino()),
        });
        lazy.register();
        Ok(lazy)
    }

    /// A file at `path` not opened yet, whose metadata is `meta` (a reopen must find it).
    pub(crate) fn closed(path: PathBuf, mode: Mode, meta: &std::fs::Metadata) -> Arc<LazyFile> {
        Arc::new(LazyFile {
            path,
            mode,
            file: RwLock::new(None),
            used: AtomicBool::new(false),
            ident: (meta.dev(), meta.ino()),
        })
    }

    /// The open file, opened again if it was closed.
    pub(crate) fn get(self: &Arc<Self>) -> io::Result<Arc<File>> {
        self.used.store(true, Ordering::Relaxed);
        if let Some(f) = self.file.read().as_ref() {
            return Ok(f.clone());
        }
        self.reopen()
    }

    /// Runs `f` on the open file (opened again if it was closed) without cloning its handle.
    pub(crate) fn with<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&File) -> io::Result<T>,
    ) -> io::Result<T> {
        self.used.store(true, Ordering::Relaxed);
        {
            let g = self.file.read();
            if let Some(file) = g.as_ref() {
                return f(file);
            }
        }
        f(&*self.reopen()?)
    }

    fn reopen(self: &Arc<Self>) -> io::Result<Arc<File>> {
        let file = {
            let mut g = self.file.write();
            if let Some(f) = g.as_ref() {
                return Ok(f.clone());
            }
            let mut opts = OpenOptions::new();
            match self.mode {
                Mode::ReadWrite => opts.read(true).write(true),
                Mode::Append => opts.append(true),
            };
            let file = match opts.open(&self.path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone(&self.path)),
                Err(e) => return Err(e),
            };
            let meta = file.metadata()?;
            if (meta.dev(), meta.ino()) != self.ident {
                return Err(gone(&self.path));
            }
            let file = Arc::new(file);
            *g = Some(file.clone());
            file
        };
        self.register();
        Ok(file)
    }

    /// Counts a newly opened file and closes others while the budget is exceeded.
    fn register(self: &Arc<Self>) {
        let open = OPEN.fetch_add(1, Ordering::AcqRel) + 1;
        let mut clock = clock().lock();
        clock.files.push(Arc::downgrade(self));
        if clock.files.len() > 2 * open + 64 {
            clock.files.retain(|w| w.strong_count() > 0);
            clock.hand = 0;
        }
        let budget = open_files_budget();
        // Two sweeps at most: the first may only clear `used` bits.
        let mut steps = 2 * clock.files.len();
        while OPEN.load(Ordering::Acquire) > budget && steps > 0 && !clock.files.is_empty() {
            steps -= 1;
            if clock.hand >= clock.files.len() {
                clock.hand = 0;
            }
            let i = clock.hand;
            let Some(file) = clock.files[i].upgrade() else {
                clock.files.swap_remove(i);
                continue;
            };
            if Arc::ptr_eq(&file, self) || file.used.swap(false, Ordering::Relaxed) {
                clock.hand += 1;
                continue;
            }
            // A file whose lock is held is in use: it gets another turn.
            let closed = file.file.try_write().map(|mut g| g.take().is_some());
            match closed {
                Some(true) => {
                    OPEN.fetch_sub(1, Ordering::AcqRel);
                    EVICTIONS.fetch_add(1, Ordering::Relaxed);
                    clock.files.swap_remove(i);
                }
                Some(false) => {
                    clock.files.swap_remove(i);
                }
                None => clock.hand += 1,
            }
        }
    }
}

impl Drop for LazyFile {
    fn drop(&mut self) {
        if self.file.get_mut().take().is_some() {
            OPEN.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_file_reopens_only_if_it_is_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"old").unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let lazy = LazyFile::opened(path.clone(), Mode::ReadWrite, f).unwrap();
        // Closed as the evicting hand would, then reopened.
        assert!(lazy.file.write().take().is_some());
        OPEN.fetch_sub(1, Ordering::AcqRel);
        let mut buf = [0u8; 3];
        lazy.with(|f| std::os::unix::fs::FileExt::read_exact_at(f, &mut buf, 0))
            .unwrap();
        assert_eq!(&buf, b"old");
        // Replaced by a rename while closed: another file, refused.
        assert!(lazy.file.write().take().is_some());
        OPEN.fetch_sub(1, Ordering::AcqRel);
        let new = dir.path().join("a.new");
        std::fs::write(&new, b"new").unwrap();
        std::fs::rename(&new, &path).unwrap();
        let e = lazy.get().unwrap_err();
        assert!(is_gone(&e), "{e}");
        // Deleted while closed: refused the same way.
        std::fs::remove_file(&path).unwrap();
        assert!(is_gone(&lazy.get().unwrap_err()));
    }
}
