//! In-band authentication (DH-HMAC-CHAP) through the loopback transport, with a test
//! host that runs the host's side of the protocol the way the Linux host does: the
//! Connect response asks for it, the admin queue serves nothing before it, right keys
//! pass with every hash and with and without Diffie-Hellman, the controller proves its
//! own key on request, and wrong keys or malformed messages end in a Failure1 and a
//! failed controller, never a panic.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use p2ptgt::core::auth::{self, DhGroup, HashFunction, HostKeys, Role, Secret};
use p2ptgt::core::Limits;
use p2ptgt::wire::auth::{self as message, Challenge, FailureReason, Negotiate, Success1};
use p2ptgt::wire::command::{fabrics_type, FABRICS};
use p2ptgt::wire::fabrics::property;
use p2ptgt::wire::{Completion, Status};
use zerocopy::little_endian::U32;

/// `nvme gen-dhchap-key` output (hmac 0, the key 00..1f), and others of the same form.
const KEY: &str = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
const CONTROLLER_KEY: &str = "DHHC-1:01:bHuByyp0b3RFSx1xQPMVO1HKmUWfzveoahfydpW4fNgSLMVm:";

fn secret(text: &str) -> Secret {
    Secret::parse(text).unwrap()
}

/// Another 32-byte key than [`KEY`].
fn other_key() -> Secret {
    Secret::new(None, &[0x5A; 32]).unwrap()
}

/// A target whose subsystem allows HOST, which must authenticate with `keys`.
fn target_with_keys(keys: HostKeys) -> Arc<p2ptgt::core::Target> {
    let target = target_with(vec![memory_namespace(1, NAMESPACE_BYTES)], vec![HOST.to_string()], Limits::default());
    target.set_host_keys(BTreeMap::from([(HOST.to_string(), Arc::new(keys))]));
    target
}

fn keys(hash: HashFunction, group: DhGroup) -> HostKeys {
    HostKeys { key: secret(KEY), controller_key: None, hash, group }
}

fn auth_command(fctype: u8, length: u32) -> p2ptgt::wire::RawCommand {
    let mut cmd = command(FABRICS, 0);
    cmd.namespace_id = U32::new(u32::from(fctype));
    cmd.cdw10 = U32::new(u32::from(message::SECURITY_PROTOCOL) << 24 | u32::from(message::SPSP1) << 16 | u32::from(message::SPSP0) << 8);
    cmd.cdw11 = U32::new(length);
    cmd
}

fn send(host: &mut TestHost, bytes: Vec<u8>) -> Completion {
    let cmd = auth_command(fabrics_type::AUTHENTICATION_SEND, bytes.len() as u32);
    host.call_write(cmd, bytes)
}

/// An Authentication Receive with the Linux host's 4096-byte allocation.
fn receive(host: &mut TestHost) -> (Completion, Vec<u8>) {
    let cmd = auth_command(fabrics_type::AUTHENTICATION_RECEIVE, 4096);
    host.call_read(cmd, 4096)
}

/// AUTH_Negotiate as the Linux host sends it: every hash, every group.
fn negotiate(transaction: u16) -> Vec<u8> {
    Negotiate { transaction, sc_c: 0, napd: 1, auth_id: message::PROTOCOL_DHCHAP, hashes: vec![1, 2, 3], groups: vec![0, 1, 2, 3, 4, 5] }.encode()
}

/// The host's side of the keys.
struct HostSide {
    key: Secret,
    /// The controller's key the host checks the controller's response against.
    controller_key: Option<Secret>,
}

/// What the host learned from a transaction.
#[derive(Debug, PartialEq)]
enum Outcome {
    Authenticated { hash: HashFunction, group: u8 },
    /// The controller sent a Failure1.
    Refused(Option<FailureReason>),
    /// The controller's response did not match the controller key the host holds.
    ControllerNotAuthentic,
}

/// Runs one transaction the way the Linux host does; panics on anything a correct
/// controller never sends.
fn authenticate(host: &mut TestHost, side: &HostSide, transaction: u16) -> Outcome {
    assert_eq!(send(host, negotiate(transaction)).status(), Status::SUCCESS);
    let (completion, bytes) = receive(host);
    assert_eq!(completion.status(), Status::SUCCESS);
    if let Ok(failure) = message::Failure::parse(&bytes) {
        if message::header(&bytes).unwrap().auth_id == message::FAILURE1 {
            return Outcome::Refused(failure.reason());
        }
    }
    let challenge = Challenge::parse(&bytes).expect("a challenge");
    assert_eq!(challenge.transaction, transaction);
    let hash = HashFunction::from_id(challenge.hash_id).unwrap();
    assert_eq!(usize::from(challenge.hash_len), hash.len());
    let group = DhGroup::from_id(challenge.group_id).unwrap();
    let (public, session_key) = if group == DhGroup::Null {
        assert!(challenge.dh_value.is_empty());
        (Vec::new(), None)
    } else {
        assert_eq!(challenge.dh_value.len(), group.value_len(), "the controller's value is padded to the prime's size");
        let pair = group.generate().unwrap();
        let shared = pair.shared_secret(challenge.dh_value).unwrap();
        (pair.public().to_vec(), Some(auth::session_key(hash, &shared)))
    };
    let ks = session_key.as_deref().map(Vec::as_slice);
    let response = auth::response(hash, &side.key.transform(HOST), challenge.challenge, ks, challenge.sequence, transaction, 0, Role::Host, HOST, SUBSYSTEM);
    let (controller_challenge, sequence) = match side.controller_key {
        Some(_) => (auth::random_bytes(hash.len()).unwrap(), 7),
        None => (vec![0; hash.len()], 7),
    };
    let reply = message::encode_reply(transaction, sequence, side.controller_key.is_some(), &response, &controller_challenge, &public);
    assert_eq!(send(host, reply).status(), Status::SUCCESS);
    let (completion, bytes) = receive(host);
    assert_eq!(completion.status(), Status::SUCCESS);
    if message::header(&bytes).unwrap().auth_id == message::FAILURE1 {
        return Outcome::Refused(message::Failure::parse(&bytes).unwrap().reason());
    }
    let success = Success1::parse(&bytes).expect("Success1");
    assert_eq!(usize::from(success.hash_len), hash.len(), "Success1 carries HL");
    if let Some(controller_key) = &side.controller_key {
        let expected = auth::response(hash, &controller_key.transform(SUBSYSTEM), &controller_challenge, ks, sequence, transaction, 0, Role::Controller, HOST, SUBSYSTEM);
        if success.response != Some(&expected[..]) {
            return Outcome::ControllerNotAuthentic;
        }
        assert_eq!(send(host, message::encode_success2(transaction)).status(), Status::SUCCESS);
    } else {
        assert_eq!(success.response, None, "no controller response unless the host asks");
    }
    Outcome::Authenticated { hash, group: challenge.group_id }
}

fn host_side() -> HostSide {
    HostSide { key: secret(KEY), controller_key: None }
}

fn connect_admin(target: &Arc<p2ptgt::core::Target>) -> (TestHost, Completion) {
    let mut host = TestHost::admin(target);
    let connect = host.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false);
    (host, connect)
}

/// CC with EN set, as the Linux host writes it.
const CC_ENABLE: u32 = 4 << 20 | 6 << 16 | 1;

fn csts_fatal(host: &mut TestHost) -> bool {
    host.property_get(property::CSTS, false).result.get() & 0b10 != 0
}

#[test]
fn the_admin_queue_serves_nothing_until_the_host_authenticates() {
    let target = target_with_keys(keys(HashFunction::Sha256, DhGroup::Null));
    let (mut host, connect) = connect_admin(&target);
    assert_eq!(connect.status(), Status::SUCCESS);
    assert_eq!(connect.result.get() & message::AUTHREQ_ATR, message::AUTHREQ_ATR, "the Connect response asks for authentication");
    // Before: Property Get is served, Property Set is not, an admin command meets the
    // disabled controller first (as with nvmet).
    assert_eq!(host.property_get(property::CAP, true).status(), Status::SUCCESS);
    assert_eq!(host.property_set(property::CC, CC_ENABLE).status(), Status::AUTHENTICATION_REQUIRED.dnr());
    assert_eq!(host.identify(1, 0).0.status(), Status::COMMAND_SEQUENCE_ERROR.dnr());
    assert_eq!(authenticate(&mut host, &host_side(), 0), Outcome::Authenticated { hash: HashFunction::Sha256, group: 0 });
    assert_eq!(host.property_set(property::CC, CC_ENABLE).status(), Status::SUCCESS);
    assert_eq!(host.identify(1, 0).0.status(), Status::SUCCESS);
    // I/O queues are not asked to authenticate.
    let controller_id = connect.result.get() as u16;
    let mut io = TestHost::new(&target, &p2ptgt::memory::Pools::host_only(8 << 20).unwrap(), 1, 32);
    let io_connect = io.connect(SUBSYSTEM, HOST, 1, controller_id, 31, false);
    assert_eq!(io_connect.status(), Status::SUCCESS);
    assert_eq!(io_connect.result.get() & message::AUTHREQ_ATR, 0);
}

#[test]
fn a_host_without_a_key_is_not_asked_to_authenticate() {
    let target = target_with_keys(keys(HashFunction::Sha256, DhGroup::Null));
    let mut host = TestHost::admin(&target);
    let other = "nqn.2014-08.org.nvmexpress:uuid:22222222-2222-4222-8222-222222222222";
    target.subsystem(SUBSYSTEM).unwrap().change_hosts(|hosts| hosts.allow_any_host = true);
    let connect = host.connect(SUBSYSTEM, other, 0, 0xFFFF, 31, false);
    assert_eq!(connect.status(), Status::SUCCESS);
    assert_eq!(connect.result.get() & message::AUTHREQ_ATR, 0);
    assert_eq!(host.property_set(property::CC, CC_ENABLE).status(), Status::SUCCESS);
    // Authentication commands have nothing to do there.
    assert_eq!(send(&mut host, negotiate(0)).status(), Status::COMMAND_SEQUENCE_ERROR.dnr());
    // A host with a key must authenticate even where any host may connect.
    let (_, connect) = connect_admin(&target);
    assert_eq!(connect.result.get() & message::AUTHREQ_ATR, message::AUTHREQ_ATR);
}

#[test]
fn every_hash_and_group_authenticates_with_the_right_key() {
    let groups = [DhGroup::Null, DhGroup::Ffdhe2048, DhGroup::Ffdhe3072];
    for hash in [HashFunction::Sha256, HashFunction::Sha384, HashFunction::Sha512] {
        for group in groups {
            let target = target_with_keys(keys(hash, group));
            let (mut host, _) = connect_admin(&target);
            assert_eq!(authenticate(&mut host, &host_side(), 3), Outcome::Authenticated { hash, group: group.id() }, "{hash:?} {group:?}");
            assert_eq!(host.property_set(property::CC, CC_ENABLE).status(), Status::SUCCESS);
        }
    }
}

#[test]
fn the_controller_proves_its_key_when_the_host_asks() {
    let mut configured = keys(HashFunction::Sha384, DhGroup::Ffdhe2048);
    configured.controller_key = Some(secret(CONTROLLER_KEY));
    let target = target_with_keys(configured);
    let (mut host, _) = connect_admin(&target);
    let side = HostSide { key: secret(KEY), controller_key: Some(secret(CONTROLLER_KEY)) };
    assert_eq!(authenticate(&mut host, &side, 1), Outcome::Authenticated { hash: HashFunction::Sha384, group: 1 });
    assert_eq!(host.property_set(property::CC, CC_ENABLE).status(), Status::SUCCESS);
    // A host holding another controller key finds the controller not authentic.
    let (mut host, _) = connect_admin(&target);
    let side = HostSide { key: secret(KEY), controller_key: Some(other_key()) };
    assert_eq!(authenticate(&mut host, &side, 1), Outcome::ControllerNotAuthentic);
    // Without a controller key configured, a host that asks is refused.
    let target = target_with_keys(keys(HashFunction::Sha256, DhGroup::Null));
    let (mut host, _) = connect_admin(&target);
    let side = HostSide { key: secret(KEY), controller_key: Some(secret(CONTROLLER_KEY)) };
    assert_eq!(authenticate(&mut host, &side, 1), Outcome::Refused(Some(FailureReason::Failed)));
}

#[test]
fn a_wrong_key_is_refused_and_the_controller_fails() {
    for group in [DhGroup::Null, DhGroup::Ffdhe2048] {
        let target = target_with_keys(keys(HashFunction::Sha256, group));
        let (mut host, _) = connect_admin(&target);
        let side = HostSide { key: other_key(), controller_key: None };
        assert_eq!(authenticate(&mut host, &side, 0), Outcome::Refused(Some(FailureReason::Failed)), "{group:?}");
        assert!(csts_fatal(&mut host), "the controller failed");
        assert_eq!(host.property_set(property::CC, CC_ENABLE).status(), Status::AUTHENTICATION_REQUIRED.dnr());
    }
}

#[test]
fn a_host_that_does_not_offer_the_configured_group_is_refused() {
    let target = target_with_keys(keys(HashFunction::Sha256, DhGroup::Ffdhe4096));
    let (mut host, _) = connect_admin(&target);
    let offer = Negotiate { transaction: 0, sc_c: 0, napd: 1, auth_id: 1, hashes: vec![1], groups: vec![0, 1] }.encode();
    assert_eq!(send(&mut host, offer).status(), Status::SUCCESS);
    let (_, bytes) = receive(&mut host);
    assert_eq!(message::Failure::parse(&bytes).unwrap().reason(), Some(FailureReason::DhGroupUnusable));
}

#[test]
fn the_host_authenticates_again_while_the_controller_serves_it() {
    let target = target_with_keys(keys(HashFunction::Sha256, DhGroup::Ffdhe2048));
    let (mut host, _) = connect_admin(&target);
    assert!(matches!(authenticate(&mut host, &host_side(), 0), Outcome::Authenticated { .. }));
    assert_eq!(host.property_set(property::CC, CC_ENABLE).status(), Status::SUCCESS);
    // The host's key changes; the target's too: the next transaction uses it.
    let new_key = other_key();
    let mut changed = keys(HashFunction::Sha256, DhGroup::Ffdhe2048);
    changed.key = new_key.clone();
    target.set_host_keys(BTreeMap::from([(HOST.to_string(), Arc::new(changed))]));
    assert_eq!(send(&mut host, negotiate(1)).status(), Status::SUCCESS);
    // Mid-transaction, the controller still serves the host.
    assert_eq!(host.identify(1, 0).0.status(), Status::SUCCESS);
    // Finish that transaction with the new key (it restarts on the next Negotiate).
    let side = HostSide { key: new_key, controller_key: None };
    assert!(matches!(authenticate(&mut host, &side, 1), Outcome::Authenticated { .. }));
    assert_eq!(host.identify(1, 0).0.status(), Status::SUCCESS);
}

/// Sends `bytes` and reads what the controller answers next.
fn send_then_receive(host: &mut TestHost, bytes: Vec<u8>) -> (Status, Option<FailureReason>) {
    let status = send(host, bytes).status();
    let (completion, answer) = receive(host);
    assert_eq!(completion.status(), Status::SUCCESS);
    let reason = message::Failure::parse(&answer).ok().filter(|_| message::header(&answer).unwrap().auth_id == message::FAILURE1).and_then(|f| f.reason());
    (status, reason)
}

#[test]
fn malformed_messages_end_in_failure_and_never_a_panic() {
    let fresh = || {
        let target = target_with_keys(keys(HashFunction::Sha256, DhGroup::Ffdhe2048));
        let (host, _) = connect_admin(&target);
        (target, host)
    };
    // A short Negotiate, a wrong protocol, lists too long, a secure channel asked for.
    let mut short = negotiate(0);
    short.truncate(20);
    let mut protocol = negotiate(0);
    protocol[8] = 0x02;
    let mut long_list = negotiate(0);
    long_list[10] = 31;
    let mut concat = negotiate(0);
    concat[6] = 0x02;
    for (bytes, reason) in [
        (short, FailureReason::IncorrectPayload),
        (protocol, FailureReason::IncorrectPayload),
        (long_list, FailureReason::IncorrectPayload),
        (concat, FailureReason::ConcatMismatch),
    ] {
        let (_, mut host) = fresh();
        assert_eq!(send_then_receive(&mut host, bytes), (Status::SUCCESS, Some(reason)));
        assert!(csts_fatal(&mut host));
    }
    // A Receive before any Negotiate.
    let (_, mut host) = fresh();
    let (_, answer) = receive(&mut host);
    assert_eq!(message::Failure::parse(&answer).unwrap().reason(), Some(FailureReason::Failed));
    assert!(csts_fatal(&mut host));
    // A Reply before any Negotiate, and an unknown message: out of order, fatal.
    for bytes in [message::encode_reply(0, 1, false, &[0; 32], &[0; 32], &[]), vec![0x01, 0x77, 0, 0, 0, 0, 0, 0]] {
        let (_, mut host) = fresh();
        assert_eq!(send(&mut host, bytes).status(), Status::SUCCESS);
        assert!(csts_fatal(&mut host));
    }
    // A Reply whose DH value is too long for the group, then one with the wrong T_ID.
    let (_, mut host) = fresh();
    send(&mut host, negotiate(9));
    let (_, challenge) = receive(&mut host);
    let sequence = Challenge::parse(&challenge).unwrap().sequence;
    let huge = message::encode_reply(9, sequence, false, &[0; 32], &[0; 32], &vec![0xFF; 4000]);
    assert_eq!(send_then_receive(&mut host, huge), (Status::SUCCESS, Some(FailureReason::DhGroupUnusable)));
    let (_, mut host) = fresh();
    send(&mut host, negotiate(9));
    receive(&mut host);
    let wrong_transaction = message::encode_reply(10, 1, false, &[0; 32], &[0; 32], &[0; 256]);
    assert_eq!(send_then_receive(&mut host, wrong_transaction), (Status::SUCCESS, Some(FailureReason::IncorrectPayload)));
    // The DH value 1, which would give away the session key.
    let (_, mut host) = fresh();
    send(&mut host, negotiate(9));
    receive(&mut host);
    let mut one = vec![0; 256];
    one[255] = 1;
    let weak = message::encode_reply(9, 1, false, &[0; 32], &[0; 32], &one);
    assert_eq!(send_then_receive(&mut host, weak), (Status::SUCCESS, Some(FailureReason::DhGroupUnusable)));
    // A replayed Reply after a successful transaction.
    let target = target_with_keys(keys(HashFunction::Sha256, DhGroup::Null));
    let (mut host, _) = connect_admin(&target);
    assert_eq!(send(&mut host, negotiate(0)).status(), Status::SUCCESS);
    let (_, challenge) = receive(&mut host);
    let challenge = Challenge::parse(&challenge).unwrap();
    let response = auth::response(HashFunction::Sha256, &secret(KEY).transform(HOST), challenge.challenge, None, challenge.sequence, 0, 0, Role::Host, HOST, SUBSYSTEM);
    let reply = message::encode_reply(0, 5, false, &response, &[0; 32], &[]);
    assert_eq!(send(&mut host, reply.clone()).status(), Status::SUCCESS);
    receive(&mut host);
    assert_eq!(host.property_set(property::CC, CC_ENABLE).status(), Status::SUCCESS, "authenticated");
    assert_eq!(send(&mut host, reply).status(), Status::SUCCESS);
    assert!(csts_fatal(&mut host), "a replayed reply ends the controller");
}

#[test]
fn malformed_commands_get_the_right_status() {
    let target = target_with_keys(keys(HashFunction::Sha256, DhGroup::Null));
    let (mut host, _) = connect_admin(&target);
    // Another security protocol.
    let mut cmd = auth_command(fabrics_type::AUTHENTICATION_SEND, 72);
    cmd.cdw10 = U32::new(0xEA01_0100);
    assert_eq!(host.call_write(cmd, negotiate(0)).status(), Status::INVALID_FIELD.dnr());
    // A transfer length other than the data pointer's, and none at all.
    let cmd = auth_command(fabrics_type::AUTHENTICATION_SEND, 100);
    assert_eq!(host.call_write(cmd, negotiate(0)).status(), Status::SGL_INVALID_DATA.dnr());
    let cmd = auth_command(fabrics_type::AUTHENTICATION_SEND, 0);
    assert_eq!(host.call_write(cmd, negotiate(0)).status(), Status::INVALID_FIELD.dnr());
    // An allocation too small for the challenge leaves the transaction where it is.
    assert_eq!(send(&mut host, negotiate(0)).status(), Status::SUCCESS);
    let cmd = auth_command(fabrics_type::AUTHENTICATION_RECEIVE, 16);
    assert_eq!(host.call_read(cmd, 16).0.status(), Status::INVALID_FIELD.dnr());
    assert!(matches!(authenticate(&mut host, &host_side(), 0), Outcome::Authenticated { .. }));
    // Not on an I/O queue.
    assert_eq!(host.property_set(property::CC, CC_ENABLE).status(), Status::SUCCESS);
    let controller_id = target.controllers()[0].controller_id;
    let mut io = TestHost::new(&target, &p2ptgt::memory::Pools::host_only(8 << 20).unwrap(), 1, 32);
    assert_eq!(io.connect(SUBSYSTEM, HOST, 1, controller_id, 31, false).status(), Status::SUCCESS);
    assert_eq!(send(&mut io, negotiate(1)).status(), Status::COMMAND_SEQUENCE_ERROR.dnr());
}

#[test]
fn keys_never_show_in_debug_output() {
    let mut configured = keys(HashFunction::Sha256, DhGroup::Null);
    configured.controller_key = Some(secret(CONTROLLER_KEY));
    let text = format!("{configured:?}");
    assert!(!text.contains("AAECAwQF") && !text.contains("bHuByyp0"), "{text}");
}
