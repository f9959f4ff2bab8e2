//! A bounded fuzz of the frame and message decoder, run with the ordinary
//! tests: valid frames of every message, mutated (bit flips, random bytes,
//! truncation, changed lengths, spliced frames), and pure garbage. Whatever
//! the bytes, decoding returns a message or a typed error, never panics,
//! and never allocates far beyond what the frame holds; a decoded message's
//! bounds check ([`ToNode::check`]) never panics either.
//!
//! Bounded by iterations and by time (`FUZZ_SECONDS`, default 3), with a
//! seed printed so a failure can be replayed (`FUZZ_SEED`).

use ferroray_common::{resources, ClusterToken, Error, ObjectId, ResourceSet, RetryExceptions, TaskId, WorkerId};
use ferroray_protocol::{
    frame, Encoding, FromNode, FunctionDescriptor, NodeInfo, ObjectValue, Payload, ReturnKind, Role, TaskArg,
    TaskOutcome, TaskSpec, ToNode, PROTOCOL_VERSION,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes and their peak, to bound what a decode allocates.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// xorshift64*: deterministic from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn oid(seq: u64, index: u32) -> ObjectId {
    ObjectId { task: TaskId { submitter: WorkerId(3), seq }, index }
}

fn spec() -> TaskSpec {
    TaskSpec {
        task_id: TaskId { submitter: WorkerId(3), seq: 9 },
        function: FunctionDescriptor::Rust { name: "crate::module::function".into() },
        args: vec![
            TaskArg::Value { payload: Payload::Inline(vec![1, 2, 3]), encoding: Encoding::Rust },
            TaskArg::Ref(oid(1, 0)),
        ],
        contained: vec![oid(2, 1), oid(3, 2)],
        returns: ReturnKind::Streaming { backpressure: Some(4) },
        resources: ResourceSet::new().with(resources::CPU, 0.5).with("custom", 2.0),
        max_retries: 3,
        retry_exceptions: RetryExceptions::Types(vec!["ParseIntError".into()]),
        parent: Some(TaskId { submitter: WorkerId(3), seq: 1 }),
        enable_events: true,
        attempt: 0,
        actor: None,
    }
}

/// One valid frame of every message kind.
fn corpus() -> Vec<Vec<u8>> {
    let data = ObjectValue::Data {
        payload: Payload::Inline(vec![5; 40]),
        encoding: Encoding::Rust,
        contained: vec![oid(4, 0)],
    };
    let to_node = vec![
        ToNode::Hello {
            protocol: PROTOCOL_VERSION,
            worker_id: WorkerId(7),
            pid: 42,
            role: Role::Worker,
            token: ClusterToken::zero(),
        },
        ToNode::Submit(Box::new(spec())),
        ToNode::Put { id: oid(5, 0), value: data.clone() },
        ToNode::AddRef(vec![oid(1, 0), oid(2, 0)]),
        ToNode::RemoveRef(vec![oid(1, 0)]),
        ToNode::Subscribe(vec![oid(1, 0)]),
        ToNode::Unpin(vec![oid(1, 0)]),
        ToNode::TaskDone {
            task_id: TaskId { submitter: WorkerId(3), seq: 9 },
            attempt: 1,
            outcome: TaskOutcome::Returned(vec![data.clone(), ObjectValue::Error(Error::TaskCancelled)]),
        },
        ToNode::Allocate { req: 1, size: 4096 },
        ToNode::Deallocate { offset: 64 },
        ToNode::Cancel {
            task_id: TaskId { submitter: WorkerId(3), seq: 9 },
            force: true,
            recursive: false,
            force_after_ms: Some(500),
        },
        ToNode::Blocked,
        ToNode::Revoked { task_ids: vec![TaskId { submitter: WorkerId(3), seq: 9 }] },
        ToNode::ListTasks { req: 3 },
        ToNode::ReportItem {
            task_id: TaskId { submitter: WorkerId(3), seq: 9 },
            attempt: 0,
            index: 2,
            value: data,
            digest: 9,
        },
        ToNode::StreamConsumed { task_id: TaskId { submitter: WorkerId(3), seq: 9 }, consumed: 3 },
        ToNode::StreamDrop { task_id: TaskId { submitter: WorkerId(3), seq: 9 }, consumed: 3 },
        ToNode::StreamHandOff { task_id: TaskId { submitter: WorkerId(3), seq: 9 }, consumed: 1 },
        ToNode::StreamClaim { req: 2, task_id: TaskId { submitter: WorkerId(3), seq: 9 }, from: 1 },
    ];
    let from_node = vec![
        FromNode::Welcome(NodeInfo {
            node_id: ferroray_common::NodeId(1),
            inline_threshold: 100,
            store_capacity: 1 << 20,
        }),
        FromNode::Execute(Box::new(spec())),
        FromNode::StreamEnd { task_id: TaskId { submitter: WorkerId(3), seq: 9 }, items: 3, error: None },
        FromNode::Rejected(Error::Protocol("no".into())),
    ];
    let mut out = Vec::new();
    for m in &to_node {
        let mut b = Vec::new();
        frame::encode_into(&mut b, m.clone()).unwrap();
        out.push(b);
    }
    for m in &from_node {
        let mut b = Vec::new();
        frame::encode_into(&mut b, m.clone()).unwrap();
        out.push(b);
    }
    out
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut b = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            2 => b.truncate(rng.below(b.len() + 1)),
            3 if b.len() >= 4 => {
                // A different length prefix, small or huge.
                let len = if rng.below(2) == 0 { rng.below(b.len() * 2) as u32 } else { rng.next() as u32 };
                b[..4].copy_from_slice(&len.to_le_bytes());
            }
            4 => {
                // Splice the tail of another frame in.
                let other = &corpus[rng.below(corpus.len())];
                let at = rng.below(b.len() + 1);
                let from = rng.below(other.len());
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            5 if b.len() >= 12 => {
                // A huge count where a length or count may be.
                let i = 4 + rng.below(b.len() - 11);
                b[i..i + 8].copy_from_slice(&(rng.next() | 0xff00_0000_0000_0000).to_le_bytes());
            }
            _ => {
                let at = rng.below(b.len() + 1);
                b.insert(at, rng.next() as u8);
            }
        }
    }
    b
}

fn garbage(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(256);
    let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    if b.len() >= 4 && rng.below(2) == 0 {
        let body = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&body.to_le_bytes());
    }
    b
}

/// Decodes `bytes` as both directions' messages; checks the allocation bound.
fn decode_all(bytes: &[u8]) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut r = bytes;
    if let Ok(Some(msg)) = frame::read_frame::<_, ToNode>(&mut r) {
        let _ = msg.check();
    }
    let mut r = bytes;
    let _ = frame::read_frame::<_, FromNode>(&mut r);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    // A frame's body is read whole (at most its length, itself at most
    // MAX_FRAME); protobuf has no counts to trust, so each list grows with
    // the elements that are actually there (an element takes at least two
    // bytes on the wire and at most a few dozen in memory).
    let bound = 4 * bytes.len() + (8 << 20);
    assert!(peak <= bound, "decoding {} bytes allocated {peak} bytes: {bytes:?}", bytes.len());
}

#[test]
fn the_decoder_survives_mutated_and_random_frames() {
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    let seconds: u64 = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    println!("FUZZ_SEED={seed}");
    let corpus = corpus();
    for frame in &corpus {
        decode_all(frame);
    }
    let mut rng = Rng(seed);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while runs < 2_000_000 && Instant::now() < end {
        let bytes = if rng.below(4) == 0 { garbage(&mut rng) } else { mutate(&mut rng, &corpus) };
        decode_all(&bytes);
        runs += 1;
    }
    println!("{runs} inputs decoded");
    assert!(runs > 1000, "the fuzz ran too few inputs to mean anything ({runs})");
}
