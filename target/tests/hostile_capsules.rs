//! Property tests: whatever bytes a host sends, the core answers with a well-formed
//! completion or a defined disconnect, and never panics.

mod common;

use common::*;
use p2ptgt::wire::command::RawCommand;
use p2ptgt::wire::log_page::LogRequest;
use p2ptgt::wire::rdma_cm::{ConnectLimits, ConnectRequest};
use p2ptgt::wire::sgl::RawSglDescriptor;
use proptest::prelude::*;
use zerocopy::FromBytes;

fn live_io_queue() -> (TestHost, TestHost) {
    let queues = live_queues(4 << 20);
    (queues.admin, queues.io)
}

/// Opcodes worth hitting often, plus anything.
fn opcode() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0x00u8), Just(0x01), Just(0x02), Just(0x06), Just(0x08), Just(0x09), Just(0x0A), Just(0x0C), Just(0x18), Just(0x7F), Just(0x02), any::<u8>()]
}

fn capsule() -> impl Strategy<Value = Vec<u8>> {
    (opcode(), prop_oneof![Just(0x40u8), any::<u8>()], any::<[u8; 62]>(), prop::collection::vec(any::<u8>(), 0..600), any::<u8>())
        .prop_map(|(opcode, flags, rest, in_capsule, sgl_kind)| {
            let mut bytes = vec![opcode, flags];
            bytes.extend_from_slice(&rest);
            // Bias the SGL identifier towards the forms hosts use.
            bytes[39] = match sgl_kind % 4 {
                0 => 0x40,
                1 => 0x4F,
                2 => 0x01,
                _ => sgl_kind,
            };
            // Keep keyed lengths small so the loopback host memory suffices.
            if bytes[39] & 0xF0 == 0x40 {
                bytes[34] = 0;
            }
            bytes.extend_from_slice(&in_capsule);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn io_queue_answers_every_capsule(capsules in prop::collection::vec(capsule(), 1..12)) {
        let (_admin, mut io) = live_io_queue();
        for capsule in capsules {
            let before = io.link.responses.len();
            // Give keyed descriptors a registered remote buffer so fetches can succeed.
            let keyed = io.link.register(vec![0x5A; 64 * 1024], false);
            let mut capsule = capsule;
            if capsule[39] & 0xF0 == 0x40 {
                capsule[35..39].copy_from_slice(&keyed.key.to_le_bytes());
            }
            io.link.send(&capsule);
            if io.link.disconnected.is_some() {
                break;
            }
            let command = RawCommand::from_capsule(&capsule).unwrap();
            let answered = io.link.responses.len() > before;
            prop_assert!(answered, "no completion for opcode {:#x}", command.opcode);
            let completion = io.link.responses.back().unwrap();
            prop_assert_eq!(completion.command_id.get(), command.command_id.get());
            // A receive buffer lent to a write comes back with its response.
            prop_assert_eq!(io.link.lent_outstanding(), 0);
        }
    }

    #[test]
    fn admin_queue_never_panics(capsules in prop::collection::vec(capsule(), 1..12)) {
        let (mut admin, _io) = live_io_queue();
        for capsule in capsules {
            admin.link.send(&capsule);
            if admin.link.disconnected.is_some() {
                break;
            }
        }
    }

    #[test]
    fn unconnected_queue_never_panics(capsules in prop::collection::vec(capsule(), 1..8)) {
        let target = target();
        let mut queue = TestHost::admin(&target);
        for capsule in capsules {
            queue.link.send(&capsule);
        }
    }

    #[test]
    fn short_capsules_disconnect(len in 0usize..64) {
        let (_admin, mut io) = live_io_queue();
        io.link.send(&vec![0x02; len]);
        prop_assert!(io.link.disconnected.is_some());
    }

    #[test]
    fn sgl_parse_total(bytes in any::<[u8; 16]>(), limit in any::<u32>()) {
        let raw = RawSglDescriptor::read_from_bytes(&bytes).unwrap();
        if let Ok(p2ptgt::wire::DataPointer::InCapsule { offset_bytes, length_bytes }) = raw.parse(limit) {
            prop_assert!(u64::from(offset_bytes) + u64::from(length_bytes) <= u64::from(limit));
        }
    }

    #[test]
    fn connect_private_data_total(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        let limits = ConnectLimits { admin_queue_entries_max: 32, io_queue_entries_max: 128, queue_id_max: 8 };
        if let Ok(request) = ConnectRequest::parse(&bytes, &limits) {
            prop_assert!(request.host_send_queue_entries >= 2 && request.host_send_queue_entries <= 128);
            prop_assert!(request.queue_id <= 8);
        }
    }

    #[test]
    fn log_window_total(command in any::<[u8; 64]>(), log_len in 0usize..5000) {
        let command = RawCommand::read_from_bytes(&command).unwrap();
        let log = vec![1u8; log_len];
        if let Ok(request) = LogRequest::parse(&command) {
            if let Ok(window) = request.window(&log) {
                prop_assert!(window.len() as u64 <= request.length_bytes);
            }
        }
    }
}
