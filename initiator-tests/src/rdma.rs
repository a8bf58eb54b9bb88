//! A minimal NVMe/RDMA host over RDMA CM and verbs, for sending what the kernel host
//! never would. Only for tests: one QP, blocking waits with timeouts, one registered
//! slab for capsules, responses and data.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::ptr;
use std::time::{Duration, Instant};

use p2ptgt::wire::command::{fabrics_type, FABRICS};
use p2ptgt::wire::fabrics::{property, ConnectData};
use p2ptgt::wire::sgl::RawSglDescriptor;
use p2ptgt::wire::{Completion, KeyedSgl, RawCommand};
use zerocopy::{FromBytes, IntoBytes};
use rdma_mummy_sys as sys;
use zerocopy::little_endian::{U16, U32};

/// The last OS error, prefixed with the call that failed.
pub fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// How a connect attempt ended.
#[derive(Debug)]
pub enum ConnectOutcome {
    Established(Client),
    /// REJECT with the consumer private data (the NVMe/RDMA reject record).
    Rejected(Vec<u8>),
    Failed(String),
}

/// What a wait for a response saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Completion([u8; 16]),
    /// The target closed the connection (QP flushed or CM disconnect).
    Disconnected,
    Timeout,
}

const SLAB_BYTES: usize = 1 << 20;
const RECV_SLOTS: usize = 64;
/// Slab layout: receives at 0, send capsules from 64 KiB, data from 256 KiB. Sends take
/// turns through the send area, so a burst of SENDs posted without waiting does not
/// overwrite a capsule the NIC has not read yet (as long as the burst fits the area).
const SEND_OFFSET: usize = 64 * 1024;
pub const DATA_OFFSET: usize = 256 * 1024;

#[derive(Debug)]
pub struct Client {
    channel: *mut sys::rdma_event_channel,
    id: *mut sys::rdma_cm_id,
    pd: *mut sys::ibv_pd,
    cq: *mut sys::ibv_cq,
    mr: *mut sys::ibv_mr,
    slab: Vec<u8>,
    closed: bool,
    /// Where the next SEND's capsule goes in the send area.
    send_cursor: usize,
    sends_posted: u64,
    sends_completed: u64,
    /// Responses seen while waiting for SEND completions, for `receive`.
    pending: VecDeque<[u8; 16]>,
}

pub fn sockaddr(address: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(address.ip().octets()) },
        sin_zero: [0; 8],
    }
}

/// One CM event, copied out and acked.
pub struct CmEvent {
    pub id: *mut sys::rdma_cm_id,
    pub kind: u32,
    pub status: i32,
    pub data: Vec<u8>,
}

/// Waits up to `timeout` for the next CM event on `channel`; None on timeout.
///
/// # Safety
/// `channel` is a live event channel.
pub unsafe fn next_cm_event(channel: *mut sys::rdma_event_channel, timeout: Duration) -> io::Result<Option<CmEvent>> {
    // SAFETY: channel is live; poll on its fd with a local pollfd.
    let fd = unsafe { (*channel).fd };
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one local pollfd.
    if unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(i32::MAX as u128) as i32) } <= 0 {
        return Ok(None);
    }
    let mut event = ptr::null_mut();
    // SAFETY: live channel, local out pointer.
    if unsafe { sys::rdma_get_cm_event(channel, &mut event) } != 0 {
        return Err(last_error("rdma_get_cm_event"));
    }
    // SAFETY: the event is valid until acked.
    let raw = unsafe { &*event };
    // SAFETY: conn params are valid for connection events and zero otherwise; private
    // data is valid until the ack.
    let conn = unsafe { raw.param.conn };
    let data = if conn.private_data.is_null() {
        Vec::new()
    } else {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(conn.private_data.cast::<u8>(), usize::from(conn.private_data_len)) }.to_vec()
    };
    let result = CmEvent { id: raw.id, kind: raw.event, status: raw.status, data };
    // SAFETY: acking the event we took.
    unsafe { sys::rdma_ack_cm_event(event) };
    Ok(Some(result))
}

/// Waits for the next CM event; returns its type, status and private data.
fn next_event(channel: *mut sys::rdma_event_channel, timeout: Duration) -> io::Result<(u32, i32, Vec<u8>)> {
    // SAFETY: the callers pass their live channel.
    match unsafe { next_cm_event(channel, timeout) }? {
        Some(event) => Ok((event.kind, event.status, event.data)),
        None => Err(io::Error::new(io::ErrorKind::TimedOut, "no CM event")),
    }
}

/// Starts the CM handshake with `private` as the request's private data. Retries (and
/// RNR retries, 7: forever, as the kernel host asks) are the host's usual ones.
///
/// # Safety
/// `id` is a live CM id with its QP created.
pub unsafe fn rdma_connect(id: *mut sys::rdma_cm_id, private: &[u8]) -> io::Result<()> {
    let mut param = sys::rdma_conn_param {
        private_data: private.as_ptr().cast(),
        private_data_len: private.len() as u8,
        responder_resources: 16,
        initiator_depth: 0,
        flow_control: 1,
        retry_count: 7,
        rnr_retry_count: 7,
        srq: 0,
        qp_num: 0,
    };
    // SAFETY: live id with a QP (this function's contract); param and private data live
    // for the call.
    if unsafe { sys::rdma_connect(id, &mut param) } != 0 {
        return Err(last_error("rdma_connect"));
    }
    Ok(())
}

/// Connects to `target` with `private_data` as the CM request's private data.
pub fn connect(target: SocketAddr, private_data: &[u8]) -> ConnectOutcome {
    match try_connect(target, private_data) {
        Ok(outcome) => outcome,
        Err(e) => ConnectOutcome::Failed(e.to_string()),
    }
}

fn try_connect(target: SocketAddr, private_data: &[u8]) -> io::Result<ConnectOutcome> {
    let SocketAddr::V4(target) = target else { return Err(io::Error::other("IPv4 only")) };
    // SAFETY: no preconditions.
    let channel = unsafe { sys::rdma_create_event_channel() };
    if channel.is_null() {
        return Err(last_error("rdma_create_event_channel"));
    }
    let mut id = ptr::null_mut();
    // SAFETY: live channel.
    if unsafe { sys::rdma_create_id(channel, &mut id, ptr::null_mut(), sys::rdma_port_space::RDMA_PS_TCP) } != 0 {
        return Err(last_error("rdma_create_id"));
    }
    let mut client = Client { channel, id, pd: ptr::null_mut(), cq: ptr::null_mut(), mr: ptr::null_mut(), slab: vec![0u8; SLAB_BYTES], closed: false, send_cursor: SEND_OFFSET, sends_posted: 0, sends_completed: 0, pending: VecDeque::new() };
    let mut destination = sockaddr(target);
    // SAFETY: live id; destination is a valid sockaddr_in for the call.
    if unsafe { sys::rdma_resolve_addr(id, ptr::null_mut(), (&mut destination as *mut libc::sockaddr_in).cast(), 3000) } != 0 {
        return Err(last_error("rdma_resolve_addr"));
    }
    expect_event(channel, sys::rdma_cm_event_type::RDMA_CM_EVENT_ADDR_RESOLVED)?;
    // SAFETY: live id.
    if unsafe { sys::rdma_resolve_route(id, 3000) } != 0 {
        return Err(last_error("rdma_resolve_route"));
    }
    expect_event(channel, sys::rdma_cm_event_type::RDMA_CM_EVENT_ROUTE_RESOLVED)?;
    client.setup_queue_pair()?;
    // SAFETY: the client's live id, with its QP.
    unsafe { rdma_connect(id, private_data) }?;
    let (kind, _status, data) = next_event(channel, Duration::from_secs(5))?;
    match kind {
        sys::rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED => Ok(ConnectOutcome::Established(client)),
        sys::rdma_cm_event_type::RDMA_CM_EVENT_REJECTED => {
            client.closed = true;
            Ok(ConnectOutcome::Rejected(data))
        }
        other => Ok(ConnectOutcome::Failed(format!("CM event {other} instead of ESTABLISHED"))),
    }
}

fn expect_event(channel: *mut sys::rdma_event_channel, wanted: u32) -> io::Result<()> {
    let (kind, status, _) = next_event(channel, Duration::from_secs(5))?;
    if kind != wanted {
        return Err(io::Error::other(format!("CM event {kind} (status {status}), wanted {wanted}")));
    }
    Ok(())
}

impl Client {
    fn setup_queue_pair(&mut self) -> io::Result<()> {
        // SAFETY: the id is bound to a device after route resolution.
        let verbs = unsafe { (*self.id).verbs };
        // SAFETY: live context.
        self.pd = unsafe { sys::ibv_alloc_pd(verbs) };
        if self.pd.is_null() {
            return Err(last_error("ibv_alloc_pd"));
        }
        // SAFETY: live context; no completion channel (we poll).
        self.cq = unsafe { sys::ibv_create_cq(verbs, 256, ptr::null_mut(), ptr::null_mut(), 0) };
        if self.cq.is_null() {
            return Err(last_error("ibv_create_cq"));
        }
        let access = sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 | sys::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0 | sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        // SAFETY: the slab is owned by self and outlives the MR (deregistered in Drop first).
        self.mr = unsafe { sys::ibv_reg_mr(self.pd, self.slab.as_mut_ptr().cast(), SLAB_BYTES, access as i32) };
        if self.mr.is_null() {
            return Err(last_error("ibv_reg_mr"));
        }
        // SAFETY: plain data.
        let mut attr: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = self.cq;
        attr.recv_cq = self.cq;
        attr.qp_type = sys::ibv_qp_type::IBV_QPT_RC;
        attr.cap = sys::ibv_qp_cap { max_send_wr: 64, max_recv_wr: RECV_SLOTS as u32, max_send_sge: 1, max_recv_sge: 1, max_inline_data: 0 };
        // SAFETY: live id, PD and CQ.
        if unsafe { sys::rdma_create_qp(self.id, self.pd, &mut attr) } != 0 {
            return Err(last_error("rdma_create_qp"));
        }
        for slot in 0..RECV_SLOTS {
            self.post_recv(slot)?;
        }
        Ok(())
    }

    fn lkey(&self) -> u32 {
        // SAFETY: live MR.
        unsafe { (*self.mr).lkey }
    }

    /// Remote key and address of the data area, for keyed SGLs.
    pub fn data_region(&self) -> (u64, u32) {
        // SAFETY: live MR.
        (self.slab.as_ptr() as u64 + DATA_OFFSET as u64, unsafe { (*self.mr).rkey })
    }

    pub fn data(&self) -> &[u8] {
        &self.slab[DATA_OFFSET..]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.slab[DATA_OFFSET..]
    }

    fn post_recv(&mut self, slot: usize) -> io::Result<()> {
        let mut sge = sys::ibv_sge { addr: self.slab.as_ptr() as u64 + (slot * 16) as u64, length: 16, lkey: self.lkey() };
        let mut wr = sys::ibv_recv_wr { wr_id: slot as u64, next: ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
        let mut bad = ptr::null_mut();
        // SAFETY: the id stays live while self exists.
        let qp = unsafe { (*self.id).qp };
        // SAFETY: live QP; the slot is inside our registered slab.
        if unsafe { sys::ibv_post_recv(qp, &mut wr, &mut bad) } != 0 {
            return Err(last_error("ibv_post_recv"));
        }
        Ok(())
    }

    /// Sends `capsule` (any length up to 64 KiB) as one SEND. Does not wait: up to the
    /// send area's size (192 KiB) of capsules may be in flight at once.
    pub fn send(&mut self, capsule: &[u8]) -> io::Result<()> {
        let len = capsule.len().min(64 * 1024);
        if self.send_cursor + len > DATA_OFFSET {
            self.send_cursor = SEND_OFFSET;
        }
        let at = self.send_cursor;
        self.send_cursor = (at + len).div_ceil(64) * 64;
        self.slab[at..at + len].copy_from_slice(&capsule[..len]);
        let mut sge = sys::ibv_sge { addr: self.slab.as_ptr() as u64 + at as u64, length: len as u32, lkey: self.lkey() };
        // SAFETY: plain data.
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = 1 << 32;
        wr.sg_list = &mut sge;
        wr.num_sge = if len == 0 { 0 } else { 1 };
        wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND;
        wr.send_flags = sys::ibv_send_flags::IBV_SEND_SIGNALED.0;
        let mut bad = ptr::null_mut();
        // SAFETY: the id stays live while self exists.
        let qp = unsafe { (*self.id).qp };
        // SAFETY: live QP; sge points into our registered slab.
        if unsafe { sys::ibv_post_send(qp, &mut wr, &mut bad) } != 0 {
            return Err(last_error("ibv_post_send"));
        }
        self.sends_posted += 1;
        Ok(())
    }

    /// Polls one work completion: Some(Ok(Some(cqe))) for a response, Some(Ok(None))
    /// for a SEND completion, Some(Err(())) for an error (the QP is closed), None if the
    /// CQ is empty.
    fn poll_one(&mut self) -> Option<Result<Option<[u8; 16]>, ()>> {
        // SAFETY: plain data.
        let mut wc: sys::ibv_wc = unsafe { std::mem::zeroed() };
        // SAFETY: live CQ, one output entry.
        if unsafe { sys::ibv_poll_cq(self.cq, 1, &mut wc) } <= 0 {
            return None;
        }
        if wc.status != sys::ibv_wc_status::IBV_WC_SUCCESS {
            self.closed = true;
            return Some(Err(()));
        }
        if wc.wr_id >> 32 == 1 {
            self.sends_completed += 1;
            return Some(Ok(None));
        }
        let slot = wc.wr_id as usize;
        let mut cqe = [0u8; 16];
        cqe.copy_from_slice(&self.slab[slot * 16..slot * 16 + 16]);
        let _ = self.post_recv(slot);
        Some(Ok(Some(cqe)))
    }

    /// Waits until every SEND posted so far has completed (on RC: the target's NIC
    /// acknowledged it). Responses that arrive meanwhile are kept for `receive`. False
    /// on timeout or if the connection closed first.
    pub fn wait_sends(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.sends_completed < self.sends_posted {
            match self.poll_one() {
                Some(Ok(Some(cqe))) => self.pending.push_back(cqe),
                Some(Ok(None)) => {}
                Some(Err(())) => return false,
                None if Instant::now() >= deadline => return false,
                None => std::thread::sleep(Duration::from_micros(50)),
            }
        }
        true
    }

    /// Waits for the next response capsule, a disconnect, or the timeout.
    pub fn receive(&mut self, timeout: Duration) -> Received {
        if let Some(cqe) = self.pending.pop_front() {
            return Received::Completion(cqe);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.poll_one() {
                Some(Ok(Some(cqe))) => return Received::Completion(cqe),
                Some(Ok(None)) => continue, // our SEND completed
                Some(Err(())) => return Received::Disconnected,
                None => {}
            }
            if self.cm_disconnected() {
                self.closed = true;
                return Received::Disconnected;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Received::Timeout
    }

    fn cm_disconnected(&self) -> bool {
        // SAFETY: live channel; non-blocking peek through poll with 0 timeout.
        let fd = unsafe { (*self.channel).fd };
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one local pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
            return false;
        }
        matches!(next_event(self.channel, Duration::from_millis(10)), Ok((kind, _, _)) if kind == sys::rdma_cm_event_type::RDMA_CM_EVENT_DISCONNECTED)
    }
}

/// What one client connection created, torn down together.
pub struct Resources {
    pub channel: *mut sys::rdma_event_channel,
    pub id: *mut sys::rdma_cm_id,
    pub pd: *mut sys::ibv_pd,
    pub cq: *mut sys::ibv_cq,
    pub mr: *mut sys::ibv_mr,
    /// Whether to disconnect first (the connection may still be up).
    pub connected: bool,
}

impl Resources {
    /// Tears everything down in reverse order of creation.
    ///
    /// # Safety
    /// `channel` and `id` are live and were created by the caller (the id on that
    /// channel, its only one); `pd`, `cq` and `mr` are null or the caller's own, of that
    /// id's QP if it has one; nothing is used afterwards, and this runs once.
    pub unsafe fn tear_down(self) {
        if self.connected {
            // SAFETY: `id` is live (this function's contract).
            unsafe { sys::rdma_disconnect(self.id) };
        }
        // SAFETY: `id` is live until `rdma_destroy_id` below.
        if !unsafe { (*self.id).qp }.is_null() {
            // SAFETY: the id has a QP, the caller's.
            unsafe { sys::rdma_destroy_qp(self.id) };
        }
        if !self.mr.is_null() {
            // SAFETY: the caller's MR, no longer used by a QP (destroyed above).
            unsafe { sys::ibv_dereg_mr(self.mr) };
        }
        if !self.cq.is_null() {
            // SAFETY: the caller's CQ; its QP is gone.
            unsafe { sys::ibv_destroy_cq(self.cq) };
        }
        if !self.pd.is_null() {
            // SAFETY: the caller's PD; its MR and QP are gone.
            unsafe { sys::ibv_dealloc_pd(self.pd) };
        }
        // SAFETY: the id has no QP left; destroyed once.
        unsafe { sys::rdma_destroy_id(self.id) };
        // SAFETY: the channel's only id is destroyed above.
        unsafe { sys::rdma_destroy_event_channel(self.channel) };
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let resources = Resources { channel: self.channel, id: self.id, pd: self.pd, cq: self.cq, mr: self.mr, connected: !self.closed };
        // SAFETY: every pointer was created by this client, which is going away.
        unsafe { resources.tear_down() };
    }
}

/// A command with no data (a null keyed SGL, as the Linux host sends).
pub fn command(opcode: u8, id: u16) -> RawCommand {
    let none = RawSglDescriptor::keyed(KeyedSgl { address: 0, length_bytes: 0, key: 0, invalidate: false });
    RawCommand { opcode, flags: 0x40, command_id: U16::new(id), data_pointer: none, ..Default::default() }
}

/// A Fabrics command of type `kind`.
pub fn fabrics(kind: u8, id: u16) -> RawCommand {
    let mut cmd = command(FABRICS, id);
    cmd.namespace_id = U32::new(u32::from(kind));
    cmd
}

/// NVMe/RDMA CM request private data (the RDMA transport binding): record format,
/// queue id, host receive and send queue sizes, controller id.
pub fn private_data(record_format: u16, queue_id: u16, receive: u16, send: u16, controller_id: u16) -> [u8; 32] {
    let mut data = [0u8; 32];
    data[0..2].copy_from_slice(&record_format.to_le_bytes());
    data[2..4].copy_from_slice(&queue_id.to_le_bytes());
    data[4..6].copy_from_slice(&receive.to_le_bytes());
    data[6..8].copy_from_slice(&send.to_le_bytes());
    data[8..10].copy_from_slice(&controller_id.to_le_bytes());
    data
}

/// How long a client waits for one response.
pub const WAIT: Duration = Duration::from_secs(5);

/// Sends `cmd` and returns its completion.
pub fn call(client: &mut Client, cmd: &RawCommand) -> Result<Completion, String> {
    client.send(cmd.as_bytes()).map_err(|e| e.to_string())?;
    match client.receive(WAIT) {
        Received::Completion(bytes) => Completion::read_from_bytes(&bytes).map_err(|_| "bad completion".to_string()),
        other => Err(format!("{other:?}")),
    }
}

/// A keyed SGL for `len` bytes at `offset` in the client's data region (with its own
/// key unless `key` says otherwise).
pub fn keyed(client: &Client, offset: u64, len: u32, key: Option<u32>) -> RawSglDescriptor {
    let (address, rkey) = client.data_region();
    RawSglDescriptor::keyed(KeyedSgl { address: address + offset, length_bytes: len, key: key.unwrap_or(rkey), invalidate: false })
}

/// Connect (SQSIZE 31) for `queue_id` of `controller_id` as `host_nqn`, the Connect
/// data fetched from the start of the data region.
pub fn connect_queue(client: &mut Client, host_nqn: &str, queue_id: u16, controller_id: u16, subsystem: &str, keep_alive_ms: u32) -> Result<Completion, String> {
    let data = ConnectData::new([9; 16], controller_id, subsystem, host_nqn);
    client.data_mut()[..1024].copy_from_slice(data.as_bytes());
    let mut cmd = fabrics(fabrics_type::CONNECT, 1);
    cmd.cdw10 = U32::new(u32::from(queue_id) << 16);
    cmd.cdw11 = U32::new(31);
    cmd.cdw12 = U32::new(keep_alive_ms);
    cmd.data_pointer = keyed(client, 0, 1024, None);
    call(client, &cmd)
}

/// CC with EN clear, then set: the controller becomes ready.
pub fn enable(client: &mut Client) -> Result<(), String> {
    for (id, value) in [(2u16, 4 << 20 | 6 << 16), (3, 4 << 20 | 6 << 16 | 1)] {
        let mut set = fabrics(fabrics_type::PROPERTY_SET, id);
        set.cdw11 = U32::new(property::CC);
        set.cdw12 = U32::new(value);
        call(client, &set)?;
    }
    Ok(())
}
