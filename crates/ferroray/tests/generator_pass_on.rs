//! A streaming generator passed on as an argument, to a task or an actor's
//! method: the receiver iterates the same stream from where the sender
//! stopped, every item reaches exactly one consumer once and in order, and
//! backpressure still holds the producer. The pipeline pattern: a producer
//! task streams into a consumer.

mod common;

use common::{cluster, eventually, get, scratch_dir, T};
use ferroray::{Error, ObjectRef, ObjectRefGenerator};
use std::time::Duration;

#[ferroray::remote]
fn count(n: u64) -> impl Iterator<Item = u64> {
    0..n
}

/// Marks each item in `dir` as it starts making it.
#[ferroray::remote]
fn tracked(dir: String, n: u64) -> impl Iterator<Item = u64> {
    (0..n).inspect(move |i| std::fs::write(format!("{dir}/started-{i}"), b"").unwrap())
}

fn count_marks(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).count()).unwrap_or(0)
}

/// Takes every item, in order.
#[ferroray::remote]
fn collect(gen: ObjectRefGenerator<u64>) -> Result<Vec<u64>, ferroray::Error> {
    gen.map(|r| r.get()).collect()
}

/// Takes `first` items, then waits long enough for a producer that ignored
/// backpressure to run ahead, reports how many the producer had started,
/// then takes the rest.
#[ferroray::remote]
fn slow_consumer(gen: ObjectRefGenerator<u64>, dir: String, first: usize) -> (Vec<u64>, usize) {
    let mut gen = gen;
    let mut items: Vec<u64> = (0..first).map(|_| gen.next().expect("an item").get().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = count_marks(&dir);
    items.extend(gen.map(|r| r.get().unwrap()));
    (items, started)
}

pub struct Sink {
    seen: Vec<u64>,
}

#[ferroray::actor]
impl Sink {
    pub fn new() -> Self {
        Sink { seen: Vec::new() }
    }

    /// Drains a stream into the actor's state.
    pub fn drain(&mut self, gen: ObjectRefGenerator<u64>) -> usize {
        for r in gen {
            self.seen.push(r.get().unwrap());
        }
        self.seen.len()
    }

    pub async fn drain_async(&mut self, gen: ObjectRefGenerator<u64>) -> usize {
        let mut gen = gen;
        while let Some(r) = gen.next_async().await {
            self.seen.push(r.await.unwrap());
        }
        self.seen.len()
    }

    pub fn seen(&self) -> Vec<u64> {
        self.seen.clone()
    }
}

#[test]
fn a_task_consumes_a_stream_passed_to_it() {
    let _c = cluster();
    let items = get(&collect::remote(count::remote(100))).unwrap();
    assert_eq!(items, (0..100).collect::<Vec<_>>());
}

#[test]
fn an_actor_drains_a_producer_task() {
    let _c = cluster();
    let sink = Sink::remote();
    assert_eq!(get(&sink.drain_async().remote(count::remote(50))).unwrap(), 50);
    assert_eq!(get(&sink.seen().remote()).unwrap(), (0..50).collect::<Vec<_>>());
}

#[test]
fn a_serial_actor_drains_a_producer_task() {
    let _c = cluster();
    // A sync method of an actor with an async one runs on its event loop;
    // its blocking iteration is fine there (nothing else is waiting).
    let sink = Sink::remote();
    assert_eq!(get(&sink.drain().remote(count::remote(20))).unwrap(), 20);
}

#[test]
fn the_receiver_resumes_where_the_sender_stopped() {
    let _c = cluster();
    let mut gen = count::remote(10);
    let first: Vec<u64> = (0..3).map(|_| get(&gen.next().unwrap()).unwrap()).collect();
    assert_eq!(first, vec![0, 1, 2]);
    let kept = gen.clone();
    let rest = collect::remote(gen);
    assert_eq!(get(&rest).unwrap(), (3..10).collect::<Vec<_>>());
    // The sender's clones end with an error, never a silent end.
    check_passed_on(&kept);
}

/// A generator its process passed on: one error item, then the end.
fn check_passed_on(kept: &ObjectRefGenerator<u64>) {
    let e = kept.next_timeout(T).unwrap().expect("an error item");
    assert!(matches!(get(&e), Err(Error::InvalidOption(m)) if m.contains("passed on")));
    assert_eq!(kept.next_timeout(T).unwrap(), None);
}

/// The window between the node sending the sender an item or the stream's
/// end and the sender passing the stream on: for a bounded time, streams
/// are passed on at every point of their run. Each item reaches the
/// receiver once, in order, and the sender's generator only ends with its
/// error (news that arrives late does not revive it).
#[test]
fn stress_passing_on_while_items_and_the_end_arrive() {
    let _c = cluster();
    let end = std::time::Instant::now() + Duration::from_secs(3);
    let mut rounds = 0u64;
    while std::time::Instant::now() < end {
        let taken = (rounds % 4) as usize;
        let mut gen = count::remote(6);
        for i in 0..taken {
            assert_eq!(get(&gen.next().unwrap()).unwrap(), i as u64);
        }
        let kept = gen.clone();
        let rest = collect::remote(gen);
        assert_eq!(get(&rest).unwrap(), (taken as u64..6).collect::<Vec<_>>());
        check_passed_on(&kept);
        rounds += 1;
    }
    assert!(rounds > 1);
}

#[test]
fn backpressure_still_holds_the_producer() {
    let _c = cluster();
    let d = scratch_dir("pass-on-bp");
    let dir = d.to_string_lossy().to_string();
    let gen = tracked::options().generator_backpressure(ferroray::Backpressure::items::<2>()).remote(dir.clone(), 40);
    let (items, started) = get(&slow_consumer::remote(gen, dir, 3)).unwrap();
    assert_eq!(items, (0..40).collect::<Vec<_>>());
    // 3 consumed, 2 unconsumed allowed, one being made when it paused.
    assert!(started <= 3 + 2 + 1, "the producer started {started} items while the consumer held 3");
}

#[test]
fn only_one_reader_of_a_value_gets_the_stream() {
    let _c = cluster();
    let carried: ObjectRef<ObjectRefGenerator<u64>> = ferroray::put(count::remote(10)).unwrap();
    let a = collect::remote(&carried);
    let b = collect::remote(&carried);
    let (a, b) = (get(&a), get(&b));
    let full: Vec<u64> = (0..10).collect();
    match (&a, &b) {
        (Ok(v), Err(_)) | (Err(_), Ok(v)) => assert_eq!(v, &full),
        _ => panic!("exactly one reader gets the stream: {a:?} {b:?}"),
    }
    // Taken by the other reader, or already drained and gone.
    let e = a.err().or(b.err()).unwrap();
    assert!(matches!(e, Error::InvalidOption(_)), "{e}");
}

#[test]
fn a_stream_passed_on_and_never_claimed_is_released() {
    let _c = cluster();
    let carried = ferroray::put(count::remote(5)).unwrap();
    drop(carried);
    assert!(eventually(T, || {
        let s = ferroray::runtime_stats().unwrap();
        s.node_streams == 0 && s.node_objects == 0 && s.store_objects == 0
    }));
}

/// A process that passed a stream on may claim it back (a value read in
/// the process that made it): the new generator takes the items, the old
/// one and its clones end with their error, and the generator's own object
/// still gives the task's real outcome.
#[test]
fn a_stream_claimed_back_in_the_same_process() {
    let _c = cluster();
    let gen = count::remote(5);
    let kept = gen.clone();
    let carried = ferroray::put(gen).unwrap();
    let back: ObjectRefGenerator<u64> = get(&carried).unwrap();
    assert_eq!(back.map(|r| get(&r).unwrap()).collect::<Vec<_>>(), (0..5).collect::<Vec<_>>());
    check_passed_on(&kept);
    assert_eq!(get(&kept.completed()), Ok(()), "the task's own outcome, not the hand-off's error");
}

/// A stale copy of an older hand-off (the first value read again after
/// the stream moved on) is refused and changes nothing: the current value
/// still gets the stream, from where it was passed on.
#[test]
fn a_stale_hand_off_is_refused_without_side_effects() {
    let _c = cluster();
    let gen = count::remote(6);
    let kept = gen.clone();
    let first = ferroray::put(gen).unwrap();
    let mut second_owner: ObjectRefGenerator<u64> = get(&first).unwrap();
    let taken: Vec<u64> = (0..2).map(|_| get(&second_owner.next().unwrap()).unwrap()).collect();
    assert_eq!(taken, vec![0, 1]);
    let second = ferroray::put(second_owner).unwrap();
    assert!(ferroray::put(kept.clone()).is_err(), "a generator that passed its stream on cannot pass it again");
    let stale: ObjectRefGenerator<u64> = get(&first).unwrap();
    let e = stale.next_timeout(T).unwrap().expect("an error item");
    assert!(matches!(get(&e), Err(Error::InvalidOption(m)) if m.contains("another consumer")));
    let current: ObjectRefGenerator<u64> = get(&second).unwrap();
    assert_eq!(current.map(|r| get(&r).unwrap()).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    check_passed_on(&kept);
}
