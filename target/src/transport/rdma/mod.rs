//! The NVMe/RDMA transport: the only code that knows ibverbs and the RDMA CM.
//! `cm.rs` and `verbs.rs` hold the FFI; `connection.rs` (one thread per queue) and
//! `listener.rs` are built on them.

pub mod cm;
pub mod connection;
pub mod listener;
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
