//! Whether spinning through a queue's idle moments has been paying off. A spin pays when
//! the next event arrives within the spin budget: the thread then skips a sleep and a
//! wake-up. When the host or the link is slow (a host that thinks between commands, a
//! long round trip, an overcommitted machine), every spin runs out its budget and then
//! sleeps anyway, so the CPU it burned bought nothing.
//!
//! Each spun-through idle moment is judged by how long it lasted from the spin's start
//! to the next event, sleep included: within [`SLACK`] budgets is a moment spinning
//! catches or nearly does; the slow host or link shows as moments many budgets long.
//! (A moment a bit over the budget is not judged a loss: spins end just before their
//! event often enough at QD1 that judging by the budget alone turned spinning off
//! there: two to three times the sleeps per QD1 read on the test bed.) Moments
//! not spun through are not judged: their length includes the wake-up that spinning
//! exists to avoid. So while spinning is off, one idle moment in [`PROBE_EVERY`] is
//! still spun through, to notice when it pays again.

use std::time::Duration;

/// Spin outcomes remembered: the bits of `IdleGaps::caught`, which shifts older ones out.
const REMEMBERED: u32 = u32::BITS;
/// Before this many are recorded, spinning stays on.
const WARM_UP: u32 = 8;
/// While spinning does not pay, one idle moment in this many is spun through anyway.
pub const PROBE_EVERY: u32 = 8;
/// A spun-through moment up to this many budgets long counts as caught.
pub const SLACK: u32 = 4;

/// The outcomes of a queue's recent spins.
#[derive(Debug, Default)]
pub struct IdleGaps {
    /// One bit per spin, newest lowest: set when it was caught (see [`SLACK`]). Bits
    /// above `recorded` are still zero.
    caught: u32,
    recorded: u32,
    /// Idle moments slept through since the last spin.
    skipped: u32,
}

impl IdleGaps {
    /// Whether to spin through the idle moment that starts now: when spinning pays, and
    /// as a probe every [`PROBE_EVERY`]th moment when it does not.
    pub fn spin_now(&mut self) -> bool {
        if self.pays() || self.skipped + 1 >= PROBE_EVERY {
            self.skipped = 0;
            return true;
        }
        self.skipped += 1;
        false
    }

    /// Records a spun-through idle moment that lasted `gap` from the spin's start to the
    /// next event, against the spin `budget`.
    pub fn record_gap(&mut self, gap: Duration, budget: Duration) {
        self.record(gap <= budget * SLACK);
    }

    /// Records whether a spun-through moment was caught (see [`SLACK`]).
    pub fn record(&mut self, caught: bool) {
        self.caught = (self.caught << 1) | u32::from(caught);
        self.recorded = (self.recorded + 1).min(REMEMBERED);
    }

    /// At least a quarter of the remembered spins caught their event. A caught spin
    /// saves a wake-up, which costs more latency than a spin costs CPU, so spinning
    /// keeps going while only some of them pay.
    pub fn pays(&self) -> bool {
        if self.recorded < WARM_UP {
            return true;
        }
        self.caught.count_ones() * 4 >= self.recorded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(gaps: &mut IdleGaps, outcomes: &[bool]) {
        for &caught in outcomes {
            gaps.record(caught);
        }
    }

    #[test]
    fn spinning_is_on_until_enough_is_known() {
        let mut gaps = IdleGaps::default();
        assert!(gaps.pays());
        record(&mut gaps, &[false; 7]);
        assert!(gaps.pays(), "7 missed spins are not yet enough to judge");
        record(&mut gaps, &[false]);
        assert!(!gaps.pays());
    }

    #[test]
    fn caught_spins_keep_spinning_on() {
        let mut gaps = IdleGaps::default();
        record(&mut gaps, &[true; 100]);
        assert!(gaps.pays());
        assert!((0..100).all(|_| gaps.spin_now()));
    }

    #[test]
    fn a_quarter_caught_is_enough() {
        let mut gaps = IdleGaps::default();
        for _ in 0..8 {
            record(&mut gaps, &[true, false, false, false]);
        }
        assert!(gaps.pays(), "8 of 32 caught");
        record(&mut gaps, &[false]);
        assert!(!gaps.pays(), "7 of 32 once the oldest caught one is forgotten");
    }

    #[test]
    fn only_the_last_32_count() {
        let mut gaps = IdleGaps::default();
        record(&mut gaps, &[true; 1000]);
        record(&mut gaps, &[false; 24]);
        assert!(gaps.pays(), "8 caught among the last 32");
        record(&mut gaps, &[false]);
        assert!(!gaps.pays(), "7 caught among the last 32");
    }

    #[test]
    fn moments_up_to_slack_budgets_count_as_caught() {
        let budget = Duration::from_micros(150);
        let mut gaps = IdleGaps::default();
        for _ in 0..32 {
            gaps.record_gap(Duration::from_micros(600), budget);
        }
        assert!(gaps.pays());
        for _ in 0..32 {
            gaps.record_gap(Duration::from_micros(601), budget);
        }
        assert!(!gaps.pays());
    }

    #[test]
    fn while_off_one_moment_in_eight_is_a_probe() {
        let mut gaps = IdleGaps::default();
        record(&mut gaps, &[false; 32]);
        let spins: Vec<bool> = (0..24).map(|_| gaps.spin_now()).collect();
        let probes: Vec<usize> = spins.iter().enumerate().filter(|(_, &s)| s).map(|(i, _)| i).collect();
        assert_eq!(probes, vec![7, 15, 23]);
    }

    #[test]
    fn probes_that_catch_turn_spinning_back_on() {
        let mut gaps = IdleGaps::default();
        record(&mut gaps, &[false; 64]);
        let mut moments = 0;
        while !gaps.pays() {
            moments += 1;
            assert!(moments <= 8 * PROBE_EVERY, "still off after {moments} idle moments");
            if gaps.spin_now() {
                gaps.record(true);
            }
        }
        assert!(gaps.spin_now());
    }
}
