//! Whether a queue is in the latency-bound regime where polling pays: few commands
//! outstanding now *and* over the last millisecond or two. A queue at depth passes
//! through a shallow moment whenever its batch drains (or the host's submitting thread
//! moves to another CPU, and so to another queue); spinning there takes the CPU that
//! the NIC and the host need, for no gain: the next command comes with the batch.
//! Looking back one window tells a drain from a QD1 stream.

use std::time::{Duration, Instant};

/// Length of one window of depth history.
const WINDOW: Duration = Duration::from_millis(1);

pub struct DepthHistory {
    /// Most commands outstanding that still count as shallow.
    limit: usize,
    window_start: Instant,
    /// Deepest outstanding count seen in the current window and in the one before.
    peak: usize,
    previous_peak: usize,
}

impl DepthHistory {
    /// Shallow means at most `limit` commands outstanding.
    pub fn new(limit: usize, now: Instant) -> DepthHistory {
        DepthHistory { limit, window_start: now, peak: 0, previous_peak: 0 }
    }

    /// Records that `outstanding` commands are out at `now`.
    pub fn note(&mut self, now: Instant, outstanding: usize) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            // A window with no call at all (the thread slept) holds nothing deep.
            self.previous_peak = if elapsed >= 2 * WINDOW { 0 } else { self.peak };
            self.peak = 0;
            self.window_start = now;
        }
        self.peak = self.peak.max(outstanding);
    }

    /// Whether at most `limit` commands are out now and were through the last window.
    pub fn shallow(&self, outstanding: usize) -> bool {
        outstanding <= self.limit && self.peak.max(self.previous_peak) <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A history with limit 2, started now.
    fn started() -> (Instant, DepthHistory) {
        let start = Instant::now();
        (start, DepthHistory::new(2, start))
    }

    #[test]
    fn a_qd1_stream_is_shallow() {
        let (start, mut history) = started();
        for step in 0..10 {
            history.note(start + Duration::from_micros(300 * step), 1);
            assert!(history.shallow(1));
            history.note(start + Duration::from_micros(300 * step + 150), 0);
            assert!(history.shallow(0));
        }
    }

    #[test]
    fn a_drain_at_depth_is_not_shallow_until_a_window_passes() {
        let (start, mut history) = started();
        history.note(start, 12);
        assert!(!history.shallow(12));
        history.note(start + Duration::from_micros(500), 1);
        assert!(!history.shallow(1), "same window as the depth");
        history.note(start + ms(1), 1);
        assert!(!history.shallow(1), "the previous window was deep");
        history.note(start + ms(2), 1);
        assert!(history.shallow(1), "two shallow windows");
    }

    #[test]
    fn idle_time_forgets_depth() {
        let (start, mut history) = started();
        history.note(start + Duration::from_micros(900), 16);
        history.note(start + ms(5), 1);
        assert!(history.shallow(1));
    }

    #[test]
    fn more_than_the_limit_now_is_never_shallow() {
        let (start, mut history) = started();
        history.note(start, 3);
        assert!(!history.shallow(3));
        assert!(!history.shallow(2), "the window's peak is 3");
    }
}
