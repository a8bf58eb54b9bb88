//! `peers [--target ADDR[:PORT]] MODE ...`: peers that cost the target resources without
//! doing NVMe work, to check that it takes them back by itself. The target defaults to
//! `$RXE_ADDR:4420`.
//!
//! - `idle N HOLD_SECS`: opens N RDMA CM connections (valid NVMe/RDMA private data: qid 1,
//!   hsqsize 31) as fast as it can (at most `PEERS_WINDOW`, default 64, handshakes in
//!   flight), never sends a Connect, and holds them HOLD_SECS from the start (longer, up
//!   to 15 s, while a peer established in the last 8 s is still open). Prints each
//!   change as an `idle-summary key=value ...` line (at most one a second, and a last one):
//!   how many reached ESTABLISHED, were REJECTED (and with which NVMe/RDMA status),
//!   failed, and were closed by the target (DISCONNECTED), with the ESTABLISHED to
//!   DISCONNECTED times. Also prints `idle: all N established connections closed by the
//!   target` once that happens.
//! - `killed N`: N times, a child (this binary re-executed) resolves the route, creates its
//!   QP, calls rdma_connect and is SIGKILLed right after it returns, before it ever reads
//!   the ESTABLISHED event: by itself (even rounds) or by the parent (odd rounds).
//! - `no-receives SUBSYSTEM HOSTNQN [READS] [BOUND_SECS]`: a proper host (admin queue
//!   Connect, CC.EN, Identify Namespace, I/O queue Connect with rnr_retry_count 7), then
//!   READS (default 64) 4 KiB reads with keyed SGLs into a registered buffer, and no
//!   receive posted for their responses: the target's SENDs RNR-retry forever. Waits up to
//!   BOUND_SECS (default 10) for the target to close that I/O queue; exit status 0 if it
//!   did.
#![allow(unsafe_code)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::ptr;
use std::time::{Duration, Instant};

use p2ptgt::wire::command::{admin, fabrics_type};
use p2ptgt::wire::fabrics::{property, ConnectData};
use p2ptgt::wire::sgl::RawSglDescriptor;
use p2ptgt::wire::{Completion, KeyedSgl, RawCommand};
use initiator_tests::rdma::{command, fabrics, last_error, next_cm_event, private_data, rdma_connect, sockaddr, Resources};
use rdma_mummy_sys as sys;
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use sys::rdma_cm_event_type as ev;



/// NVMe/RDMA CM request private data: record format 0, qid, hrqsize, hsqsize, cntlid.
fn peer_private_data(queue_id: u16, hsqsize: u16, controller_id: u16) -> [u8; 32] {
    private_data(0, queue_id, hsqsize + 1, hsqsize, controller_id)
}

fn event_name(kind: u32) -> &'static str {
    match kind {
        ev::RDMA_CM_EVENT_ADDR_RESOLVED => "ADDR_RESOLVED",
        ev::RDMA_CM_EVENT_ADDR_ERROR => "ADDR_ERROR",
        ev::RDMA_CM_EVENT_ROUTE_RESOLVED => "ROUTE_RESOLVED",
        ev::RDMA_CM_EVENT_ROUTE_ERROR => "ROUTE_ERROR",
        ev::RDMA_CM_EVENT_CONNECT_REQUEST => "CONNECT_REQUEST",
        ev::RDMA_CM_EVENT_CONNECT_RESPONSE => "CONNECT_RESPONSE",
        ev::RDMA_CM_EVENT_CONNECT_ERROR => "CONNECT_ERROR",
        ev::RDMA_CM_EVENT_UNREACHABLE => "UNREACHABLE",
        ev::RDMA_CM_EVENT_REJECTED => "REJECTED",
        ev::RDMA_CM_EVENT_ESTABLISHED => "ESTABLISHED",
        ev::RDMA_CM_EVENT_DISCONNECTED => "DISCONNECTED",
        ev::RDMA_CM_EVENT_DEVICE_REMOVAL => "DEVICE_REMOVAL",
        ev::RDMA_CM_EVENT_TIMEWAIT_EXIT => "TIMEWAIT_EXIT",
        ev::RDMA_CM_EVENT_ADDR_CHANGE => "ADDR_CHANGE",
        _ => "OTHER",
    }
}

fn create_channel() -> io::Result<*mut sys::rdma_event_channel> {
    // SAFETY: no preconditions.
    let channel = unsafe { sys::rdma_create_event_channel() };
    if channel.is_null() {
        return Err(last_error("rdma_create_event_channel"));
    }
    Ok(channel)
}

/// Creates an id on `channel` with `context` and starts address resolution.
fn start_resolve(channel: *mut sys::rdma_event_channel, target: SocketAddrV4, context: usize) -> io::Result<*mut sys::rdma_cm_id> {
    let mut id = ptr::null_mut();
    // SAFETY: live channel; the context is an opaque integer.
    if unsafe { sys::rdma_create_id(channel, &mut id, context as *mut libc::c_void, sys::rdma_port_space::RDMA_PS_TCP) } != 0 {
        return Err(last_error("rdma_create_id"));
    }
    let mut destination = sockaddr(target);
    // SAFETY: live id; destination is a valid sockaddr_in for the call.
    if unsafe { sys::rdma_resolve_addr(id, ptr::null_mut(), (&mut destination as *mut libc::sockaddr_in).cast(), 5000) } != 0 {
        let e = last_error("rdma_resolve_addr");
        // SAFETY: the id we just created, no QP.
        unsafe { sys::rdma_destroy_id(id) };
        return Err(e);
    }
    Ok(id)
}

fn qp_attr(pd_cq: *mut sys::ibv_cq, send: u32, recv: u32) -> sys::ibv_qp_init_attr {
    // SAFETY: plain data.
    let mut attr: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
    attr.send_cq = pd_cq;
    attr.recv_cq = pd_cq;
    attr.qp_type = sys::ibv_qp_type::IBV_QPT_RC;
    attr.cap = sys::ibv_qp_cap { max_send_wr: send, max_recv_wr: recv, max_send_sge: 1, max_recv_sge: 1, max_inline_data: 0 };
    attr
}


fn target_address(arg: Option<&str>) -> SocketAddrV4 {
    let text = arg.map(str::to_string).or_else(|| std::env::var("RXE_ADDR").ok()).unwrap_or_else(|| "192.0.2.1".into());
    let address: SocketAddr = text.parse().unwrap_or_else(|_| SocketAddr::new(text.parse().expect("an IPv4 address"), 4420));
    match address {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("IPv4 only"),
    }
}

// ---------------------------------------------------------------------------------------
// idle

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Resolving,
    Connecting,
    Established,
    Rejected(u16),
    Failed,
    Disconnected,
}

struct Peer {
    id: *mut sys::rdma_cm_id,
    state: State,
    established: Option<Duration>,
    disconnected: Option<Duration>,
}

/// How long `idle` keeps holding a peer established near the end of HOLD_SECS: the
/// target's default connect timeout (5 s) and a margin.
const LATE_PEER_GRACE: Duration = Duration::from_secs(8);

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

fn idle(target: SocketAddrV4, n: usize, hold: Duration) -> i32 {
    let window: usize = std::env::var("PEERS_WINDOW").ok().and_then(|w| w.parse().ok()).unwrap_or(64).max(1);
    let channel = match create_channel() {
        Ok(c) => c,
        Err(e) => {
            println!("idle: {e}");
            return 1;
        }
    };
    let private = peer_private_data(1, 31, 0);
    let start = Instant::now();
    let mut peers: Vec<Peer> = Vec::with_capacity(n);
    let mut pd: *mut sys::ibv_pd = ptr::null_mut();
    let mut cq: *mut sys::ibv_cq = ptr::null_mut();
    let mut in_flight = 0usize;
    let mut errors: Vec<String> = Vec::new();
    let mut last_print = Instant::now() - Duration::from_secs(10);
    let mut printed = String::new();
    let mut all_closed_said = false;
    let summary = |peers: &[Peer], now: Duration| -> String {
        let count = |f: &dyn Fn(&State) -> bool| peers.iter().filter(|p| f(&p.state)).count();
        let established = peers.iter().filter(|p| p.established.is_some()).count();
        let rejected = count(&|s| matches!(s, State::Rejected(_)));
        let no_resources = count(&|s| *s == State::Rejected(6));
        let failed = count(&|s| *s == State::Failed);
        let closed = count(&|s| *s == State::Disconnected);
        let open = count(&|s| *s == State::Established);
        let pending = count(&|s| matches!(s, State::Resolving | State::Connecting));
        let mut held: Vec<u128> = peers.iter().filter_map(|p| Some(millis(p.disconnected? - p.established?))).collect();
        held.sort_unstable();
        let (min, median, max) = if held.is_empty() { (0, 0, 0) } else { (held[0], held[held.len() / 2], held[held.len() - 1]) };
        let first = peers.iter().filter_map(|p| p.established).min().map_or(0, millis);
        let last = peers.iter().filter_map(|p| p.established).max().map_or(0, millis);
        let last_closed = peers.iter().filter_map(|p| p.disconnected).max().map_or(0, millis);
        format!(
            "started={} established={established} rejected={rejected} rejected_no_resources={no_resources} failed={failed} pending={pending} open={open} closed_by_target={closed} \
             held_ms_min={min} held_ms_median={median} held_ms_max={max} first_established_ms={first} last_established_ms={last} last_closed_ms={last_closed} t_ms={}",
            peers.len(),
            millis(now),
        )
    };
    loop {
        while peers.len() < n && in_flight < window {
            let index = peers.len();
            match start_resolve(channel, target, index + 1) {
                Ok(id) => {
                    peers.push(Peer { id, state: State::Resolving, established: None, disconnected: None });
                    in_flight += 1;
                }
                Err(e) => {
                    errors.push(format!("peer {index}: {e}"));
                    peers.push(Peer { id: ptr::null_mut(), state: State::Failed, established: None, disconnected: None });
                }
            }
        }
        let now = start.elapsed();
        // Past HOLD_SECS, a peer established late still gets its time to be closed (the
        // target's connect timeout and a margin), up to 15 s more.
        let young = peers.iter().any(|p| p.disconnected.is_none() && p.established.is_some_and(|at| now.saturating_sub(at) < LATE_PEER_GRACE));
        if peers.len() == n && (now >= hold && ((in_flight == 0 && !young) || now >= hold + Duration::from_secs(15))) {
            break;
        }
        // SAFETY: the channel was created here and is destroyed only after its last use.
        let event = match unsafe { next_cm_event(channel, Duration::from_millis(100)) } {
            Ok(e) => e,
            Err(e) => {
                errors.push(e.to_string());
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        };
        if let Some(event) = event {
            // SAFETY: every id on this channel is ours and live (never destroyed here).
            let index = unsafe { (*event.id).context } as usize;
            let Some(peer) = index.checked_sub(1).and_then(|i| peers.get_mut(i)) else { continue };
            let at = start.elapsed();
            let settle = |peer: &mut Peer, state: State, in_flight: &mut usize| {
                if matches!(peer.state, State::Resolving | State::Connecting) {
                    *in_flight -= 1;
                }
                peer.state = state;
            };
            match event.kind {
                ev::RDMA_CM_EVENT_ADDR_RESOLVED => {
                    // SAFETY: live id.
                    if unsafe { sys::rdma_resolve_route(peer.id, 5000) } != 0 {
                        errors.push(format!("peer {index}: {}", last_error("rdma_resolve_route")));
                        settle(peer, State::Failed, &mut in_flight);
                    }
                }
                ev::RDMA_CM_EVENT_ROUTE_RESOLVED => {
                    let result = (|| -> io::Result<()> {
                        if pd.is_null() {
                            // SAFETY: the id is bound to its device after route resolution.
                            let verbs = unsafe { (*peer.id).verbs };
                            // SAFETY: live context.
                            pd = unsafe { sys::ibv_alloc_pd(verbs) };
                            if pd.is_null() {
                                return Err(last_error("ibv_alloc_pd"));
                            }
                            // SAFETY: live context, no completion channel.
                            cq = unsafe { sys::ibv_create_cq(verbs, 1024, ptr::null_mut(), ptr::null_mut(), 0) };
                            if cq.is_null() {
                                return Err(last_error("ibv_create_cq"));
                            }
                        }
                        let mut attr = qp_attr(cq, 2, 2);
                        // SAFETY: live id, PD and CQ of the same device (one rxe0).
                        if unsafe { sys::rdma_create_qp(peer.id, pd, &mut attr) } != 0 {
                            return Err(last_error("rdma_create_qp"));
                        }
                        // SAFETY: the peer's live id, its QP just created.
                        unsafe { rdma_connect(peer.id, &private) }
                    })();
                    match result {
                        Ok(()) => peer.state = State::Connecting,
                        Err(e) => {
                            errors.push(format!("peer {index}: {e}"));
                            settle(peer, State::Failed, &mut in_flight);
                        }
                    }
                }
                ev::RDMA_CM_EVENT_ESTABLISHED => {
                    peer.established = Some(at);
                    settle(peer, State::Established, &mut in_flight);
                }
                ev::RDMA_CM_EVENT_REJECTED => {
                    let sts = event.data.get(2..4).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
                    settle(peer, State::Rejected(sts), &mut in_flight);
                }
                ev::RDMA_CM_EVENT_DISCONNECTED => {
                    peer.disconnected = Some(at);
                    settle(peer, State::Disconnected, &mut in_flight);
                    // Answer the target's DREQ as librdmacm users do.
                    // SAFETY: live id.
                    unsafe { sys::rdma_disconnect(peer.id) };
                }
                ev::RDMA_CM_EVENT_TIMEWAIT_EXIT => {}
                kind => {
                    errors.push(format!("peer {index}: {} (status {}) in state {:?}", event_name(kind), event.status, peer.state));
                    settle(peer, State::Failed, &mut in_flight);
                }
            }
        }
        let now = start.elapsed();
        let line = summary(&peers, now);
        let changed = line.split(" t_ms=").next() != printed.split(" t_ms=").next();
        if changed && last_print.elapsed() >= Duration::from_secs(1) {
            println!("idle-summary {line}");
            let _ = io::stdout().flush();
            printed = line;
            last_print = Instant::now();
        }
        let established = peers.iter().filter(|p| p.established.is_some()).count();
        if !all_closed_said && peers.len() == n && in_flight == 0 && established > 0 && peers.iter().all(|p| p.state != State::Established) {
            let last_closed = peers.iter().filter_map(|p| p.disconnected).max().unwrap_or_default();
            println!("idle-summary {}", summary(&peers, start.elapsed()));
            println!("idle: all {established} established connections closed by the target (last at {} ms)", millis(last_closed));
            let _ = io::stdout().flush();
            all_closed_said = true;
        }
    }
    println!("idle-summary {}", summary(&peers, start.elapsed()));
    for e in errors.iter().take(10) {
        println!("idle: {e}");
    }
    if errors.len() > 10 {
        println!("idle: ... {} errors in all", errors.len());
    }
    let _ = io::stdout().flush();
    // Exit without tearing down: the kernel closes what is still open, as for a kill.
    0
}

// ---------------------------------------------------------------------------------------
// killed

/// In the child: connect up to rdma_connect, then die by SIGKILL (`self`) or tell the
/// parent and wait for its SIGKILL (`parent`).
fn killed_child(target: SocketAddrV4, by_parent: bool) -> i32 {
    let result = (|| -> io::Result<()> {
        let channel = create_channel()?;
        let id = start_resolve(channel, target, 1)?;
        let expect = |wanted: u32| -> io::Result<()> {
            // SAFETY: the channel was created here and is destroyed only after its last use.
            match unsafe { next_cm_event(channel, Duration::from_secs(5)) }? {
                Some(e) if e.kind == wanted => Ok(()),
                Some(e) => Err(io::Error::other(format!("CM event {} (status {})", event_name(e.kind), e.status))),
                None => Err(io::Error::other("no CM event")),
            }
        };
        expect(ev::RDMA_CM_EVENT_ADDR_RESOLVED)?;
        // SAFETY: live id.
        if unsafe { sys::rdma_resolve_route(id, 5000) } != 0 {
            return Err(last_error("rdma_resolve_route"));
        }
        expect(ev::RDMA_CM_EVENT_ROUTE_RESOLVED)?;
        // SAFETY: the id is bound to its device.
        let verbs = unsafe { (*id).verbs };
        // SAFETY: live context.
        let pd = unsafe { sys::ibv_alloc_pd(verbs) };
        // SAFETY: live context.
        let cq = unsafe { sys::ibv_create_cq(verbs, 64, ptr::null_mut(), ptr::null_mut(), 0) };
        if pd.is_null() || cq.is_null() {
            return Err(last_error("pd/cq"));
        }
        let mut attr = qp_attr(cq, 8, 8);
        // SAFETY: live id, PD and CQ.
        if unsafe { sys::rdma_create_qp(id, pd, &mut attr) } != 0 {
            return Err(last_error("rdma_create_qp"));
        }
        // SAFETY: the live id, its QP just created.
        unsafe { rdma_connect(id, &peer_private_data(1, 31, 0)) }
    })();
    if let Err(e) = result {
        eprintln!("killed-child: {e}");
        return 3;
    }
    if by_parent {
        println!("connecting");
        let _ = io::stdout().flush();
        std::thread::sleep(Duration::from_secs(30));
        return 4;
    }
    // SAFETY: no preconditions.
    unsafe { libc::raise(libc::SIGKILL) };
    5
}

fn killed(target: SocketAddrV4, n: usize) -> i32 {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let start = Instant::now();
    let (mut by_self, mut by_parent, mut other) = (0, 0, Vec::new());
    for round in 0..n {
        let parent_kills = round % 2 == 1;
        let mut child = match Command::new(&exe)
            .args(["--target", &target.to_string(), "killed-child", if parent_kills { "parent" } else { "self" }])
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                other.push(format!("round {round}: spawn: {e}"));
                continue;
            }
        };
        if parent_kills {
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            if line.trim() == "connecting" {
                // SAFETY: kill of our own child by pid.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            }
        }
        match child.wait() {
            Ok(status) if status.signal() == Some(libc::SIGKILL) => {
                if parent_kills {
                    by_parent += 1;
                } else {
                    by_self += 1;
                }
            }
            Ok(status) => other.push(format!("round {round}: child ended with {status}")),
            Err(e) => other.push(format!("round {round}: wait: {e}")),
        }
    }
    println!(
        "killed: {} of {n} children SIGKILLed right after rdma_connect ({by_self} by themselves, {by_parent} by the parent) in {:.1} s",
        by_self + by_parent,
        start.elapsed().as_secs_f64()
    );
    for e in other.iter().take(10) {
        println!("killed: {e}");
    }
    i32::from(by_self + by_parent != n)
}

// ---------------------------------------------------------------------------------------
// no-receives

const SLAB_BYTES: usize = 1 << 20;
const SEND_OFFSET: usize = 64 * 1024;
const DATA_OFFSET: usize = 256 * 1024;

/// One queue: its own channel, PD, CQ, MR over a 1 MiB slab (receives at 0, capsules from
/// 64 KiB, data from 256 KiB).
struct Conn {
    channel: *mut sys::rdma_event_channel,
    id: *mut sys::rdma_cm_id,
    pd: *mut sys::ibv_pd,
    cq: *mut sys::ibv_cq,
    mr: *mut sys::ibv_mr,
    slab: Vec<u8>,
    send_cursor: usize,
    /// Repost a receive once its response is taken.
    repost: bool,
    closed: bool,
}



impl Conn {
    fn open(target: SocketAddrV4, private: &[u8], receives: usize) -> Result<Conn, String> {
        let channel = create_channel().map_err(|e| e.to_string())?;
        let id = start_resolve(channel, target, 1).map_err(|e| e.to_string())?;
        let mut conn = Conn { channel, id, pd: ptr::null_mut(), cq: ptr::null_mut(), mr: ptr::null_mut(), slab: vec![0u8; SLAB_BYTES], send_cursor: SEND_OFFSET, repost: true, closed: true };
        conn.expect(ev::RDMA_CM_EVENT_ADDR_RESOLVED)?;
        // SAFETY: live id.
        if unsafe { sys::rdma_resolve_route(id, 5000) } != 0 {
            return Err(last_error("rdma_resolve_route").to_string());
        }
        conn.expect(ev::RDMA_CM_EVENT_ROUTE_RESOLVED)?;
        // SAFETY: the id is bound to its device.
        let verbs = unsafe { (*id).verbs };
        // SAFETY: live context.
        conn.pd = unsafe { sys::ibv_alloc_pd(verbs) };
        if conn.pd.is_null() {
            return Err(last_error("ibv_alloc_pd").to_string());
        }
        // SAFETY: live context.
        conn.cq = unsafe { sys::ibv_create_cq(verbs, 1024, ptr::null_mut(), ptr::null_mut(), 0) };
        if conn.cq.is_null() {
            return Err(last_error("ibv_create_cq").to_string());
        }
        let access = sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 | sys::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0 | sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        // SAFETY: the slab is owned by conn and outlives the MR (deregistered in Drop).
        conn.mr = unsafe { sys::ibv_reg_mr(conn.pd, conn.slab.as_mut_ptr().cast(), SLAB_BYTES, access as i32) };
        if conn.mr.is_null() {
            return Err(last_error("ibv_reg_mr").to_string());
        }
        let mut attr = qp_attr(conn.cq, 256, 64);
        // SAFETY: live id, PD and CQ.
        if unsafe { sys::rdma_create_qp(id, conn.pd, &mut attr) } != 0 {
            return Err(last_error("rdma_create_qp").to_string());
        }
        for slot in 0..receives {
            conn.post_recv(slot)?;
        }
        // SAFETY: the live id, its QP created above.
        unsafe { rdma_connect(id, private) }.map_err(|e| e.to_string())?;
        // SAFETY: the channel was created here and is destroyed only after its last use.
        match unsafe { next_cm_event(channel, Duration::from_secs(10)) }.map_err(|e| e.to_string())? {
            Some(e) if e.kind == ev::RDMA_CM_EVENT_ESTABLISHED => {
                conn.closed = false;
                Ok(conn)
            }
            Some(e) => Err(format!("CM event {} (status {}, data {:?}) instead of ESTABLISHED", event_name(e.kind), e.status, e.data)),
            None => Err("no CM event after rdma_connect".into()),
        }
    }

    fn expect(&self, wanted: u32) -> Result<(), String> {
        // SAFETY: the channel was created here and is destroyed only after its last use.
        match unsafe { next_cm_event(self.channel, Duration::from_secs(5)) }.map_err(|e| e.to_string())? {
            Some(e) if e.kind == wanted => Ok(()),
            Some(e) => Err(format!("CM event {} (status {}), wanted {}", event_name(e.kind), e.status, event_name(wanted))),
            None => Err(format!("no CM event, wanted {}", event_name(wanted))),
        }
    }

    fn lkey(&self) -> u32 {
        // SAFETY: live MR.
        unsafe { (*self.mr).lkey }
    }

    fn post_recv(&mut self, slot: usize) -> Result<(), String> {
        let mut sge = sys::ibv_sge { addr: self.slab.as_ptr() as u64 + (slot * 16) as u64, length: 16, lkey: self.lkey() };
        let mut wr = sys::ibv_recv_wr { wr_id: slot as u64, next: ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
        let mut bad = ptr::null_mut();
        // SAFETY: the id is live while self exists.
        let qp = unsafe { (*self.id).qp };
        // SAFETY: live QP; the slot is inside the registered slab.
        if unsafe { sys::ibv_post_recv(qp, &mut wr, &mut bad) } != 0 {
            return Err(last_error("ibv_post_recv").to_string());
        }
        Ok(())
    }

    fn send(&mut self, capsule: &[u8]) -> Result<(), String> {
        let len = capsule.len();
        if self.send_cursor + len > DATA_OFFSET {
            self.send_cursor = SEND_OFFSET;
        }
        let at = self.send_cursor;
        self.send_cursor = (at + len).div_ceil(64) * 64;
        self.slab[at..at + len].copy_from_slice(capsule);
        let mut sge = sys::ibv_sge { addr: self.slab.as_ptr() as u64 + at as u64, length: len as u32, lkey: self.lkey() };
        // SAFETY: plain data.
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = 1 << 32;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND;
        wr.send_flags = sys::ibv_send_flags::IBV_SEND_SIGNALED.0;
        let mut bad = ptr::null_mut();
        // SAFETY: the id is live while self exists.
        let qp = unsafe { (*self.id).qp };
        // SAFETY: live QP; sge points into the registered slab.
        if unsafe { sys::ibv_post_send(qp, &mut wr, &mut bad) } != 0 {
            return Err(last_error("ibv_post_send").to_string());
        }
        Ok(())
    }

    /// One work completion: (is_send, success, recv slot).
    fn poll(&mut self) -> Option<(bool, bool, usize)> {
        // SAFETY: plain data.
        let mut wc: sys::ibv_wc = unsafe { std::mem::zeroed() };
        // SAFETY: live CQ, one entry.
        if unsafe { sys::ibv_poll_cq(self.cq, 1, &mut wc) } <= 0 {
            return None;
        }
        let ok = wc.status == sys::ibv_wc_status::IBV_WC_SUCCESS;
        Some((wc.wr_id >> 32 == 1, ok, wc.wr_id as usize & 0xFFFF))
    }

    fn call(&mut self, cmd: &RawCommand) -> Result<Completion, String> {
        self.send(cmd.as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.poll() {
                Some((_, false, _)) => return Err("work completion error: the queue closed".into()),
                Some((true, true, _)) => {}
                Some((false, true, slot)) => {
                    let completion = Completion::read_from_bytes(&self.slab[slot * 16..slot * 16 + 16]).map_err(|_| "bad completion".to_string())?;
                    if self.repost {
                        self.post_recv(slot)?;
                    }
                    return Ok(completion);
                }
                None => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        Err("no response within 10 s".into())
    }

    fn keyed(&self, offset: usize, len: u32) -> RawSglDescriptor {
        // SAFETY: live MR.
        let rkey = unsafe { (*self.mr).rkey };
        RawSglDescriptor::keyed(KeyedSgl { address: self.slab.as_ptr() as u64 + (DATA_OFFSET + offset) as u64, length_bytes: len, key: rkey, invalidate: false })
    }

    fn connect_queue(&mut self, queue_id: u16, sqsize: u32, controller_id: u16, subsystem: &str, host: &str) -> Result<Completion, String> {
        let data = ConnectData::new([7; 16], controller_id, subsystem, host);
        self.slab[DATA_OFFSET..DATA_OFFSET + 1024].copy_from_slice(data.as_bytes());
        let mut cmd = fabrics(fabrics_type::CONNECT, 1);
        cmd.cdw10 = U32::new(u32::from(queue_id) << 16);
        cmd.cdw11 = U32::new(sqsize);
        cmd.data_pointer = self.keyed(0, 1024);
        self.call(&cmd)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let resources = Resources { channel: self.channel, id: self.id, pd: self.pd, cq: self.cq, mr: self.mr, connected: !self.closed };
        // SAFETY: every pointer was created by this connection, which is going away.
        unsafe { resources.tear_down() };
    }
}

fn ok_status(what: &str, result: Result<Completion, String>) -> Result<Completion, String> {
    let completion = result.map_err(|e| format!("{what}: {e}"))?;
    if !completion.status().is_success() {
        return Err(format!("{what}: status {}", completion.status()));
    }
    Ok(completion)
}

fn no_receives(target: SocketAddrV4, subsystem: &str, host: &str, reads: usize, bound: Duration) -> Result<(), String> {
    let reads = reads.clamp(1, 127);
    let mut admin_queue = Conn::open(target, &peer_private_data(0, 31, 0), 32).map_err(|e| format!("admin queue: {e}"))?;
    let connected = ok_status("admin Connect", admin_queue.connect_queue(0, 31, 0xFFFF, subsystem, host))?;
    let controller = connected.result.get() as u16;
    let mut set = fabrics(fabrics_type::PROPERTY_SET, 2);
    set.cdw11 = U32::new(property::CC);
    set.cdw12 = U32::new(4 << 20 | 6 << 16 | 1);
    ok_status("Property Set CC.EN", admin_queue.call(&set))?;
    let mut identify = command(admin::IDENTIFY, 3);
    identify.namespace_id = U32::new(1);
    identify.data_pointer = admin_queue.keyed(8192, 4096);
    ok_status("Identify Namespace", admin_queue.call(&identify))?;
    let page = &admin_queue.slab[DATA_OFFSET + 8192..DATA_OFFSET + 12288];
    let format = usize::from(page[26] & 0x0F);
    let lba_bytes = 1u32 << page[128 + 4 * format + 2];
    let blocks = (4096 / lba_bytes).max(1);
    println!("no-receives: controller {controller}, {lba_bytes}-byte LBAs; I/O queue with hsqsize 127, one receive for its Connect response");

    // One receive, for the Connect response only; none afterwards.
    let mut io_queue = Conn::open(target, &peer_private_data(1, 127, controller), 1).map_err(|e| format!("I/O queue: {e}"))?;
    io_queue.repost = false;
    ok_status("I/O Connect", io_queue.connect_queue(1, 127, controller, subsystem, host))?;
    for k in 0..reads {
        io_queue.slab[DATA_OFFSET + 16384 + k * 4096..][..4096].fill(0xA5);
    }
    let first_lba = u64::from((64u32 << 20) / lba_bytes);
    let started = Instant::now();
    for k in 0..reads {
        let lba = first_lba + k as u64 * u64::from(blocks);
        let mut read = command(0x02, 100 + k as u16);
        read.namespace_id = U32::new(1);
        read.cdw10 = U32::new(lba as u32);
        read.cdw11 = U32::new((lba >> 32) as u32);
        read.cdw12 = U32::new(blocks - 1);
        read.data_pointer = io_queue.keyed(16384 + k * 4096, 4096);
        io_queue.send(read.as_bytes())?;
    }
    println!("no-receives: {reads} reads of 4 KiB sent, no receive posted for their responses");
    let (mut sends_done, mut recvs, mut flushed) = (0usize, 0usize, 0usize);
    let mut disconnected = None;
    let mut first_flush = None;
    while started.elapsed() < bound && disconnected.is_none() {
        while let Some((is_send, ok, _)) = io_queue.poll() {
            match (is_send, ok) {
                (true, true) => sends_done += 1,
                (false, true) => recvs += 1,
                (_, false) => {
                    flushed += 1;
                    first_flush.get_or_insert(started.elapsed());
                }
            }
        }
        // SAFETY: the channel was created here and is destroyed only after its last use.
        if let Some(event) = unsafe { next_cm_event(io_queue.channel, Duration::from_millis(20)) }.map_err(|e| e.to_string())? {
            println!("no-receives: CM event {} on the I/O queue after {} ms", event_name(event.kind), started.elapsed().as_millis());
            if event.kind == ev::RDMA_CM_EVENT_DISCONNECTED {
                disconnected = Some(started.elapsed());
                io_queue.closed = true;
            }
        }
    }
    let written = (0..reads).filter(|k| io_queue.slab[DATA_OFFSET + 16384 + k * 4096..][..4096].iter().any(|&b| b != 0xA5)).count();
    println!(
        "no-receives: sends completed {sends_done}/{reads}, responses received {recvs}, error completions {flushed} (first at {:?} ms), read buffers written by the target {written}/{reads}",
        first_flush.map(|d| d.as_millis())
    );
    let admin_alive = {
        let mut keep_alive = command(admin::KEEP_ALIVE, 9);
        keep_alive.data_pointer = RawSglDescriptor::keyed(KeyedSgl { address: 0, length_bytes: 0, key: 0, invalidate: false });
        admin_queue.call(&keep_alive).map(|c| c.status().to_string())
    };
    println!("no-receives: the admin queue afterwards: keep-alive {admin_alive:?}");
    match disconnected {
        Some(after) => {
            println!("no-receives: the target closed the I/O queue {} ms after the reads (bound {} s)", after.as_millis(), bound.as_secs());
            Ok(())
        }
        None => Err(format!("the target did not close the I/O queue within {} s", bound.as_secs())),
    }
}

// ---------------------------------------------------------------------------------------

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut target_arg = None;
    if args.first().map(String::as_str) == Some("--target") && args.len() > 1 {
        target_arg = Some(args[1].clone());
        args.drain(..2);
    }
    let target = target_address(target_arg.as_deref());
    let number = |i: usize, default: usize| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(default);
    let code = match args.first().map(String::as_str) {
        Some("idle") => idle(target, number(1, 500), Duration::from_secs(number(2, 30) as u64)),
        Some("killed") => killed(target, number(1, 40)),
        Some("killed-child") => killed_child(target, args.get(1).map(String::as_str) == Some("parent")),
        Some("no-receives") if args.len() >= 3 => match no_receives(target, &args[1], &args[2], number(3, 64), Duration::from_secs(number(4, 10) as u64)) {
            Ok(()) => 0,
            Err(e) => {
                println!("no-receives: FAILED: {e}");
                1
            }
        },
        _ => {
            eprintln!("usage: peers [--target ADDR[:PORT]] idle N HOLD_SECS | killed N | no-receives SUBSYSTEM HOSTNQN [READS] [BOUND_SECS]");
            2
        }
    };
    let _ = io::stdout().flush();
    std::process::exit(code);
}
