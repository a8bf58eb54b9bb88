//! Responses in flight on a reliable connection that signals only some of its SENDs.
//! A queue pair completes its send queue in order, so the completion of one signalled
//! SEND also completes every SEND posted before it; only a SEND that fails (or is
//! flushed when the connection closes) reports on its own. Signalling one SEND per post
//! halves the completions a queue handles per command and the wake-ups they cause.

use std::collections::VecDeque;
use std::time::Instant;

use crate::core::Tag;

/// Tags of the SENDs posted and not yet known complete, in posting order, with when
/// each was posted.
#[derive(Default)]
pub struct SendsInFlight {
    tags: VecDeque<Tag>,
    posted_at: VecDeque<Instant>,
}

impl SendsInFlight {
    pub fn posted(&mut self, tag: Tag, now: Instant) {
        self.tags.push_back(tag);
        self.posted_at.push_back(now);
    }

    /// When the oldest SEND not known complete was posted: a host that takes no
    /// responses (posts no receives) holds it, and the buffers behind it, forever.
    pub fn oldest(&self) -> Option<Instant> {
        self.posted_at.front().copied()
    }

    /// The SEND for `tag` completed: takes it and every SEND posted before it, oldest
    /// first. A tag not in flight (a stray or repeated completion) completes nothing.
    pub fn completed_through(&mut self, tag: Tag) -> impl Iterator<Item = Tag> + '_ {
        let count = self.tags.iter().position(|&posted| posted == tag).map_or(0, |index| index + 1);
        self.posted_at.drain(..count);
        self.tags.drain(..count)
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(tags: &[Tag]) -> SendsInFlight {
        let mut sends = SendsInFlight::default();
        tags.iter().for_each(|&tag| sends.posted(tag, Instant::now()));
        sends
    }

    #[test]
    fn the_oldest_send_is_the_first_not_completed() {
        let start = Instant::now();
        let mut sends = SendsInFlight::default();
        for (tag, later) in [(1, 0), (2, 1), (3, 2)] {
            sends.posted(tag, start + std::time::Duration::from_secs(later));
        }
        assert_eq!(sends.oldest(), Some(start));
        assert_eq!(sends.completed_through(2).count(), 2);
        assert_eq!(sends.oldest(), Some(start + std::time::Duration::from_secs(2)));
        assert_eq!(sends.completed_through(3).count(), 1);
        assert_eq!(sends.oldest(), None);
    }

    #[test]
    fn a_signalled_completion_takes_the_sends_before_it() {
        let mut sends = posted(&[4, 9, 2, 7]);
        assert_eq!(sends.completed_through(2).collect::<Vec<_>>(), [4, 9, 2]);
        assert_eq!(sends.completed_through(7).collect::<Vec<_>>(), [7]);
        assert!(sends.is_empty());
    }

    #[test]
    fn flushed_sends_report_one_by_one() {
        let mut sends = posted(&[1, 2, 3]);
        for tag in [1, 2, 3] {
            assert_eq!(sends.completed_through(tag).collect::<Vec<_>>(), [tag]);
        }
        assert!(sends.is_empty());
    }

    #[test]
    fn an_unknown_tag_completes_nothing() {
        let mut sends = posted(&[5, 6]);
        assert_eq!(sends.completed_through(8).count(), 0);
        assert_eq!(sends.completed_through(6).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(sends.completed_through(6).count(), 0);
    }

    #[test]
    fn a_reused_tag_completes_its_oldest_posting_first() {
        let mut sends = posted(&[3, 1]);
        assert_eq!(sends.completed_through(3).collect::<Vec<_>>(), [3]);
        sends.posted(3, Instant::now());
        assert_eq!(sends.completed_through(3).collect::<Vec<_>>(), [1, 3]);
        assert!(sends.is_empty());
    }
}
