//! The `ferroray` command: start, stop and look at a cluster.
//!
//! The binary (`src/bin/ferroray.rs`) and the Python package's `ferroray`
//! script both call [`main`]; they differ only in how a background daemon
//! starts the program again (`relaunch`).

use crate::client::HeadClient;
use crate::daemon::{self, DaemonOptions, Ready};
use crate::error::{ClusterError, Result};
use crate::session::{self, Session};
use crate::tls::Credentials;
use crate::wire::{ClusterView, EventRow, ListWhat, Listing, NodeEntry, MAX_ROWS};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ferroray_common::{resources, NodeId, ResourceSet};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The variable a token may be passed in instead of `--token-file`:
/// `TOKEN:FINGERPRINT`, the token file's two lines in hex (without the
/// `sha256:` prefix).
pub const TOKEN_ENV: &str = "FERRORAY_TOKEN";

#[derive(Parser, Debug)]
#[command(name = "ferroray", about = "Start, stop and inspect a ferroray cluster", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a node daemon: the head (--head) or a node that joins one (--address)
    Start(StartArgs),
    /// Stop every daemon started on this machine (by this user)
    Stop(StopArgs),
    /// Show the cluster's nodes, resources, tasks, objects and store memory
    Status(ConnectArgs),
    /// List the cluster's nodes, tasks, actors or objects
    List(ListArgs),
    /// Write the cluster's task timeline in Chrome trace format (for Perfetto or chrome://tracing)
    Timeline(TimelineArgs),
}

#[derive(Args, Debug)]
struct StartArgs {
    /// Start the head: the control store, and a node
    #[arg(long, conflicts_with = "address", required_unless_present = "address")]
    head: bool,
    /// Join the cluster whose head is at HOST:PORT
    #[arg(long)]
    address: Option<String>,
    /// The head's port (0: any free port)
    #[arg(long, default_value_t = daemon::DEFAULT_PORT)]
    port: u16,
    /// The address to bind and to give to others
    #[arg(long, default_value = "127.0.0.1")]
    node_ip_address: IpAddr,
    /// CPUs this node offers (default: the machine's)
    #[arg(long)]
    num_cpus: Option<f64>,
    /// GPUs this node offers
    #[arg(long)]
    num_gpus: Option<f64>,
    /// Custom resources, as JSON: '{"a": 2}'
    #[arg(long)]
    resources: Option<String>,
    /// Bytes of shared memory for the object store
    #[arg(long)]
    object_store_memory: Option<u64>,
    /// The head's: keep the control store's tables (and the cluster's token,
    /// certificate and key) in Redis at redis://HOST:PORT[/DB], so that a
    /// restarted head recovers them and its nodes rejoin it (default: in
    /// the head's memory, fresh credentials each start). Also read from
    /// FERRORAY_STORAGE, which keeps a password in the URL out of `ps`
    #[arg(long, env = "FERRORAY_STORAGE", hide_env_values = true)]
    storage: Option<String>,
    /// Stay in the foreground until stopped (SIGTERM or Ctrl-C)
    #[arg(long)]
    block: bool,
    /// The token file of the head (default: the head's on this machine)
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The head's: milliseconds between a node's heartbeats
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// The head's: a node silent this long (ms) is declared dead
    #[arg(long, default_value_t = 10_000)]
    node_timeout_ms: u64,
    /// A node's: how long (ms) it tries to reach a head that went away
    #[arg(long, default_value_t = 60_000)]
    head_timeout_ms: u64,
    /// Encrypt links to other nodes between loopback addresses too (by
    /// default those are plain TCP, both ends proving they hold the token
    /// without sending it; links between other addresses always use TLS)
    #[arg(long)]
    tls_on_loopback: bool,
}

#[derive(Args, Debug)]
struct StopArgs {
    /// Seconds to wait for a daemon to stop before it is killed
    #[arg(long, default_value_t = 10)]
    grace_period: u64,
}

#[derive(Args, Debug, Clone)]
struct ConnectArgs {
    /// The head's HOST:PORT (default: the head started on this machine)
    #[arg(long)]
    address: Option<String>,
    /// The token file of the head (default: the head's on this machine)
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ListArgs {
    what: Listable,
    /// KEY=VALUE, ANDed, on any column (`list nodes`: node_id, state, address,
    /// is_head; `list tasks`: task_id, name, state, node_id, ...)
    #[arg(long)]
    filter: Vec<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Listable {
    Nodes,
    Tasks,
    Actors,
    Objects,
    Jobs,
}

#[derive(Args, Debug)]
struct TimelineArgs {
    /// The file to write
    #[arg(short, long, default_value = "timeline.json")]
    output: PathBuf,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs the command in `args` (the program's name first); the exit code.
/// `relaunch` is how to run this program again, for a daemon started in the
/// background (it gets `args` with `--block` added).
pub fn main(args: Vec<OsString>, relaunch: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let outcome = match cli.command {
        Command::Start(a) if a.block => start_blocking(a),
        Command::Start(a) => start_background(a, &args, relaunch),
        Command::Stop(a) => stop(a),
        Command::Status(a) => status(a),
        Command::List(a) => list(a),
        Command::Timeline(a) => timeline(a),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferroray: {e}");
            1
        }
    }
}

fn options(a: &StartArgs) -> Result<DaemonOptions> {
    if let Some(url) = &a.storage {
        if !a.head {
            return Err(ClusterError::Config("--storage is the head's (start --head)".into()));
        }
        crate::storage::check_url(url)?;
    }
    let mut o = DaemonOptions::new(a.address.clone());
    o.storage = a.storage.clone();
    o.host = a.node_ip_address;
    o.port = a.port;
    if let Some(n) = a.num_cpus {
        resources::check_amount("--num-cpus", n)?;
        o.resources.set(resources::CPU, n);
    }
    if let Some(n) = a.num_gpus {
        resources::check_amount("--num-gpus", n)?;
        o.resources.set(resources::GPU, n);
    }
    if let Some(json) = &a.resources {
        let custom: BTreeMap<String, f64> = serde_json::from_str(json).map_err(|e| {
            ClusterError::Config(format!("--resources {json:?}: {e} (expected '{{\"name\": amount}}')"))
        })?;
        for (name, amount) in custom {
            if name == resources::CPU || name == resources::GPU {
                return Err(ClusterError::Config(format!(
                    "--resources: use --num-{}s for {name}",
                    name.to_lowercase()
                )));
            }
            resources::check_amount(&format!("resource {name}"), amount)?;
            o.resources.set(&name, amount);
        }
    }
    o.object_store_memory = a.object_store_memory;
    if let Some(addr) = &a.address {
        daemon::check_address(addr)?;
        o.token = given_token(a.token_file.as_ref())?;
    }
    o.heartbeat_interval = Duration::from_millis(a.heartbeat_ms);
    o.node_timeout = Duration::from_millis(a.node_timeout_ms);
    o.head_timeout = Duration::from_millis(a.head_timeout_ms);
    o.tls_on_loopback = a.tls_on_loopback;
    Ok(o)
}

/// A token and fingerprint given on the command line or in the environment.
fn given_token(file: Option<&PathBuf>) -> Result<Option<Credentials>> {
    if let Some(path) = file {
        return session::read_token(path).map(Some);
    }
    match std::env::var(TOKEN_ENV) {
        Ok(text) => Credentials::from_env(&text).map(Some).ok_or_else(|| {
            ClusterError::Config(format!(
                "{TOKEN_ENV} does not hold TOKEN:FINGERPRINT (the token file's two lines, in hex)"
            ))
        }),
        Err(_) => Ok(None),
    }
}

fn ready_message(r: &Ready, session: &Session) -> String {
    if !r.is_head {
        return format!("Started node {} (pid {}), joined to the cluster at {}.", r.node_id, r.pid, r.head);
    }
    let (host, port) = r.head.rsplit_once(':').unwrap_or((&r.head, "PORT"));
    let loopback = host.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let reach = if loopback {
        "\nIt listens on loopback only: for other machines to reach it, start it with\n\
         --node-ip-address set to one of this machine's addresses, or 0.0.0.0 for all."
    } else {
        ""
    };
    format!(
        "Started the head of a ferroray cluster at {head} (node {id}, pid {pid}).\n\
         \n\
         Add a node on this machine:      ferroray start --address {head}\n\
         See the cluster:                 ferroray status\n\
         Stop every daemon started here:  ferroray stop\n\
         \n\
         Links are TLS. The token file {token} (mode 600) holds the cluster\n\
         token and the SHA-256 fingerprint of the head's certificate: whoever has it may\n\
         join. For a node on another machine, or of another user, copy the file there\n\
         privately (scp, say), chmod 600 it, and give it:\n\
         \n\
         \x20   ferroray start --address HEAD_IP:{port} --node-ip-address NODE_IP --token-file FILE\n\
         \n\
         or set {TOKEN_ENV}=TOKEN:FINGERPRINT (the file's two lines in hex, without \"sha256:\").\
         {reach}",
        head = r.head,
        id = r.node_id,
        pid = r.pid,
        token = session.token_path().display(),
    )
}

fn start_blocking(a: StartArgs) -> Result<()> {
    let opts = options(&a)?;
    let session = Session::open()?;
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    };
    let result = daemon::run(opts, &session, shutdown, |r| println!("{}", ready_message(r, &session)));
    session.clean_if_unused();
    result
}

/// Starts this program again with `--block`, in a session of its own and
/// with its output in the session's log, and waits until it is recorded
/// (ready) or has exited (then its log says why).
fn start_background(a: StartArgs, args: &[OsString], relaunch: Vec<OsString>) -> Result<()> {
    options(&a)?;
    let session = Session::open()?;
    let starting = session.log_path(0).with_file_name(format!("starting-{}.log", std::process::id()));
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&starting)
    }
    .map_err(ClusterError::file("cannot write", &starting))?;
    let (program, pre) = relaunch.split_first().ok_or_else(|| ClusterError::Config("nothing to relaunch".into()))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(pre).args(&args[1..]).arg("--block");
    cmd.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: `setsid` is async-signal-safe and touches no memory.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let log_path = session.log_path(pid);
    let _ = std::fs::rename(&starting, &log_path);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(rec) = session.nodes().into_iter().find(|n| n.pid == pid) {
            let ready = Ready {
                node_id: ferroray_common::NodeId(u64::from_str_radix(&rec.node_id, 16).unwrap_or(0)),
                head: rec.head,
                is_head: rec.is_head,
                pid,
            };
            println!("{}", ready_message(&ready, &session));
            println!("Its output goes to {}.", log_path.display());
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = std::fs::remove_file(&log_path);
            session.clean_if_unused();
            eprint!("{output}");
            return Err(ClusterError::Config(format!("the daemon did not start ({status})")));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ClusterError::Timeout("starting the daemon"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Signals every daemon recorded here (nodes before the head, so that they
/// leave while it listens), waits for each, and kills what outlives the
/// grace period.
fn stop(a: StopArgs) -> Result<()> {
    let session = Session::open()?;
    let nodes = session.nodes();
    if nodes.is_empty() {
        println!("No ferroray daemon is running on this machine.");
        session.clean_if_unused();
        return Ok(());
    }
    let (heads, others): (Vec<_>, Vec<_>) = nodes.into_iter().partition(|n| n.is_head);
    for group in [others, heads] {
        for n in &group {
            signal(n, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(a.grace_period);
        for n in &group {
            while session::process_start_time(n.pid) == Some(n.start_time) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if session::process_start_time(n.pid) == Some(n.start_time) {
                eprintln!("ferroray: pid {} did not stop within {} s: killing it", n.pid, a.grace_period);
                signal(n, libc::SIGKILL);
            }
            session.remove_node(n.pid);
            println!("Stopped {} {} (pid {}).", if n.is_head { "head" } else { "node" }, n.node_id, n.pid);
        }
    }
    session.clean_if_unused();
    Ok(())
}

/// Signals a recorded daemon, if its pid still is that process.
fn signal(n: &session::NodeFile, sig: i32) {
    if session::process_start_time(n.pid) == Some(n.start_time) && n.pid > 1 {
        // SAFETY: a positive pid checked just above to be the daemon.
        unsafe { libc::kill(n.pid as i32, sig) };
    }
}

fn fetch_view(a: &ConnectArgs) -> Result<(String, ClusterView)> {
    with_head(a, |mut client| async move { client.view().await })
}

fn fetch_listing(a: &ConnectArgs, what: ListWhat) -> Result<Listing> {
    let (_, listing) = with_head(a, |mut client| async move { client.list(what).await })?;
    if !listing.missing.is_empty() {
        eprintln!("ferroray: no answer from node(s) {} in time: their rows are missing", listing.missing.join(", "));
    }
    if listing.truncated {
        eprintln!("ferroray: some node had more rows than it sends ({MAX_ROWS}): the list is cut");
    }
    Ok(listing)
}

/// Connects to the head (unless `--address`: the one started here, or the
/// one a node started here joined) and runs `ask` on the connection.
fn with_head<T, F, Fut>(a: &ConnectArgs, ask: F) -> Result<(String, T)>
where
    F: FnOnce(HeadClient) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let session = Session::open()?;
    let address = match &a.address {
        Some(addr) => addr.clone(),
        None => session
            .head()
            .or_else(|| session.nodes().into_iter().next())
            .map(|n| n.head)
            .ok_or_else(|| ClusterError::NoCluster(session.dir().to_path_buf()))?,
    };
    let credentials = match given_token(a.token_file.as_ref())? {
        Some(c) => c,
        None => session.token()?,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = rt.block_on(async {
        let client = HeadClient::connect(&address, &credentials, None).await?;
        ask(client).await
    })?;
    session.clean_if_unused();
    Ok((address, answer))
}

fn resources_of(fixed: &BTreeMap<String, i64>) -> ResourceSet {
    ResourceSet::from_fixed(fixed.clone())
}

fn bytes(b: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if b as f64 >= GIB {
        format!("{:.2} GiB", b as f64 / GIB)
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}

fn status(a: ConnectArgs) -> Result<()> {
    let (address, view) = fetch_view(&a)?;
    let alive: Vec<&NodeEntry> = view.nodes.iter().filter(|n| n.alive).collect();
    let dead = view.nodes.len() - alive.len();
    println!("======== Cluster status: {address} ========");
    println!("Nodes: {} alive, {dead} dead", alive.len());
    for n in &view.nodes {
        let desc = n.desc.clone().unwrap_or_default();
        let state = if n.alive { "ALIVE".to_string() } else { format!("DEAD ({})", n.death_cause) };
        println!(
            "  {:016x}  {}  pid {}  {}{}  heard {} ms ago",
            desc.node_id,
            desc.address,
            desc.pid,
            state,
            if n.is_head { "  head" } else { "" },
            n.last_heard_ms
        );
    }
    let mut total = ResourceSet::new();
    let mut available = ResourceSet::new();
    let (mut tasks, mut objects, mut used, mut capacity) = (0, 0, 0, 0);
    for n in &alive {
        let desc = n.desc.clone().unwrap_or_default();
        let load = n.load.clone().unwrap_or_default();
        total.add(&resources_of(&desc.resources));
        available.add(&resources_of(&load.available));
        tasks += load.tasks;
        objects += load.objects;
        used += load.store_used;
        capacity += desc.store_capacity;
    }
    println!("Resources (alive nodes):");
    for (name, amount) in total.iter() {
        let free = available.get(name);
        println!("  {:.1}/{:.1} {name}", amount - free, amount);
    }
    println!("  {}/{} object store memory", bytes(used), bytes(capacity));
    println!("Tasks: {tasks}");
    println!("Objects: {objects}");
    println!("Jobs: {} running", view.jobs_running);
    println!("Named actors: {}", view.named_actors);
    println!("Functions: {} exported", view.functions);
    Ok(())
}

/// `--filter KEY=VALUE` items, checked against the columns a list has.
fn filters(given: &[String], columns: &[&str]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for f in given {
        let (key, value) =
            f.split_once('=').ok_or_else(|| ClusterError::Config(format!("--filter {f:?}: expected KEY=VALUE")))?;
        let key = key.trim();
        if !columns.contains(&key) {
            return Err(ClusterError::Config(format!("--filter {f:?}: unknown key {key:?} ({})", columns.join(", "))));
        }
        out.push((key.to_string(), value.trim().to_string()));
    }
    Ok(out)
}

/// Prints rows as a table with `columns` as its header, keeping those that
/// pass every filter (case-insensitive equality).
fn print_table(columns: &[&str], rows: Vec<Vec<String>>, filters: &[(String, String)]) {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .filter(|r| {
            filters
                .iter()
                .all(|(k, v)| columns.iter().position(|c| c == k).is_some_and(|i| r[i].eq_ignore_ascii_case(v)))
        })
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([columns[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>().iter().map(String::as_str).collect());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Each task's latest event, in the order tasks were first seen.
fn latest_per_task(events: Vec<EventRow>) -> Vec<(EventRow, u32)> {
    let mut order: Vec<String> = Vec::new();
    let mut last: std::collections::HashMap<String, (EventRow, u32)> = std::collections::HashMap::new();
    let mut events = events;
    events.sort_by_key(|e| e.time_us);
    for e in events {
        match last.get_mut(&e.task_id) {
            Some((prev, attempts)) => {
                *attempts = (*attempts).max(e.attempt + 1);
                *prev = e;
            }
            None => {
                order.push(e.task_id.clone());
                let attempts = e.attempt + 1;
                last.insert(e.task_id.clone(), (e, attempts));
            }
        }
    }
    order.into_iter().filter_map(|t| last.remove(&t)).collect()
}

fn list(a: ListArgs) -> Result<()> {
    match a.what {
        Listable::Nodes => list_nodes(a),
        Listable::Tasks => {
            let columns = ["task_id", "name", "state", "attempts", "node_id", "worker_pid", "actor_id", "error"];
            let f = filters(&a.filter, &columns)?;
            let listing = fetch_listing(&a.connect, ListWhat::Events)?;
            let rows = latest_per_task(listing.events)
                .into_iter()
                .map(|(e, attempts)| {
                    let pid = if e.worker_pid == 0 { String::new() } else { e.worker_pid.to_string() };
                    vec![e.task_id, e.name, e.state, attempts.to_string(), e.node_id, pid, e.actor_id, e.error]
                })
                .collect();
            print_table(&columns, rows, &f);
            Ok(())
        }
        Listable::Actors => {
            let columns = ["actor_id", "class", "name", "state", "node_id", "pid", "detached", "death"];
            let f = filters(&a.filter, &columns)?;
            let listing = fetch_listing(&a.connect, ListWhat::Actors)?;
            let rows = listing
                .actors
                .into_iter()
                .map(|r| {
                    let pid = if r.pid == 0 { String::new() } else { r.pid.to_string() };
                    vec![r.actor_id, r.class, r.name, r.state, r.node_id, pid, r.detached.to_string(), r.death]
                })
                .collect();
            print_table(&columns, rows, &f);
            Ok(())
        }
        Listable::Jobs => {
            let columns = ["job_id", "state", "node_id", "pid", "start_time_ms", "end_time_ms", "entrypoint"];
            let f = filters(&a.filter, &columns)?;
            let listing = fetch_listing(&a.connect, ListWhat::Jobs)?;
            let rows = listing
                .jobs
                .into_iter()
                .map(|j| {
                    let end = if j.end_ms == 0 { String::new() } else { j.end_ms.to_string() };
                    let (job, node) = (format!("{:016x}", j.job_id), NodeId(j.node_id).to_string());
                    vec![job, j.state, node, j.pid.to_string(), j.start_ms.to_string(), end, j.entrypoint]
                })
                .collect();
            print_table(&columns, rows, &f);
            Ok(())
        }
        Listable::Objects => {
            let columns = ["object_id", "location", "size", "holders", "node_id"];
            let f = filters(&a.filter, &columns)?;
            let listing = fetch_listing(&a.connect, ListWhat::Objects)?;
            let rows = listing
                .objects
                .into_iter()
                .map(|r| vec![r.object_id, r.location, r.size.to_string(), r.holders.to_string(), r.node_id])
                .collect();
            print_table(&columns, rows, &f);
            Ok(())
        }
    }
}

/// The Chrome trace format (an object with `traceEvents`): one complete
/// event (`"ph": "X"`) per task attempt that ran, from `RUNNING` to the
/// attempt's end, on a track per worker process (`tid`) of a process per
/// node (`pid`, named by metadata events); attempts still running end now.
fn timeline(a: TimelineArgs) -> Result<()> {
    let listing = fetch_listing(&a.connect, ListWhat::Events)?;
    let mut events = listing.events;
    events.sort_by_key(|e| e.time_us);
    let now_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let mut nodes: Vec<String> = Vec::new();
    let mut started: std::collections::HashMap<(String, u32), EventRow> = std::collections::HashMap::new();
    let mut trace = Vec::new();
    let span = |start: &EventRow, end_us: u64, end_state: &str, nodes: &mut Vec<String>| {
        let node = nodes.iter().position(|n| *n == start.node_id).unwrap_or_else(|| {
            nodes.push(start.node_id.clone());
            nodes.len() - 1
        });
        serde_json::json!({
            "name": start.name,
            "cat": "task",
            "ph": "X",
            "ts": start.time_us,
            "dur": end_us.saturating_sub(start.time_us),
            "pid": node,
            "tid": start.worker_pid,
            "args": {
                "task_id": start.task_id,
                "attempt": start.attempt,
                "state": end_state,
                "actor_id": start.actor_id,
            },
        })
    };
    for e in events {
        let key = (e.task_id.clone(), e.attempt);
        if e.state == "RUNNING" {
            started.insert(key, e);
        } else if let Some(start) = started.remove(&key) {
            trace.push(span(&start, e.time_us, &e.state, &mut nodes));
        }
    }
    let mut still: Vec<EventRow> = started.into_values().collect();
    still.sort_by_key(|e| e.time_us);
    for start in still {
        trace.push(span(&start, now_us, "RUNNING", &mut nodes));
    }
    for (i, node) in nodes.iter().enumerate() {
        trace.push(serde_json::json!({
            "name": "process_name", "ph": "M", "pid": i, "args": { "name": format!("node {node}") },
        }));
    }
    let count = trace.iter().filter(|t| t["ph"] == "X").count();
    let text = serde_json::to_vec(&serde_json::json!({ "traceEvents": trace, "displayTimeUnit": "ms" }))
        .map_err(|e| ClusterError::Protocol(e.to_string()))?;
    std::fs::write(&a.output, text).map_err(ClusterError::file("cannot write", &a.output))?;
    println!("Wrote {count} task runs to {} (open it in Perfetto or chrome://tracing).", a.output.display());
    Ok(())
}

fn list_nodes(a: ListArgs) -> Result<()> {
    let f = filters(&a.filter, &["node_id", "state", "address", "is_head"])?;
    let (_, view) = fetch_view(&a.connect)?;
    let rows = view
        .nodes
        .into_iter()
        .map(|n| {
            let desc = n.desc.unwrap_or_default();
            let available = resources_of(&n.load.unwrap_or_default().available);
            let resources: Vec<String> = resources_of(&desc.resources)
                .iter()
                .map(|(name, total)| format!("{name}={}/{}", available.get(name), total))
                .collect();
            let state = if n.alive { "ALIVE" } else { "DEAD" };
            vec![
                format!("{:016x}", desc.node_id),
                state.to_string(),
                desc.address,
                desc.pid.to_string(),
                n.is_head.to_string(),
                resources.join(" "),
            ]
        })
        .collect();
    print_table(&["node_id", "state", "address", "pid", "is_head", "resources"], rows, &f);
    Ok(())
}
