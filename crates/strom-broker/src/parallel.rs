//! Storage work spread over a few threads: opening, creating and closing many partitions.
//! Their time is mostly waits for the disk (reads on a cold page cache, fsyncs), which
//! overlap; the CPU part is small.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Threads [`on_threads`] uses at most.
pub(crate) const STORAGE_THREADS: usize = 8;

/// `f` of every item, on up to [`STORAGE_THREADS`] threads, in the items' order.
pub(crate) fn on_threads<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..STORAGE_THREADS.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                *out[i].lock() = Some(f(item));
            });
        }
    });
    out.into_iter()
        .map(|r| r.into_inner().expect("every item was done"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_item_once_in_order() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(
            super::on_threads(&items, |i| i * 2),
            (0..1000).map(|i| i * 2).collect::<Vec<_>>()
        );
        assert!(super::on_threads(&[] as &[u32], |i| *i).is_empty());
    }
}
