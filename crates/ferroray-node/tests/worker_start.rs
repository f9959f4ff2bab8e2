//! The node with a worker command that dies before connecting: queued tasks
//! fail with a clear error instead of waiting for a worker that never comes.

mod common;

use ferroray_common::{resources, Error, ObjectId, ResourceSet, RetryExceptions, TaskId, WorkerId};
use ferroray_node::{Node, NodeConfig, WorkerCommand};
use ferroray_protocol::{FromNode, FunctionDescriptor, ObjectValue, ReturnKind, TaskSpec, ToNode};
use std::time::{Duration, Instant};

#[test]
fn workers_that_exit_before_connecting_fail_the_queued_tasks() {
    let command = WorkerCommand { program: "/bin/sh".into(), args: vec!["-c".into(), "exit 3".into()], env: vec![] };
    let mut config = NodeConfig::new(command);
    config.resources = ResourceSet::new().with(resources::CPU, 1.0);
    config.store_capacity = 1 << 20;
    config.log_to_driver = false;
    let node = Node::start(config).expect("node starts");
    let me = WorkerId(7);
    let (conn, rx) = common::connect(&node, me);
    let task_id = TaskId { submitter: me, seq: 1 };
    conn.send(ToNode::Submit(Box::new(TaskSpec {
        task_id,
        function: FunctionDescriptor::Rust { name: "never::runs".into() },
        args: vec![],
        contained: vec![],
        returns: ReturnKind::Fixed(1),
        resources: ResourceSet::new().with(resources::CPU, 1.0),
        max_retries: 0,
        retry_exceptions: RetryExceptions::None,
        parent: None,
        enable_events: false,
        attempt: 0,
        actor: None,
    })));
    let id = ObjectId::for_return(task_id, 0);
    conn.send(ToNode::Subscribe(vec![id]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the task waited for ever");
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(FromNode::ObjectReady { id: got, value }) if got == id => {
                match value {
                    ObjectValue::Error(Error::WorkerCrashed { detail, .. }) => {
                        assert!(detail.contains("exit before connecting"), "{detail}")
                    }
                    other => panic!("expected WorkerCrashed, got {other:?}"),
                }
                break;
            }
            Ok(_) | Err(_) => {}
        }
    }
    drop(conn);
    node.shutdown();
}
