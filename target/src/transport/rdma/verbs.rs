//! Owned wrappers over the ibverbs objects the transport uses: device queries, protection
//! domain, memory regions (pinned or on-demand paging), completion channel and queue,
//! and posting to a queue pair. Every raw pointer lives here or in `cm.rs`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rdma_mummy_sys as sys;
use crate::core::{Buffer, Capsule, DmaSlice, Region, SlotHome, SlotLoan};
use crate::memory::dma::DmaRegion;
use crate::wire::command::COMMAND_BYTES;

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn check(rc: i32) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        rc if rc > 0 => Err(io::Error::from_raw_os_error(rc)),
        _ => Err(last_error()),
    }
}

/// A device context owned by the RDMA CM (it lives as long as any CM id on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Context(pub(crate) *mut sys::ibv_context);

// SAFETY: ibv_context is thread safe per the ibverbs threading rules; we only pass the
// pointer to verbs calls.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

/// What the transport needs to know about a device.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    pub vendor_id: u32,
    pub max_qp_wr: u32,
    pub max_cqe: u32,
    pub max_qp_init_rd_atom: u8,
    /// Receive work requests one shared receive queue may hold (0: no SRQ support).
    pub max_srq_wr: u32,
    /// RC on-demand paging for RDMA READ, WRITE and RECV.
    pub odp_rc: bool,
    pub send_with_invalidate: bool,
}

impl DeviceInfo {
    /// Soft-RoCE: its on-demand-paging copy needs page-aligned buffers and a 4096-byte
    /// path MTU, or it copies the wrong bytes into and out of p2pmem.
    pub fn is_rxe(&self) -> bool {
        self.name.starts_with("rxe")
    }
}

/// An ibverbs asynchronous event, with the QP or CQ it names as an address (to match
/// against the queues' own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncEvent {
    /// A QP went to the error state (fatal, request or access error).
    QpError { qp: usize, kind: &'static str },
    /// A QP on a shared receive queue, in error, has completed (or flushed) the last
    /// receive it took from it.
    QpLastReceive { qp: usize },
    CqError { cq: usize },
    PortDown { port: i32 },
    PortActive { port: i32 },
    DeviceFatal,
    Other(u32),
}

impl Context {
    /// The descriptor that polls readable when an asynchronous event is waiting, made
    /// non-blocking so that [`Context::next_async_event`] never waits. Call once, when
    /// the device is opened.
    pub fn async_events_fd(&self) -> RawFd {
        // SAFETY: the context is live; async_fd is set at open and never changes.
        let fd = unsafe { (*self.0).async_fd };
        // SAFETY: fcntl on a descriptor the context owns; it only reads the flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags >= 0 && flags & libc::O_NONBLOCK == 0 {
            // SAFETY: as above; only the file status flags change.
            unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        }
        fd
    }

    /// The next asynchronous event, acknowledged, or `None` if none is waiting.
    pub fn next_async_event(&self) -> Option<AsyncEvent> {
        // SAFETY: plain data, written by ibv_get_async_event.
        let mut event: sys::ibv_async_event = unsafe { std::mem::zeroed() };
        // SAFETY: live context (its async fd is non-blocking, see `async_fd`); local
        // output struct.
        if unsafe { sys::ibv_get_async_event(self.0, &mut event) } != 0 {
            return None;
        }
        use sys::ibv_event_type as t;
        let element = &event.element;
        // SAFETY: called only for QP events, which set `qp`; every member of the union
        // is a plain pointer or integer.
        let qp = || unsafe { element.qp } as usize;
        let parsed = match event.event_type {
            t::IBV_EVENT_QP_FATAL => AsyncEvent::QpError { qp: qp(), kind: "QP fatal" },
            t::IBV_EVENT_QP_REQ_ERR => AsyncEvent::QpError { qp: qp(), kind: "QP request error" },
            t::IBV_EVENT_QP_ACCESS_ERR => AsyncEvent::QpError { qp: qp(), kind: "QP access error" },
            t::IBV_EVENT_QP_LAST_WQE_REACHED => AsyncEvent::QpLastReceive { qp: qp() },
            // SAFETY: a CQ event sets `cq`.
            t::IBV_EVENT_CQ_ERR => AsyncEvent::CqError { cq: unsafe { element.cq } as usize },
            // SAFETY: a port event sets `port_num`.
            t::IBV_EVENT_PORT_ERR => AsyncEvent::PortDown { port: unsafe { element.port_num } },
            // SAFETY: a port event sets `port_num`.
            t::IBV_EVENT_PORT_ACTIVE => AsyncEvent::PortActive { port: unsafe { element.port_num } },
            t::IBV_EVENT_DEVICE_FATAL => AsyncEvent::DeviceFatal,
            other => AsyncEvent::Other(other as u32),
        };
        // SAFETY: the event came from ibv_get_async_event and is acknowledged once.
        unsafe { sys::ibv_ack_async_event(&mut event) };
        Some(parsed)
    }

    pub fn query(&self) -> io::Result<DeviceInfo> {
        // SAFETY: a zeroed attribute struct is a valid output buffer; the context is live.
        let mut attr: sys::ibv_device_attr_ex = unsafe { std::mem::zeroed() };
        // SAFETY: self.0 is a live context; attr is a writable struct of the right type.
        check(unsafe { sys::ibv_query_device_ex(self.0, ptr::null(), &mut attr) })?;
        // SAFETY: the context is live.
        let device = unsafe { (*self.0).device };
        // SAFETY: the context's device pointer is valid while the context is.
        let name_ptr = unsafe { sys::ibv_get_device_name(device) };
        let name = if name_ptr.is_null() {
            String::new()
        } else {
            // SAFETY: ibv_get_device_name returns a NUL-terminated string owned by the device.
            unsafe { CStr::from_ptr(name_ptr) }.to_string_lossy().into_owned()
        };
        let rc = attr.odp_caps.per_transport_caps.rc_odp_caps;
        let need = sys::ibv_odp_transport_cap_bits::IBV_ODP_SUPPORT_READ.0
            | sys::ibv_odp_transport_cap_bits::IBV_ODP_SUPPORT_WRITE.0
            | sys::ibv_odp_transport_cap_bits::IBV_ODP_SUPPORT_RECV.0;
        let general_odp = attr.odp_caps.general_caps & 1 != 0;
        let orig = &attr.orig_attr;
        Ok(DeviceInfo {
            name,
            vendor_id: orig.vendor_id,
            max_qp_wr: orig.max_qp_wr.max(0) as u32,
            max_cqe: orig.max_cqe.max(0) as u32,
            max_qp_init_rd_atom: orig.max_qp_init_rd_atom.clamp(0, 255) as u8,
            max_srq_wr: if orig.max_srq > 0 { orig.max_srq_wr.max(0) as u32 } else { 0 },
            odp_rc: general_odp && rc & need == need,
            send_with_invalidate: orig.device_cap_flags & sys::ibv_device_cap_flags::IBV_DEVICE_MEM_MGT_EXTENSIONS.0 != 0,
        })
    }
}

pub struct ProtectionDomain {
    pd: *mut sys::ibv_pd,
    pub context: Context,
}

// SAFETY: protection domains may be used from any thread.
unsafe impl Send for ProtectionDomain {}
// SAFETY: as above.
unsafe impl Sync for ProtectionDomain {}

impl ProtectionDomain {
    pub fn new(context: Context) -> io::Result<Arc<ProtectionDomain>> {
        // SAFETY: context is a live device context.
        let pd = unsafe { sys::ibv_alloc_pd(context.0) };
        if pd.is_null() {
            return Err(last_error());
        }
        Ok(Arc::new(ProtectionDomain { pd, context }))
    }

    pub(crate) fn raw(&self) -> *mut sys::ibv_pd {
        self.pd
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: every MR and QP holds an Arc to this PD, so none is left.
        unsafe { sys::ibv_dealloc_pd(self.pd) };
    }
}

/// How a memory region was registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Pages pinned at registration.
    Pinned,
    /// On-demand paging: the NIC faults pages in.
    Odp,
}

pub struct MemoryRegion {
    mr: *mut sys::ibv_mr,
    pub registration: Registration,
    _pd: Arc<ProtectionDomain>,
}

// SAFETY: an MR handle may be shared across threads; only its keys are read.
unsafe impl Send for MemoryRegion {}
// SAFETY: as above.
unsafe impl Sync for MemoryRegion {}

impl MemoryRegion {
    /// Registers `len` bytes at `address` for local writes by the NIC.
    ///
    /// # Safety
    /// The memory must stay mapped until the region is dropped.
    pub unsafe fn register(pd: &Arc<ProtectionDomain>, address: u64, len: usize, registration: Registration) -> io::Result<MemoryRegion> {
        let mut access = sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        if registration == Registration::Odp {
            access |= sys::ibv_access_flags::IBV_ACCESS_ON_DEMAND.0;
        }
        // SAFETY: the caller keeps the range mapped for the MR's life; the PD is live.
        let mr = unsafe { sys::ibv_reg_mr(pd.raw(), address as *mut _, len, access as i32) };
        if mr.is_null() {
            return Err(last_error());
        }
        Ok(MemoryRegion { mr, registration, _pd: pd.clone() })
    }

    pub fn local_key(&self) -> u32 {
        // SAFETY: mr is a live registration owned by self.
        unsafe { (*self.mr).lkey }
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: the transport drops MRs only after every queue pair using them is gone.
        unsafe { sys::ibv_dereg_mr(self.mr) };
    }
}

pub struct CompletionChannel {
    channel: *mut sys::ibv_comp_channel,
}

// SAFETY: owned by one connection thread at a time.
unsafe impl Send for CompletionChannel {}

impl CompletionChannel {
    pub fn new(context: Context) -> io::Result<CompletionChannel> {
        // SAFETY: live context.
        let channel = unsafe { sys::ibv_create_comp_channel(context.0) };
        if channel.is_null() {
            return Err(last_error());
        }
        // SAFETY: channel is live; making its fd non-blocking lets the thread drain it.
        let fd = unsafe { (*channel).fd };
        set_nonblocking(fd)?;
        Ok(CompletionChannel { channel })
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: channel is live while self is.
        unsafe { (*self.channel).fd }
    }
}

impl Drop for CompletionChannel {
    fn drop(&mut self) {
        // SAFETY: the CQ using it is dropped first (field order in the owner).
        unsafe { sys::ibv_destroy_comp_channel(self.channel) };
    }
}

pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold; no memory involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(last_error());
    }
    Ok(())
}

/// One completion, decoded.
#[derive(Clone, Copy, Debug)]
pub struct WorkCompletion {
    pub wr_id: u64,
    pub status: u32,
    pub byte_len: u32,
    pub invalidated_key: Option<u32>,
}

impl WorkCompletion {
    pub fn ok(&self) -> bool {
        self.status == sys::ibv_wc_status::IBV_WC_SUCCESS
    }
}

pub struct CompletionQueue {
    cq: *mut sys::ibv_cq,
    events_unacked: u32,
}

// SAFETY: owned by one connection thread at a time.
unsafe impl Send for CompletionQueue {}

impl CompletionQueue {
    pub fn new(context: Context, entries: u32, channel: &CompletionChannel) -> io::Result<CompletionQueue> {
        // SAFETY: live context and channel; the channel outlives the CQ (owner field order).
        let cq = unsafe { sys::ibv_create_cq(context.0, entries as i32, ptr::null_mut(), channel.channel, 0) };
        if cq.is_null() {
            return Err(last_error());
        }
        Ok(CompletionQueue { cq, events_unacked: 0 })
    }

    pub(crate) fn raw(&self) -> *mut sys::ibv_cq {
        self.cq
    }

    /// Requests an event for the next completion.
    pub fn arm(&self) -> io::Result<()> {
        // SAFETY: live CQ.
        check(unsafe { sys::ibv_req_notify_cq(self.cq, 0) })
    }

    /// Consumes pending channel events (after the channel fd polled readable).
    pub fn take_events(&mut self, channel: &CompletionChannel) {
        // One armed CQ yields at most one event; a second read would only cost a system
        // call returning EAGAIN.
        let mut cq = ptr::null_mut();
        let mut context = ptr::null_mut();
        // SAFETY: non-blocking channel; outputs are local pointers.
        if unsafe { sys::ibv_get_cq_event(channel.channel, &mut cq, &mut context) } == 0 {
            self.events_unacked += 1;
        }
        if self.events_unacked >= 64 {
            self.ack_events();
        }
    }

    fn ack_events(&mut self) {
        if self.events_unacked > 0 {
            // SAFETY: acknowledges exactly the events taken from this CQ.
            unsafe { sys::ibv_ack_cq_events(self.cq, self.events_unacked) };
            self.events_unacked = 0;
        }
    }

    /// Fills `out` with up to its length completions; returns how many.
    pub fn poll(&self, out: &mut Vec<WorkCompletion>, max: usize) -> usize {
        // SAFETY: ibv_wc is plain data; zeroed is a valid output buffer.
        let mut raw: [sys::ibv_wc; 32] = unsafe { std::mem::zeroed() };
        let want = max.min(raw.len()) as i32;
        // SAFETY: raw has room for `want` entries; the CQ is live.
        let n = unsafe { sys::ibv_poll_cq(self.cq, want, raw.as_mut_ptr()) };
        let n = n.max(0) as usize;
        for wc in &raw[..n] {
            let with_invalidate = wc.wc_flags & sys::ibv_wc_flags::IBV_WC_WITH_INV.0 != 0;
            out.push(WorkCompletion {
                wr_id: wc.wr_id,
                status: wc.status,
                byte_len: wc.byte_len,
                // SAFETY: both union members are a u32, so reading it is always defined; it
                // means the invalidated rkey only when the flag says so.
                invalidated_key: with_invalidate.then_some(unsafe { wc.imm_data_invalidated_rkey_union.invalidated_rkey }),
            });
        }
        n
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        self.ack_events();
        // SAFETY: the QP using this CQ was destroyed first (owner field order).
        unsafe { sys::ibv_destroy_cq(self.cq) };
    }
}

/// `len` bytes between local registered memory and the host's keyed memory.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    pub wr_id: u64,
    pub local: u64,
    pub len: u32,
    pub local_key: u32,
    pub remote: u64,
    pub remote_key: u32,
}

/// One work request to post on the send queue.
#[derive(Clone, Copy, Debug)]
pub enum SendRequest {
    /// RDMA READ from the host into local memory.
    Read(Transfer),
    /// RDMA WRITE of local memory to the host; unsignalled (the SEND after it reports).
    Write(Transfer),
    /// SEND of a small inline message, optionally invalidating a host key. Unsignalled
    /// SENDs complete silently, unless in error: a later signalled work request's
    /// completion reports them (a queue pair completes its sends in order).
    SendInline { wr_id: u64, data: [u8; 16], invalidate_key: Option<u32>, signalled: bool },
}

/// The scatter list of one receive: up to two `segments` (address, length).
fn receive_segments(segments: &[(u64, u32)], local_key: u32) -> [sys::ibv_sge; 2] {
    let mut sges = [sys::ibv_sge { addr: 0, length: 0, lkey: local_key }; 2];
    for (sge, &(addr, length)) in sges.iter_mut().zip(segments) {
        *sge = sys::ibv_sge { addr, length, lkey: local_key };
    }
    sges
}

/// A shared receive queue: receives posted once for every queue pair created on it, so
/// receive buffers scale with the queues' owner (a poll group), not with connections.
/// Each queue pair on it holds an `Arc` (in its CM id), so it is destroyed last.
pub struct SharedReceiveQueue {
    srq: *mut sys::ibv_srq,
    _pd: Arc<ProtectionDomain>,
}

// SAFETY: ibverbs lets any thread post to or destroy an SRQ; only the handle is shared.
unsafe impl Send for SharedReceiveQueue {}
// SAFETY: as above (providers serialise posts to one SRQ).
unsafe impl Sync for SharedReceiveQueue {}

impl SharedReceiveQueue {
    /// An SRQ of `entries` receives of up to two segments each.
    pub fn new(pd: &Arc<ProtectionDomain>, entries: u32) -> io::Result<SharedReceiveQueue> {
        let mut init = sys::ibv_srq_init_attr { srq_context: ptr::null_mut(), attr: sys::ibv_srq_attr { max_wr: entries, max_sge: 2, srq_limit: 0 } };
        // SAFETY: live PD; a local attribute struct.
        let srq = unsafe { sys::ibv_create_srq(pd.raw(), &mut init) };
        if srq.is_null() {
            return Err(last_error());
        }
        Ok(SharedReceiveQueue { srq, _pd: pd.clone() })
    }

    pub(crate) fn raw(&self) -> *mut sys::ibv_srq {
        self.srq
    }

    /// As [`QueuePair::post_recv`], on the shared queue.
    ///
    /// # Safety
    /// The memory must be registered under `local_key` and stay untouched by the CPU
    /// until the receive completes or the SRQ is destroyed.
    pub unsafe fn post_recv(&self, wr_id: u64, segments: &[(u64, u32)], local_key: u32) -> io::Result<()> {
        let mut sges = receive_segments(segments, local_key);
        let mut wr = sys::ibv_recv_wr { wr_id, next: ptr::null_mut(), sg_list: sges.as_mut_ptr(), num_sge: segments.len().min(sges.len()) as i32 };
        let mut bad = ptr::null_mut();
        // SAFETY: wr and sges are valid for the call; buffer validity is the caller's.
        check(unsafe { sys::ibv_post_srq_recv(self.srq, &mut wr, &mut bad) })
    }
}

impl Drop for SharedReceiveQueue {
    fn drop(&mut self) {
        // SAFETY: every QP created on this SRQ holds an Arc to it, so all are destroyed.
        unsafe { sys::ibv_destroy_srq(self.srq) };
    }
}

/// Work requests chained in one `ibv_post_send`.
const POST_CHUNK: usize = 16;

/// A borrowed queue pair handle (the CM id owns the QP).
#[derive(Clone, Copy)]
pub struct QueuePair(pub(crate) *mut sys::ibv_qp);

// SAFETY: posting from one thread at a time (the connection thread owns it).
unsafe impl Send for QueuePair {}

impl QueuePair {
    /// Posts one receive scattered over `segments` (address, length), in order.
    ///
    /// # Safety
    /// The memory must be registered under `local_key` and stay untouched by the CPU
    /// until the receive completes or the QP is destroyed.
    pub unsafe fn post_recv(&self, wr_id: u64, segments: &[(u64, u32)], local_key: u32) -> io::Result<()> {
        let mut sges = receive_segments(segments, local_key);
        let mut wr = sys::ibv_recv_wr { wr_id, next: ptr::null_mut(), sg_list: sges.as_mut_ptr(), num_sge: segments.len().min(sges.len()) as i32 };
        let mut bad = ptr::null_mut();
        // SAFETY: wr and sges are valid for the call; buffer validity is the caller's.
        check(unsafe { sys::ibv_post_recv(self.0, &mut wr, &mut bad) })
    }

    /// Posts `requests` as one chain, in order.
    ///
    /// # Safety
    /// Every local buffer must be registered under its key and stay allocated and
    /// untouched until its request completes (or the QP is flushed).
    pub unsafe fn post_send(&self, requests: &[SendRequest]) -> io::Result<()> {
        // Chains of up to POST_CHUNK built on the stack: no allocation per post.
        for chunk in requests.chunks(POST_CHUNK) {
            // SAFETY: forwarded from this function's contract.
            unsafe { self.post_send_chunk(chunk) }?;
        }
        Ok(())
    }

    /// # Safety
    /// As [`QueuePair::post_send`]; `requests.len() <= POST_CHUNK`.
    unsafe fn post_send_chunk(&self, requests: &[SendRequest]) -> io::Result<()> {
        let count = requests.len().min(POST_CHUNK);
        if count == 0 {
            return Ok(());
        }
        // Inline data is read from `requests` itself, which outlives the call.
        let mut sges = [sys::ibv_sge { addr: 0, length: 0, lkey: 0 }; POST_CHUNK];
        // SAFETY: ibv_send_wr is plain data (pointers and unions); zeroed is valid.
        let mut wrs: [sys::ibv_send_wr; POST_CHUNK] = unsafe { std::mem::zeroed() };
        let base = wrs.as_mut_ptr();
        for (index, ((wr, sge), request)) in wrs.iter_mut().zip(sges.iter_mut()).zip(requests).enumerate() {
            *sge = match request {
                SendRequest::Read(t) | SendRequest::Write(t) => sys::ibv_sge { addr: t.local, length: t.len, lkey: t.local_key },
                SendRequest::SendInline { data, .. } => sys::ibv_sge { addr: data.as_ptr() as u64, length: 16, lkey: 0 },
            };
            wr.sg_list = sge;
            wr.num_sge = 1;
            // SAFETY: index + 1 < count <= POST_CHUNK stays inside the array.
            wr.next = if index + 1 < count { unsafe { base.add(index + 1) } } else { ptr::null_mut() };
            match *request {
                SendRequest::Read(t) => {
                    wr.wr_id = t.wr_id;
                    wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_READ;
                    wr.send_flags = sys::ibv_send_flags::IBV_SEND_SIGNALED.0;
                    wr.wr.rdma = sys::rdma_t { remote_addr: t.remote, rkey: t.remote_key };
                }
                SendRequest::Write(t) => {
                    wr.wr_id = t.wr_id;
                    wr.opcode = sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                    wr.wr.rdma = sys::rdma_t { remote_addr: t.remote, rkey: t.remote_key };
                }
                SendRequest::SendInline { wr_id, invalidate_key, signalled, .. } => {
                    wr.wr_id = wr_id;
                    wr.send_flags = sys::ibv_send_flags::IBV_SEND_INLINE.0;
                    if signalled {
                        wr.send_flags |= sys::ibv_send_flags::IBV_SEND_SIGNALED.0;
                    }
                    match invalidate_key {
                        Some(key) => {
                            wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND_WITH_INV;
                            wr.imm_data_invalidated_rkey_union.invalidated_rkey = key;
                        }
                        None => wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND,
                    }
                }
            }
        }
        let mut bad = ptr::null_mut();
        // SAFETY: the chain, sges and inline data live until the call returns (inline data
        // is copied at post time); buffer lifetimes are the caller's contract.
        check(unsafe { sys::ibv_post_send(self.0, base, &mut bad) })
    }

    /// Moves the QP to the error state so outstanding work requests flush.
    pub fn set_error(&self) -> io::Result<()> {
        // SAFETY: ibv_qp_attr is plain data.
        let mut attr: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = sys::ibv_qp_state::IBV_QPS_ERR;
        // SAFETY: live QP, valid attr.
        check(unsafe { sys::ibv_modify_qp(self.0, &mut attr, sys::ibv_qp_attr_mask::IBV_QP_STATE.0 as i32) })
    }

    /// Sets how long a host waits to send again after this QP answered receiver-not-ready
    /// (the IB encoding: 1 is 10 µs, 12 is 640 µs, 0 is 655 ms). Allowed once the QP is
    /// ready to send (after accept).
    pub fn set_min_rnr_timer(&self, code: u8) -> io::Result<()> {
        // SAFETY: ibv_qp_attr is plain data.
        let mut attr: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.min_rnr_timer = code;
        // SAFETY: live QP, valid attr.
        check(unsafe { sys::ibv_modify_qp(self.0, &mut attr, sys::ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER.0 as i32) })
    }

    /// The negotiated path MTU in bytes.
    pub fn path_mtu_bytes(&self) -> io::Result<u32> {
        // SAFETY: plain data outputs.
        let mut attr: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut init: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        let mask = sys::ibv_qp_attr_mask::IBV_QP_PATH_MTU.0 as i32;
        // SAFETY: live QP, writable outputs.
        check(unsafe { sys::ibv_query_qp(self.0, &mut attr, mask, &mut init) })?;
        Ok(128u32 << attr.path_mtu.clamp(1, 5))
    }

    /// The inline size the QP was created with.
    pub fn max_inline_bytes(&self) -> io::Result<u32> {
        // SAFETY: plain data outputs.
        let mut attr: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut init: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live QP, writable outputs.
        check(unsafe { sys::ibv_query_qp(self.0, &mut attr, sys::ibv_qp_attr_mask::IBV_QP_CAP.0 as i32, &mut init) })?;
        Ok(init.cap.max_inline_data)
    }
}

/// Receive buffers, in one registered host allocation: `count` slots, each a 64-byte
/// command area and, when in-capsule data is enabled, a page-aligned data area the
/// receive scatters the rest into, so write data can go to the backend from where it
/// landed. A slot belongs to the NIC from `post` until its receive completes, then to
/// the CPU (or to a request it is lent to) until it is posted again. One connection's
/// own slots are posted again by hand; slots behind a shared receive queue go back on
/// their own when their loan ends ([`RecvBuffers::take_returned`]).
pub struct RecvBuffers {
    // Field order: the MR is deregistered before the memory is unmapped.
    mr: MemoryRegion,
    /// The slots' mapping, shared with the loans of in-capsule writes so a loan never
    /// outlives it, and where loans go back.
    home: Arc<SlotMemory>,
    data_bytes: u32,
    /// Offset of slot 0's data area: the command areas come first, rounded up to a page.
    data_base: usize,
    data_stride: usize,
    pub count: u32,
}

/// The slots' mapping and, for slots behind a shared receive queue, the slots whose
/// loans have ended and that wait to be posted again.
struct SlotMemory {
    memory: DmaRegion,
    returned: Option<ReturnedSlots>,
}

#[derive(Default)]
struct ReturnedSlots {
    waiting: AtomicUsize,
    slots: Mutex<Vec<u32>>,
}

impl SlotHome for SlotMemory {
    fn returned(&self, slot: u32) {
        if let Some(returned) = &self.returned {
            let mut slots = returned.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.push(slot);
            // Under the lock, so that `take_returned` never counts a slot it did not take.
            returned.waiting.fetch_add(1, Ordering::Release);
        }
    }
}

/// Alignment of in-capsule data areas (a page: any backend's O_DIRECT alignment).
const DATA_ALIGN: usize = 4096;

impl RecvBuffers {
    /// `count` slots with `data_bytes` of in-capsule data each; with `return_on_drop`,
    /// a slot whose loan ends is kept for [`RecvBuffers::take_returned`].
    pub fn new(pd: &Arc<ProtectionDomain>, count: u32, data_bytes: u32, return_on_drop: bool) -> io::Result<RecvBuffers> {
        let slots = count as usize;
        let data_stride = (data_bytes as usize).div_ceil(DATA_ALIGN) * DATA_ALIGN;
        let data_base = (slots * COMMAND_BYTES).div_ceil(DATA_ALIGN) * DATA_ALIGN;
        // The NIC writes these bytes: the CPU sees them only through copies.
        let memory = DmaRegion::anonymous(data_base + slots * data_stride)?;
        // SAFETY: the mapping is owned by the returned value and outlives the MR (field
        // order).
        let mr = unsafe { MemoryRegion::register(pd, memory.address(), memory.len_bytes(), Registration::Pinned)? };
        let home = Arc::new(SlotMemory { memory, returned: return_on_drop.then(ReturnedSlots::default) });
        Ok(RecvBuffers { mr, home, data_bytes, data_base, data_stride, count })
    }

    /// Moves the slots whose loans have ended since the last call into `out` (only for
    /// buffers made with `return_on_drop`).
    pub fn take_returned(&self, out: &mut Vec<u32>) {
        let Some(returned) = &self.home.returned else { return };
        if returned.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut slots = returned.slots.lock().unwrap_or_else(|p| p.into_inner());
        returned.waiting.fetch_sub(slots.len(), Ordering::AcqRel);
        out.append(&mut slots);
    }

    /// The key of the slots' registration (receives and in-capsule data).
    pub fn local_key(&self) -> u32 {
        self.mr.local_key()
    }

    /// Address and length of the in-capsule data areas (all slots), for the backend.
    pub fn data_region(&self) -> (u64, usize) {
        let memory = &self.home.memory;
        (memory.address() + self.data_base as u64, memory.len_bytes().saturating_sub(self.data_base))
    }

    fn command_offset(&self, index: u32) -> usize {
        index as usize * COMMAND_BYTES
    }

    fn data_offset(&self, index: u32) -> usize {
        self.data_base + index as usize * self.data_stride
    }

    /// Posts slot `index` on `qp`'s own receive queue (wr_id is the caller's encoding of
    /// it).
    pub fn post(&self, qp: &QueuePair, wr_id: u64, index: u32) -> io::Result<()> {
        let (segments, used) = self.segments(index)?;
        // SAFETY: the areas are inside our registered mapping and, by this type's
        // protocol, not read by the CPU until the receive completes.
        unsafe { qp.post_recv(wr_id, &segments[..used], self.mr.local_key()) }
    }

    /// Posts slot `index` on a shared receive queue, as [`RecvBuffers::post`].
    pub fn post_shared(&self, srq: &SharedReceiveQueue, wr_id: u64, index: u32) -> io::Result<()> {
        let (segments, used) = self.segments(index)?;
        // SAFETY: as in `post`.
        unsafe { srq.post_recv(wr_id, &segments[..used], self.mr.local_key()) }
    }

    /// Slot `index`'s command area and, with in-capsule data, its data area: the
    /// segments and how many of them are used.
    fn segments(&self, index: u32) -> io::Result<([(u64, u32); 2], usize)> {
        if index >= self.count {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let base = self.home.memory.address();
        let command = (base + self.command_offset(index) as u64, COMMAND_BYTES as u32);
        let data = (base + self.data_offset(index) as u64, self.data_bytes);
        Ok(([command, data], if self.data_bytes == 0 { 1 } else { 2 }))
    }

    /// What a completed receive of `byte_len` bytes delivered into slot `index`, with
    /// the slot's loan: post the slot again only once the loan is back.
    pub fn completed(&self, index: u32, byte_len: u32) -> Capsule<'_> {
        let index = index.min(self.count.saturating_sub(1));
        let byte_len = byte_len as usize;
        let command_start = self.command_offset(index);
        let data_len = byte_len.saturating_sub(COMMAND_BYTES).min(self.data_bytes as usize);
        let data_start = self.data_offset(index);
        let empty = DmaSlice::from_bytes(&[]);
        let memory = &self.home.memory;
        // SAFETY: slot `index`'s receive completed, so the NIC no longer writes its
        // areas, and the slot is not posted again before the capsule is consumed.
        let slots = unsafe { memory.slice(0, memory.len_bytes()) }.unwrap_or(empty);
        let command = slots.get(command_start, byte_len.min(COMMAND_BYTES)).unwrap_or(empty);
        let data = slots.get(data_start, data_len).unwrap_or(empty);
        let buffer = Buffer {
            region: Region::Host,
            len_bytes: data_len as u32,
            address: memory.address() + data_start as u64,
        };
        let home: Arc<dyn SlotHome> = self.home.clone();
        // SAFETY: slot `index` is this receive queue's, its receive just completed, and
        // the transport posts it again only when this loan comes back (by hand, or
        // through `take_returned`); `home` keeps the slot's mapping.
        let loan = unsafe { SlotLoan::new(buffer, index, home) };
        Capsule { command, data, loan: Some(loan) }
    }
}
