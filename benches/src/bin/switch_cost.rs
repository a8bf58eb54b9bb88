//! What one address-space switch costs on this CPU: a one-byte ping-pong over a
//! socket pair between two threads of one process, then between two processes. Run it
//! on one CPU (`taskset -c 0 switch_cost [ROUND_TRIPS]`), so that every hand-over is a
//! context switch; the difference per round trip, halved, is the price of loading
//! another address space (two per round trip), which a user-space target pays whenever
//! it shares a CPU with another process and a kernel thread does not.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Instant;

const DEFAULT_ROUND_TRIPS: u32 = 20_000;

fn main() -> std::io::Result<()> {
    let first = std::env::args().nth(1);
    if first.as_deref() == Some("echo") {
        // Child side: answer every byte on stdin with the same byte on stdout.
        return echo(&mut std::io::stdin().lock(), &mut std::io::stdout().lock());
    }
    let round_trips = match first {
        Some(text) => text.parse().map_err(|_| std::io::Error::other(format!("round trips: not a number: {text}")))?,
        None => DEFAULT_ROUND_TRIPS,
    };

    let (mut near, mut far) = UnixStream::pair()?;
    let echoer = std::thread::spawn(move || echo(&mut far.try_clone()?, &mut far));
    let threads = ping(&mut near, round_trips)?;
    drop(near);
    echoer.join().map_err(|_| std::io::Error::other("echo thread panicked"))??;

    let (mut near, far) = UnixStream::pair()?;
    let far_out = OwnedFd::from(far.try_clone()?);
    let mut child = Command::new(std::env::current_exe()?)
        .arg("echo")
        .stdin(Stdio::from(OwnedFd::from(far)))
        .stdout(Stdio::from(far_out))
        .spawn()?;
    let processes = ping(&mut near, round_trips)?;
    drop(near);
    child.wait()?;

    println!("round trip between two threads:   {threads:7.2} µs");
    println!("round trip between two processes: {processes:7.2} µs");
    println!("one address-space switch:         {:7.2} µs", (processes - threads) / 2.0);
    Ok(())
}

/// Sends `round_trips` bytes one at a time, each after the previous one came back;
/// returns the mean µs per round trip.
fn ping(stream: &mut UnixStream, round_trips: u32) -> std::io::Result<f64> {
    let mut byte = [0u8; 1];
    let started = Instant::now();
    for _ in 0..round_trips {
        stream.write_all(&byte)?;
        stream.read_exact(&mut byte)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(round_trips.max(1)))
}

fn echo(input: &mut impl Read, output: &mut impl Write) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte)? {
            0 => return Ok(()),
            _ => {
                output.write_all(&byte)?;
                output.flush()?;
            }
        }
    }
}
