//! Generators as the caller sees them.
//!
//! [`ObjectRefGenerator<T>`] is the caller's end of a streaming generator
//! task: an `Iterator` and a `futures::Stream` of `ObjectRef<T>`. One
//! spelling each: `gen.next()` (or `for r in gen`) blocks,
//! `gen.next_async().await` does not; both are inherent methods, so neither
//! is ambiguous with `futures::StreamExt` in scope. Items are handed out
//! strictly in index order; after the last one comes, if the task failed,
//! one ref holding the error, then the end. A failure is never a silent end:
//! a lost connection to the node, or the consumer's own task being cancelled
//! while it waits, also comes as one ref whose `get` gives the error.
//! Dropping the generator releases the items never taken (the task runs
//! on); `close()` also stops the task at its next yield.
//!
//! A generator can be passed on: serialized into a task's argument (or any
//! value), it hands its stream over from the next item it would have
//! taken. The receiver's generator takes the items from there, in order,
//! with the same backpressure; the sender's generator (and its clones)
//! ends with an error. Only one receiver gets the stream: a value carrying
//! it that is read twice gives the second reader an error.
//!
//! [`DynamicObjectRefGenerator<T>`] is the value of a dynamic-returns task:
//! the list of its items' refs, made when the task ends. It is an ordinary
//! value: it can be stored and passed to other tasks.

use crate::object_ref::{ObjectRef, RefInner};
use ferroray_common::{ObjectId, Result, TaskId};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub(crate) struct GenInner {
    pub(crate) task: TaskId,
    /// The generator's own object (index 1): ready when the task ends.
    pub(crate) completion: Arc<RefInner>,
    /// A failure of the consumer's side (its task cancelled while waiting)
    /// was handed out as an error ref: the stream has ended for it.
    failed: AtomicBool,
    /// Which generator value consumes the stream in this process: 0 for the
    /// submitter's, a fresh one for each one passed on and claimed here.
    token: u64,
    /// Passed on to this process but not given the stream: its only item
    /// is this error.
    refused: Option<ferroray_common::Error>,
    /// This generator (any clone of it) passed its stream on: its only item
    /// from then on is that error (whatever becomes of the local stream).
    passed: AtomicBool,
}

impl GenInner {
    /// Why this generator gives no more items, if it does not.
    fn stopped(&self) -> Option<ferroray_common::Error> {
        if let Some(e) = &self.refused {
            return Some(e.clone());
        }
        self.passed.load(Ordering::Relaxed).then(|| crate::worker::passed_on(self.task))
    }
}

impl Drop for GenInner {
    fn drop(&mut self) {
        if self.refused.is_none() {
            self.completion.core.drop_stream(self.task, self.token);
        }
    }
}

/// The refs a streaming generator task yields, in order, as they are made.
pub struct ObjectRefGenerator<T> {
    inner: Arc<GenInner>,
    _t: PhantomData<fn() -> T>,
}

impl<T> ObjectRefGenerator<T> {
    pub(crate) fn new(completion: Arc<RefInner>) -> Self {
        let task = completion.id.task;
        ObjectRefGenerator {
            inner: Arc::new(GenInner {
                task,
                completion,
                failed: AtomicBool::new(false),
                token: 0,
                refused: None,
                passed: AtomicBool::new(false),
            }),
            _t: PhantomData,
        }
    }

    pub fn task_id(&self) -> TaskId {
        self.inner.task
    }

    fn wrap(r: Option<Arc<RefInner>>) -> Option<ObjectRef<T>> {
        r.map(ObjectRef::from_inner)
    }

    /// Blocks until the next item is here and returns its ref; `None` once
    /// the stream has ended. The same as `Iterator::next` (`for r in gen`),
    /// but inherent, so `gen.next()` is this even with `futures::StreamExt`
    /// in scope. Async code uses [`next_async`](Self::next_async).
    ///
    /// A failure comes as one last ref whose `get` gives the error, never as
    /// a silent end: the task's error, a lost connection to the node
    /// (`Disconnected`), or the calling task being cancelled while it waits
    /// (`TaskCancelled`).
    #[allow(clippy::should_implement_trait)] // It is `Iterator::next`, made inherent to win over `StreamExt::next`.
    pub fn next(&mut self) -> Option<ObjectRef<T>> {
        if let Some(e) = self.inner.stopped() {
            return self.failure(e);
        }
        match self.inner.completion.core.stream_next(self.inner.task, self.inner.token, None) {
            Ok(r) => Self::wrap(r),
            Err(e) => self.failure(e),
        }
    }

    /// `gen.next_async().await`: the next item without blocking a thread,
    /// on any executor; as [`next`](Self::next) otherwise (failures come as
    /// an error ref). Inside a task, waiting lends the task's CPU as a
    /// blocking `next` does. The same as `futures::StreamExt::next`.
    pub fn next_async(&mut self) -> NextItem<'_, T> {
        NextItem { gen: self }
    }

    /// The next item: `Ok(None)` at the end, `Err(GetTimeout)` if none came
    /// in time; a failure comes as an error item, as from [`next`](Self::next).
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<ObjectRef<T>>> {
        if let Some(e) = self.inner.stopped() {
            return Ok(self.failure(e));
        }
        match self.inner.completion.core.stream_next(self.inner.task, self.inner.token, Some(timeout)) {
            Ok(r) => Ok(Self::wrap(r)),
            Err(ferroray_common::Error::GetTimeout) => Err(ferroray_common::Error::GetTimeout),
            // As from `next`: a failure is an error item, then the end.
            Err(e) => Ok(self.failure(e)),
        }
    }

    /// The next item if it is already here, without waiting (`None`: not
    /// yet, or the end; `is_finished()` tells them apart). A failure comes
    /// as an error ref, as from [`next`](Self::next).
    pub fn next_ready(&self) -> Option<ObjectRef<T>> {
        if let Some(e) = self.inner.stopped() {
            return self.failure(e);
        }
        match self.inner.completion.core.stream_next(self.inner.task, self.inner.token, Some(Duration::ZERO)) {
            Ok(r) => Self::wrap(r),
            Err(ferroray_common::Error::GetTimeout) => None,
            Err(e) => self.failure(e),
        }
    }

    /// A failure on the consumer's side: one ref holding it, then the end.
    fn failure(&self, e: ferroray_common::Error) -> Option<ObjectRef<T>> {
        if self.inner.failed.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(ObjectRef::from_inner(self.inner.completion.core.error_ref(e)))
    }

    fn poll_item(&self, cx: &mut Context<'_>) -> Poll<Option<ObjectRef<T>>> {
        if let Some(e) = self.inner.stopped() {
            return Poll::Ready(self.failure(e));
        }
        match self.inner.completion.core.stream_poll(self.inner.task, self.inner.token, cx.waker()) {
            Poll::Ready(Ok(r)) => Poll::Ready(Self::wrap(r)),
            Poll::Ready(Err(e)) => Poll::Ready(self.failure(e)),
            // A cancel of the task awaiting wakes it (see `CancelRunning`).
            Poll::Pending if crate::context::is_cancelled() => {
                Poll::Ready(self.failure(ferroray_common::Error::TaskCancelled))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// A ref that is ready when the task has ended; its `get` gives the task's
    /// failure, if it failed.
    pub fn completed(&self) -> ObjectRef<()> {
        ObjectRef::from_inner(self.inner.completion.clone())
    }

    /// Whether the task has ended (every item it made is known here).
    pub fn is_finished(&self) -> bool {
        self.inner.stopped().is_some() || self.inner.completion.core.stream_ended(self.inner.task, self.inner.token)
    }

    /// Stops the remote task at its next yield and drops the generator.
    pub fn close(self) -> Result<()> {
        self.inner.completion.core.cancel(ObjectId::for_return(self.inner.task, 0), false, true)
    }
}

/// A generator's wire form: a ref to its own object (counted where it
/// lands, so the stream lives while the value does) and where the receiver
/// resumes it.
#[derive(Serialize, Deserialize)]
#[serde(rename = "ObjectRefGenerator")]
struct PassedOn {
    completion: ObjectRef<()>,
    from: u32,
    backpressure: bool,
}

impl<T> ObjectRefGenerator<T> {
    /// Passes the stream on, as serializing the generator does (for a front
    /// that writes values its own way): gives the generator's completion
    /// ref, the index of the first item the receiver gets, and whether the
    /// stream has backpressure, for [`claim`](Self::claim) in the receiver.
    /// This generator (and its clones) then ends with an error item.
    pub fn pass_on(&self) -> Result<(ObjectRef<()>, u32, bool)> {
        let core = &self.inner.completion.core;
        let (from, backpressure) = core.hand_off_stream(self.inner.task, self.inner.token)?;
        self.inner.passed.store(true, Ordering::Relaxed);
        Ok((ObjectRef::from_inner(self.inner.completion.clone()), from, backpressure))
    }

    /// Takes over a stream another process passed on (what
    /// [`pass_on`](Self::pass_on) gave there), as deserializing a generator
    /// does. If the stream cannot be taken (another consumer has it, or it
    /// is gone), the generator's only item is that error.
    pub fn claim(completion: ObjectRef<()>, from: u32, backpressure: bool) -> Self {
        let completion = completion.inner;
        let task = completion.id.task;
        let (token, refused) = match completion.core.claim_stream(task, from, backpressure) {
            Ok(token) => (token, None),
            Err(e) => (0, Some(e)),
        };
        ObjectRefGenerator {
            inner: Arc::new(GenInner {
                task,
                completion,
                failed: AtomicBool::new(false),
                token,
                refused,
                passed: AtomicBool::new(false),
            }),
            _t: PhantomData,
        }
    }
}

/// Passing a generator on: see the module's documentation.
impl<T> Serialize for ObjectRefGenerator<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let (completion, from, backpressure) = self.pass_on().map_err(serde::ser::Error::custom)?;
        PassedOn { completion, from, backpressure }.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRefGenerator<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let p = PassedOn::deserialize(d)?;
        Ok(Self::claim(p.completion, p.from, p.backpressure))
    }
}

impl<T> Clone for ObjectRefGenerator<T> {
    fn clone(&self) -> Self {
        ObjectRefGenerator { inner: self.inner.clone(), _t: PhantomData }
    }
}

impl<T> std::fmt::Debug for ObjectRefGenerator<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRefGenerator({})", self.inner.task)
    }
}

impl<T> PartialEq for ObjectRefGenerator<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inner.task == other.inner.task
    }
}

/// Blocking iteration: `for r in gen`; see [`ObjectRefGenerator::next`].
impl<T> Iterator for ObjectRefGenerator<T> {
    type Item = ObjectRef<T>;

    fn next(&mut self) -> Option<ObjectRef<T>> {
        ObjectRefGenerator::next(self)
    }
}

/// See [`ObjectRefGenerator::next_async`].
impl<T> futures::Stream for ObjectRefGenerator<T> {
    type Item = ObjectRef<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ObjectRef<T>>> {
        self.poll_item(cx)
    }
}

/// The future of [`ObjectRefGenerator::next_async`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct NextItem<'a, T> {
    gen: &'a mut ObjectRefGenerator<T>,
}

impl<T> std::future::Future for NextItem<'_, T> {
    type Output = Option<ObjectRef<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ObjectRef<T>>> {
        self.gen.poll_item(cx)
    }
}

/// The value of a dynamic-returns task: its items' refs, in order.
#[derive(Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct DynamicObjectRefGenerator<T> {
    refs: Vec<ObjectRef<T>>,
}

impl<T> DynamicObjectRefGenerator<T> {
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    pub fn refs(&self) -> &[ObjectRef<T>] {
        &self.refs
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ObjectRef<T>> {
        self.refs.iter()
    }
}

impl<T> Clone for DynamicObjectRefGenerator<T> {
    fn clone(&self) -> Self {
        DynamicObjectRefGenerator { refs: self.refs.clone() }
    }
}

impl<T> std::fmt::Debug for DynamicObjectRefGenerator<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.refs).finish()
    }
}

impl<T> IntoIterator for DynamicObjectRefGenerator<T> {
    type Item = ObjectRef<T>;
    type IntoIter = std::vec::IntoIter<ObjectRef<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.refs.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a DynamicObjectRefGenerator<T> {
    type Item = &'a ObjectRef<T>;
    type IntoIter = std::slice::Iter<'a, ObjectRef<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.refs.iter()
    }
}

/// What `wait` can wait for: an object, or a generator's next item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitKey {
    Object(ObjectId),
    Stream(TaskId),
}

/// Things `ferroray::wait` and `ferroray::as_completed` accept: refs,
/// generators, references to either (`&r`: nothing is cloned), and
/// `&dyn Waitable` to mix kinds in one slice
/// (`[&r as &dyn Waitable, &g]`). Object-safe.
pub trait Waitable {
    /// What is waited for; compare keys to tell which item is which.
    fn wait_key(&self) -> WaitKey;
}

impl std::fmt::Debug for dyn Waitable + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.wait_key() {
            WaitKey::Object(id) => write!(f, "ObjectRef({id})"),
            WaitKey::Stream(task) => write!(f, "ObjectRefGenerator({task})"),
        }
    }
}

/// A borrowed ref or generator (or `&dyn Waitable`): `wait` hands the same
/// references back, so nothing is cloned.
impl<W: Waitable + ?Sized> Waitable for &W {
    fn wait_key(&self) -> WaitKey {
        (**self).wait_key()
    }
}

impl<T> Waitable for ObjectRef<T> {
    fn wait_key(&self) -> WaitKey {
        WaitKey::Object(self.id())
    }
}

/// A generator is ready when its next item is here or its stream has ended.
impl<T> Waitable for ObjectRefGenerator<T> {
    fn wait_key(&self) -> WaitKey {
        WaitKey::Stream(self.inner.task)
    }
}

/// Refs and generators of one item type mixed in one owned list (for a
/// `wait` loop that keeps the not-ready ones); to wait on borrowed items of
/// any kinds, pass `&dyn Waitable`s instead.
#[derive(Debug)]
pub enum WaitItem<T> {
    Ref(ObjectRef<T>),
    Generator(ObjectRefGenerator<T>),
}

impl<T> Clone for WaitItem<T> {
    fn clone(&self) -> Self {
        match self {
            WaitItem::Ref(r) => WaitItem::Ref(r.clone()),
            WaitItem::Generator(g) => WaitItem::Generator(g.clone()),
        }
    }
}

impl<T> Waitable for WaitItem<T> {
    fn wait_key(&self) -> WaitKey {
        match self {
            WaitItem::Ref(r) => r.wait_key(),
            WaitItem::Generator(g) => g.wait_key(),
        }
    }
}

impl<T> From<ObjectRef<T>> for WaitItem<T> {
    fn from(r: ObjectRef<T>) -> Self {
        WaitItem::Ref(r)
    }
}

impl<T> From<ObjectRefGenerator<T>> for WaitItem<T> {
    fn from(g: ObjectRefGenerator<T>) -> Self {
        WaitItem::Generator(g)
    }
}

/// Things `ferroray::cancel` accepts: the task behind a ref or a generator.
pub trait Cancellable {
    fn task_to_cancel(&self) -> Result<ObjectId>;
}

impl<T> Cancellable for ObjectRef<T> {
    fn task_to_cancel(&self) -> Result<ObjectId> {
        Ok(self.id())
    }
}

impl<T> Cancellable for ObjectRefGenerator<T> {
    fn task_to_cancel(&self) -> Result<ObjectId> {
        Ok(ObjectId::for_return(self.inner.task, 0))
    }
}

impl<T> Cancellable for WaitItem<T> {
    fn task_to_cancel(&self) -> Result<ObjectId> {
        match self {
            WaitItem::Ref(r) => r.task_to_cancel(),
            WaitItem::Generator(g) => g.task_to_cancel(),
        }
    }
}
