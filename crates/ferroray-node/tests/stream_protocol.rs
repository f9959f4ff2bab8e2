//! The stream protocol at the wire, with an executor driven by hand over the
//! node's socket: what a real worker never sends (a report of a stale
//! attempt, reports out of order) is refused, and the owner never sees an
//! item twice or out of order. The facade's `tests/generators.rs` covers the
//! protocol end to end with real workers.
//!
//! The node accepts as workers only processes it started, so the executor's
//! connection goes through one: the node's worker command is this test
//! binary running [`executor_relay`], which says hello with what the node
//! gave it and then relays bytes between the node and the test.

mod common;

use ferroray_common::{resources, ClusterToken, Error, ResourceSet, RetryExceptions, TaskId, WorkerId};
use ferroray_node::{pool, server, LocalConnection, Node, NodeConfig, WorkerCommand};
use ferroray_protocol::{
    frame, FromNode, FunctionDescriptor, ObjectValue, Payload, ReturnKind, Role, TaskOutcome, TaskSpec, ToNode,
    PROTOCOL_VERSION,
};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const DRIVER: WorkerId = WorkerId(7);

struct Driver {
    node: Node,
    conn: LocalConnection,
    rx: Receiver<FromNode>,
    /// Relays of the workers the node starts connect here.
    listener: std::os::unix::net::UnixListener,
}

/// Where the relay processes connect back to (set in their environment).
const RELAY_ENV: &str = "FERRORAY_TEST_RELAY";

fn start() -> Driver {
    let relay = format!("ferroray-test-relay-{}-{}", std::process::id(), WorkerId::random().0);
    let listener = server::bind_abstract(&relay).expect("relay listener");
    let command = WorkerCommand {
        program: std::env::current_exe().unwrap(),
        args: ["executor_relay", "--exact", "--ignored", "--nocapture", "--test-threads=1"].map(String::from).to_vec(),
        env: vec![(RELAY_ENV.into(), relay)],
    };
    let mut config = NodeConfig::new(command);
    config.resources = ResourceSet::new().with(resources::CPU, 1.0);
    config.store_capacity = 1 << 20;
    config.log_to_driver = false;
    let node = Node::start(config).expect("node starts");
    let (conn, rx) = common::connect(&node, DRIVER);
    Driver { node, conn, rx, listener }
}

impl Driver {
    fn submit_stream(&self, seq: u64, max_retries: u32) -> TaskId {
        let task_id = TaskId { submitter: DRIVER, seq };
        self.conn.send(ToNode::Submit(Box::new(TaskSpec {
            task_id,
            function: FunctionDescriptor::Rust { name: "by::hand".into() },
            args: vec![],
            contained: vec![],
            returns: ReturnKind::Streaming { backpressure: None },
            resources: ResourceSet::new().with(resources::CPU, 1.0),
            max_retries,
            retry_exceptions: RetryExceptions::None,
            parent: None,
            enable_events: false,
            attempt: 0,
            actor: None,
        })));
        task_id
    }

    /// The stream messages the driver receives until the stream's end.
    fn stream_until_end(&mut self) -> Vec<FromNode> {
        let deadline = Instant::now() + T;
        let mut got = Vec::new();
        loop {
            assert!(Instant::now() < deadline, "no stream end; so far {got:?}");
            match self.rx.recv_timeout(Duration::from_millis(20)) {
                Ok(m @ FromNode::StreamItem { .. }) => got.push(m),
                Ok(m @ FromNode::StreamEnd { .. }) => {
                    got.push(m);
                    return got;
                }
                Ok(_) | Err(_) => {}
            }
        }
    }

    fn shutdown(self) {
        drop(self.conn);
        self.node.shutdown();
    }
}

/// An executor connected by hand, through a worker process's relay.
struct Executor(UnixStream);

impl Executor {
    /// The next worker the node starts (it starts one for a queued task).
    fn connect(d: &Driver) -> Executor {
        let deadline = Instant::now() + T;
        loop {
            match d.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(T)).unwrap();
                    return Executor(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no worker started");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// The next task the node sends (the read times out rather than hang).
    fn task(&mut self) -> TaskSpec {
        loop {
            match frame::read_frame::<_, FromNode>(&mut self.0).expect("a frame") {
                Some(FromNode::Execute(spec)) => return *spec,
                Some(_) => {}
                None => panic!("the node closed the connection"),
            }
        }
    }

    fn send(&mut self, msg: ToNode) {
        frame::write_frame(&mut self.0, msg).unwrap();
    }

    fn report(&mut self, task_id: TaskId, attempt: u32, index: u32, byte: u8) {
        let value = ObjectValue::Data {
            payload: Payload::Inline(vec![byte]),
            encoding: ferroray_protocol::Encoding::Rust,
            contained: vec![],
        };
        self.send(ToNode::ReportItem { task_id, attempt, index, value, digest: byte as u64 });
    }

    fn done(&mut self, task_id: TaskId, attempt: u32, items: u32) {
        self.send(ToNode::TaskDone { task_id, attempt, outcome: TaskOutcome::Streamed { items } });
    }
}

/// A `StreamItem` as (index, value); a `StreamEnd` as (items, error).
type Item = (u32, Option<ObjectValue>);
type End = (u32, Option<Error>);

fn item(index: u32, byte: u8) -> Item {
    (
        index,
        Some(ObjectValue::Data {
            payload: Payload::Inline(vec![byte]),
            encoding: ferroray_protocol::Encoding::Rust,
            contained: vec![],
        }),
    )
}

fn items_and_end(msgs: &[FromNode]) -> (Vec<Item>, Option<End>) {
    let mut items = Vec::new();
    let mut end = None;
    for m in msgs {
        match m {
            FromNode::StreamItem { index, value, .. } => items.push((*index, value.clone())),
            FromNode::StreamEnd { items, error, .. } => end = Some((*items, error.clone())),
            _ => {}
        }
    }
    (items, end)
}

#[test]
fn a_stale_attempt_is_refused_and_a_retry_hands_out_only_new_items() {
    let mut d = start();
    let tid = d.submit_stream(1, 1);
    let mut first = Executor::connect(&d);
    assert_eq!(first.task().attempt, 0);
    first.report(tid, 0, 0, 10);
    // The first executor dies; the retry goes to a second one.
    drop(first);
    let mut second = Executor::connect(&d);
    assert_eq!(second.task().attempt, 1);
    second.report(tid, 0, 1, 66); // attempt 0 is over: refused
    second.report(tid, 1, 0, 10); // a replay of index 0: not handed out again
    second.report(tid, 1, 1, 11);
    second.done(tid, 1, 2);
    let (items, end) = items_and_end(&d.stream_until_end());
    assert_eq!(items, vec![item(0, 10), item(1, 11)], "each index once, in order, none from the stale report");
    assert_eq!(end, Some((2, None)));
    d.shutdown();
}

#[test]
fn reports_out_of_order_fail_the_stream() {
    let mut d = start();
    let tid = d.submit_stream(1, 0);
    let mut ex = Executor::connect(&d);
    let attempt = ex.task().attempt;
    ex.report(tid, attempt, 1, 11);
    ex.report(tid, attempt, 0, 10);
    ex.done(tid, attempt, 2);
    let (items, end) = items_and_end(&d.stream_until_end());
    assert!(items.is_empty(), "nothing handed out in the wrong order: {items:?}");
    match end {
        Some((0, Some(Error::Protocol(m)))) => assert!(m.contains("item 1 reported after 0 items"), "{m}"),
        other => panic!("expected a protocol error at the end, got {other:?}"),
    }
    d.shutdown();
}

/// Runs only as a worker process the node started for these tests: says
/// hello as the node's worker, then relays bytes between the node and the
/// test that listens at `RELAY_ENV`, until either side closes.
#[test]
#[ignore = "runs only inside a worker process started by the tests above"]
fn executor_relay() {
    let Ok(relay) = std::env::var(RELAY_ENV) else { return };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set for workers"));
    let mut node = server::connect_abstract(&var(pool::env::WORKER)).expect("connect to the node");
    let hello = ToNode::Hello {
        protocol: PROTOCOL_VERSION,
        worker_id: WorkerId(var(pool::env::WORKER_ID).parse().unwrap()),
        pid: std::process::id(),
        role: Role::Worker,
        token: ClusterToken::from_hex(&var(pool::env::TOKEN)).unwrap(),
    };
    frame::write_frame(&mut node, hello).unwrap();
    let mut test = server::connect_abstract(&relay).expect("connect to the test");
    let (mut node_rd, mut test_wr) = (node.try_clone().unwrap(), test.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut node_rd, &mut test_wr);
        std::process::exit(0);
    });
    let _ = std::io::copy(&mut test, &mut node);
    std::process::exit(0);
}
