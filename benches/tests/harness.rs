//! The fio bench's own harness (benches/guest.py, benches/report.py), run on this
//! machine against a plain file as the "local" mode: a job that fails must fail the
//! run and show as a failed cell, never as a cell left out.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn benches_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A fresh directory for one test's results and disk file.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-harness").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn python(script: &str, args: &[&str], out: &Path, envs: &[(&str, &str)]) -> Output {
    Command::new("python3")
        .arg(benches_dir().join(script))
        .args(args)
        .env("BENCH_OUT", out)
        .envs(envs.iter().copied())
        .output()
        .expect("python3 runs")
}

fn guest_local(out: &Path, device: &Path, jobs: &str) -> Output {
    python(
        "guest.py",
        &["local"],
        out,
        &[("NVME_DEV", device.to_str().unwrap()), ("BENCH_JOBS", jobs), ("BENCH_RUNTIME", "1"), ("BENCH_SIZE", "4M")],
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_job_that_fails_fails_the_run_and_the_report() {
    let out = scratch("fails");
    // fio creates missing directories, but not one inside a file.
    std::fs::write(out.join("a-file"), b"").unwrap();
    let ran = guest_local(&out, &out.join("a-file").join("disk"), "randread-4k-qd1");
    assert_eq!(ran.status.code(), Some(1), "stderr: {}", text(&ran.stderr));
    assert!(text(&ran.stderr).contains("randread-4k-qd1"), "stderr: {}", text(&ran.stderr));
    let results: String = std::fs::read_to_string(out.join("results.json")).unwrap();
    assert!(results.contains("\"failures\": [\n  {"), "{results}");

    let report = python("report.py", &[], &out, &[]);
    assert_eq!(report.status.code(), Some(1), "stderr: {}", text(&report.stderr));
    assert!(text(&report.stderr).contains("FAILED: randread-4k-qd1 on local"), "{}", text(&report.stderr));
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("| randread-4k-qd1 | FAILED |"), "{table}");
}

#[test]
fn a_run_that_completes_reports_every_cell() {
    let out = scratch("completes");
    let ran = guest_local(&out, &out.join("disk"), "randread-4k-qd1,write-128k-qd4");
    assert_eq!(ran.status.code(), Some(0), "stderr: {}", text(&ran.stderr));
    let report = python("report.py", &[], &out, &[]);
    assert_eq!(report.status.code(), Some(0), "stderr: {}", text(&report.stderr));
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(!table.contains("FAILED"), "{table}");
    assert!(table.contains("| randread-4k-qd1 |") && table.contains("MB/s"), "{table}");
}

#[test]
fn a_missing_cell_fails_the_report() {
    let out = scratch("missing");
    let row = r#"{"mode": "kernel-target", "job": "randread-4k-qd16", "metric": "iops", "iops": 1000.0, "mbps": 4.1,
        "ios": 1000, "lat_p50_us": 1.0, "lat_p90_us": 1.0, "lat_p99_us": 1.0, "lat_p999_us": 1.0, "samples": [1000.0]}"#;
    let results = format!(
        r#"{{"runtime_s": 1, "repeat": 1, "clock": "virtual", "kernel": "test", "layout": "single",
        "modes": ["kernel-target", "p2ptgt-host"], "jobs": ["randread-4k-qd16"], "rows": [{row}], "failures": [], "p2ptgt": {{}}}}"#
    );
    std::fs::write(out.join("results.json"), results).unwrap();
    let report = python("report.py", &[], &out, &[]);
    assert_eq!(report.status.code(), Some(1), "stderr: {}", text(&report.stderr));
    assert!(text(&report.stderr).contains("FAILED: randread-4k-qd16 on p2ptgt-host: no result"), "{}", text(&report.stderr));
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.starts_with("Virtual time"), "{table}");
}
