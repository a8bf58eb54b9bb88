//! Live reconfiguration through the control plane (`control::Runtime` and its JSON-RPC
//! face), seen by hosts on loopback queues: what they read in Identify and the logs,
//! which notices they get, and what happens to commands on a namespace taken away.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use p2ptgt::config::{NamespaceConfig, P2pMem, PortConfig, ServeConfig, SubsystemConfig};
use p2ptgt::control::{rpc, PlacementPolicy, PortListeners, Runtime, SubsystemDefaults};
use p2ptgt::core::{Limits, Port, Target};
use p2ptgt::memory::Pools;
use p2ptgt::wire::command::{admin, io};
use p2ptgt::wire::ana::AnaState;
use p2ptgt::wire::Status;
use serde_json::{json, Value};
use zerocopy::little_endian::{U16, U32};

const OTHER: &str = "nqn.2026-11.io.p2ptgt:other";

struct Bed {
    runtime: Runtime,
    dir: PathBuf,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bed {
    /// A target serving SUBSYSTEM with one 1 MiB file namespace, any host allowed.
    fn new(name: &str) -> Bed {
        let dir = std::env::temp_dir().join(format!("p2ptgt-control-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = Port::new(1, "192.0.2.1", "4420", false);
        let target = Arc::new(Target::new(Vec::new(), port, Limits::default()));
        let config = ServeConfig {
            ports: vec![PortConfig::new(1, "192.0.2.1:4420".parse().unwrap())],
            subsystems: Vec::new(),
            in_capsule_data_bytes: None,
            queue_entries_max: None,
            max_transfer_shift: None,
            limits: Default::default(),
            ana: Default::default(),
            host_keys: Default::default(),
        };
        let policy = PlacementPolicy { peers: Vec::new(), host: Some(Pools::host_only(4 << 20).unwrap().host.clone()), default_mode: P2pMem::Off };
        let bed = Bed { runtime: Runtime::new(target, config, policy, SubsystemDefaults::default()), dir };
        let mut subsystem = SubsystemConfig::new(SUBSYSTEM);
        subsystem.allow_any_host = true;
        subsystem.namespaces.push(NamespaceConfig::new(1, bed.file("ns1", 1 << 20)));
        bed.runtime.add_subsystem(subsystem).unwrap();
        bed
    }

    fn file(&self, name: &str, bytes: u64) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::File::create(&path).unwrap().set_len(bytes).unwrap();
        path
    }

    fn target(&self) -> &Arc<Target> {
        self.runtime.target()
    }

    fn rpc(&self, request: Value) -> Value {
        let reply = rpc::handle(&self.runtime, &request.to_string(), || json!({})).expect("a request with an id is answered");
        serde_json::from_str(&reply).unwrap()
    }

    fn call(&self, method: &str, params: Value) -> Value {
        self.rpc(json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
    }

    /// The result of a call that must succeed.
    fn ok(&self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params);
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }
}

/// A connected, enabled I/O controller's admin queue with namespace notices enabled
/// and one Asynchronous Event Request outstanding.
fn host_with_notices(target: &Arc<Target>, subsystem: &str, notices: u32) -> TestHost {
    let mut host = TestHost::admin(target);
    host.bring_up(subsystem, HOST);
    let mut aec = command(admin::SET_FEATURES, 0);
    aec.cdw10 = U32::new(0x0B);
    aec.cdw11 = U32::new(notices);
    assert_eq!(host.call(aec, &[]).status(), Status::SUCCESS);
    post_event_request(&mut host);
    host
}

fn post_event_request(host: &mut TestHost) {
    let mut aer = command(admin::ASYNC_EVENT_REQUEST, 0);
    aer.command_id = U16::new(0x7000);
    host.link.send(zerocopy::IntoBytes::as_bytes(&aer));
}

/// Queue 1 of controller `controller_id`, connected.
fn connected_io_queue(bed: &Bed, pools: &Pools, controller_id: u16) -> TestHost {
    let mut queue = TestHost::new(bed.target(), pools, 1, 32);
    assert_eq!(queue.connect(SUBSYSTEM, HOST, 1, controller_id, 31, false).status(), Status::SUCCESS);
    queue
}

/// The events the host got since the last look.
fn events(host: &mut TestHost) -> Vec<u32> {
    host.link.queue.handle_timeout(Instant::now());
    host.link.run();
    host.link.responses.drain(..).filter(|c| c.command_id.get() == 0x7000).map(|c| c.result.get()).collect()
}

fn active_namespaces(host: &mut TestHost) -> Vec<u32> {
    let (completion, list) = host.identify(2, 0);
    assert_eq!(completion.status(), Status::SUCCESS);
    list.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).take_while(|&id| id != 0).collect()
}

fn size_blocks(host: &mut TestHost, nsid: u32) -> u64 {
    let (completion, page) = host.identify(0, nsid);
    assert_eq!(completion.status(), Status::SUCCESS);
    u64::from_le_bytes(page[..8].try_into().unwrap())
}

const NAMESPACE_CHANGED: u32 = 0x04_00_02;
const DISCOVERY_CHANGED: u32 = 0x70_F0_02;

#[test]
fn hosts_see_namespaces_come_grow_and_go_through_notices() {
    let bed = Bed::new("namespaces");
    let mut host = host_with_notices(bed.target(), SUBSYSTEM, 1 << 8);
    assert_eq!(active_namespaces(&mut host), vec![1]);

    let path = bed.file("ns2", 2 << 20);
    assert_eq!(bed.ok("namespace.add", json!({"subsystem": SUBSYSTEM, "path": path})), json!({"nsid": 2}));
    assert_eq!(events(&mut host), vec![NAMESPACE_CHANGED]);
    let (_, log) = host.get_log(0x04, 0, 4096);
    assert_eq!(&log[..8], &[2, 0, 0, 0, 0, 0, 0, 0], "the Changed Namespace List names NSID 2");
    assert_eq!(active_namespaces(&mut host), vec![1, 2]);
    assert_eq!(size_blocks(&mut host, 2), (2 << 20) / 512);

    post_event_request(&mut host);
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(3 << 20).unwrap();
    let resized = bed.ok("namespace.resize", json!({"subsystem": SUBSYSTEM, "nsid": 2}));
    assert_eq!(resized, json!({"previous_bytes": 2 << 20, "size_bytes": 3 << 20}));
    assert_eq!(events(&mut host), vec![NAMESPACE_CHANGED]);
    host.get_log(0x04, 0, 4096);
    assert_eq!(size_blocks(&mut host, 2), (3 << 20) / 512);

    post_event_request(&mut host);
    bed.ok("namespace.remove", json!({"subsystem": SUBSYSTEM, "nsid": 2}));
    assert_eq!(events(&mut host), vec![NAMESPACE_CHANGED]);
    assert_eq!(active_namespaces(&mut host), vec![1]);
    let (completion, _) = host.identify(0, 2);
    assert_eq!(completion.status(), Status::SUCCESS, "an inactive NSID below NN reads as zeroes");

    let saved = bed.ok("save", json!({}));
    let namespaces = saved["subsystems"][0]["namespaces"].as_array().unwrap();
    assert_eq!(namespaces.len(), 1, "{saved}");
}

#[test]
fn commands_running_on_a_removed_namespace_finish_and_new_ones_fail() {
    let bed = Bed::new("inflight");
    let path = bed.file("ns2", 1 << 20);
    std::fs::write(&path, pattern(9, 1 << 20)).unwrap();
    bed.runtime.add_namespace(SUBSYSTEM, NamespaceConfig::new(2, path)).unwrap();
    let pools = Pools::host_only(8 << 20).unwrap();
    let mut admin_queue = TestHost::new(bed.target(), &pools, 0, 32);
    let controller_id = admin_queue.bring_up(SUBSYSTEM, HOST);
    let mut io_queue = connected_io_queue(&bed, &pools, controller_id);

    io_queue.link.hold = true;
    let mut read = io_queue.rw(io::READ, 0, 8);
    read.namespace_id = U32::new(2);
    read.command_id = U16::new(0x100);
    let key = io_queue.link.register(vec![0; 4096], false);
    read.data_pointer = p2ptgt::wire::sgl::RawSglDescriptor::keyed(key);
    io_queue.link.send(zerocopy::IntoBytes::as_bytes(&read));
    assert!(io_queue.link.responses.is_empty(), "the read is held in the backend");

    bed.runtime.remove_namespace(SUBSYSTEM, 2).unwrap();
    let started = Instant::now();
    while io_queue.link.responses.is_empty() && started.elapsed() < std::time::Duration::from_secs(5) {
        io_queue.link.run();
        while io_queue.link.complete_backend() || io_queue.link.complete_send() {}
    }
    io_queue.link.hold = false;
    let completion = io_queue.link.responses.pop_front().expect("the read completes");
    assert_eq!(completion.status(), Status::SUCCESS, "a command already running finishes");
    assert_eq!(io_queue.link.remote(key.key), &pattern(9, 1 << 20)[..4096]);

    let (completion, _) = io_queue.read_blocks(0, 8);
    assert_eq!(completion.status(), Status::SUCCESS, "namespace 1 still serves");
    let mut again = io_queue.rw(io::READ, 0, 8);
    again.namespace_id = U32::new(2);
    let (completion, _) = io_queue.call_read(again, 4096);
    assert_eq!(completion.status(), Status::INVALID_NAMESPACE.dnr(), "new commands on the removed namespace");
}

#[test]
fn discovery_controllers_hear_of_new_subsystems_and_host_changes() {
    let bed = Bed::new("discovery");
    let mut host = host_with_notices(bed.target(), discovery(), 1 << 31);
    let generation = |host: &mut TestHost| {
        let (_, log) = host.get_log(0x70, 0, 4096);
        (u64::from_le_bytes(log[..8].try_into().unwrap()), u64::from_le_bytes(log[8..16].try_into().unwrap()))
    };
    let (first, records) = generation(&mut host);
    assert_eq!(records, 2, "itself and SUBSYSTEM");

    bed.ok("subsystem.add", json!({"nqn": OTHER, "hosts": [HOST]}));
    assert_eq!(events(&mut host), vec![DISCOVERY_CHANGED]);
    let (second, records) = generation(&mut host);
    assert!(second > first, "the generation counter rises");
    assert_eq!(records, 3);

    post_event_request(&mut host);
    bed.ok("host.remove", json!({"subsystem": OTHER, "host": HOST}));
    assert_eq!(events(&mut host), vec![DISCOVERY_CHANGED], "read without Retain: unmasked again");
    assert_eq!(generation(&mut host).1, 2, "the host no longer sees the subsystem it may not connect to");
    let mut refused = TestHost::admin(bed.target());
    assert_eq!(refused.connect(OTHER, HOST, 0, 0xFFFF, 31, false).status(), Status::CONNECT_INVALID_HOST.dnr());
}

#[test]
fn removing_a_subsystem_tears_its_controllers_down() {
    let bed = Bed::new("subsystem");
    let mut host = TestHost::admin(bed.target());
    host.bring_up(SUBSYSTEM, HOST);
    bed.runtime.remove_subsystem(SUBSYSTEM).unwrap();
    host.link.queue.handle_timeout(Instant::now());
    host.link.run();
    assert!(host.link.disconnected.is_some(), "the admin queue closes");
    let mut again = TestHost::admin(bed.target());
    assert_eq!(again.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false).status(), Status::CONNECT_INVALID_PARAMETER.dnr());
}

#[test]
fn restore_touches_only_what_differs() {
    let bed = Bed::new("restore");
    bed.runtime.add_namespace(SUBSYSTEM, NamespaceConfig::new(2, bed.file("ns2", 1 << 20))).unwrap();
    let saved = bed.ok("save", json!({}));
    let unchanged = bed.ok("restore", json!({"config": saved.clone()}));
    assert!(unchanged.as_object().unwrap().values().all(|v| v == &json!([])), "{unchanged}");
    let subsystem = bed.target().subsystem(SUBSYSTEM).unwrap();
    let (one, two) = (subsystem.namespace(1).unwrap(), subsystem.namespace(2).unwrap());

    let mut wanted = saved.clone();
    wanted["subsystems"][0]["namespaces"][1]["device"]["path"] = json!(bed.file("ns2b", 2 << 20));
    wanted["subsystems"][0]["namespaces"][1]["device"].as_object_mut().unwrap().remove("uuid");
    let changed = bed.ok("restore", json!({"config": wanted}));
    assert_eq!(changed["namespaces_changed"], json!([format!("{SUBSYSTEM}/2")]), "{changed}");
    let subsystem = bed.target().subsystem(SUBSYSTEM).unwrap();
    assert!(Arc::ptr_eq(&subsystem.namespace(1).unwrap(), &one), "namespace 1 is the same object: untouched");
    assert!(!Arc::ptr_eq(&subsystem.namespace(2).unwrap(), &two));

    let mut broken = saved;
    broken["subsystems"][0]["namespaces"][1]["device"]["path"] = json!("/nonexistent/p2ptgt");
    let refused = bed.call("restore", json!({"config": broken}));
    assert_eq!(refused["error"]["code"], json!(rpc::BACKEND), "{refused}");
    assert!(Arc::ptr_eq(&bed.target().subsystem(SUBSYSTEM).unwrap().namespace(1).unwrap(), &one), "a refused restore changes nothing");
}

#[test]
fn bad_requests_get_errors_that_name_the_problem() {
    let bed = Bed::new("bad");
    let error = |reply: Value| (reply["error"]["code"].as_i64().unwrap_or(0), reply["error"]["message"].as_str().unwrap_or("").to_owned());
    let raw = |line: &str| serde_json::from_str::<Value>(&rpc::handle(&bed.runtime, line, || json!({})).unwrap()).unwrap();
    assert_eq!(error(raw("{not json")).0, rpc::PARSE_ERROR);
    assert_eq!(error(raw(r#"{"id": 1, "method": "save"}"#)).0, rpc::INVALID_REQUEST, "jsonrpc 2.0 is required");
    assert_eq!(rpc::handle(&bed.runtime, r#"{"jsonrpc": "2.0", "method": "save"}"#, || json!({})), None, "a notification gets no answer");
    let (code, message) = error(bed.call("namespace.grow", json!({})));
    assert_eq!(code, rpc::METHOD_NOT_FOUND);
    assert!(message.contains("namespace.grow"), "{message}");
    let (code, message) = error(bed.call("namespace.remove", json!({"subsystem": SUBSYSTEM, "nsid": "one"})));
    assert_eq!(code, rpc::INVALID_PARAMS);
    assert!(message.contains("invalid type"), "{message}");
    let (code, message) = error(bed.call("namespace.add", json!({"subsystem": SUBSYSTEM, "nsid": 1, "path": bed.file("dup", 4096)})));
    assert_eq!(code, rpc::EXISTS);
    assert!(message.contains("namespace 1"), "{message}");
    let (code, message) = error(bed.call("namespace.add", json!({"subsystem": SUBSYSTEM, "path": "/nonexistent/p2ptgt"})));
    assert_eq!(code, rpc::BACKEND);
    assert!(message.contains("/nonexistent/p2ptgt"), "{message}");
    let (code, message) = error(bed.call("subsystem.add", json!({"nqn": "testnqn"})));
    assert_eq!(code, rpc::INVALID_PARAMS);
    assert!(message.contains("not an NQN"), "{message}");
    let (code, _) = error(bed.call("host.add", json!({"subsystem": SUBSYSTEM, "host": "host one"})));
    assert_eq!(code, rpc::INVALID_PARAMS);
    let (code, _) = error(bed.call("namespace.add", json!({"subsystem": SUBSYSTEM, "path": "/x", "colour": "red"})));
    assert_eq!(code, rpc::INVALID_PARAMS, "unknown parameters are refused");
    let (code, _) = error(bed.call("namespace.add", json!({"subsystem": OTHER, "path": bed.file("x", 4096)})));
    assert_eq!(code, rpc::NOT_FOUND);
    let (code, _) = error(bed.call("port.add", json!({"address": "192.0.2.1:4421"})));
    assert_eq!(code, rpc::FIXED, "a target without a transport has no ports to add");
    let (code, _) = error(bed.call("port.add", json!({"address": "somewhere"})));
    assert_eq!(code, rpc::INVALID_PARAMS);
    assert_eq!(bed.target().subsystem(SUBSYSTEM).unwrap().namespaces().len(), 1, "nothing changed");
}

#[test]
fn a_read_only_namespace_refuses_writes_and_says_so_in_identify() {
    let bed = Bed::new("read-only");
    let pools = Pools::host_only(8 << 20).unwrap();
    let mut admin_queue = TestHost::new(bed.target(), &pools, 0, 32);
    let controller_id = admin_queue.bring_up(SUBSYSTEM, HOST);
    let mut aec = command(admin::SET_FEATURES, 0);
    aec.cdw10 = U32::new(0x0B);
    aec.cdw11 = U32::new(1 << 8);
    assert_eq!(admin_queue.call(aec, &[]).status(), Status::SUCCESS);
    post_event_request(&mut admin_queue);
    let mut io_queue = connected_io_queue(&bed, &pools, controller_id);
    assert_eq!(io_queue.write_blocks(0, pattern(3, 4096)).status(), Status::SUCCESS);

    bed.ok("namespace.read_only", json!({"subsystem": SUBSYSTEM, "nsid": 1, "read_only": true}));
    assert_eq!(events(&mut admin_queue), vec![NAMESPACE_CHANGED], "hosts are told to look again");
    let (_, page) = admin_queue.identify(0, 1);
    assert_eq!(page[99] & 1, 1, "NSATTR: write protected");
    assert_eq!(io_queue.write_blocks(0, pattern(4, 4096)).status(), Status::NAMESPACE_WRITE_PROTECTED, "as nvmet: no DNR");
    let mut zeroes = io_queue.rw(io::WRITE_ZEROES, 0, 8);
    zeroes.data_pointer = p2ptgt::wire::sgl::RawSglDescriptor::keyed(p2ptgt::wire::KeyedSgl { address: 0, length_bytes: 0, key: 0, invalidate: false });
    assert_eq!(io_queue.call(zeroes, &[]).status(), Status::NAMESPACE_WRITE_PROTECTED);
    let (completion, data) = io_queue.read_blocks(0, 8);
    assert_eq!((completion.status(), data), (Status::SUCCESS, pattern(3, 4096)), "reads go on, the data untouched");
    let saved = bed.ok("save", json!({}));
    assert_eq!(saved["subsystems"][0]["namespaces"][0]["read_only"], json!(1), "saved");

    admin_queue.get_log(0x04, 0, 4096);
    post_event_request(&mut admin_queue);
    bed.ok("namespace.read_only", json!({"subsystem": SUBSYSTEM, "nsid": 1, "read_only": false}));
    assert_eq!(events(&mut admin_queue), vec![NAMESPACE_CHANGED]);
    assert_eq!(io_queue.write_blocks(0, pattern(4, 4096)).status(), Status::SUCCESS);
}

/// Records what the runtime asks of the transport; refuses one address, as a busy
/// port would be refused.
#[derive(Default)]
struct RecordingListeners(std::sync::Mutex<Vec<String>>);

impl PortListeners for RecordingListeners {
    fn start(&self, id: u16, address: std::net::SocketAddr) -> Result<(), String> {
        if address.port() == 4499 {
            return Err("Address already in use".into());
        }
        self.0.lock().unwrap().push(format!("start {id} {address}"));
        Ok(())
    }

    fn stop(&self, id: u16) {
        self.0.lock().unwrap().push(format!("stop {id}"));
    }
}

#[test]
fn ports_come_and_go_and_discovery_lists_the_port_the_host_reached() {
    let bed = Bed::new("ports");
    let listeners = Arc::new(RecordingListeners::default());
    bed.runtime.set_listeners(listeners.clone());
    let mut on_first = host_with_notices(bed.target(), discovery(), 1 << 31);
    on_first.get_log(0x70, 0, 4096);

    assert_eq!(bed.ok("port.add", json!({"address": "192.0.2.1:4421"})), json!({"id": 2}));
    assert_eq!(events(&mut on_first), vec![DISCOVERY_CHANGED], "discovery controllers hear of a new port");
    assert_eq!(*listeners.0.lock().unwrap(), vec!["start 2 192.0.2.1:4421".to_string()]);
    let pools = Pools::host_only(8 << 20).unwrap();
    let config = p2ptgt::core::QueueConfig { queue_id: 0, entries: 32, local_address: None, port_id: 2 };
    let mut on_second = TestHost::with_config(bed.target(), &pools, config);
    on_second.bring_up(discovery(), HOST);
    let (_, log) = on_second.get_log(0x70, 0, 4096);
    let record = |log: &[u8], index: usize| {
        let entry = &log[1024 * (index + 1)..1024 * (index + 2)];
        (u16::from_le_bytes([entry[4], entry[5]]), String::from_utf8_lossy(&entry[32..64]).trim_end_matches(['\0', ' ']).to_string())
    };
    assert_eq!(record(&log, 1), (2, "4421".to_string()), "PORTID and TRSVCID of the port reached");
    let (_, log) = on_first.get_log(0x70, 0, 4096);
    assert_eq!(record(&log, 1), (1, "4420".to_string()));

    let (code, message) = { let r = bed.call("port.add", json!({"address": "192.0.2.1:4421"})); (r["error"]["code"].clone(), r["error"]["message"].clone()) };
    assert_eq!(code, json!(rpc::EXISTS), "{message}");
    let refused = bed.call("port.add", json!({"address": "192.0.2.1:4499"}));
    assert_eq!(refused["error"]["code"], json!(rpc::BACKEND), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("Address already in use"), "{refused}");

    let saved = bed.ok("save", json!({}));
    assert_eq!(saved["ports"].as_array().unwrap().len(), 2, "{saved}");
    post_event_request(&mut on_first);
    bed.ok("port.remove", json!({"id": 2}));
    assert_eq!(listeners.0.lock().unwrap().last().unwrap(), "stop 2");
    assert_eq!(events(&mut on_first), vec![DISCOVERY_CHANGED]);
    let (_, log) = on_second.get_log(0x70, 0, 4096);
    assert_eq!(u64::from_le_bytes(log[8..16].try_into().unwrap()), 0, "a removed port lists nothing");
    let missing = bed.call("port.remove", json!({"id": 2}));
    assert_eq!(missing["error"]["code"], json!(rpc::NOT_FOUND));

    // A restore to the saved file brings the port back.
    let restored = bed.ok("restore", json!({"config": saved}));
    assert_eq!(restored["ports_added"], json!(["2 192.0.2.1:4421"]), "{restored}");
}

#[test]
fn copy_moves_blocks_between_namespaces_and_refuses_bad_ranges() {
    let bed = Bed::new("copy");
    let pattern: Vec<u8> = (0..128 * 1024u32).map(|i| (i * 7 + i / 512) as u8).collect();
    std::fs::write(bed.dir.join("ns1"), [pattern.as_slice(), &vec![0u8; (1 << 20) - pattern.len()]].concat()).unwrap();
    bed.ok("namespace.add", json!({"subsystem": SUBSYSTEM, "nsid": 2, "path": bed.file("ns2", 1 << 20)}));
    let place = |nsid: u32, lba: u64| json!({"nqn": SUBSYSTEM, "nsid": nsid, "lba": lba});

    let report = bed.ok("copy", json!({"from": place(1, 0), "to": place(2, 8), "blocks": 256}));
    assert_eq!(report["bytes"], 128 * 1024);
    assert_eq!(report["provider"], Value::Null, "no peer pool: host memory");
    let copied = std::fs::read(bed.dir.join("ns2")).unwrap();
    assert_eq!(&copied[4096..4096 + pattern.len()], pattern.as_slice());
    assert!(copied[..4096].iter().all(|&b| b == 0), "nothing before the destination");
    let namespace = bed.target().subsystem(SUBSYSTEM).unwrap().namespace(2).unwrap();
    assert_eq!(namespace.payload.payload_bytes_host.get(), 128 * 1024, "counted for the destination");

    // Within one namespace, to a range that does not overlap.
    bed.ok("copy", json!({"from": place(1, 0), "to": place(1, 1024), "blocks": 256, "via": "off"}));
    assert_eq!(&std::fs::read(bed.dir.join("ns1")).unwrap()[1024 * 512..1024 * 512 + pattern.len()], pattern.as_slice());

    let code = |params: Value| bed.call("copy", params)["error"]["code"].clone();
    assert_eq!(code(json!({"from": place(1, 0), "to": place(1, 100), "blocks": 256})), json!(rpc::INVALID_PARAMS), "overlapping ranges");
    assert_eq!(code(json!({"from": place(1, 2000), "to": place(2, 0), "blocks": 100})), json!(rpc::INVALID_PARAMS), "past the end");
    assert_eq!(code(json!({"from": place(1, 0), "to": place(2, 0), "blocks": 0})), json!(rpc::INVALID_PARAMS), "nothing to copy");
    assert_eq!(code(json!({"from": place(1, 0), "to": place(2, 0), "blocks": u64::MAX})), json!(rpc::INVALID_PARAMS), "overflowing");
    assert_eq!(code(json!({"from": place(1, 0), "to": place(9, 0), "blocks": 1})), json!(rpc::NOT_FOUND), "no such namespace");
    assert_eq!(code(json!({"from": place(1, 0), "to": place(2, 0), "blocks": 1, "via": "sideways"})), json!(rpc::INVALID_PARAMS), "unknown via");
    bed.ok("namespace.read_only", json!({"subsystem": SUBSYSTEM, "nsid": 2, "read_only": true}));
    assert_eq!(code(json!({"from": place(1, 0), "to": place(2, 0), "blocks": 1})), json!(rpc::INVALID_PARAMS), "read-only destination");
}

#[test]
fn a_file_namespace_takes_its_payload_from_the_payload_pool_not_the_control_pool() {
    let bed = Bed::new("placement");
    let pools = Pools::host_only(8 << 20).unwrap();
    let mut admin_queue = TestHost::new(bed.target(), &pools, 0, 32);
    let controller_id = admin_queue.bring_up(SUBSYSTEM, HOST);
    let mut io_queue = connected_io_queue(&bed, &pools, controller_id);
    let control_before = pools.control.stats().high_water_bytes;

    let write = io_queue.rw(io::WRITE, 0, 128);
    assert_eq!(io_queue.call_write(write, vec![0x5A; 64 << 10]).status(), Status::SUCCESS);
    let (completion, data) = io_queue.read_blocks(0, 128);
    assert_eq!(completion.status(), Status::SUCCESS);
    assert!(data.iter().all(|&b| b == 0x5A));
    assert!(pools.host.stats().high_water_bytes >= 64 << 10, "the 64 KiB went through the payload pool");
    assert_eq!(pools.control.stats().high_water_bytes, control_before, "the control pool carried no payload");
}

#[test]
fn ana_states_change_by_rpc_are_saved_and_restored() {
    let bed = Bed::new("ana");
    let target = bed.target().clone();
    bed.ok("port.ana_state", json!({"id": 1, "group": 1, "state": "inaccessible"}));
    assert_eq!(target.ana_state(1, 1), AnaState::Inaccessible);
    let saved = bed.ok("save", json!({}));
    assert_eq!(saved["ports"][0]["ana_groups"], json!([{"grpid": 1, "ana": {"state": "inaccessible"}}]));
    let mut wanted = saved.clone();
    wanted["ports"][0]["ana_groups"] = json!([{"grpid": 1, "ana": {"state": "optimized"}}, {"grpid": 2, "ana": {"state": "non-optimized"}}]);
    let changed = bed.ok("restore", json!({"config": wanted}));
    assert_eq!(changed["ana_changed"], json!(["1/1 optimized", "1/2 non-optimized"]), "{changed}");
    assert_eq!((target.ana_state(1, 1), target.ana_state(1, 2)), (AnaState::Optimized, AnaState::NonOptimized));
    let unchanged = bed.ok("restore", json!({"config": saved}));
    assert_eq!(unchanged["ana_changed"], json!(["1/1 inaccessible", "1/2 inaccessible"]), "a group the file leaves out is inaccessible again: {unchanged}");
    let code = |reply: Value| reply["error"]["code"].as_i64().unwrap_or(0);
    assert_eq!(code(bed.call("port.ana_state", json!({"id": 9, "group": 1, "state": "optimized"}))), rpc::NOT_FOUND);
    assert_eq!(code(bed.call("port.ana_state", json!({"id": 1, "group": 0, "state": "optimized"}))), rpc::INVALID_PARAMS);
    assert_eq!(code(bed.call("port.ana_state", json!({"id": 1, "group": 1, "state": "up"}))), rpc::INVALID_PARAMS);
}

#[test]
fn what_a_port_serves_and_refers_to_is_restored_saved_and_follows_subsystems() {
    const THIRD: &str = "nqn.2026-11.io.p2ptgt:third";
    let bed = Bed::new("links");
    bed.runtime.set_listeners(Arc::new(RecordingListeners::default()));
    bed.ok("subsystem.add", json!({"nqn": OTHER, "allow_any_host": true}));
    let saved = bed.ok("save", json!({}));
    assert_eq!(saved["ports"][0]["subsystems"], json!([SUBSYSTEM, OTHER]), "a port serving every subsystem names them");
    let unchanged = bed.ok("restore", json!({"config": saved.clone()}));
    assert!(unchanged.as_object().unwrap().values().all(|v| v == &json!([])), "the same subsystems by name: {unchanged}");

    let mut admin_queue = TestHost::admin(bed.target());
    admin_queue.bring_up(SUBSYSTEM, HOST);
    let mut watching = host_with_notices(bed.target(), discovery(), 1 << 31);
    watching.get_log(0x70, 0, 4096);
    let referral = json!({"name": "rack2", "enable": 1,
        "addr": {"adrfam": "ipv4", "portid": "9", "traddr": "192.0.2.90", "treq": "not specified", "trsvcid": "4420", "trtype": "rdma"}});
    let mut wanted = saved;
    wanted["ports"][0]["subsystems"] = json!([OTHER]);
    wanted["ports"][0]["referrals"] = json!([referral.clone()]);
    let changed = bed.ok("restore", json!({"config": wanted}));
    assert_eq!(changed["ports_changed"], json!(["1 subsystems", "1 referrals"]), "{changed}");
    assert_eq!(events(&mut watching), vec![DISCOVERY_CHANGED]);
    let (_, log) = watching.get_log(0x70, 0, 4096);
    assert_eq!(u64::from_le_bytes(log[8..16].try_into().unwrap()), 3, "itself, OTHER, the referral");
    assert_eq!((log[3 * 1024 + 2], log[3 * 1024 + 4]), (1, 9), "a referral, PORTID 9");
    admin_queue.link.queue.handle_timeout(Instant::now());
    admin_queue.link.run();
    assert!(admin_queue.link.disconnected.is_some(), "the controller of the subsystem the port no longer serves goes");
    let mut refused = TestHost::admin(bed.target());
    let completion = refused.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false);
    assert_eq!((completion.status(), completion.result.get()), (Status::CONNECT_INVALID_PARAMETER.dnr(), 1 << 16 | 256));
    let saved = bed.ok("save", json!({}));
    assert_eq!(saved["ports"][0]["subsystems"], json!([OTHER]));
    assert_eq!(saved["ports"][0]["referrals"], json!([referral]));
    assert_eq!(saved["subsystems"].as_array().unwrap().len(), 2, "SUBSYSTEM stays configured");

    bed.ok("subsystem.add", json!({"nqn": THIRD, "allow_any_host": true}));
    assert_eq!(bed.ok("save", json!({}))["ports"][0]["subsystems"], json!([OTHER, THIRD]), "a subsystem added is linked to every port");
    bed.ok("subsystem.remove", json!({"nqn": OTHER}));
    assert_eq!(bed.ok("save", json!({}))["ports"][0]["subsystems"], json!([THIRD]), "and a subsystem removed unlinked");

    assert_eq!(bed.ok("port.add", json!({"address": "192.0.2.1:4421", "subsystems": [SUBSYSTEM]})), json!({"id": 2}));
    assert_eq!(bed.ok("save", json!({}))["ports"][1]["subsystems"], json!([SUBSYSTEM]));
    let pools = Pools::host_only(1 << 20).unwrap();
    let config = p2ptgt::core::QueueConfig { queue_id: 0, entries: 32, local_address: None, port_id: 2 };
    let mut on_second = TestHost::with_config(bed.target(), &pools, config);
    assert_eq!(on_second.connect(THIRD, HOST, 0, 0xFFFF, 31, false).status(), Status::CONNECT_INVALID_PARAMETER.dnr());
    let missing = bed.call("port.add", json!({"address": "192.0.2.1:4422", "subsystems": ["nqn.2026-11.io.p2ptgt:missing"]}));
    assert_eq!(missing["error"]["code"], json!(rpc::NOT_FOUND), "{missing}");
}
