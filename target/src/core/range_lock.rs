//! LBA range locks of one namespace, for fused Compare and Write: while one holds a
//! range, no other command touches an overlapping block, on any queue of any host.
//!
//! Byte offsets fall into 128 KiB granules, which map onto 64 stripes. Every command
//! that reads or writes blocks enters the stripes of its range for as long as the
//! backend works on it; a fused Compare and Write locks its stripes, which turns new
//! entries away, then waits for the commands already in them to finish. Stripes are
//! shared by granules 8 MiB apart: a lock may hold up an unrelated command, never let
//! an overlapping one through. The cost to a command that meets no lock is two atomic
//! operations per stripe (one or two stripes for transfers up to 128 KiB).
//!
//! Entering and locking are each all or nothing and never block: a command that cannot
//! enter, or a lock that cannot be taken, waits on its queue and tries again on the next
//! pass of the queue's loop. Nothing waits while holding a stripe, so nothing deadlocks.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;

/// Bytes per granule: 128 KiB.
const GRANULE_SHIFT: u32 = 17;
const STRIPES: usize = 64;
const STRIPE_MASK: u64 = STRIPES as u64 - 1;

#[derive(Debug, Default)]
struct Stripe {
    /// Commands inside the stripe (at the backend).
    in_flight: AtomicU32,
    /// Held by a fused Compare and Write.
    locked: AtomicBool,
}

#[derive(Debug)]
pub struct RangeLocks {
    stripes: [Stripe; STRIPES],
}

impl Default for RangeLocks {
    fn default() -> Self {
        RangeLocks { stripes: std::array::from_fn(|_| Stripe::default()) }
    }
}

/// The stripes a byte range touches: distinct, at most all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stripes {
    first: usize,
    count: usize,
}

impl Stripes {
    fn of(offset_bytes: u64, len_bytes: u64) -> Stripes {
        let first_granule = offset_bytes >> GRANULE_SHIFT;
        let last_granule = offset_bytes.saturating_add(len_bytes.max(1).saturating_sub(1)) >> GRANULE_SHIFT;
        let granules = last_granule.saturating_sub(first_granule).saturating_add(1);
        let count = usize::try_from(granules).unwrap_or(STRIPES).min(STRIPES);
        Stripes { first: (first_granule & STRIPE_MASK) as usize, count }
    }

    #[cfg(test)]
    fn indices(self) -> impl Iterator<Item = usize> {
        (0..self.count).map(move |step| (self.first + step) % STRIPES)
    }
}

/// A command inside a range: other commands may enter too, no lock may be taken until
/// it is dropped.
#[derive(Debug)]
pub struct Entered {
    locks: Arc<RangeLocks>,
    stripes: Stripes,
}

/// A held range: no other command enters it until this is dropped.
#[derive(Debug)]
pub struct Locked {
    locks: Arc<RangeLocks>,
    stripes: Stripes,
}

impl RangeLocks {
    /// Enters the range of a command, unless a lock holds part of it.
    pub fn enter(self: &Arc<Self>, offset_bytes: u64, len_bytes: u64) -> Option<Entered> {
        let stripes = Stripes::of(offset_bytes, len_bytes);
        // A lock already held turns the entry away before it announces itself, so
        // entries that would back out do not keep a lock from draining.
        if self.each(stripes).any(|stripe| stripe.locked.load(SeqCst)) {
            return None;
        }
        // Announce first, then look (the lock side sets, then looks): in the single
        // order of SeqCst operations, either the locker sees this entry or this entry
        // sees the lock.
        for stripe in self.each(stripes) {
            stripe.in_flight.fetch_add(1, SeqCst);
        }
        let entered = Entered { locks: self.clone(), stripes };
        if self.each(stripes).any(|stripe| stripe.locked.load(SeqCst)) {
            return None; // `entered` drops: the entries are taken back
        }
        Some(entered)
    }

    /// Locks the range, unless another lock holds part of it. The range is the
    /// holder's once [`Locked::drained`] says the commands inside have left.
    pub fn lock(self: &Arc<Self>, offset_bytes: u64, len_bytes: u64) -> Option<Locked> {
        let stripes = Stripes::of(offset_bytes, len_bytes);
        let mut taken = Locked { locks: self.clone(), stripes: Stripes { first: stripes.first, count: 0 } };
        for stripe in self.each(stripes) {
            if stripe.locked.compare_exchange(false, true, SeqCst, SeqCst).is_err() {
                return None; // `taken` drops: the stripes taken so far are let go
            }
            taken.stripes.count = taken.stripes.count.saturating_add(1);
        }
        Some(taken)
    }

    /// The stripes of a range, in order.
    fn each(&self, stripes: Stripes) -> impl Iterator<Item = &Stripe> {
        self.stripes.iter().cycle().skip(stripes.first).take(stripes.count)
    }
}

impl Locked {
    /// Whether every command that entered the range before the lock has left it.
    pub fn drained(&self) -> bool {
        self.locks.each(self.stripes).all(|stripe| stripe.in_flight.load(SeqCst) == 0)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        for stripe in self.locks.each(self.stripes) {
            stripe.in_flight.fetch_sub(1, SeqCst);
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        for stripe in self.locks.each(self.stripes) {
            stripe.locked.store(false, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_turns_overlapping_entries_away_and_waits_for_those_inside() {
        let locks = Arc::new(RangeLocks::default());
        let inside = locks.enter(0, 4096).expect("no lock yet");
        let lock = locks.lock(0, 512).expect("no other lock");
        assert!(!lock.drained(), "a command is inside");
        assert!(locks.enter(1024, 512).is_none(), "overlapping entries wait");
        assert!(locks.enter(1 << 20, 4096).is_some(), "other stripes are free");
        assert!(locks.lock(0, 512).is_none(), "one lock at a time");
        drop(inside);
        assert!(lock.drained());
        drop(lock);
        assert!(locks.enter(0, 4096).is_some());
        assert!(locks.lock(0, 512).is_some(), "entries that left leave nothing behind");
    }

    #[test]
    fn a_failed_lock_lets_go_of_what_it_took() {
        let locks = Arc::new(RangeLocks::default());
        let held = locks.lock(256 << 10, 1).unwrap(); // stripe 2
        assert!(locks.lock(0, 512 << 10).is_none(), "stripes 0-3 include 2");
        drop(held);
        assert!(locks.lock(0, 128 << 10).is_some(), "stripe 0 was let go");
    }

    /// Threads entering and locking the same block at once: while a drained lock is
    /// held, no entered command is inside, and no two locks are held.
    #[test]
    fn a_drained_lock_excludes_every_entry_across_threads() {
        use std::sync::atomic::AtomicUsize;
        let locks = Arc::new(RangeLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let holders = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let (locks, inside, holders) = (locks.clone(), inside.clone(), holders.clone());
                std::thread::spawn(move || {
                    let mut rounds = 0;
                    while rounds < 2000 {
                        if thread == 0 || thread == 1 {
                            let Some(lock) = locks.lock(4096, 512) else { continue };
                            if !lock.drained() {
                                continue;
                            }
                            assert_eq!(holders.fetch_add(1, SeqCst), 0, "two locks held");
                            assert_eq!(inside.load(SeqCst), 0, "an entry inside a drained lock");
                            holders.fetch_sub(1, SeqCst);
                        } else {
                            let Some(_entered) = locks.enter(0, 8192) else { continue };
                            inside.fetch_add(1, SeqCst);
                            assert_eq!(holders.load(SeqCst), 0, "entered while a drained lock is held");
                            inside.fetch_sub(1, SeqCst);
                        }
                        rounds += 1;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    #[test]
    fn stripes_wrap_and_never_repeat() {
        assert_eq!(Stripes::of(0, 1), Stripes { first: 0, count: 1 });
        assert_eq!(Stripes::of((128 << 10) - 1, 2), Stripes { first: 0, count: 2 });
        assert_eq!(Stripes::of(63 << 17, 2 << 17), Stripes { first: 63, count: 2 });
        assert_eq!(Stripes::of(63 << 17, 2 << 17).indices().collect::<Vec<_>>(), vec![63, 0]);
        assert_eq!(Stripes::of(0, u64::MAX).count, STRIPES);
        assert_eq!(Stripes::of(u64::MAX - 1, 16).count, 1, "saturates at the end");
    }
}
