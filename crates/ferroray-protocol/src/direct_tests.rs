//! The direct path (`direct`) against the derived wire structs: the same
//! bytes out, the same values or the same `Malformed` in, for generated
//! messages of every hot kind, for their mutations (truncated, bytes
//! flipped, fields repeated or unknown), and for hand-made bad bodies.

use crate::frame::{FrameError, WireMessage};
use crate::wire;
use crate::*;
use ferroray_common::{
    resources, ActorDeathCause, ActorId, ClusterToken, Error, ObjectId, ResourceSet, RetryExceptions, TaskId, WorkerId,
};
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }

    /// Mostly small, sometimes 0 or the extremes (0 is left out on the wire).
    fn u32(&mut self) -> u32 {
        match self.below(5) {
            0 => 0,
            1 => u32::MAX,
            2 => 1 << 20,
            _ => self.below(300) as u32,
        }
    }

    fn u64(&mut self) -> u64 {
        match self.below(4) {
            0 => 0,
            1 => u64::MAX,
            _ => self.next(),
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = match self.below(6) {
            0 => 0,
            1 => 70_000,
            _ => self.below(200) as usize,
        };
        (0..n).map(|i| (i as u8) ^ (self.0 as u8)).collect()
    }

    fn string(&mut self) -> String {
        ["", "f", "crate::module::function", "ünïcödé::名前"][self.below(4) as usize].to_string()
    }

    fn tid(&mut self) -> TaskId {
        TaskId { submitter: WorkerId(self.u64()), seq: self.u64() }
    }

    fn oid(&mut self) -> ObjectId {
        ObjectId { task: self.tid(), index: self.u32() }
    }

    fn oids(&mut self) -> Vec<ObjectId> {
        (0..self.below(4)).map(|_| self.oid()).collect()
    }

    fn encoding(&mut self) -> Encoding {
        [Encoding::Rust, Encoding::Unit, Encoding::RefList, Encoding::Raw][self.below(4) as usize]
    }

    fn payload(&mut self) -> Payload {
        if self.coin() {
            Payload::Inline(self.bytes())
        } else {
            Payload::Shm { offset: self.u64(), len: self.u64() }
        }
    }

    fn error(&mut self) -> Error {
        let all = every_error();
        all[self.below(all.len() as u64) as usize].clone()
    }

    fn value(&mut self) -> ObjectValue {
        if self.below(4) == 0 {
            ObjectValue::Error(self.error())
        } else {
            ObjectValue::Data { payload: self.payload(), encoding: self.encoding(), contained: self.oids() }
        }
    }

    fn arg(&mut self) -> TaskArg {
        match self.below(3) {
            0 => TaskArg::Value { payload: self.payload(), encoding: self.encoding() },
            1 => TaskArg::Ref(self.oid()),
            _ => TaskArg::Object { id: self.oid(), payload: self.payload(), encoding: self.encoding() },
        }
    }

    fn spec(&mut self) -> TaskSpec {
        let function = if self.below(4) == 0 {
            FunctionDescriptor::Python {
                module: self.string(),
                qualname: self.string(),
                function: self.coin().then(|| ferroray_common::FunctionId {
                    exporter: ferroray_common::WorkerId(self.u64()),
                    seq: self.u64(),
                }),
                pickled: self.bytes(),
            }
        } else {
            FunctionDescriptor::Rust { name: self.string() }
        };
        let returns = match self.below(4) {
            0 => ReturnKind::Streaming { backpressure: self.coin().then(|| self.u32()) },
            1 => ReturnKind::Dynamic,
            _ => ReturnKind::Fixed(self.u32()),
        };
        let mut resources = ResourceSet::new();
        for name in [resources::CPU, resources::GPU, "custom"] {
            if self.coin() {
                resources.set(name, [0.5, 1.0, 3.25, 1e6][self.below(4) as usize]);
            }
        }
        let retry_exceptions = match self.below(5) {
            0 => RetryExceptions::All,
            1 => RetryExceptions::Types(vec![self.string(), "ParseIntError".into()]),
            2 => RetryExceptions::ExactTypes(vec![]),
            _ => RetryExceptions::None,
        };
        let actor = match self.below(4) {
            0 => Some(ActorTask::Call { actor: ActorId(self.tid()) }),
            1 => Some(ActorTask::Create(Box::new(ActorSpec {
                class: self.string(),
                name: self.coin().then(|| self.string()),
                detached: self.coin(),
                max_restarts: self.u32(),
                max_task_retries: self.u32(),
                max_concurrency: self.u32(),
                executor: [ActorExecutor::Serial, ActorExecutor::Threaded, ActorExecutor::Async]
                    [self.below(3) as usize],
                front: self.bytes(),
            }))),
            _ => None,
        };
        TaskSpec {
            task_id: self.tid(),
            function,
            args: (0..self.below(5)).map(|_| self.arg()).collect(),
            contained: self.oids(),
            returns,
            resources,
            max_retries: self.u32(),
            retry_exceptions,
            parent: self.coin().then(|| self.tid()),
            enable_events: self.coin(),
            attempt: self.u32(),
            actor,
        }
    }

    fn outcome(&mut self) -> TaskOutcome {
        match self.below(4) {
            0 => TaskOutcome::Streamed { items: self.u32() },
            1 => TaskOutcome::Failed(self.error()),
            _ => TaskOutcome::Returned((0..self.below(4)).map(|_| self.value()).collect()),
        }
    }

    fn any_to_node(&mut self) -> ToNode {
        match self.below(8) {
            0 | 1 => ToNode::Submit(Box::new(self.spec())),
            2..=4 => ToNode::TaskDone { task_id: self.tid(), attempt: self.u32(), outcome: self.outcome() },
            5 => {
                if self.coin() {
                    ToNode::Put { id: self.oid(), value: self.value() }
                } else {
                    ToNode::ReportItem {
                        task_id: self.tid(),
                        attempt: self.u32(),
                        index: self.u32(),
                        value: self.value(),
                        digest: self.u64(),
                    }
                }
            }
            6 => ToNode::CreateActor { req: self.u64(), spec: Box::new(self.spec()) },
            _ => ToNode::Hello {
                protocol: self.u32(),
                worker_id: WorkerId(self.u64()),
                pid: self.u32(),
                role: if self.coin() { Role::Driver } else { Role::Worker },
                token: ClusterToken::zero(),
            },
        }
    }

    fn any_from_node(&mut self) -> FromNode {
        match self.below(6) {
            0..=2 => FromNode::Execute(Box::new(self.spec())),
            3 => FromNode::ObjectReady { id: self.oid(), value: self.value() },
            4 => FromNode::StreamItem { task_id: self.tid(), index: self.u32(), value: Some(self.value()) },
            _ => FromNode::Rejected(self.error()),
        }
    }
}

/// Every `Error` variant (the wire tests' list), and empty strings where a
/// direct encoder must still write what the derived one does.
fn every_error() -> Vec<Error> {
    let mut errors = crate::wire_tests::every_error();
    errors.push(Error::task("", "", "", 0));
    errors.push(Error::InvalidOption("".into()));
    errors.push(Error::ActorDied { actor: "".into(), cause: ActorDeathCause::CreationFailed("no".into()) });
    errors
}

/// The body through the derived wire struct.
fn derived_bytes<M: WireMessage>(msg: M) -> Vec<u8> {
    msg.into_wire().encode_to_vec()
}

fn direct_bytes<M: WireMessage>(msg: M) -> Vec<u8> {
    let mut buf = Vec::new();
    msg.encode_body(&mut buf).unwrap();
    buf
}

fn derived_decode<M: WireMessage>(body: &[u8]) -> Result<M, FrameError> {
    M::from_wire(M::Wire::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?)
}

fn direct_decode<M: WireMessage>(body: &[u8]) -> Result<M, FrameError> {
    M::decode_body(body)
}

/// Both decoders agree on `body`: the same value, or both malformed (with
/// the same text when a check failed, not protobuf itself).
fn agree<M: WireMessage + PartialEq + std::fmt::Debug>(body: &[u8]) -> bool {
    match (derived_decode::<M>(body), direct_decode::<M>(body)) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "body {body:?}");
            true
        }
        (Err(FrameError::Malformed(a)), Err(FrameError::Malformed(b))) => {
            if !a.starts_with("failed to decode Protobuf message") {
                assert_eq!(a, b, "body {body:?}");
            }
            false
        }
        (a, b) => panic!("the decoders disagree on {body:?}: derived {a:?}, direct {b:?}"),
    }
}

fn check_message<M: WireMessage + Clone + PartialEq + std::fmt::Debug>(msg: &M, rng: &mut Rng) {
    let body = direct_bytes(msg.clone());
    assert_eq!(body, derived_bytes(msg.clone()), "bytes differ for {msg:?}");
    assert_eq!(&direct_decode::<M>(&body).unwrap(), msg);
    assert!(agree::<M>(&body));
    // Every truncation (each cut may end the body at a field's edge or
    // inside one).
    for cut in 0..body.len().min(600) {
        agree::<M>(&body[..cut]);
    }
    // Bytes flipped, some at a time.
    for _ in 0..40 {
        let mut b = body.clone();
        for _ in 0..1 + rng.below(3) {
            if b.is_empty() {
                break;
            }
            let at = rng.below(b.len().min(400) as u64) as usize;
            b[at] ^= 1 << rng.below(8);
        }
        agree::<M>(&b);
    }
}

#[test]
fn generated_messages_encode_to_the_same_bytes_and_decode_alike() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..400 {
        let to = rng.any_to_node();
        check_message(&to, &mut rng);
        let from = rng.any_from_node();
        check_message(&from, &mut rng);
    }
}

#[test]
fn hand_picked_messages_encode_to_the_same_bytes() {
    let zero = TaskId { submitter: WorkerId(0), seq: 0 };
    let empty_spec = TaskSpec {
        task_id: zero,
        function: FunctionDescriptor::Rust { name: String::new() },
        args: vec![],
        contained: vec![],
        returns: ReturnKind::Fixed(0),
        resources: ResourceSet::new(),
        max_retries: 0,
        retry_exceptions: RetryExceptions::None,
        parent: None,
        enable_events: false,
        attempt: 0,
        actor: None,
    };
    let mut every_arg = empty_spec.clone();
    for encoding in [Encoding::Rust, Encoding::Unit, Encoding::RefList, Encoding::Raw] {
        every_arg.args.push(TaskArg::Value { payload: Payload::Inline(vec![]), encoding });
        every_arg.args.push(TaskArg::Value { payload: Payload::Shm { offset: 0, len: 0 }, encoding });
        every_arg.args.push(TaskArg::Object {
            id: ObjectId { task: zero, index: 0 },
            payload: Payload::Inline(vec![1; 300_000]),
            encoding,
        });
    }
    every_arg.args.push(TaskArg::Ref(ObjectId { task: zero, index: 0 }));
    let mut rng = Rng(7);
    let mut messages = vec![
        ToNode::Submit(Box::new(empty_spec.clone())),
        ToNode::Submit(Box::new(every_arg.clone())),
        ToNode::TaskDone { task_id: zero, attempt: 0, outcome: TaskOutcome::Returned(vec![]) },
        ToNode::TaskDone { task_id: zero, attempt: 0, outcome: TaskOutcome::Streamed { items: 0 } },
        ToNode::TaskDone {
            task_id: zero,
            attempt: 0,
            outcome: TaskOutcome::Returned(vec![ObjectValue::Data {
                payload: Payload::Inline(vec![]),
                encoding: Encoding::Rust,
                contained: vec![],
            }]),
        },
        ToNode::TaskDone {
            task_id: zero,
            attempt: 0,
            outcome: TaskOutcome::Returned(vec![ObjectValue::Data {
                payload: Payload::Inline(vec![3; 1_000_000]),
                encoding: Encoding::Raw,
                contained: (0..1000).map(|i| ObjectId { task: zero, index: i }).collect(),
            }]),
        },
    ];
    for e in every_error() {
        messages.push(ToNode::TaskDone { task_id: zero, attempt: 1, outcome: TaskOutcome::Failed(e.clone()) });
        messages.push(ToNode::Put { id: ObjectId { task: zero, index: 0 }, value: ObjectValue::Error(e) });
    }
    for m in messages {
        let body = direct_bytes(m.clone());
        assert_eq!(body, derived_bytes(m.clone()));
        assert_eq!(direct_decode::<ToNode>(&body).unwrap(), m);
    }
    for s in [empty_spec, every_arg] {
        let m = FromNode::Execute(Box::new(s));
        check_message(&m, &mut rng);
    }
}

/// Two bodies one after the other: prost merges a message met twice (a
/// spec's arguments append, its scalars take the later value), and a later
/// `oneof` case replaces an earlier one. The direct decoder must do the same.
#[test]
fn repeated_fields_merge_alike() {
    let mut rng = Rng(99);
    for _ in 0..600 {
        let (a, b) = (rng.any_to_node(), rng.any_to_node());
        let mut body = direct_bytes(a);
        body.extend(direct_bytes(b));
        agree::<ToNode>(&body);
        let (a, b) = (rng.any_from_node(), rng.any_from_node());
        let mut body = direct_bytes(a);
        body.extend(direct_bytes(b));
        agree::<FromNode>(&body);
    }
    // Within a spec: the same spec's body twice, under one key.
    for _ in 0..100 {
        let s = wire::TaskSpec::from(rng.spec()).encode_to_vec();
        let mut inner = s.clone();
        inner.extend(&s);
        let body = field(2, &inner);
        assert!(agree::<FromNode>(&body));
        assert!(agree::<ToNode>(&body));
    }
}

/// A length-delimited field.
fn field(tag: u32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    encode_key(tag, WireType::LengthDelimited, &mut b);
    encode_varint(body.len() as u64, &mut b);
    b.extend_from_slice(body);
    b
}

/// Fields of every wire type that no version uses.
fn unknown_fields() -> Vec<u8> {
    let mut b = Vec::new();
    encode_key(99, WireType::Varint, &mut b);
    encode_varint(300, &mut b);
    b.extend(field(100, b"later"));
    encode_key(101, WireType::ThirtyTwoBit, &mut b);
    b.extend([1, 2, 3, 4]);
    encode_key(102, WireType::SixtyFourBit, &mut b);
    b.extend([1; 8]);
    encode_key(103, WireType::StartGroup, &mut b);
    encode_key(1, WireType::Varint, &mut b);
    encode_varint(5, &mut b);
    encode_key(103, WireType::EndGroup, &mut b);
    b
}

#[test]
fn unknown_fields_are_skipped_at_every_level() {
    let mut rng = Rng(5);
    let x = unknown_fields();
    for _ in 0..100 {
        let spec = rng.spec();
        let mut w = wire::TaskSpec::from(spec.clone());
        // Unknown fields inside the spec, before and after the known ones.
        let mut inner = x.clone();
        inner.extend(w.encode_to_vec());
        inner.extend(&x);
        let mut body = field(2, &inner);
        body.extend(&x);
        assert_eq!(direct_decode::<FromNode>(&body).unwrap(), FromNode::Execute(Box::new(spec.clone())));
        assert_eq!(direct_decode::<ToNode>(&body).unwrap(), ToNode::Submit(Box::new(spec.clone())));
        assert!(agree::<FromNode>(&body));
        // Inside each argument (fields may come in any order: the
        // arguments after the rest).
        let args = std::mem::take(&mut w.args);
        let mut inner = w.encode_to_vec();
        for a in &args {
            let mut ab = a.encode_to_vec();
            ab.extend(&x);
            inner.extend(field(3, &ab));
        }
        let body = field(2, &inner);
        assert_eq!(direct_decode::<FromNode>(&body).unwrap(), FromNode::Execute(Box::new(spec)));
        assert!(agree::<FromNode>(&body));
    }
    // Inside a task's end and its values.
    for _ in 0..100 {
        let task_id = rng.tid();
        let values: Vec<ObjectValue> = (0..3).map(|_| rng.value()).collect();
        let mut returned = Vec::new();
        for v in &values {
            let mut vb = wire::ObjectValue::from(v.clone()).encode_to_vec();
            vb.extend(&x);
            returned.extend(field(1, &vb));
        }
        returned.extend(&x);
        let mut done = x.clone();
        done.extend(wire::TaskDone { task_id: Some(task_id.into()), attempt: 4, outcome: None }.encode_to_vec());
        done.extend(field(3, &returned));
        let body = field(8, &done);
        let want = ToNode::TaskDone { task_id, attempt: 4, outcome: TaskOutcome::Returned(values) };
        assert_eq!(direct_decode::<ToNode>(&body).unwrap(), want);
        assert!(agree::<ToNode>(&body));
    }
}

fn malformed<M: WireMessage + PartialEq + std::fmt::Debug>(body: &[u8], needle: &str) {
    assert!(!agree::<M>(body), "{needle}: decoded");
    match direct_decode::<M>(body) {
        Err(FrameError::Malformed(m)) => assert!(m.contains(needle), "{m:?} does not mention {needle:?}"),
        other => panic!("expected malformed ({needle}), got {other:?}"),
    }
}

#[test]
fn bad_hot_messages_are_malformed_on_both_paths() {
    let mut rng = Rng(11);
    let spec = || {
        let mut s = wire::TaskSpec::from(Rng(3).spec());
        s.actor = None;
        s
    };
    let submit = |s: wire::TaskSpec| field(2, &s.encode_to_vec());
    let mut s = spec();
    s.function = None;
    malformed::<ToNode>(&submit(s), "task function is missing");
    let mut s = spec();
    s.returns = None;
    malformed::<FromNode>(&submit(s), "task returns is missing");
    let mut s = spec();
    s.task_id = None;
    malformed::<ToNode>(&submit(s), "task id is missing");
    let mut s = spec();
    s.contained = vec![0; 21];
    malformed::<ToNode>(&submit(s), "20-byte object ids");
    let mut s = spec();
    s.args.push(wire::TaskArg { kind: None, encoding: 0 });
    malformed::<FromNode>(&submit(s), "task argument kind");
    let mut s = spec();
    s.args.push(wire::TaskArg { kind: Some(wire::TaskArgKind::Inline(vec![])), encoding: 7 });
    malformed::<FromNode>(&submit(s), "unknown value encoding 7");
    let mut s = spec();
    s.args.push(wire::TaskArg {
        kind: Some(wire::TaskArgKind::Object(wire::ResolvedObject { payload: None, id: None })),
        encoding: 0,
    });
    malformed::<FromNode>(&submit(s), "resolved argument id is missing");
    let mut s = spec();
    s.actor = Some(wire::ActorTaskKind::Create(wire::ActorSpec { executor: 5, ..Default::default() }));
    malformed::<FromNode>(&submit(s), "unknown actor executor 5");
    let mut s = spec();
    s.retry_exceptions = Some(wire::RetryExceptions { kind: None });
    malformed::<FromNode>(&submit(s), "retry policy kind");
    // Two bad parts: the same one is reported either way (the function
    // before the arguments).
    let mut s = spec();
    s.function = None;
    s.args.push(wire::TaskArg { kind: None, encoding: 0 });
    malformed::<ToNode>(&submit(s), "task function is missing");

    let done = |d: wire::TaskDone| field(8, &d.encode_to_vec());
    let ok_value = || wire::ObjectValue::from(ObjectValue::Error(Error::GetTimeout));
    let returned = |values| Some(wire::TaskOutcome::Returned(wire::Returned { values }));
    let item = |task_id: Option<wire::TaskId>, value| {
        field(16, &wire::ReportItem { task_id, attempt: 1, index: 2, value, digest: 3 }.encode_to_vec())
    };
    malformed::<ToNode>(&item(None, Some(ok_value())), "ReportItem task id is missing");
    malformed::<ToNode>(&item(Some(rng.tid().into()), None), "ReportItem value is missing");
    malformed::<ToNode>(&item(Some(rng.tid().into()), Some(wire::ObjectValue::default())), "object value kind");
    malformed::<ToNode>(
        &done(wire::TaskDone { task_id: None, attempt: 0, outcome: returned(vec![]) }),
        "TaskDone task id is missing",
    );
    malformed::<ToNode>(
        &done(wire::TaskDone { task_id: Some(rng.tid().into()), attempt: 0, outcome: None }),
        "TaskDone outcome is missing",
    );
    let mut bad = ok_value();
    bad.kind = Some(wire::ObjectValueKind::Inline(vec![1]));
    bad.encoding = 12;
    malformed::<ToNode>(
        &done(wire::TaskDone { task_id: Some(rng.tid().into()), attempt: 0, outcome: returned(vec![ok_value(), bad]) }),
        "unknown value encoding 12",
    );
    let mut bad = ok_value();
    bad.kind = Some(wire::ObjectValueKind::Inline(vec![1]));
    bad.contained = vec![0; 39];
    malformed::<ToNode>(
        &done(wire::TaskDone { task_id: Some(rng.tid().into()), attempt: 0, outcome: returned(vec![bad]) }),
        "refs nested in a value",
    );
    malformed::<ToNode>(
        &done(wire::TaskDone {
            task_id: Some(rng.tid().into()),
            attempt: 0,
            outcome: returned(vec![wire::ObjectValue::default()]),
        }),
        "object value kind is missing",
    );
    malformed::<ToNode>(
        &done(wire::TaskDone {
            task_id: Some(rng.tid().into()),
            attempt: 0,
            outcome: Some(wire::TaskOutcome::Failed(wire::Error { kind: None })),
        }),
        "error kind",
    );

    // A known field with the wrong wire type, at each level.
    let mut b = Vec::new();
    encode_key(2, WireType::Varint, &mut b);
    encode_varint(1, &mut b);
    malformed::<ToNode>(&b, "wire type");
    malformed::<FromNode>(&b, "wire type");
    let mut inner = Vec::new();
    encode_key(3, WireType::SixtyFourBit, &mut inner);
    inner.extend([0; 8]);
    malformed::<ToNode>(&field(2, &inner), "wire type");
    malformed::<ToNode>(&field(8, &inner), "wire type");
    let mut inner = Vec::new();
    encode_key(7, WireType::LengthDelimited, &mut inner);
    encode_varint(0, &mut inner);
    malformed::<FromNode>(&field(2, &inner), "wire type");
    // A length beyond the body; an unfinished group; bytes that are not
    // protobuf.
    malformed::<ToNode>(&[0x12, 0x7f, 0x0a], "");
    let mut b = field(2, &[]);
    encode_key(200, WireType::StartGroup, &mut b);
    malformed::<ToNode>(&b, "");
    malformed::<FromNode>(&[0xff; 12], "");
    // A name that is not UTF-8.
    let name = field(1, &[0xff, 0xfe]);
    malformed::<ToNode>(&field(2, &field(2, &name)), "invalid string");
    malformed::<FromNode>(&field(2, &field(2, &name)), "invalid string");
}
