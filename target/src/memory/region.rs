//! Page-granular allocation inside one fixed region: a bitmap with a rotating cursor.
//! Pure bookkeeping, sized once; no allocation after construction.

pub const PAGE_BYTES: u64 = 4096;

#[derive(Debug)]
pub struct PageAllocator {
    used: Vec<u64>,
    pages: usize,
    cursor: usize,
    in_use: usize,
    high_water: usize,
}

impl PageAllocator {
    pub fn new(pages: usize) -> PageAllocator {
        PageAllocator { used: vec![0; pages.div_ceil(64)], pages, cursor: 0, in_use: 0, high_water: 0 }
    }

    pub fn pages(&self) -> usize {
        self.pages
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn high_water(&self) -> usize {
        self.high_water
    }

    fn is_used(&self, page: usize) -> bool {
        self.used[page / 64] & (1 << (page % 64)) != 0
    }

    fn set(&mut self, page: usize, used: bool) {
        let bit = 1u64 << (page % 64);
        if used {
            self.used[page / 64] |= bit;
        } else {
            self.used[page / 64] &= !bit;
        }
    }

    /// First run of `count` free pages at or after the cursor, wrapping once.
    pub fn allocate(&mut self, count: usize) -> Option<usize> {
        if count == 0 || count > self.pages - self.in_use {
            return None;
        }
        let mut start = if self.cursor + count <= self.pages { self.cursor } else { 0 };
        let mut scanned = 0;
        while scanned < self.pages + count {
            if start + count > self.pages {
                scanned += self.pages - start;
                start = 0;
                continue;
            }
            match (start..start + count).find(|&p| self.is_used(p)) {
                None => {
                    for page in start..start + count {
                        self.set(page, true);
                    }
                    self.in_use += count;
                    self.high_water = self.high_water.max(self.in_use);
                    self.cursor = start + count;
                    return Some(start);
                }
                Some(used) => {
                    scanned += used + 1 - start;
                    start = used + 1;
                }
            }
        }
        None
    }

    pub fn release(&mut self, first: usize, count: usize) {
        for page in first..first + count {
            assert!(self.is_used(page), "page {page} released twice");
            self.set(page, false);
        }
        self.in_use -= count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_until_full_then_reuses() {
        let mut pages = PageAllocator::new(8);
        let a = pages.allocate(3).unwrap();
        let b = pages.allocate(5).unwrap();
        assert_eq!((a, b), (0, 3));
        assert_eq!(pages.allocate(1), None);
        pages.release(a, 3);
        assert_eq!(pages.allocate(4), None, "only three free pages in a row");
        assert_eq!(pages.allocate(2), Some(0));
        assert_eq!(pages.in_use(), 7);
        assert_eq!(pages.high_water(), 8);
    }

    #[test]
    fn finds_runs_after_wrapping() {
        let mut pages = PageAllocator::new(130);
        let all: Vec<usize> = (0..130).map(|_| pages.allocate(1).unwrap()).collect();
        assert_eq!(all.len(), 130);
        for page in [5, 6, 7, 70, 71] {
            pages.release(page, 1);
        }
        assert_eq!(pages.allocate(3), Some(5));
        assert_eq!(pages.allocate(2), Some(70));
        assert_eq!(pages.allocate(1), None);
    }

    #[test]
    fn refuses_zero_and_oversized() {
        let mut pages = PageAllocator::new(4);
        assert_eq!(pages.allocate(0), None);
        assert_eq!(pages.allocate(5), None);
    }

    #[test]
    #[should_panic(expected = "released twice")]
    fn double_release_is_a_bug() {
        let mut pages = PageAllocator::new(4);
        let a = pages.allocate(1).unwrap();
        pages.release(a, 1);
        pages.release(a, 1);
    }
}
