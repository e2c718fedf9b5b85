//! The log's recovery scan over arbitrary segment bytes: the input becomes the only segment
//! of a partition (data file, and an offset index made from its last bytes when the first
//! byte is odd), the log is opened, read from start to end, appended to and reopened. Recovery
//! must keep a valid prefix and never panic; reads must return whole batches; the append must
//! land at the recovered end.
#![no_main]

use libfuzzer_sys::fuzz_target;

strom_fuzz::capped_allocator!();
use strom_log::{Log, LogConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (segment, index) = if flags & 1 == 1 && rest.len() >= 8 {
        let cut = rest.len() - (rest.len() / 4) / 8 * 8;
        (&rest[..cut], &rest[cut..])
    } else {
        (rest, &[][..])
    };
    std::fs::write(dir.path().join("00000000000000000000.log"), segment).expect("write");
    std::fs::write(dir.path().join("00000000000000000000.index"), index).expect("write");
    std::fs::write(dir.path().join("00000000000000000000.timeindex"), b"").expect("write");
    if flags & 2 == 2 {
        // Recovery checks everything from the recovery point on.
        std::fs::write(dir.path().join("recovery-point"), b"0\n").expect("write");
    }
    let config = LogConfig {
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let Ok(log) = Log::open(dir.path(), config) else {
        return;
    };
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    while offset < end {
        let Ok(read) = log.read(offset, 1 << 16) else {
            break;
        };
        let mut next = offset;
        for (_, h) in strom_log::batch_headers(&read.data) {
            assert!(h.last_offset() >= next, "batches go forward");
            next = h.last_offset() + 1;
        }
        if next == offset {
            break;
        }
        offset = next;
    }
    let mut batch = strom_log::build_batch(1, &[b"after recovery"]);
    let info = log.append(&mut batch).expect("an append after recovery");
    assert_eq!(
        info.base_offset, end,
        "the append lands at the recovered end"
    );
    drop(log);
    let again = Log::open(dir.path(), config).expect("reopens");
    assert_eq!(again.log_end_offset(), end + 1);
});
