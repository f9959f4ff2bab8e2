//! Round trips of every message, error and policy through the protobuf wire,
//! forward compatibility (a field or case from a later version), and the
//! checks on what arrives (missing fields, unknown values, bad id lists).

use crate::frame::{encode_into, read_frame, FrameError, WireMessage};
use crate::wire;
use crate::*;
use ferroray_common::{
    resources, ActorDeathCause, ActorId, ClusterToken, Error, NodeId, ObjectId, ResourceSet, RetryExceptions, TaskId,
    WorkerId,
};
use prost::Message;

fn tid(seq: u64) -> TaskId {
    TaskId { submitter: WorkerId(0xdead_beef_0000_0001), seq }
}

fn oid(seq: u64, index: u32) -> ObjectId {
    ObjectId { task: tid(seq), index }
}

fn spec() -> TaskSpec {
    TaskSpec {
        task_id: tid(9),
        function: FunctionDescriptor::Rust { name: "crate::module::function".into() },
        args: vec![
            TaskArg::Value { payload: Payload::Inline(vec![1, 2, 3]), encoding: Encoding::Rust },
            TaskArg::Value { payload: Payload::Shm { offset: 4096, len: 1 << 20 }, encoding: Encoding::Raw },
            TaskArg::Ref(oid(1, 0)),
            TaskArg::Object { id: oid(2, 1), payload: Payload::Inline(vec![]), encoding: Encoding::Unit },
        ],
        contained: vec![oid(2, 1), oid(3, 2)],
        returns: ReturnKind::Streaming { backpressure: Some(4) },
        resources: ResourceSet::new().with(resources::CPU, 0.5).with("custom", 2.0),
        max_retries: u32::MAX,
        retry_exceptions: RetryExceptions::Types(vec!["ParseIntError".into()]),
        parent: Some(tid(1)),
        enable_events: true,
        attempt: 2,
        actor: None,
    }
}

fn actor_spec() -> ActorSpec {
    ActorSpec {
        class: "crate::Counter".into(),
        name: Some("c".into()),
        detached: true,
        max_restarts: u32::MAX,
        max_task_retries: 2,
        max_concurrency: 1000,
        executor: ActorExecutor::Async,
        front: b"methods".to_vec(),
    }
}

fn task_error(value: Option<Vec<u8>>) -> Error {
    let mut e = Error::task("my::Err", "it broke", "crate::f", 77);
    if let Error::Task(t) = &mut e {
        t.value = value;
    }
    e
}

/// One of every `Error` variant.
pub(crate) fn every_error() -> Vec<Error> {
    vec![
        task_error(None),
        task_error(Some(vec![])),
        task_error(Some(vec![7; 300])),
        Error::GetTimeout,
        Error::TaskCancelled,
        Error::WorkerCrashed { task: "f".into(), detail: "SIGKILL".into() },
        Error::ObjectLost("o".into()),
        Error::InvalidOption("bad".into()),
        Error::Serialization("ser".into()),
        Error::UnknownFunction("g".into()),
        Error::Infeasible("GPU".into()),
        Error::StoreFull("full".into()),
        Error::ReplayMismatch("differs".into()),
        Error::NotInitialized,
        Error::AlreadyInitialized,
        Error::Disconnected("gone".into()),
        Error::Protocol("no".into()),
        Error::Io("eio".into()),
        Error::PermissionDenied("who".into()),
        Error::NoCluster("where".into()),
        Error::ActorDied { actor: "a".into(), cause: ActorDeathCause::Killed },
        Error::ActorDied { actor: "a".into(), cause: ActorDeathCause::Crashed("signal 9".into()) },
        Error::ActorDied { actor: "a".into(), cause: ActorDeathCause::CreationFailed("no".into()) },
        Error::ActorDied { actor: "a".into(), cause: ActorDeathCause::OutOfScope },
        Error::ActorDied { actor: "a".into(), cause: ActorDeathCause::Exited },
        Error::ActorDied { actor: "a".into(), cause: ActorDeathCause::JobEnded },
    ]
}

fn roundtrip<M: WireMessage + Clone + PartialEq + std::fmt::Debug>(msg: M) {
    let mut buf = Vec::new();
    encode_into(&mut buf, msg.clone()).unwrap();
    let back: M = read_frame(&mut &buf[..]).unwrap().expect("a frame");
    assert_eq!(back, msg);
}

fn decode_body<M: WireMessage>(body: &[u8]) -> Result<M, FrameError> {
    let mut buf = (body.len() as u32).to_le_bytes().to_vec();
    buf.extend_from_slice(body);
    read_frame::<_, M>(&mut &buf[..]).map(|m| m.expect("a frame"))
}

fn malformed<M: WireMessage + std::fmt::Debug>(body: &[u8], needle: &str) {
    match decode_body::<M>(body) {
        Err(FrameError::Malformed(m)) => assert!(m.contains(needle), "{m:?} does not mention {needle:?}"),
        other => panic!("expected malformed ({needle}), got {other:?}"),
    }
}

#[test]
fn every_to_node_message_round_trips() {
    let data = ObjectValue::Data {
        payload: Payload::Inline(vec![5; 40]),
        encoding: Encoding::RefList,
        contained: vec![oid(4, 0)],
    };
    let shm = ObjectValue::Data {
        payload: Payload::Shm { offset: 64, len: 100 },
        encoding: Encoding::Raw,
        contained: vec![],
    };
    let mut dynamic = spec();
    dynamic.returns = ReturnKind::Dynamic;
    dynamic.function = FunctionDescriptor::Python {
        module: "m".into(),
        qualname: "q".into(),
        function: Some(ferroray_common::FunctionId { exporter: ferroray_common::WorkerId(5), seq: 2 }),
        pickled: vec![1; 9],
    };
    dynamic.retry_exceptions = RetryExceptions::None;
    dynamic.parent = None;
    dynamic.resources = ResourceSet::new();
    let mut fixed = spec();
    fixed.returns = ReturnKind::Fixed(0);
    fixed.retry_exceptions = RetryExceptions::All;
    let mut exact = spec();
    exact.returns = ReturnKind::Streaming { backpressure: None };
    exact.retry_exceptions = RetryExceptions::ExactTypes(vec!["a::B".into(), "c::D".into()]);
    let mut call = spec();
    call.actor = Some(ActorTask::Call { actor: ActorId(tid(2)) });
    let mut create = spec();
    create.actor = Some(ActorTask::Create(Box::new(actor_spec())));
    let messages = vec![
        ToNode::Hello {
            protocol: PROTOCOL_VERSION,
            worker_id: WorkerId(u64::MAX),
            pid: 42,
            role: Role::Worker,
            token: ClusterToken::random().unwrap(),
        },
        ToNode::Hello { protocol: 0, worker_id: WorkerId(0), pid: 0, role: Role::Driver, token: ClusterToken::zero() },
        ToNode::Submit(Box::new(spec())),
        ToNode::Submit(Box::new(dynamic)),
        ToNode::Submit(Box::new(fixed)),
        ToNode::Submit(Box::new(exact)),
        ToNode::Submit(Box::new(call)),
        ToNode::CreateActor { req: 3, spec: Box::new(create) },
        ToNode::GetActor { req: 4, name: "c".into() },
        ToNode::KillActor { actor: ActorId(tid(2)), no_restart: true },
        ToNode::TerminateActor { actor: ActorId(tid(2)) },
        ToNode::Put { id: oid(5, 0), value: data.clone() },
        ToNode::Put { id: oid(5, 0), value: shm.clone() },
        ToNode::Import { id: oid(6, 1), value: data.clone() },
        ToNode::Import { id: oid(6, 2), value: shm.clone() },
        ToNode::Borrow {
            id: oid(6, 3),
            node: ferroray_common::NodeId(u64::MAX),
            len: 1 << 20,
            encoding: Encoding::Raw,
        },
        ToNode::AddRef(vec![oid(1, 0), oid(2, u32::MAX)]),
        ToNode::AddRef(vec![]),
        ToNode::RemoveRef(vec![oid(1, 0)]),
        ToNode::Subscribe(vec![oid(1, 0)]),
        ToNode::Locate(vec![oid(1, 0), oid(2, 3)]),
        ToNode::Unpin(vec![oid(1, 0)]),
        ToNode::TaskDone {
            task_id: tid(9),
            attempt: 1,
            outcome: TaskOutcome::Returned(vec![data.clone(), shm, ObjectValue::Error(Error::TaskCancelled)]),
        },
        ToNode::TaskDone { task_id: tid(9), attempt: 0, outcome: TaskOutcome::Returned(vec![]) },
        ToNode::TaskDone { task_id: tid(9), attempt: 0, outcome: TaskOutcome::Streamed { items: 0 } },
        ToNode::TaskDone { task_id: tid(9), attempt: 0, outcome: TaskOutcome::Failed(task_error(Some(vec![1]))) },
        ToNode::Allocate { req: 1, size: 4096 },
        ToNode::Deallocate { offset: 64 },
        ToNode::Cancel { task_id: tid(9), force: true, recursive: false, force_after_ms: Some(0) },
        ToNode::Cancel { task_id: tid(9), force: false, recursive: true, force_after_ms: None },
        ToNode::Blocked,
        ToNode::Unblocked,
        ToNode::Revoked { task_ids: vec![tid(9), tid(10)] },
        ToNode::ListTasks { req: 3 },
        ToNode::ReportItem { task_id: tid(9), attempt: 0, index: 2, value: data, digest: u64::MAX },
        ToNode::StreamConsumed { task_id: tid(9), consumed: 3 },
        ToNode::StreamDrop { task_id: tid(9), consumed: 3 },
        ToNode::StreamHandOff { task_id: tid(9), consumed: 0 },
        ToNode::StreamClaim { req: 5, task_id: tid(9), from: 4 },
        ToNode::ExportFunction {
            function: ferroray_common::FunctionId { exporter: ferroray_common::WorkerId(3), seq: 8 },
            pickled: vec![7; 300],
        },
        ToNode::WorkerCommands(vec![crate::WorkerCommandSpec {
            kind: crate::WorkerKind::Python,
            program: "/usr/bin/python3".into(),
            args: vec!["-m".into(), "ferroray._worker".into()],
            env: vec![("A".into(), "1".into())],
        }]),
    ];
    for m in messages {
        roundtrip(m);
    }
}

#[test]
fn every_from_node_message_round_trips() {
    let events = vec![
        TaskEvent {
            task_id: tid(1),
            name: "f".into(),
            state: TaskState::Submitted,
            attempt: 0,
            time_us: 1,
            worker_pid: None,
            error: None,
            actor_id: Some(ActorId(tid(4))),
        },
        TaskEvent {
            task_id: tid(2),
            name: "g".into(),
            state: TaskState::Failed,
            attempt: 2,
            time_us: u64::MAX,
            worker_pid: Some(0),
            error: Some("boom".into()),
            actor_id: None,
        },
    ];
    let mut messages = vec![
        FromNode::Welcome(NodeInfo { node_id: NodeId(u64::MAX), inline_threshold: 100, store_capacity: 1 << 30 }),
        FromNode::Execute(Box::new(spec())),
        FromNode::ObjectReady { id: oid(1, 0), value: ObjectValue::Error(Error::GetTimeout) },
        FromNode::Allocated { req: 1, result: Ok(0) },
        FromNode::Allocated { req: 2, result: Err(Error::StoreFull("full".into())) },
        FromNode::CancelRunning { task_id: tid(3), force: true },
        FromNode::Revoke { task_ids: vec![tid(3)] },
        FromNode::KillActor { actor: ActorId(tid(4)), no_restart: true },
        FromNode::HandleReleased { actor: ActorId(tid(4)), reaches: 3 },
        FromNode::Pull(vec![oid(1, 0), oid(2, 1)]),
        FromNode::Forget(vec![oid(1, 0)]),
        FromNode::Made(vec![oid(1, 0)]),
        FromNode::Elsewhere { ids: vec![oid(1, 0), oid(2, 1)], node: ferroray_common::NodeId(7) },
        FromNode::Tasks { req: 5, events },
        FromNode::Tasks { req: 6, events: vec![] },
        FromNode::StreamItem { task_id: tid(3), index: 0, value: None },
        FromNode::StreamItem {
            task_id: tid(3),
            index: 1,
            value: Some(ObjectValue::Data {
                payload: Payload::Inline(vec![9]),
                encoding: Encoding::Unit,
                contained: vec![],
            }),
        },
        FromNode::StreamEnd { task_id: tid(3), items: 3, error: None },
        FromNode::StreamEnd { task_id: tid(3), items: 0, error: Some(Error::TaskCancelled) },
        FromNode::ItemAck { task_id: tid(3), index: 4, gone: true },
        FromNode::ActorCreated { req: 1, result: Ok(()) },
        FromNode::ActorCreated { req: 2, result: Err(Error::InvalidOption("taken".into())) },
        FromNode::ActorFound { req: 3, result: Ok((ActorId(tid(7)), "crate::Counter".into(), b"methods".to_vec())) },
        FromNode::ActorFound { req: 4, result: Err(Error::InvalidOption("nobody".into())) },
        FromNode::StreamClaimed { req: 5, result: Ok(3) },
        FromNode::StreamClaimed { req: 6, result: Err(Error::InvalidOption("taken".into())) },
        FromNode::Output { to_stderr: true, text: "(f pid=3) hello\n".into(), task: None },
        FromNode::Output { to_stderr: false, text: "(g pid=4) hi\n".into(), task: Some(tid(9)) },
    ];
    for state in TaskState::ALL {
        let event = TaskEvent {
            task_id: tid(1),
            name: "f".into(),
            state,
            attempt: 0,
            time_us: 0,
            worker_pid: None,
            error: None,
            actor_id: None,
        };
        messages.push(FromNode::Tasks { req: 0, events: vec![event] });
    }
    for m in messages {
        roundtrip(m);
    }
}

#[test]
fn every_error_variant_round_trips() {
    for e in every_error() {
        roundtrip(FromNode::Rejected(e.clone()));
        roundtrip(ToNode::Put { id: oid(1, 0), value: ObjectValue::Error(e.clone()) });
        roundtrip(ToNode::TaskDone { task_id: tid(1), attempt: 0, outcome: TaskOutcome::Failed(e) });
    }
    // The task error's fields, each one.
    let back: FromNode =
        decode_body(&wire::FromNode::from(FromNode::Rejected(task_error(Some(vec![4, 2])))).encode_to_vec()).unwrap();
    let FromNode::Rejected(Error::Task(t)) = back else { panic!("{back:?}") };
    assert_eq!((t.type_name.as_str(), t.message.as_str(), t.task_name.as_str()), ("my::Err", "it broke", "crate::f"));
    assert_eq!((t.pid, t.value.as_deref()), (77, Some(&[4u8, 2][..])));
}

#[test]
fn value_bytes_are_moved_into_the_wire_form() {
    let bytes = vec![1u8; 1000];
    let ptr = bytes.as_ptr();
    let wire = ToNode::Put {
        id: oid(1, 0),
        value: ObjectValue::Data { payload: Payload::Inline(bytes), encoding: Encoding::Rust, contained: vec![] },
    }
    .into_wire();
    let Some(wire::ToNodeKind::Put(put)) = wire.kind else { panic!() };
    let Some(wire::ObjectValueKind::Inline(b)) = put.value.unwrap().kind else { panic!() };
    assert_eq!(b.as_ptr(), ptr);
}

/// `Hello` as a later version might send it: one more field.
#[derive(Clone, PartialEq, Message)]
struct FutureHello {
    #[prost(uint32, tag = "1")]
    protocol: u32,
    #[prost(fixed64, tag = "2")]
    worker_id: u64,
    #[prost(uint32, tag = "3")]
    pid: u32,
    #[prost(enumeration = "wire::Role", tag = "4")]
    role: i32,
    #[prost(bytes = "vec", tag = "5")]
    token: Vec<u8>,
    #[prost(string, tag = "6")]
    hostname: String,
}

#[derive(Clone, PartialEq, Message)]
struct FutureToNode {
    #[prost(oneof = "FutureKind", tags = "1, 99")]
    kind: Option<FutureKind>,
    #[prost(uint64, tag = "100")]
    trace_id: u64,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum FutureKind {
    #[prost(message, tag = "1")]
    Hello(FutureHello),
    #[prost(message, tag = "99")]
    Teleport(wire::Empty),
}

#[test]
fn fields_from_a_later_version_are_skipped() {
    let hello = FutureHello {
        protocol: PROTOCOL_VERSION,
        worker_id: 5,
        pid: 6,
        role: wire::Role::Driver as i32,
        token: vec![3; 32],
        hostname: "elsewhere".into(),
    };
    let body = FutureToNode { kind: Some(FutureKind::Hello(hello)), trace_id: 77 }.encode_to_vec();
    let msg: ToNode = decode_body(&body).unwrap();
    assert!(matches!(
        msg,
        ToNode::Hello { protocol: PROTOCOL_VERSION, worker_id: WorkerId(5), pid: 6, role: Role::Driver, .. }
    ));
}

#[test]
fn a_message_kind_from_a_later_version_is_malformed() {
    let body = FutureToNode { kind: Some(FutureKind::Teleport(wire::Empty {})), trace_id: 0 }.encode_to_vec();
    malformed::<ToNode>(&body, "message kind");
    malformed::<ToNode>(&[], "message kind");
    malformed::<FromNode>(&[], "message kind");
}

#[test]
fn missing_required_fields_are_malformed() {
    let put = |id, value| wire::ToNode { kind: Some(wire::ToNodeKind::Put(wire::ObjectMessage { id, value })) };
    let value = Some(wire::ObjectValue::from(ObjectValue::Error(Error::GetTimeout)));
    malformed::<ToNode>(&put(None, value.clone()).encode_to_vec(), "put id is missing");
    let id = Some(wire::ObjectId::from(oid(1, 0)));
    malformed::<ToNode>(&put(id, None).encode_to_vec(), "put value is missing");
    let no_kind = wire::ObjectValue { kind: None, contained: vec![], encoding: 0 };
    malformed::<ToNode>(&put(id, Some(no_kind)).encode_to_vec(), "object value kind is missing");
    let no_error_kind = wire::ObjectValue {
        kind: Some(wire::ObjectValueKind::Error(wire::Error { kind: None })),
        contained: vec![],
        encoding: 0,
    };
    malformed::<ToNode>(&put(id, Some(no_error_kind)).encode_to_vec(), "error kind");

    let submit = |s: wire::TaskSpec| wire::ToNode { kind: Some(wire::ToNodeKind::Submit(s)) };
    let mut s = wire::TaskSpec::from(spec());
    s.function = None;
    malformed::<ToNode>(&submit(s).encode_to_vec(), "task function is missing");
    let mut s = wire::TaskSpec::from(spec());
    s.returns = None;
    malformed::<ToNode>(&submit(s).encode_to_vec(), "task returns is missing");
    let mut s = wire::TaskSpec::from(spec());
    s.task_id = None;
    malformed::<ToNode>(&submit(s).encode_to_vec(), "task id is missing");
    let mut s = wire::TaskSpec::from(spec());
    s.args.push(wire::TaskArg { kind: None, encoding: 0 });
    malformed::<ToNode>(&submit(s).encode_to_vec(), "task argument kind");
    let mut s = wire::TaskSpec::from(spec());
    s.args.push(wire::TaskArg {
        kind: Some(wire::TaskArgKind::Object(wire::ResolvedObject { payload: None, id: Some(oid(1, 1).into()) })),
        encoding: 0,
    });
    malformed::<ToNode>(&submit(s).encode_to_vec(), "resolved argument payload is missing");
    // Absent optional parts take their defaults.
    let mut s = wire::TaskSpec::from(spec());
    s.retry_exceptions = None;
    s.parent = None;
    let ToNode::Submit(back) = decode_body::<ToNode>(&submit(s).encode_to_vec()).unwrap() else { panic!() };
    assert_eq!((back.retry_exceptions, back.parent), (RetryExceptions::None, None));
}

#[test]
fn bad_values_are_malformed() {
    let hello = |role: i32, token: Vec<u8>| {
        wire::ToNode {
            kind: Some(wire::ToNodeKind::Hello(wire::Hello { protocol: 3, worker_id: 1, pid: 1, role, token })),
        }
        .encode_to_vec()
    };
    malformed::<ToNode>(&hello(9, vec![0; 32]), "unknown role 9");
    malformed::<ToNode>(&hello(0, vec![0; 32]), "role is missing");
    malformed::<ToNode>(&hello(1, vec![0; 31]), "token of 31 bytes");
    let ids = |n| wire::ToNode { kind: Some(wire::ToNodeKind::AddRef(wire::ObjectIds { ids: vec![0; n] })) };
    malformed::<ToNode>(&ids(21).encode_to_vec(), "not a whole number of 20-byte object ids");
    assert_eq!(
        decode_body::<ToNode>(&ids(40).encode_to_vec()).unwrap(),
        ToNode::AddRef(vec![ObjectId { task: TaskId { submitter: WorkerId(0), seq: 0 }, index: 0 }; 2])
    );
    let revoke = wire::FromNode { kind: Some(wire::FromNodeKind::Revoke(wire::TaskIds { ids: vec![0; 15] })) };
    malformed::<FromNode>(&revoke.encode_to_vec(), "16-byte task ids");
    let event = wire::TaskEvent { task_id: Some(tid(1).into()), state: 42, ..Default::default() };
    let tasks = wire::FromNode { kind: Some(wire::FromNodeKind::Tasks(wire::Tasks { req: 0, events: vec![event] })) };
    malformed::<FromNode>(&tasks.encode_to_vec(), "unknown task state 42");
    let mut v = wire::ObjectValue::from(ObjectValue::Data {
        payload: Payload::Inline(vec![]),
        encoding: Encoding::Rust,
        contained: vec![],
    });
    v.encoding = 9;
    let put = wire::ToNode {
        kind: Some(wire::ToNodeKind::Put(wire::ObjectMessage { id: Some(oid(1, 0).into()), value: Some(v) })),
    };
    malformed::<ToNode>(&put.encode_to_vec(), "unknown value encoding 9");
    // Not protobuf at all.
    assert!(matches!(decode_body::<ToNode>(&[0xff; 8]), Err(FrameError::Malformed(_))));
}

#[test]
fn the_spec_size_bound_holds() {
    let mut big = spec();
    big.args.push(TaskArg::Value { payload: Payload::Inline(vec![0; 100_000]), encoding: Encoding::Rust });
    big.contained = (0..1000).map(|i| oid(i, i as u32)).collect();
    big.retry_exceptions = RetryExceptions::ExactTypes(vec!["x".repeat(300); 10]);
    let mut python = spec();
    python.function = FunctionDescriptor::Python {
        module: "m".repeat(50),
        qualname: "q".into(),
        function: None,
        pickled: vec![0; 5000],
    };
    let mut empty = spec();
    empty.args.clear();
    empty.contained.clear();
    empty.resources = ResourceSet::new();
    for s in [spec(), big, python, empty] {
        let bound = s.max_encoded_len();
        let actual = wire::TaskSpec::from(s.clone()).encoded_len() as u64;
        let framed = wire::FromNode::from(FromNode::Execute(Box::new(s))).encoded_len() as u64;
        assert!(actual <= bound && framed <= bound + 16, "{actual} / {framed} over the bound {bound}");
        assert!(bound - actual <= wire::SPEC_OVERHEAD + 4096, "a loose bound: {bound} for {actual}");
    }
}

#[test]
fn zero_resource_amounts_are_dropped() {
    let mut s = wire::TaskSpec::from(spec());
    s.resources.insert("nothing".into(), 0);
    let ToNode::Submit(back) =
        decode_body::<ToNode>(&wire::ToNode { kind: Some(wire::ToNodeKind::Submit(s)) }.encode_to_vec()).unwrap()
    else {
        panic!()
    };
    assert_eq!(back.resources, spec().resources);
}
