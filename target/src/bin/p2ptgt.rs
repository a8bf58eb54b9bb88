//! `p2ptgt`: command line → configuration → serve; or change and query a running
//! target through its control socket.
//!
//! Exit codes: 0 done; 1 the target refused the change, or `serve` failed to start
//! (the message says why); 2 the command line is wrong; 3 no target answers on the
//! control socket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use p2ptgt::config::{self, NamespaceConfig, P2pMem, PortConfig, ServeConfig, SubsystemConfig};
use p2ptgt::control::client::{self, CallError};
use p2ptgt::control::SubsystemDefaults;
use p2ptgt::core::Limits;
use serde_json::{json, Value};
use p2ptgt::error::SetupError;
use p2ptgt::serve::{self, ServeOptions};

#[derive(Parser)]
#[command(version, about = "NVMe-over-Fabrics RDMA target with a CMB data path")]
struct Cli {
    /// The running target's control socket.
    #[arg(long, global = true, default_value = DEFAULT_CONTROL)]
    control: PathBuf,
    /// Print the target's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve namespaces over NVMe/RDMA until SIGTERM or SIGINT; SIGHUP reloads --config.
    Serve(Box<ServeArgs>),
    /// Print the running target's counters as one JSON object.
    Stats,
    /// Write the running configuration in `nvmetcli save` JSON to FILE (atomically), or
    /// to standard output.
    Save { file: Option<PathBuf> },
    /// Make the running configuration that of an nvmetcli JSON file, changing only what
    /// differs: hosts of everything else stay connected.
    Restore { file: PathBuf },
    /// Add or remove subsystems, or open one to any host.
    #[command(subcommand)]
    Subsystem(SubsystemCommand),
    /// Add, remove, enable, disable or resize namespaces.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// Allow or refuse hosts.
    #[command(subcommand)]
    Host(HostCommand),
    /// Listen on another address, or stop listening on one.
    #[command(subcommand)]
    Port(PortCommand),
    /// Copy blocks from one namespace to another (on one SSD or two) through the memory
    /// of a p2pmem provider both SSDs reach, so the data never lands in host DRAM.
    Copy {
        /// Source: NQN/NSID or NQN/NSID/LBA (LBA 0 if left out).
        #[arg(value_parser = parse_place)]
        from: Value,
        /// Destination, likewise.
        #[arg(value_parser = parse_place)]
        to: Value,
        /// Logical blocks to copy.
        #[arg(long)]
        blocks: u64,
        /// auto (a provider both reach), off (host memory, to compare) or a provider's BDF.
        #[arg(long, default_value = "auto")]
        via: String,
    },
    /// Call any control method with JSON parameters (see the control protocol).
    Rpc { method: String, params: Option<String> },
}

#[derive(Subcommand)]
enum SubsystemCommand {
    Add {
        nqn: String,
        #[arg(long)]
        serial: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        firmware: Option<String>,
        #[arg(long, value_parser = parse_oui)]
        ieee_oui: Option<u32>,
        #[arg(long)]
        cntlid_min: Option<u16>,
        #[arg(long)]
        cntlid_max: Option<u16>,
        #[arg(long)]
        allow_any_host: bool,
        /// Host NQN allowed to connect (repeatable).
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
    },
    /// Stop serving a subsystem; its hosts' controllers are torn down.
    Remove { nqn: String },
    /// Let any host connect (on), or only the allowed ones (off).
    AllowAnyHost {
        nqn: String,
        #[arg(value_parser = ["on", "off"])]
        allow: String,
    },
}

#[derive(Args)]
struct NamespaceName {
    #[arg(long)]
    subsystem: String,
    #[arg(long)]
    nsid: u32,
}

#[derive(Subcommand)]
enum NamespaceCommand {
    Add {
        #[arg(long)]
        subsystem: String,
        /// NSID (default: the lowest free one).
        #[arg(long)]
        nsid: Option<u32>,
        /// Block device or file.
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        uuid: Option<String>,
        #[arg(long)]
        nguid: Option<String>,
        /// auto, off or a PCI address (default: the target's --p2pmem).
        #[arg(long)]
        p2pmem: Option<String>,
        /// Configure it without serving it yet.
        #[arg(long)]
        disabled: bool,
        /// Refuse writes (Namespace is Write Protected).
        #[arg(long)]
        read_only: bool,
        /// Answer reservation commands with Invalid Opcode.
        #[arg(long)]
        no_reservations: bool,
    },
    /// Remove a namespace; commands running on it finish.
    Remove(NamespaceName),
    Enable(NamespaceName),
    Disable(NamespaceName),
    /// Read the size of the file or device again and tell hosts.
    Resize(NamespaceName),
    /// Refuse writes (on) or take them again (off); hosts see the block device
    /// turn read-only or writable.
    ReadOnly {
        #[command(flatten)]
        name: NamespaceName,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Subcommand)]
enum PortCommand {
    /// Listen on ADDR[:PORT] (port 4420 by default); every subsystem is served there
    /// unless --subsystem names those to serve.
    Add {
        address: String,
        /// Port ID as discovery reports it (default: the lowest free one).
        #[arg(long)]
        id: Option<u16>,
        /// Serve only this subsystem there (repeat for more).
        #[arg(long = "subsystem", value_name = "NQN")]
        subsystems: Vec<String>,
    },
    /// Stop listening on port ID; the queues that came through it close.
    Remove { id: u16 },
    /// Set ANA group GROUP's state on port ID: optimized, non-optimized, inaccessible,
    /// persistent-loss or change. Hosts connected through the port are told.
    Ana { id: u16, group: u32, state: String },
}

#[derive(Subcommand)]
enum HostCommand {
    Add {
        #[arg(long)]
        subsystem: String,
        host: String,
    },
    /// Refuse the host's new connects (its controllers already connected stay).
    Remove {
        #[arg(long)]
        subsystem: String,
        host: String,
    },
}

const DEFAULT_CONTROL: &str = "/run/p2ptgt.sock";

#[derive(Args)]
struct ServeArgs {
    /// ADDR[:PORT] to listen on (port 4420 by default); repeat it for ports 2, 3, ...
    /// With --config it replaces the first port's address (once only).
    #[arg(long)]
    listen: Vec<String>,
    /// Subsystem NQN to serve the namespaces under.
    #[arg(long)]
    subsystem: Option<String>,
    /// Block device or file backing a namespace (NSIDs 1, 2, ... in order).
    #[arg(long = "namespace")]
    namespaces: Vec<PathBuf>,
    /// Host NQN allowed to connect (repeatable).
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Let any host connect.
    #[arg(long, conflicts_with = "allow_hosts")]
    allow_any_host: bool,
    /// HOSTNQN=SECRET: that host must authenticate (DH-HMAC-CHAP) with this `DHHC-1:`
    /// secret (as `nvme gen-dhchap-key` prints it), or with the one in file SECRET
    /// (which keeps it out of the process list). Repeatable; overrides --config.
    #[arg(long = "dhchap-key", value_name = "HOSTNQN=SECRET")]
    dhchap_keys: Vec<String>,
    /// HOSTNQN=SECRET: the controller's secret, for a host that authenticates the
    /// controller in turn (`nvme connect --dhchap-ctrl-secret`).
    #[arg(long = "dhchap-ctrl-key", value_name = "HOSTNQN=SECRET")]
    dhchap_ctrl_keys: Vec<String>,
    /// HOSTNQN=HASH: hmac(sha256) (the default), hmac(sha384) or hmac(sha512).
    #[arg(long = "dhchap-hash", value_name = "HOSTNQN=HASH")]
    dhchap_hashes: Vec<String>,
    /// HOSTNQN=GROUP: null (the default) or ffdhe2048, 3072, 4096, 6144, 8192.
    #[arg(long = "dhchap-dhgroup", value_name = "HOSTNQN=GROUP")]
    dhchap_groups: Vec<String>,
    /// Payload buffers: auto (the CMB of the namespace's SSD), off, or a PCI address.
    #[arg(long, default_value = "auto")]
    p2pmem: P2pMem,
    /// Serve Prometheus metrics over HTTP on [ADDR:]PORT (a bare port binds 127.0.0.1).
    #[arg(long, value_parser = serve::metrics::parse_listen)]
    metrics: Option<std::net::SocketAddr>,
    /// nvmetcli JSON configuration (`nvmetcli save` format); SIGHUP reloads it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// File that keeps reservations with Persist Through Power Loss across restarts
    /// (default with --config: beside it, as NAME.reservations.json).
    #[arg(long)]
    reservations: Option<PathBuf>,
    /// In-capsule data bytes per I/O command (0 disables; forced to 0 in CMB mode).
    #[arg(long, default_value_t = 4096)]
    in_capsule_bytes: u32,
    /// Largest transfer one command may move (MDTS), in KiB: 128, 256, 512 or 1024.
    /// Lowered, with a warning, when a payload pool cannot hold one per I/O queue.
    #[arg(long, default_value_t = 128)]
    mdts_kib: u32,
    /// Firmware revision reported to hosts (at most 8 characters; default: the
    /// p2ptgt version).
    #[arg(long)]
    firmware: Option<String>,
    /// IEEE OUI reported to hosts (24 bits, e.g. 0x001b21).
    #[arg(long, value_parser = parse_oui)]
    ieee_oui: Option<u32>,
    /// Maximum I/O queue depth (CAP.MQES + 1).
    #[arg(long, default_value_t = 128)]
    queue_depth: u32,
    /// Maximum I/O queues per controller.
    #[arg(long, default_value_t = 8)]
    io_queues: u16,
    /// Host buffer pool size in MiB.
    #[arg(long, default_value_t = 64)]
    host_pool_mb: usize,
    /// CMB pool size in MiB (default: all the provider has available).
    #[arg(long)]
    cmb_pool_mb: Option<usize>,
    /// Microseconds a queue thread with at most two commands in flight keeps polling
    /// after activity before it sleeps (0 disables).
    #[arg(long, default_value_t = 150)]
    poll_us: u64,
    /// Keep the SSD's reads and writes on interrupts even where its block device has
    /// poll queues. By default a polling queue thread (see --poll-us) with at most two
    /// commands in flight polls the SSD for their completions too.
    #[arg(long)]
    no_polled_io: bool,
    /// CPUs to pin queue threads to, as a list with ranges (`0-3,6`): queue i runs on
    /// the (i mod n)-th; with --poll-groups, one poll group per CPU. Default: not pinned.
    #[arg(long, value_parser = parse_cpu_list)]
    cpus: Option<CpuList>,
    /// The data path for dedicated cores: one busy-polling thread per CPU of --cpus
    /// serves all queues (polling their completion queues and the SSD's polled queue)
    /// and never sleeps while it has one. It keeps those CPUs busy all the time.
    #[arg(long, requires = "cpus")]
    poll_groups: bool,
    /// Receive slots of each poll group's shared receive queue on each RDMA device: the
    /// I/O queues a group runs there share them, so receive memory grows with groups,
    /// not connections. 0 gives every I/O queue receives of its own.
    #[arg(long, default_value_t = 1024, requires = "poll_groups")]
    srq_entries: u32,
    /// Connections accepted at once, in total (lowered to what the file descriptor
    /// limit allows).
    #[arg(long, default_value_t = Limits::default().connections_max)]
    max_connections: usize,
    /// Connections accepted at once from one peer address.
    #[arg(long, default_value_t = Limits::default().connections_per_peer_max)]
    max_connections_per_peer: usize,
    /// Queues one host NQN may have connected at once, over all its controllers.
    #[arg(long, default_value_t = Limits::default().queues_per_host_max)]
    max_queues_per_host: usize,
    /// Controllers one host NQN may have at once.
    #[arg(long, default_value_t = Limits::default().controllers_per_host_max)]
    max_controllers_per_host: usize,
    /// Milliseconds an accepted connection has to send a valid NVMe Connect.
    #[arg(long, default_value_t = Limits::default().connect_timeout.as_millis() as u64)]
    connect_timeout_ms: u64,
    /// Milliseconds a response may wait for the host to take it before its queue closes.
    #[arg(long, default_value_t = Limits::default().response_timeout.as_millis() as u64)]
    response_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
struct CpuList(Vec<usize>);

fn parse_cpu_list(text: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("`{part}` is not a CPU number or range"));
        let (first, last) = (number(first)?, number(last)?);
        if first > last || last >= 1024 {
            return Err(format!("`{part}` is not a CPU range below 1024"));
        }
        cpus.extend(first..=last);
    }
    if cpus.is_empty() {
        return Err("no CPUs listed".into());
    }
    Ok(CpuList(cpus))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Serve(args) => serve_command(*args, cli.control),
        other => return client_command(other, &cli.control, cli.json),
    };
    match command {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("p2ptgt: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A subcommand that talks to a running target.
fn client_command(command: Command, control: &Path, json: bool) -> ExitCode {
    let (method, params, done) = match request(command) {
        Ok(request) => request,
        Err(message) => {
            eprintln!("p2ptgt: {message}");
            return ExitCode::from(2);
        }
    };
    match client::call(control, &method, params) {
        Ok(result) => match done(result, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("p2ptgt: {message}");
                ExitCode::FAILURE
            }
        },
        Err(error @ CallError::Unreachable { .. }) => {
            let mut message = error.to_string();
            if let Some(cause) = std::error::Error::source(&error) {
                message = format!("{message} ({cause})");
            }
            eprintln!("p2ptgt: {message}");
            ExitCode::from(3)
        }
        Err(error) => {
            eprintln!("p2ptgt: {method}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What to do with a call's result: print it, or write it somewhere.
type Done = Box<dyn FnOnce(Value, bool) -> Result<(), String>>;

fn say(text: String) -> Done {
    Box::new(move |result, json| {
        if json { println!("{result}") } else { println!("{text}") }
        Ok(())
    })
}

fn print_json() -> Done {
    Box::new(|result, _| {
        println!("{result}");
        Ok(())
    })
}

/// The method, parameters and printer of a client subcommand.
fn request(command: Command) -> Result<(String, Value, Done), String> {
    let (method, params, done): (&str, Value, Done) = match command {
        Command::Serve(_) => return Err("serve talks to no target".into()),
        Command::Stats => ("stats", json!({}), print_json()),
        Command::Save { file: None } => ("save", json!({}), Box::new(|result, _| {
            println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
            Ok(())
        })),
        Command::Save { file: Some(file) } => ("save", json!({}), Box::new(move |result, json| {
            let text = serde_json::to_string_pretty(&result).unwrap_or_default() + "\n";
            write_atomically(&file, text.as_bytes()).map_err(|e| format!("writing {}: {e}", file.display()))?;
            if !json {
                println!("saved the running configuration to {}", file.display());
            }
            Ok(())
        })),
        Command::Restore { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            let config: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
            ("restore", json!({"config": config}), Box::new(|result, json| {
                if json {
                    println!("{result}");
                    return Ok(());
                }
                let mut lines = Vec::new();
                for (key, value) in result.as_object().into_iter().flatten() {
                    let items: Vec<&str> = value.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    if !items.is_empty() {
                        lines.push(format!("{}: {}", key.replace('_', " "), items.join(", ")));
                    }
                }
                if lines.is_empty() {
                    println!("nothing to change");
                } else {
                    println!("{}", lines.join("\n"));
                }
                Ok(())
            }))
        }
        Command::Subsystem(SubsystemCommand::Add { nqn, serial, model, firmware, ieee_oui, cntlid_min, cntlid_max, allow_any_host, allow_hosts }) => {
            let text = format!("added subsystem {nqn}");
            let params = json!({
                "nqn": nqn, "serial": serial, "model": model, "firmware": firmware, "ieee_oui": ieee_oui,
                "cntlid_min": cntlid_min, "cntlid_max": cntlid_max, "allow_any_host": allow_any_host, "hosts": allow_hosts,
            });
            ("subsystem.add", params, say(text))
        }
        Command::Subsystem(SubsystemCommand::Remove { nqn }) => ("subsystem.remove", json!({"nqn": nqn}), say(format!("removed subsystem {nqn}"))),
        Command::Subsystem(SubsystemCommand::AllowAnyHost { nqn, allow }) => {
            let text = format!("subsystem {nqn}: any host {}", if allow == "on" { "may connect" } else { "refused unless allowed" });
            ("subsystem.allow_any_host", json!({"nqn": nqn, "allow": allow == "on"}), say(text))
        }
        Command::Namespace(NamespaceCommand::Add { subsystem, nsid, path, uuid, nguid, p2pmem, disabled, read_only, no_reservations }) => {
            let params = json!({"subsystem": subsystem, "nsid": nsid.unwrap_or(0), "path": path, "uuid": uuid, "nguid": nguid, "p2pmem": p2pmem, "enabled": !disabled, "read_only": read_only, "reservations": !no_reservations});
            ("namespace.add", params, Box::new(move |result, json| {
                if json {
                    println!("{result}");
                } else {
                    println!("added namespace {} to {subsystem}: {}", result.get("nsid").unwrap_or(&Value::Null), path.display());
                }
                Ok(())
            }))
        }
        Command::Namespace(NamespaceCommand::Remove(n)) => ("namespace.remove", json!({"subsystem": n.subsystem, "nsid": n.nsid}), say(format!("removed namespace {} from {}", n.nsid, n.subsystem))),
        Command::Namespace(NamespaceCommand::Enable(n)) => ("namespace.enable", json!({"subsystem": n.subsystem, "nsid": n.nsid}), say(format!("enabled namespace {} of {}", n.nsid, n.subsystem))),
        Command::Namespace(NamespaceCommand::Disable(n)) => ("namespace.disable", json!({"subsystem": n.subsystem, "nsid": n.nsid}), say(format!("disabled namespace {} of {}", n.nsid, n.subsystem))),
        Command::Namespace(NamespaceCommand::Resize(n)) => {
            let what = format!("namespace {} of {}", n.nsid, n.subsystem);
            ("namespace.resize", json!({"subsystem": n.subsystem, "nsid": n.nsid}), Box::new(move |result, json| {
                if json {
                    println!("{result}");
                } else {
                    let bytes = |key| result.get(key).and_then(Value::as_u64).unwrap_or(0);
                    println!("{what}: {} bytes, was {} bytes", bytes("size_bytes"), bytes("previous_bytes"));
                }
                Ok(())
            }))
        }
        Command::Namespace(NamespaceCommand::ReadOnly { name: n, state }) => {
            let text = format!("namespace {} of {} is {}", n.nsid, n.subsystem, if state == "on" { "read-only" } else { "writable" });
            ("namespace.read_only", json!({"subsystem": n.subsystem, "nsid": n.nsid, "read_only": state == "on"}), say(text))
        }
        Command::Port(PortCommand::Add { address, id, subsystems }) => {
            let address = config::parse_listen(&address).map_err(|e| e.to_string())?;
            let mut params = json!({"address": address.to_string(), "id": id.unwrap_or(0)});
            if !subsystems.is_empty() {
                params["subsystems"] = json!(subsystems);
            }
            ("port.add", params, Box::new(move |result, json| {
                if json {
                    println!("{result}");
                } else {
                    println!("port {} listens on {address}", result.get("id").unwrap_or(&Value::Null));
                }
                Ok(())
            }))
        }
        Command::Port(PortCommand::Remove { id }) => ("port.remove", json!({"id": id}), say(format!("port {id} removed"))),
        Command::Port(PortCommand::Ana { id, group, state }) => {
            ("port.ana_state", json!({"id": id, "group": group, "state": state}), say(format!("ANA group {group} is {state} on port {id}")))
        }
        Command::Host(HostCommand::Add { subsystem, host }) => ("host.add", json!({"subsystem": subsystem, "host": host}), say(format!("{host} may connect to {subsystem}"))),
        Command::Host(HostCommand::Remove { subsystem, host }) => {
            ("host.remove", json!({"subsystem": subsystem, "host": host}), say(format!("{host} may no longer connect to {subsystem}")))
        }
        Command::Copy { from, to, blocks, via } => ("copy", json!({"from": from, "to": to, "blocks": blocks, "via": via}), Box::new(|result, json| {
            if json {
                println!("{result}");
            } else {
                let field = |name: &str| result.get(name).cloned().unwrap_or(Value::Null);
                let via = result.get("provider").and_then(Value::as_str).map_or("host memory".to_string(), |bdf| format!("the memory of {bdf}"));
                println!("copied {} bytes through {via} in {:.2} s ({:.1} MiB/s)", field("bytes"), field("seconds").as_f64().unwrap_or(0.0), field("mib_per_second").as_f64().unwrap_or(0.0));
            }
            Ok(())
        })),
        Command::Rpc { method, params } => {
            let params = match params {
                Some(text) => serde_json::from_str(&text).map_err(|e| format!("params: not JSON: {e}"))?,
                None => json!({}),
            };
            return Ok((method, params, print_json()));
        }
    };
    Ok((method.to_owned(), params, done))
}

/// A copy's end, `NQN/NSID[/LBA]`, as the control protocol's object (NQNs may hold a
/// `/` themselves: the numbers are read from the right).
fn parse_place(text: &str) -> Result<Value, String> {
    let wrong = || format!("{text:?}: expected NQN/NSID or NQN/NSID/LBA");
    let (head, last) = text.rsplit_once('/').ok_or_else(wrong)?;
    let last: u64 = last.parse().map_err(|_| wrong())?;
    let (nqn, nsid, lba) = match head.rsplit_once('/').map(|(nqn, nsid)| (nqn, nsid.parse::<u32>())) {
        Some((nqn, Ok(nsid))) if !nqn.is_empty() => (nqn, nsid, last),
        _ => (head, u32::try_from(last).map_err(|_| wrong())?, 0),
    };
    if nqn.is_empty() {
        return Err(wrong());
    }
    Ok(json!({"nqn": nqn, "nsid": nsid, "lba": lba}))
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never
/// a part: a temporary file beside it, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let temporary = directory.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(&directory)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Splits `HOSTNQN=VALUE` of flag `flag`.
fn host_and_value<'a>(text: &'a str, flag: &str) -> Result<(&'a str, &'a str), SetupError> {
    text.split_once('=').filter(|(host, value)| !host.is_empty() && !value.is_empty()).ok_or_else(|| SetupError::config(flag, "expected HOSTNQN=VALUE"))
}

/// A secret given inline (`DHHC-1:...`) or as the path of a file that holds it.
fn secret_of(value: &str, flag: &str) -> Result<config::Secret, SetupError> {
    if value.starts_with("DHHC-1:") {
        return config::parse_secret(value, flag);
    }
    let text = std::fs::read_to_string(value).map_err(|error| SetupError::config(flag, format!("reading the secret file {value}: {error}")))?;
    config::parse_secret(text.trim(), flag)
}

/// The --dhchap-* flags, over what the config file says.
fn apply_dhchap_flags(args: &ServeArgs, keys: &mut std::collections::BTreeMap<String, config::HostKeys>) -> Result<(), SetupError> {
    for text in &args.dhchap_keys {
        let (host, value) = host_and_value(text, "--dhchap-key")?;
        let secret = secret_of(value, "--dhchap-key")?;
        if let Some(existing) = keys.get_mut(host) {
            existing.key = secret;
        } else {
            keys.insert(host.to_owned(), config::HostKeys::new(secret));
        }
    }
    // The other flags refine the settings of a host that has a key.
    fn keyed<'a>(keys: &'a mut std::collections::BTreeMap<String, config::HostKeys>, host: &str, flag: &str) -> Result<&'a mut config::HostKeys, SetupError> {
        keys.get_mut(host).ok_or_else(|| SetupError::config(flag, format!("{host} has no --dhchap-key")))
    }
    for text in &args.dhchap_ctrl_keys {
        let (host, value) = host_and_value(text, "--dhchap-ctrl-key")?;
        let entry = keyed(keys, host, "--dhchap-ctrl-key")?;
        entry.controller_key = Some(secret_of(value, "--dhchap-ctrl-key")?);
    }
    for text in &args.dhchap_hashes {
        let (host, name) = host_and_value(text, "--dhchap-hash")?;
        let entry = keyed(keys, host, "--dhchap-hash")?;
        entry.hash = config::parse_hash(name, "--dhchap-hash")?;
    }
    for text in &args.dhchap_groups {
        let (host, name) = host_and_value(text, "--dhchap-dhgroup")?;
        let entry = keyed(keys, host, "--dhchap-dhgroup")?;
        entry.group = config::parse_group(name, "--dhchap-dhgroup")?;
    }
    Ok(())
}

fn serve_command(args: ServeArgs, control: PathBuf) -> Result<(), SetupError> {
    let listens = args.listen.iter().map(|address| config::parse_listen(address)).collect::<Result<Vec<_>, _>>()?;
    if args.config.is_some() && listens.len() > 1 {
        return Err(SetupError::config("--listen", "with --config it replaces the first port's address and is given once; put more ports in the file"));
    }
    let listen = listens.first().copied();
    let mut config = match &args.config {
        Some(path) => config::load_nvmetcli(path, listen)?,
        None => {
            listen.ok_or_else(|| SetupError::config("--listen", "required without --config"))?;
            if let Some(twice) = listens.iter().enumerate().find_map(|(i, a)| listens.get(..i)?.contains(a).then_some(a)) {
                return Err(SetupError::config("--listen", format!("{twice} is given twice")));
            }
            let nqn = args.subsystem.clone().ok_or_else(|| SetupError::config("--subsystem", "required without --config"))?;
            if args.namespaces.is_empty() {
                return Err(SetupError::config("--namespace", "at least one is required"));
            }
            let namespaces = args
                .namespaces
                .iter()
                .enumerate()
                .map(|(index, path)| NamespaceConfig::new(index as u32 + 1, path.clone()))
                .collect();
            ServeConfig {
                ports: listens.iter().zip(1..).map(|(&address, id)| PortConfig::new(id, address)).collect(),
                subsystems: vec![SubsystemConfig {
                    nqn,
                    serial: None,
                    model: None,
                    firmware: None,
                    ieee_oui: None,
                    controller_ids: None,
                    allow_any_host: args.allow_any_host,
                    allowed_hosts: args.allow_hosts.clone(),
                    namespaces,
                }],
                in_capsule_data_bytes: None,
                queue_entries_max: None,
                max_transfer_shift: None,
                limits: Default::default(),
                ana: Default::default(),
                host_keys: Default::default(),
            }
        }
    };
    apply_dhchap_flags(&args, &mut config.host_keys)?;
    if !(2..=1024).contains(&args.queue_depth) {
        return Err(SetupError::config("--queue-depth", "must be 2..=1024"));
    }
    let max_transfer_shift = match args.mdts_kib {
        128 => 5,
        256 => 6,
        512 => 7,
        1024 => 8,
        _ => return Err(SetupError::config("--mdts-kib", "must be 128, 256, 512 or 1024")),
    };
    if args.firmware.as_ref().is_some_and(|f| f.is_empty() || f.len() > 8 || !f.is_ascii()) {
        return Err(SetupError::config("--firmware", "must be 1 to 8 ASCII characters"));
    }
    let defaults = SubsystemDefaults { firmware: args.firmware.clone(), ieee_oui: args.ieee_oui };
    for subsystem in &mut config.subsystems {
        defaults.apply(subsystem);
    }
    if args.io_queues == 0 {
        return Err(SetupError::config("--io-queues", "must be at least 1"));
    }
    let counts = [
        ("--max-connections", args.max_connections),
        ("--max-connections-per-peer", args.max_connections_per_peer),
        ("--max-queues-per-host", args.max_queues_per_host),
        ("--max-controllers-per-host", args.max_controllers_per_host),
        ("--connect-timeout-ms", args.connect_timeout_ms as usize),
        ("--response-timeout-ms", args.response_timeout_ms as usize),
    ];
    if let Some((flag, _)) = counts.iter().find(|(_, value)| *value == 0) {
        return Err(SetupError::config(*flag, "must be at least 1"));
    }
    let mut limits = Limits {
        io_queue_entries_max: args.queue_depth,
        io_queues_max: args.io_queues,
        in_capsule_data_bytes: args.in_capsule_bytes.min(p2ptgt::config::IN_CAPSULE_DATA_MAX),
        max_transfer_shift: config.max_transfer_shift.unwrap_or(max_transfer_shift),
        connections_max: args.max_connections,
        connections_per_peer_max: args.max_connections_per_peer,
        queues_per_host_max: args.max_queues_per_host,
        controllers_per_host_max: args.max_controllers_per_host,
        connect_timeout: std::time::Duration::from_millis(args.connect_timeout_ms),
        response_timeout: std::time::Duration::from_millis(args.response_timeout_ms),
        ..Limits::default()
    };
    config.limits.apply(&mut limits);
    let options = ServeOptions {
        p2pmem: args.p2pmem,
        control,
        host_pool_bytes: args.host_pool_mb.max(1) << 20,
        cmb_pool_bytes: args.cmb_pool_mb.map(|mb| mb << 20),
        limits,
        poll_budget: std::time::Duration::from_micros(args.poll_us),
        polled_io: !args.no_polled_io,
        poll_groups: args.poll_groups,
        srq_entries: args.srq_entries,
        cpus: args.cpus.map(|list| list.0).unwrap_or_default(),
        defaults,
        config_file: args.config.clone(),
        listen_flag: listen,
        metrics: args.metrics,
        reservation_file: args.reservations.clone().or_else(|| args.config.as_deref().map(reservation_file_beside)),
    };
    serve::run(config, options)
}

/// `DIR/NAME.reservations.json` for the config file `DIR/NAME.json`.
fn reservation_file_beside(config: &std::path::Path) -> PathBuf {
    let stem = config.file_stem().map_or_else(|| "p2ptgt".into(), |s| s.to_string_lossy().into_owned());
    config.with_file_name(format!("{stem}.reservations.json"))
}

/// A 24-bit IEEE OUI, hexadecimal (with or without 0x) .
fn parse_oui(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u32::from_str_radix(digits, 16).ok().filter(|oui| *oui < 1 << 24).ok_or_else(|| format!("{text:?}: expected up to 6 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::{parse_cpu_list, parse_place};
    use serde_json::json;

    #[test]
    fn copy_places_read_their_numbers_from_the_right() {
        assert_eq!(parse_place("nqn.2026-11.io.p2ptgt:a/1"), Ok(json!({"nqn": "nqn.2026-11.io.p2ptgt:a", "nsid": 1, "lba": 0})));
        assert_eq!(parse_place("nqn.x:a/2/4096"), Ok(json!({"nqn": "nqn.x:a", "nsid": 2, "lba": 4096})));
        assert_eq!(parse_place("nqn.x/y:a/3"), Ok(json!({"nqn": "nqn.x/y:a", "nsid": 3, "lba": 0})));
        assert!(parse_place("nqn.x:a").is_err());
        assert!(parse_place("/1").is_err());
        assert!(parse_place("nqn.x:a/one").is_err());
    }

    #[test]
    fn cpu_lists_take_numbers_and_ranges() {
        assert_eq!(parse_cpu_list("0-2,5").map(|l| l.0), Ok(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("3").map(|l| l.0), Ok(vec![3]));
        for bad in ["", "2-1", "x", "0-", "4096"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
    }
}
