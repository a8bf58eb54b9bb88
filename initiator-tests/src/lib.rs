//! End-to-end tests: the real Linux `nvme-rdma` host, nvme-cli and fio against p2ptgt
//! inside the QEMU test bed of `rxe-setup/vm`. Each scenario is a script under
//! `scenarios/` that runs in a guest and ends with "N passed, M failed"; this crate
//! boots the guest, streams the output and asserts the tally.

pub mod rdma;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The p2ptgt binary the scenarios run (built by `cargo build --release -p p2ptgt`).
pub fn target_binary() -> PathBuf {
    repository().join("build/cargo/release/p2ptgt")
}

/// Boots the bed with `vm_args`, runs `scenario` (a file under `scenarios/`) with `env`,
/// and returns the (passed, failed) tally and the guest's exit status.
pub fn run_scenario(scenario: &str, vm_args: &[&str], env: &[(&str, &str)]) -> (u32, u32, i32) {
    for binary in [target_binary(), repository().join("build/cargo/release/hostile")] {
        assert!(binary.exists(), "{} is missing: run `cargo build --release -p p2ptgt -p initiator-tests` first", binary.display());
    }
    let repo = repository();
    let mut command = Command::new(repo.join("rxe-setup/vm/run"));
    command.current_dir(&repo).args(vm_args).arg("--").arg("env");
    for (key, value) in env {
        command.arg(format!("{key}={value}"));
    }
    command.arg(repo.join("initiator-tests/scenarios").join(scenario));
    let output = command.output().unwrap_or_else(|e| panic!("starting rxe-setup/vm/run: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let (passed, failed) = tally(&stdout).unwrap_or_else(|| panic!("{scenario}: no 'N passed, M failed' line"));
    (passed, failed, output.status.code().unwrap_or(-1))
}

/// Parses the last "N passed, M failed" line.
pub fn tally(output: &str) -> Option<(u32, u32)> {
    output.lines().rev().find_map(|line| {
        let (passed, rest) = line.trim().split_once(" passed, ")?;
        let failed = rest.strip_suffix(" failed")?;
        Some((passed.parse().ok()?, failed.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tally_reads_the_last_line() {
        assert_eq!(super::tally("x\n3 passed, 1 failed\n"), Some((3, 1)));
        assert_eq!(super::tally("1 passed, 0 failed\nlater\n"), Some((1, 0)));
        assert_eq!(super::tally("nothing"), None);
    }
}
