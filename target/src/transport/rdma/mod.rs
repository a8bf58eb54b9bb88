//! The NVMe/RDMA transport: the only code that knows ibverbs and the RDMA CM.
//! `cm.rs` and `verbs.rs` hold the FFI; `connection.rs` (a queue: its own sleeping
//! thread, or a step at a time in a busy-polling `poll_group.rs`), `receives.rs` (its
//! own receive queue or its group's shared one) and `listener.rs` are built on them.

pub mod cm;
pub mod connection;
pub mod listener;
pub mod poll_group;
pub mod receives;
pub mod registrations;
pub mod verbs;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub use listener::{DataPathMode, Listener};

#[allow(unsafe_code)]
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: no memory preconditions; checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins the calling thread to `cpu`.
#[allow(unsafe_code)]
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside the set (it ignores CPUs past CPU_SETSIZE).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is this thread; the set is a valid local of the given size.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)]
pub(crate) fn signal(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a local array to our eventfd.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
}

#[allow(unsafe_code)]
pub(crate) fn drain_eventfd(fd: RawFd) {
    let mut counter = [0u8; 8];
    // SAFETY: reads 8 bytes into a local array from a non-blocking eventfd.
    unsafe { libc::read(fd, counter.as_mut_ptr().cast(), 8) };
}

/// Gives the pages of this thread's stack below the current frame back to the system.
/// Call last on a thread that is about to end: the C library keeps ended threads' stacks
/// for reuse, with every page they ever touched resident, and a burst of hundreds of
/// short-lived queue threads (peers that never send Connect) would otherwise leave the
/// process's RSS megabytes higher for good.
#[allow(unsafe_code)]
pub(crate) fn release_unused_stack() {
    // SAFETY: a zeroed pthread_attr_t is a valid output buffer for pthread_getattr_np.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: no preconditions.
    let this = unsafe { libc::pthread_self() };
    // SAFETY: the calling thread's own attributes, into a local struct.
    if unsafe { libc::pthread_getattr_np(this, &mut attr) } != 0 {
        return;
    }
    let mut low: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was filled in above; the outputs are locals.
    let read = unsafe { libc::pthread_attr_getstack(&attr, &mut low, &mut size) } == 0;
    // SAFETY: `attr` was initialised by pthread_getattr_np and is destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    let here = 0u8;
    let current = std::ptr::addr_of!(here) as usize;
    // Keep a margin below the current frame for the calls that follow (the madvise
    // itself, the thread's exit path).
    let page = 4096;
    let end = current.saturating_sub(16 * page) & !(page - 1);
    let start = (low as usize + page - 1) & !(page - 1);
    if !read || end <= start || current > low as usize + size {
        return;
    }
    // SAFETY: [start, end) lies in this thread's own stack, below every live frame (the
    // stack grows down and `end` is 16 pages under the current one): nothing uses those
    // bytes, and a later touch just faults in a zeroed page.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
}
