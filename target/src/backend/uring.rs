//! The per-queue backend executor: one io_uring per queue thread. RAM namespaces
//! complete inline.
//!
//! The ring is also the thread's one way to sleep: [`Executor::watch`] arms a oneshot
//! poll on any descriptor the caller names, and [`Executor::wait`] submits the batch and
//! sleeps until an operation or a watched descriptor completes, whichever is first, in
//! one `io_uring_enter`. What to watch and when to sleep is the transport's loop
//! (`transport::rdma::connection`); a separate wait (epoll on an eventfd the ring
//! signals) would add a wake-up hop to every SSD completion.
//!
//! A second ring, set up for polled I/O (`IORING_SETUP_IOPOLL`), takes the reads and
//! writes of shallow queues on block devices with poll queues: the thread is spinning
//! through those commands anyway, and a polled completion skips the device interrupt
//! and the wake-up of this thread that an interrupt-driven one costs.
//!
//! The host buffer pool and the queue's receive buffers are registered with both rings
//! once (io_uring fixed buffers): reads and writes in them then skip pinning and
//! unpinning their pages on every operation. CMB buffers go as plain reads and writes.
#![allow(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

use super::{Backend, BackendError, BackendOp, OpKind, Storage};
use crate::core::buffer::{Buffer, DataBuffer};
use crate::core::Tag;

/// A finished operation: its result, and the buffer it owned, given back.
pub type Done = (Tag, Result<u32, BackendError>, Option<DataBuffer>);

/// What an in-flight tag is waiting for.
struct Pending {
    op: OpKind,
    expected_bytes: u32,
    remaining: u32,
    transferred: u32,
    error: Option<BackendError>,
    /// Whether an unsupported zero-range (or unmap) may fall back to the other: the
    /// descriptor, range and the mode to try instead.
    zero_fallback: Option<(RawFd, u64, u64, i32)>,
    /// A data sync to run once the operation's entries are done (durable Write Zeroes).
    then_sync: Option<types::Fd>,
    /// The buffer the kernel reads or writes, held until the operation completes.
    buffer: Option<DataBuffer>,
}

/// BLKDISCARD, _IO(0x12, 119): discard a byte range of a block device.
const BLKDISCARD: libc::c_ulong = 0x1277;

/// user_data of watch polls: above any tag.
const WATCH: u64 = 1 << 63;

pub struct Executor {
    ring: IoUring,
    /// The polled ring, if the kernel set one up, and how many entries it has out.
    polled: Option<IoUring>,
    polled_in_flight: usize,
    /// Polled completions not yet taken by `take_polled_count`.
    polled_done: u64,
    /// Whether new reads and writes may go to the polled ring (see `prefer_polled`).
    polling_preferred: bool,
    /// Address ranges of the rings' fixed buffers, by index (see `register_buffers`).
    fixed: Vec<Range<u64>>,
    pending: HashMap<Tag, Pending>,
    /// Tokens of the watch polls armed on the ring.
    watches_armed: Vec<u64>,
    /// Tokens whose descriptor polled readable, for the transport to take.
    watches_ready: Vec<u64>,
    backlog: VecDeque<squeue::Entry>,
    done: VecDeque<Done>,
    /// Reused per call: entries of one operation, completions of one reap.
    entries: Vec<squeue::Entry>,
    reaped: Vec<(u64, i32)>,
}

impl Executor {
    /// A ring of `entries`; with `polled_io`, also a polled one for block devices with
    /// poll queues (if the kernel sets it up; else everything goes on the first).
    pub fn new(entries: u32, polled_io: bool) -> Result<Executor, BackendError> {
        let ring = IoUring::new(entries.next_power_of_two()).map_err(BackendError::Uring)?;
        let polled = polled_io.then(|| IoUring::builder().setup_iopoll().build(entries.next_power_of_two()).ok()).flatten();
        Ok(Executor {
            ring,
            polled,
            polled_in_flight: 0,
            polled_done: 0,
            polling_preferred: false,
            fixed: Vec::new(),
            pending: HashMap::new(),
            watches_armed: Vec::new(),
            watches_ready: Vec::new(),
            backlog: VecDeque::new(),
            done: VecDeque::new(),
            entries: Vec::new(),
            reaped: Vec::new(),
        })
    }

    /// Registers `regions` (address, length) as the rings' fixed buffers, in order;
    /// reads and writes inside one of them then use it. On failure nothing is
    /// registered (and plain reads and writes serve everything, as before).
    ///
    /// # Safety
    /// Every region must be a mapping of this process (the kernel pins its pages,
    /// which then stay valid until the rings go).
    pub unsafe fn register_buffers(&mut self, regions: &[(u64, usize)]) -> io::Result<()> {
        let iovecs: Vec<libc::iovec> =
            regions.iter().map(|&(address, len_bytes)| libc::iovec { iov_base: address as *mut libc::c_void, iov_len: len_bytes }).collect();
        // SAFETY: forwarded from this function's contract; the pinned pages outlive
        // every operation, since they are only released with the ring.
        unsafe { self.ring.submitter().register_buffers(&iovecs) }?;
        if let Some(polled) = &self.polled {
            // SAFETY: as above.
            if let Err(error) = unsafe { polled.submitter().register_buffers(&iovecs) } {
                self.ring.submitter().unregister_buffers().ok();
                return Err(error);
            }
        }
        self.fixed = regions.iter().map(|&(address, len_bytes)| address..address.saturating_add(len_bytes as u64)).collect();
        Ok(())
    }

    /// The index of the fixed buffer that holds all of `buffer`, if one does.
    fn fixed_index(&self, buffer: &Buffer) -> Option<u16> {
        let end = buffer.address.saturating_add(u64::from(buffer.len_bytes));
        let index = self.fixed.iter().position(|fixed| fixed.start <= buffer.address && end <= fixed.end)?;
        u16::try_from(index).ok()
    }

    /// Arms a oneshot poll for `fd` readable under `token` (< 2^63), unless one is armed.
    pub fn watch(&mut self, fd: RawFd, token: u64) {
        let user_data = WATCH | token;
        if self.watches_armed.contains(&user_data) {
            return;
        }
        self.watches_armed.push(user_data);
        self.push(opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build().user_data(user_data));
    }

    /// Tokens whose descriptors polled readable since the last call.
    pub fn take_ready_watches(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.watches_ready)
    }

    /// Submits what is queued and sleeps until a completion (I/O or watch) arrives or
    /// `timeout` passes; then collects completions.
    pub fn wait(&mut self, timeout: std::time::Duration) {
        self.drain_backlog();
        if self.ring.completion().is_empty() {
            let timespec = types::Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&timespec);
            // ETIME (timeout) and EINTR are ordinary ways for the wait to end.
            let _ = self.ring.submitter().submit_with_args(1, &args);
        }
        self.reap();
    }

    /// Lets the next reads and writes go to the polled ring (on devices that poll) or
    /// not. The caller says yes only while it spins anyway: a shallow queue. At depth,
    /// interrupts batch completions and leave the CPU to the NIC and the host.
    pub fn prefer_polled(&mut self, preferred: bool) {
        self.polling_preferred = preferred;
    }

    /// Whether operations are out on the polled ring: they complete only while this
    /// thread keeps calling [`Executor::poll_done`], so it must not sleep.
    pub fn needs_polling(&self) -> bool {
        self.polled_in_flight > 0
    }

    /// Reads and writes completed by polling since the last call.
    pub fn take_polled_count(&mut self) -> u64 {
        std::mem::take(&mut self.polled_done)
    }

    /// Operations submitted whose completion `poll_done` has not yet returned.
    pub fn in_flight(&self) -> usize {
        self.pending.len() + self.done.len() + self.backlog.len()
    }

    /// Queues `op` on `backend` for `tag`. The executor owns the op's buffer until the
    /// op comes back from [`Executor::poll_done`] with it; an executor dropped with
    /// operations out never gives their buffers back (see `Drop`).
    /// Queues `op` on a namespace's storage, which is one of ours.
    pub fn submit_to(&mut self, tag: Tag, storage: &dyn Storage, op: BackendOp) {
        match Backend::of(storage) {
            Some(backend) => self.submit(tag, backend, op),
            None => {
                let error = BackendError::Unusable { path: storage.describe(), what: "not storage this executor runs".into() };
                self.done.push_back((tag, Err(error), op.into_buffer()));
            }
        }
    }

    pub fn submit(&mut self, tag: Tag, backend: &Backend, op: BackendOp) {
        let file = match backend {
            Backend::Memory(memory) => {
                let result = memory.execute(&op);
                self.done.push_back((tag, result, op.into_buffer()));
                return;
            }
            Backend::File(file) => file,
        };
        let fd = types::Fd(file.file.as_raw_fd());
        let user_data = u64::from(tag);
        let polled = file.pollable && self.polling_preferred && matches!(op, BackendOp::Read { .. } | BackendOp::Write { .. });
        let mut pending = Pending { op: op.kind(), expected_bytes: 0, remaining: 1, transferred: 0, error: None, zero_fallback: None, then_sync: None, buffer: None };
        let mut entries = std::mem::take(&mut self.entries);
        entries.clear();
        match op {
            BackendOp::Read { offset_bytes, buffer: owned } => {
                let buffer = owned.buffer();
                pending.expected_bytes = buffer.len_bytes;
                pending.buffer = Some(owned);
                let (address, len) = (buffer.address as *mut u8, buffer.len_bytes);
                entries.push(match self.fixed_index(&buffer) {
                    Some(index) => opcode::ReadFixed::new(fd, address, len, index).offset(offset_bytes).build(),
                    None => opcode::Read::new(fd, address, len).offset(offset_bytes).build(),
                });
            }
            BackendOp::Write { offset_bytes, buffer: owned, durable } => {
                let buffer = owned.buffer();
                pending.expected_bytes = buffer.len_bytes;
                pending.buffer = Some(owned);
                let flags = if durable { libc::RWF_DSYNC } else { 0 };
                let (address, len) = (buffer.address as *const u8, buffer.len_bytes);
                entries.push(match self.fixed_index(&buffer) {
                    Some(index) => opcode::WriteFixed::new(fd, address, len, index).offset(offset_bytes).rw_flags(flags).build(),
                    None => opcode::Write::new(fd, address, len).offset(offset_bytes).rw_flags(flags).build(),
                });
            }
            BackendOp::Flush => entries.push(opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build()),
            BackendOp::WriteZeroes { offset_bytes, len_bytes, deallocate, durable } => {
                // Punching a hole unmaps (a block device: zeroes by unmapping, or fails);
                // zero-range writes zeroes (tmpfs has none). Each falls back to the other.
                let zero = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
                let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                let (mode, fallback) = if deallocate { (punch, zero) } else { (zero, punch) };
                pending.zero_fallback = Some((fd.0, offset_bytes, len_bytes, fallback));
                pending.then_sync = durable.then_some(fd);
                entries.push(opcode::Fallocate::new(fd, len_bytes).offset(offset_bytes).mode(mode).build());
            }
            BackendOp::Deallocate { ranges } if file.block_device => {
                // Discard, not a hole punch: on a block device that is a zero-fill by
                // unmapping, which fails where the device cannot guarantee zeroes.
                for &(offset, len) in &ranges {
                    let range = [offset, len];
                    // SAFETY: BLKDISCARD reads two u64s from the pointer, which points at
                    // `range`, alive for the call.
                    let rc = unsafe { libc::ioctl(fd.0, BLKDISCARD, range.as_ptr()) };
                    if rc != 0 {
                        // Deallocate is advisory: a device without discard still completes it.
                        tracing::debug!(error = %io::Error::last_os_error(), "discard refused");
                        break;
                    }
                }
            }
            BackendOp::Deallocate { ranges } => {
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                entries.extend(ranges.iter().map(|&(offset, len)| opcode::Fallocate::new(fd, len).offset(offset).mode(mode).build()));
            }
        }
        if entries.is_empty() {
            self.done.push_back((tag, Ok(0), pending.buffer.take()));
        } else {
            pending.remaining = entries.len() as u32;
            self.pending.insert(tag, pending);
            for entry in entries.drain(..) {
                let entry = entry.user_data(user_data);
                if !(polled && self.push_polled(&entry)) {
                    self.push(entry);
                }
            }
        }
        self.entries = entries;
    }

    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: a read's or write's buffer is owned by its `Pending` entry until the
        // completion is reaped (or leaked with the executor), so it stays mapped and no
        // one else touches it; fallocate and fsync entries point at no memory.
        if self.backlog.is_empty() && unsafe { self.ring.submission().push(&entry) }.is_ok() {
            return;
        }
        self.backlog.push_back(entry);
    }

    /// Queues `entry` on the polled ring; false if there is none or it is full.
    fn push_polled(&mut self, entry: &squeue::Entry) -> bool {
        let Some(ring) = self.polled.as_mut() else { return false };
        // SAFETY: as in `push`; only reads and writes come here.
        let pushed = unsafe { ring.submission().push(entry) }.is_ok();
        self.polled_in_flight += usize::from(pushed);
        pushed
    }

    /// Moves entries that found the submission queue full onto it, as room allows.
    fn drain_backlog(&mut self) {
        while let Some(entry) = self.backlog.front() {
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// Hands queued entries to the kernel. Call once per batch of `submit`s.
    pub fn flush(&mut self) -> Result<(), BackendError> {
        self.drain_backlog();
        if !self.ring.submission().is_empty() {
            self.ring.submit().map_err(BackendError::Uring)?;
        }
        if let Some(ring) = self.polled.as_mut() {
            if !ring.submission().is_empty() {
                ring.submit().map_err(BackendError::Uring)?;
            }
        }
        Ok(())
    }

    /// The next finished operation, if any.
    pub fn poll_done(&mut self) -> Option<Done> {
        if self.done.is_empty() {
            self.reap();
        }
        self.done.pop_front()
    }

    /// Collects completions from the shared rings: no system call, except one that
    /// polls the device while operations are out on the polled ring.
    fn reap(&mut self) {
        if self.pending.is_empty() && self.watches_armed.is_empty() {
            return;
        }
        let mut completions = std::mem::take(&mut self.reaped);
        completions.clear();
        completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        if let Some(ring) = self.polled.as_mut().filter(|_| self.polled_in_flight > 0) {
            // On a polled ring, submit enters with GETEVENTS and waits for nothing: it
            // polls the device queues once. Errors (EINTR, EAGAIN) mean "nothing this
            // time"; the next reap polls again.
            let _ = ring.submit();
            let before = completions.len();
            completions.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            let polled = completions.len() - before;
            self.polled_in_flight -= polled;
            self.polled_done += polled as u64;
        }
        for &(user_data, result) in &completions {
            if user_data & WATCH != 0 {
                self.watches_armed.retain(|&armed| armed != user_data);
                self.watches_ready.push(user_data & !WATCH);
                continue;
            }
            let tag = user_data as Tag;
            let Some(pending) = self.pending.get_mut(&tag) else { continue };
            if result < 0 {
                let source = io::Error::from_raw_os_error(-result);
                match pending.zero_fallback.take() {
                    Some((fd, offset, len, mode)) if -result == libc::EOPNOTSUPP => {
                        // SAFETY: fallocate on a descriptor the backend keeps open; no memory.
                        let rc = unsafe { libc::fallocate(fd, mode, offset as i64, len as i64) };
                        if rc != 0 {
                            pending.error = Some(BackendError::Io { op: pending.op, source: io::Error::last_os_error() });
                        }
                    }
                    // Deallocate is advisory: a device without discard still completes it.
                    _ if pending.op == OpKind::Deallocate => {}
                    _ => pending.error = Some(BackendError::Io { op: pending.op, source }),
                }
            } else {
                pending.transferred = pending.transferred.saturating_add(result as u32);
            }
            pending.remaining -= 1;
            if pending.remaining == 0 && pending.error.is_none() {
                if let Some(fd) = pending.then_sync.take() {
                    // The zeroes are in place: make them durable before completing.
                    pending.remaining = 1;
                    let entry = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(user_data);
                    self.push(entry);
                    continue;
                }
            }
            if pending.remaining == 0 {
                if let Some(mut pending) = self.pending.remove(&tag) {
                    let buffer = pending.buffer.take();
                    self.done.push_back((tag, finish(pending), buffer));
                }
            }
        }
        self.reaped = completions;
        self.flush().ok();
    }
}

impl Drop for Executor {
    /// Operations still out may write their buffers until the kernel completes them;
    /// closing the ring does not stop a direct I/O already at the device. Their buffers
    /// are leaked, never given back: lost pages, never pages with two owners.
    fn drop(&mut self) {
        let leaked: usize = self.pending.values_mut().filter_map(|pending| pending.buffer.take()).map(std::mem::forget).count();
        if leaked > 0 {
            tracing::warn!(leaked, "queue torn down with backend operations out: their buffers stay out of the pool");
        }
    }
}

fn finish(pending: Pending) -> Result<u32, BackendError> {
    if let Some(error) = pending.error {
        return Err(error);
    }
    if pending.transferred != pending.expected_bytes {
        return Err(BackendError::Short { op: pending.op, done: pending.transferred, expected: pending.expected_bytes });
    }
    Ok(pending.transferred)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FileBackend;
    use crate::core::buffer::{Buffer, Region, SlotLoan};
    use std::sync::Arc;

    /// A scratch file of `len` bytes of `fill` in its own directory (removed on drop).
    struct Scratch {
        dir: std::path::PathBuf,
        backend: Backend,
    }

    impl Scratch {
        fn new(name: &str, len: usize, fill: u8) -> Scratch {
            let dir = std::env::temp_dir().join(format!("p2ptgt-uring-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("ns");
            std::fs::write(&path, vec![fill; len]).unwrap();
            Scratch { backend: Backend::File(FileBackend::open(&path, Some(4096)).unwrap()), dir }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Submits one read of `buffer` at `offset` and waits for its result.
    fn read_once(executor: &mut Executor, backend: &Backend, offset: u64, buffer: DataBuffer) -> Result<u32, BackendError> {
        executor.submit(7, backend, BackendOp::Read { offset_bytes: offset, buffer });
        executor.flush().unwrap();
        loop {
            if let Some((tag, result, buffer)) = executor.poll_done() {
                assert_eq!(tag, 7);
                assert!(buffer.is_some(), "the read gives its buffer back");
                return result;
            }
            executor.wait(std::time::Duration::from_millis(100));
        }
    }

    /// A loan over test memory that the caller keeps alive until the op is reaped.
    fn host_buffer(address: u64, len_bytes: u32) -> DataBuffer {
        let buffer = Buffer { region: Region::Host, len_bytes, address };
        // SAFETY: each test owns the memory at `address`, keeps it alive until the
        // operation is reaped, and lends each range once.
        DataBuffer::Slot(unsafe { SlotLoan::new(buffer, 0, Arc::new(())) })
    }

    /// Runs one operation without a buffer and waits for its result.
    fn run_once(executor: &mut Executor, backend: &Backend, op: BackendOp) -> Result<u32, BackendError> {
        executor.submit(9, backend, op);
        executor.flush().unwrap();
        loop {
            if let Some((tag, result, _)) = executor.poll_done() {
                assert_eq!(tag, 9);
                return result;
            }
            executor.wait(std::time::Duration::from_millis(100));
        }
    }

    /// Write Zeroes: without DEAC the blocks stay allocated; with DEAC (and FUA, which
    /// adds a data sync after the zeroing) they are given back. Both read as zeroes.
    #[test]
    fn write_zeroes_deallocates_only_when_allowed() {
        let scratch = Scratch::new("zeroes", 1 << 20, 0x5A);
        let Backend::File(file) = &scratch.backend else { unreachable!() };
        let allocated = || {
            use std::os::unix::fs::MetadataExt;
            file.file.metadata().unwrap().blocks() * 512
        };
        let mut executor = Executor::new(8, false).unwrap();
        let before = allocated();
        let zero = BackendOp::WriteZeroes { offset_bytes: 0, len_bytes: 256 << 10, deallocate: false, durable: false };
        run_once(&mut executor, &scratch.backend, zero).expect("zero range");
        let unmap = BackendOp::WriteZeroes { offset_bytes: 512 << 10, len_bytes: 256 << 10, deallocate: true, durable: true };
        run_once(&mut executor, &scratch.backend, unmap).expect("deallocate and sync");
        let after = allocated();
        // File systems that zero ranges by unmapping too (tmpfs) free both ranges.
        assert!(after <= before - (256 << 10), "DEAC gave the range back: {before} -> {after} bytes");
        let contents = std::fs::read(&file.path).unwrap();
        assert!(contents[..256 << 10].iter().all(|&b| b == 0));
        assert!(contents[512 << 10..768 << 10].iter().all(|&b| b == 0));
        assert!(contents[256 << 10..512 << 10].iter().all(|&b| b == 0x5A), "untouched between");
    }

    /// A file cannot complete on a polled ring (the kernel refuses buffered or
    /// non-block I/O there): with polling preferred, its reads still go by the
    /// interrupt ring, and nothing waits on polling.
    #[test]
    fn files_never_go_to_the_polled_ring() {
        let scratch = Scratch::new("polled", 8192, 0x5A);
        let Backend::File(file) = &scratch.backend else { unreachable!() };
        assert!(!file.pollable);
        let mut executor = Executor::new(8, true).unwrap();
        executor.prefer_polled(true);
        let mut data = vec![0u8; 8192];
        // O_DIRECT wants an aligned buffer: the first 4 KiB boundary inside the 8 KiB.
        let aligned = (data.as_mut_ptr() as u64).next_multiple_of(4096);
        executor.submit(7, &scratch.backend, BackendOp::Read { offset_bytes: 4096, buffer: host_buffer(aligned, 4096) });
        executor.flush().unwrap();
        assert!(!executor.needs_polling());
        let done = loop {
            if let Some(done) = executor.poll_done() {
                break done;
            }
            executor.wait(std::time::Duration::from_millis(100));
        };
        assert_eq!(done.0, 7);
        assert_eq!(done.1.unwrap(), 4096);
        assert_eq!(executor.take_polled_count(), 0);
        let start = (aligned - data.as_ptr() as u64) as usize;
        assert!(data[start..start + 4096].iter().all(|&b| b == 0x5A));
    }

    /// Reads into a registered region go as reads of that fixed buffer; a buffer reaching
    /// past its end must not (the kernel would fail it with EFAULT), and reads outside
    /// every region still work as plain reads.
    #[test]
    fn fixed_buffer_only_inside_the_registered_region() {
        let scratch = Scratch::new("fixed", 16384, 0xC3);
        let mut executor = Executor::new(8, false).unwrap();
        let mut data = vec![0u8; 5 * 4096];
        let base = (data.as_mut_ptr() as u64).next_multiple_of(4096);
        // SAFETY: `data` is this process's memory and outlives the executor.
        unsafe { executor.register_buffers(&[(base + 4 * 4096, 4096), (base, 2 * 4096)]) }.unwrap();
        let inside = host_buffer(base + 4096, 4096);
        let straddling = host_buffer(base + 4096, 2 * 4096);
        let outside = host_buffer(base + 3 * 4096, 4096);
        assert_eq!(executor.fixed_index(&inside.buffer()), Some(1));
        assert_eq!(executor.fixed_index(&host_buffer(base + 4 * 4096, 4096).buffer()), Some(0));
        assert_eq!(executor.fixed_index(&straddling.buffer()), None);
        assert_eq!(executor.fixed_index(&outside.buffer()), None);
        assert_eq!(read_once(&mut executor, &scratch.backend, 0, inside).unwrap(), 4096);
        assert_eq!(read_once(&mut executor, &scratch.backend, 4096, straddling).unwrap(), 8192);
        assert_eq!(read_once(&mut executor, &scratch.backend, 12288, outside).unwrap(), 4096);
        let start = (base - data.as_ptr() as u64) as usize;
        assert!(data[start + 4096..start + 4 * 4096].iter().all(|&b| b == 0xC3));
        drop(executor);
    }
}
