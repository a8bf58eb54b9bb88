//! End-to-end scenarios in the QEMU guest (rxe + the kernel NVMe/RDMA host). They boot
//! a VM each, so they are opt-in: `cargo test -p initiator-tests -- --ignored
//! --test-threads=1` (what `.ci/run` does after building p2ptgt in release mode).

use initiator_tests::run_scenario;

fn expect(scenario: &str, vm_args: &[&str], env: &[(&str, &str)], at_least: u32) {
    let (passed, failed, status) = run_scenario(scenario, vm_args, env);
    assert_eq!(failed, 0, "{scenario}: {failed} checks failed");
    assert!(passed >= at_least, "{scenario}: only {passed} checks ran");
    assert_eq!(status, 0, "{scenario}: guest exit status");
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn host_memory_path_with_the_kernel_host() {
    expect("host-memory.sh", &[], &[], 40);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn cmb_path_keeps_payload_out_of_host_memory() {
    expect("cmb.sh", &["--dma-trace"], &[("CMB_TEST_SIZE", "96M")], 11);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn small_cmb_applies_backpressure() {
    // 2 MiB: 14 buffers of 128 KiB. With 4 MiB (30 buffers) the host had sometimes
    // not got more than 30 commands to the target at once, and nothing had to wait.
    let env = [("CMB_TEST_SIZE", "64M"), ("EXPECT_BUFFER_WAITS", "1"), ("FIO_EXTRA", "--bsrange=128k-128k --iodepth=128")];
    expect("cmb.sh", &["--cmb-mb", "2", "--dma-trace"], &env, 12);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn compare_and_write_has_one_winner_and_copy_verify_compare_work() {
    expect("nvm-commands.sh", &[], &[], 17);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn queue_waiting_for_buffers_is_woken_by_another_queue() {
    // 2 MiB: 14 buffers of 128 KiB, kept empty by a QD128 job on one I/O queue while a
    // QD1 job on the other waits for buffers; no host I/O timeout or reconnect allowed.
    expect("fairness.sh", &["--cmb-mb", "2"], &[], 9);
}

#[test]
#[ignore = "boots two QEMU guests; run with --ignored"]
fn remote_host_waiting_for_buffers_is_woken_by_another_host() {
    expect("fairness.sh", &["--cmb-mb", "2", "--remote"], &[("FAIRNESS_REMOTE", "1")], 11);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn idle_killed_silent_and_excess_peers_cannot_exhaust_the_target() {
    // 500 peers that never send Connect, 200 killed mid-handshake, a host that takes no
    // responses, the per-peer limit; the kernel host verifies meanwhile.
    expect("peers.sh", &[], &[("PEERS_STEPS", "1 2 3 4")], 22);
}

#[test]
#[ignore = "boots two QEMU guests; run with --ignored"]
fn target_listens_again_after_its_rdma_device_comes_back() {
    // The remote host's rxe stays up while the target's goes and comes back, so the
    // kernel host reconnects by itself.
    expect("peers.sh", &["--remote"], &[("PEERS_STEPS", "5")], 9);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn file_namespace_falls_back_to_host_buffers() {
    expect("file-backed.sh", &[], &[], 5);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn discovery_idle_cpu_and_sigterm_under_load() {
    expect("lifecycle.sh", &[], &[], 5);
}

#[test]
#[ignore = "boots two QEMU guests; run with --ignored"]
fn remote_and_local_hosts_at_once() {
    expect("remote.sh", &["--remote"], &[], 4);
}

#[test]
#[ignore = "boots two QEMU guests; run with --ignored"]
fn multipath_over_two_devices_follows_ana_and_survives_a_link_flap_and_a_port_removal() {
    // The host on the initiator guest: port 2's link is a link of its own, and a flap
    // of it while idle must cost nothing.
    expect("multipath.sh", &["--remote"], &[], 16);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn dh_hmac_chap_with_every_hash_and_group_refusals_and_reauthentication() {
    expect("auth.sh", &[], &[], 28);
}

#[test]
#[ignore = "boots two QEMU guests; run with --ignored"]
fn reservations_between_two_hosts_fence_persist_and_notify() {
    expect("reservations.sh", &["--remote"], &[], 43);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn hostile_host_with_cmb_buffers() {
    // CMB mode takes no in-capsule data, so the churn closes queues with keyed writes
    // fetching or executing; fewer cycles than the host-buffer run (which lends receive
    // slots) keep the guest lean.
    expect("hostile.sh", &[], &[("P2PMEM", "auto"), ("CHURN", "300")], 13);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn hostile_host_with_host_buffers() {
    expect("hostile.sh", &[], &[("P2PMEM", "off")], 13);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn backend_errors_become_statuses() {
    expect("backend-errors.sh", &[], &[], 6);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn answers_as_the_kernel_target_does() {
    // nvmet and p2ptgt in one guest, asked the same questions; differences.tsv lists
    // the accepted differences.
    expect("conformance.sh", &[], &[], 8);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn live_reconfiguration_under_a_connected_host() {
    // Namespaces added, grown and removed under fio; discovery notices; restore, SIGHUP,
    // save and restart; bad requests.
    expect("reconfigure.sh", &[], &[], 47);
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn several_ssds_behind_a_switch_share_one_cmb() {
    // Three SSDs behind a PCIe switch, one with a CMB, one more outside: provider choice
    // by topology, the kernel's refusal at start-up, fio on all four, the SSDs' own DMA
    // trace, and a copy between SSDs through the CMB.
    expect("switch.sh", &["--switch", "3", "--switch-cmb", "2", "--outside", "--dma-trace"], &[], 24);
}
