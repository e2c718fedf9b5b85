//! A child process appends with `flush.messages=1` and reports each acknowledged append; the
//! test SIGKILLs it mid-stream and checks that every acknowledged batch survived.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strom_log::{batch_headers, build_batch, Log, LogConfig};

const DIR_VAR: &str = "STROM_LOG_CRASH_DIR";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        flush_messages: Some(1),
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Not a test of its own: the body of the child process (does nothing unless the parent
/// set the directory).
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let log = Log::open(&dir, config()).unwrap();
    let mut i = log.log_end_offset();
    loop {
        let value = format!("acked-{i}");
        // Every 25th append is large enough to take the `RWF_DSYNC` path and to roll often.
        let pad_len = if i % 50 == 0 {
            140 << 10
        } else {
            (i % 700) as usize
        };
        let pad = vec![b'p'; pad_len];
        let mut b = build_batch(i, &[value.as_bytes(), &pad]);
        let info = log.append(&mut b).unwrap();
        if info.flush_due {
            log.flush_to(info.last_offset + 1).unwrap();
        }
        // Only now is the append acknowledged.
        println!("ACK {} {}", info.base_offset, i);
        i += 2;
    }
}

fn run_and_kill(dir: &std::path::Path, acks_before_kill: usize) -> Vec<(i64, i64)> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < acks_before_kill && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("ACK ") {
            let mut it = rest.split(' ').map(|s| s.parse::<i64>().unwrap());
            acked.push((it.next().unwrap(), it.next().unwrap()));
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines already written before the kill were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let mut it = rest.split(' ').map(|s| s.parse::<i64>().unwrap());
            acked.push((it.next().unwrap(), it.next().unwrap()));
        }
    }
    assert!(
        acked.len() >= acks_before_kill.min(50),
        "the child acknowledged only {} appends",
        acked.len()
    );
    acked
}

#[test]
fn sigkill_mid_append_keeps_every_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for round in [300usize, 700, 150] {
        all.extend(run_and_kill(dir.path(), round));
        let log = Log::open(dir.path(), config()).unwrap();
        for &(offset, i) in &all {
            let r = log.read(offset, 1).unwrap();
            let (pos, h) = batch_headers(&r.data).next().unwrap();
            assert_eq!(
                h.base_offset, offset,
                "acknowledged batch {i} missing at {offset}"
            );
            let batch = &r.data[pos..pos + h.total_len()];
            let want = format!("acked-{i}");
            assert!(
                batch.windows(want.len()).any(|w| w == want.as_bytes()),
                "batch at {offset} does not hold {want}"
            );
        }
        assert!(log.log_end_offset() >= all.last().unwrap().0 + 2);
        log.close().unwrap();
    }
}
