//! RDMA connection manager: event channels, listening and accepted CM ids, and the
//! events with their private data copied out. Every raw pointer of the CM lives here.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::Arc;

use rdma_mummy_sys as sys;

use super::verbs::{set_nonblocking, CompletionQueue, Context, ProtectionDomain, QueuePair, SharedReceiveQueue};

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

pub struct EventChannel {
    channel: *mut sys::rdma_event_channel,
}

// SAFETY: an event channel is used by one thread at a time (its owner).
unsafe impl Send for EventChannel {}

impl EventChannel {
    pub fn new() -> io::Result<EventChannel> {
        // SAFETY: no preconditions.
        let channel = unsafe { sys::rdma_create_event_channel() };
        if channel.is_null() {
            return Err(last_error());
        }
        let channel = EventChannel { channel };
        set_nonblocking(channel.fd())?;
        Ok(channel)
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is live while self is.
        unsafe { (*self.channel).fd }
    }

    /// The next event, if one is queued. The event is acknowledged before returning; its
    /// private data is copied.
    pub fn next_event(&self) -> io::Result<Option<CmEvent>> {
        let mut event = ptr::null_mut();
        // SAFETY: non-blocking channel, local output pointer.
        if unsafe { sys::rdma_get_cm_event(self.channel, &mut event) } != 0 {
            let error = last_error();
            return match error.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                _ => Err(error),
            };
        }
        // SAFETY: rdma_get_cm_event returned a valid event that we own until acked.
        let raw = unsafe { &*event };
        // SAFETY: for connection events the union holds conn parameters.
        let conn = unsafe { raw.param.conn };
        let private_data = if conn.private_data.is_null() {
            Vec::new()
        } else {
            // SAFETY: the CM guarantees private_data_len bytes at private_data until ack.
            unsafe { std::slice::from_raw_parts(conn.private_data.cast::<u8>(), usize::from(conn.private_data_len)) }.to_vec()
        };
        let result = CmEvent {
            kind: CmEventKind::from_raw(raw.event),
            id: RawCmId(raw.id),
            status: raw.status,
            private_data,
            initiator_depth: conn.initiator_depth,
            responder_resources: conn.responder_resources,
        };
        // SAFETY: acknowledging the event we took; nothing of it is used afterwards.
        unsafe { sys::rdma_ack_cm_event(event) };
        Ok(Some(result))
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: all ids on this channel are destroyed first by their owners.
        unsafe { sys::rdma_destroy_event_channel(self.channel) };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmEventKind {
    ConnectRequest,
    Established,
    Disconnected,
    TimewaitExit,
    DeviceRemoval,
    AddressChange,
    /// The peer rejected, could not be reached, or the handshake failed after accept.
    Rejected,
    Unreachable,
    ConnectError,
    Other(u32),
}

impl CmEventKind {
    fn from_raw(value: sys::rdma_cm_event_type::Type) -> CmEventKind {
        use sys::rdma_cm_event_type as t;
        match value {
            t::RDMA_CM_EVENT_CONNECT_REQUEST => CmEventKind::ConnectRequest,
            t::RDMA_CM_EVENT_ESTABLISHED => CmEventKind::Established,
            t::RDMA_CM_EVENT_DISCONNECTED => CmEventKind::Disconnected,
            t::RDMA_CM_EVENT_TIMEWAIT_EXIT => CmEventKind::TimewaitExit,
            t::RDMA_CM_EVENT_DEVICE_REMOVAL => CmEventKind::DeviceRemoval,
            t::RDMA_CM_EVENT_ADDR_CHANGE => CmEventKind::AddressChange,
            t::RDMA_CM_EVENT_REJECTED => CmEventKind::Rejected,
            t::RDMA_CM_EVENT_UNREACHABLE => CmEventKind::Unreachable,
            t::RDMA_CM_EVENT_CONNECT_ERROR => CmEventKind::ConnectError,
            other => CmEventKind::Other(other),
        }
    }
}

/// A CM id pointer named by an event; becomes owned with [`CmId::adopt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawCmId(*mut sys::rdma_cm_id);

// SAFETY: only a handle; every use goes through CmId methods on the owning thread.
unsafe impl Send for RawCmId {}

#[derive(Debug)]
pub struct CmEvent {
    pub kind: CmEventKind,
    pub id: RawCmId,
    pub status: i32,
    pub private_data: Vec<u8>,
    /// The peer's values as seen from our side.
    pub initiator_depth: u8,
    pub responder_resources: u8,
}

/// An owned CM id (listening or connected), destroyed on drop with its QP.
pub struct CmId {
    id: *mut sys::rdma_cm_id,
    has_qp: bool,
    _pd: Option<Arc<ProtectionDomain>>,
    /// The shared receive queue the QP takes its receives from: destroyed after the QP.
    _srq: Option<Arc<SharedReceiveQueue>>,
}

// SAFETY: a CM id is used by one thread at a time (its owner).
unsafe impl Send for CmId {}

/// Parameters of the queue pair created for a connection.
#[derive(Clone, Copy, Debug)]
pub struct QueuePairSize {
    pub send_entries: u32,
    pub recv_entries: u32,
    pub inline_bytes: u32,
}

impl CmId {
    /// Creates an id on `channel`, binds it to `address` and listens.
    pub fn listen(channel: &EventChannel, address: SocketAddr, backlog: i32) -> io::Result<CmId> {
        let mut id = ptr::null_mut();
        // SAFETY: live channel, local output pointer.
        if unsafe { sys::rdma_create_id(channel.channel, &mut id, ptr::null_mut(), sys::rdma_port_space::RDMA_PS_TCP) } != 0 {
            return Err(last_error());
        }
        let listener = CmId { id, has_qp: false, _pd: None, _srq: None };
        let mut storage: libc::sockaddr_storage = socket_address(address);
        // SAFETY: storage holds a valid sockaddr for its family; the id is live.
        if unsafe { sys::rdma_bind_addr(listener.id, (&mut storage as *mut libc::sockaddr_storage).cast()) } != 0 {
            return Err(last_error());
        }
        // SAFETY: bound id.
        if unsafe { sys::rdma_listen(listener.id, backlog) } != 0 {
            return Err(last_error());
        }
        Ok(listener)
    }

    /// Takes ownership of the id a connect request created.
    ///
    /// # Safety
    /// `raw` must come from a ConnectRequest event and not be adopted twice.
    pub unsafe fn adopt(raw: RawCmId) -> CmId {
        CmId { id: raw.0, has_qp: false, _pd: None, _srq: None }
    }

    pub fn context(&self) -> Option<Context> {
        // SAFETY: live id; verbs is set once bound to a device.
        let verbs = unsafe { (*self.id).verbs };
        (!verbs.is_null()).then_some(Context(verbs))
    }

    /// Creates this connection's RC queue pair on `pd` using `cq` for both directions.
    /// Creates the connection's RC queue pair; with `srq`, its receives come from that
    /// shared receive queue (`size.recv_entries` is then unused).
    pub fn create_queue_pair(&mut self, pd: &Arc<ProtectionDomain>, cq: &CompletionQueue, size: QueuePairSize, srq: Option<&Arc<SharedReceiveQueue>>) -> io::Result<QueuePair> {
        // SAFETY: plain data.
        let mut attr: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = cq.raw();
        attr.recv_cq = cq.raw();
        // The SRQ outlives the QP: this id keeps an Arc to it (below).
        attr.srq = srq.map_or(ptr::null_mut(), |srq| srq.raw());
        attr.qp_type = sys::ibv_qp_type::IBV_QPT_RC;
        attr.cap = sys::ibv_qp_cap {
            max_send_wr: size.send_entries,
            max_recv_wr: size.recv_entries,
            max_send_sge: 1,
            max_recv_sge: 2,
            max_inline_data: size.inline_bytes,
        };
        // SAFETY: live id, PD and CQ (the CQ outlives the QP: the owner drops this id first).
        if unsafe { sys::rdma_create_qp(self.id, pd.raw(), &mut attr) } != 0 {
            return Err(last_error());
        }
        self.has_qp = true;
        self._pd = Some(pd.clone());
        self._srq = srq.cloned();
        // SAFETY: rdma_create_qp set the id's qp.
        Ok(QueuePair(unsafe { (*self.id).qp }))
    }

    /// Accepts with our private data and the RDMA READ depth we will use.
    pub fn accept(&self, private_data: &[u8], initiator_depth: u8) -> io::Result<()> {
        let mut param = sys::rdma_conn_param {
            private_data: private_data.as_ptr().cast(),
            private_data_len: private_data.len() as u8,
            responder_resources: 0,
            initiator_depth,
            flow_control: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            srq: 0,
            qp_num: 0,
        };
        // SAFETY: live id with a QP; param and private data live for the call.
        if unsafe { sys::rdma_accept(self.id, &mut param) } != 0 {
            return Err(last_error());
        }
        Ok(())
    }

    pub fn reject(&self, private_data: &[u8]) -> io::Result<()> {
        // SAFETY: live id; private data lives for the call.
        if unsafe { sys::rdma_reject(self.id, private_data.as_ptr().cast(), private_data.len() as u8) } != 0 {
            return Err(last_error());
        }
        Ok(())
    }

    /// Moves the id's events to `channel` (each connection thread owns one channel).
    pub fn migrate(&self, channel: &EventChannel) -> io::Result<()> {
        // SAFETY: live id and channel.
        if unsafe { sys::rdma_migrate_id(self.id, channel.channel) } != 0 {
            return Err(last_error());
        }
        Ok(())
    }

    pub fn disconnect(&self) {
        // SAFETY: live id; a second disconnect just fails, harmlessly.
        unsafe { sys::rdma_disconnect(self.id) };
    }

    pub fn raw(&self) -> RawCmId {
        RawCmId(self.id)
    }

    /// The peer's address, for logs.
    /// Whether `raw` (from an event) names this id.
    pub fn is(&self, raw: RawCmId) -> bool {
        raw.0 == self.id
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        // SAFETY: the id is live while self is.
        let route = unsafe { &(*self.id).route };
        // SAFETY: the address unions are sockaddr_storage sized; reading them as storage
        // is valid for any family, which from_storage then checks.
        let storage = unsafe { route.addr.dst_addr_union.dst_storage };
        from_storage(&storage)
    }

    /// Our local address, for discovery entries when listening on "any".
    pub fn local(&self) -> Option<SocketAddr> {
        // SAFETY: the id is live while self is.
        let route = unsafe { &(*self.id).route };
        // SAFETY: as in `peer`.
        let storage = unsafe { route.addr.src_addr_union.src_storage };
        from_storage(&storage)
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        if self.has_qp {
            // SAFETY: we created the QP on this id; no work is outstanding (the owner drains).
            unsafe { sys::rdma_destroy_qp(self.id) };
        }
        // SAFETY: every event of this id was acknowledged when taken.
        unsafe { sys::rdma_destroy_id(self.id) };
    }
}

fn socket_address(address: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; zero is a valid start.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match address {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage, which is suitably aligned.
            unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above for sockaddr_in6.
            unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    storage
}

fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr), u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}
