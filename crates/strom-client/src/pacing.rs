//! Pacing for fixed-rate load (`strom bench --rate`, and the peers' drivers).

use std::time::{Duration, Instant};

/// Sleeps until `t` with sub-millisecond precision. Tokio's timer has a 1 ms granularity
/// (a sleep ends on the next millisecond tick), which at a fixed rate would add up to 1 ms to
/// every batch's send time; the last stretch is slept by a blocking-pool thread instead
/// (`nanosleep`, tens of µs late at most). Waits under 50 µs are not slept at all: at very
/// high rates (one message every few µs) a thread hop per message would cost more than the
/// precision is worth; the caller then runs at most 50 µs ahead of its schedule.
pub async fn sleep_until_precisely(t: Instant) {
    const COARSE_MARGIN: Duration = Duration::from_millis(2);
    const NOT_WORTH_IT: Duration = Duration::from_micros(50);
    let now = Instant::now();
    if t <= now + NOT_WORTH_IT {
        return;
    }
    if t - now > COARSE_MARGIN {
        tokio::time::sleep_until((t - COARSE_MARGIN).into()).await;
    }
    let rest = t.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}
