//! Fault injection for tests: make the syncs or writes of the logs under a directory fail
//! as a failing or full disk would. [`inject`] exists only with the cargo feature
//! `fault-injection` (enabled by this workspace's tests, never by a build of the binary);
//! without it the check the log makes at each [`Point`] is an empty inline function.

use std::fs::File;
use std::io;
use std::path::Path;

/// Where an injected fault strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// An fdatasync of a segment or an index file: fails with EIO.
    Sync,
    /// An fsync of the log's directory (after creating a segment): fails with EIO.
    DirSync,
    /// The data write of an append: a few bytes land, then ENOSPC (a disk that filled up
    /// in the middle of the write).
    DataWrite,
    /// The index write of an append (after its data write succeeded): a torn entry lands,
    /// then ENOSPC.
    IndexWrite,
    /// Step `n` (1-5) of the cleaner's swap of a segment, 6 the removal of a segment left
    /// empty (see `cleaner.rs`): the pass stops there with EIO and leaves the files as a
    /// crash at that step would.
    CleanerSwap(u8),
}

#[cfg(feature = "fault-injection")]
mod imp {
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use parking_lot::Mutex;

    use super::*;

    static FAULTS: Mutex<Vec<(u64, PathBuf, Point)>> = Mutex::new(Vec::new());
    static NEXT: AtomicU64 = AtomicU64::new(0);

    /// An injected fault: active until dropped.
    #[must_use = "the fault is removed when this is dropped"]
    #[derive(Debug)]
    pub struct Injected(u64);

    impl Drop for Injected {
        fn drop(&mut self) {
            FAULTS.lock().retain(|(id, _, _)| *id != self.0);
        }
    }

    /// Makes every operation at `point` of the logs in or under `dir` fail until the
    /// returned guard is dropped.
    pub fn inject(dir: &Path, point: Point) -> Injected {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        FAULTS.lock().push((id, dir.to_path_buf(), point));
        Injected(id)
    }

    pub(crate) fn check(dir: &Path, point: Point, torn: Option<(&File, u64)>) -> io::Result<()> {
        let hit = FAULTS
            .lock()
            .iter()
            .any(|(_, d, p)| *p == point && dir.starts_with(d));
        if !hit {
            return Ok(());
        }
        if let Some((file, pos)) = torn {
            let _ = file.write_at(&[0xEE; 5], pos);
        }
        Err(io::Error::from_raw_os_error(match point {
            Point::Sync | Point::DirSync | Point::CleanerSwap(_) => libc::EIO,
            Point::DataWrite | Point::IndexWrite => libc::ENOSPC,
        }))
    }
}

#[cfg(feature = "fault-injection")]
pub use imp::{inject, Injected};

/// Fails as an injected fault at `point` says (with `torn`, after writing a few bytes at that
/// position of that file); `Ok` when nothing is injected.
#[inline(always)]
pub(crate) fn check(dir: &Path, point: Point, torn: Option<(&File, u64)>) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    return imp::check(dir, point, torn);
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = (dir, point, torn);
        Ok(())
    }
}
