//! Generators as the caller sees them.
//!
//! [`ObjectRefGenerator<T>`] is the caller's end of a streaming generator
//! task: an `Iterator` and a `futures::Stream` of `ObjectRef<T>`. Items are
//! handed out strictly in index order; after the last one comes, if the task
//! failed, one ref holding the error, then the end. Dropping the generator
//! releases the items never taken (the task runs on); `close()` also stops
//! the task at its next yield.
//!
//! [`DynamicObjectRefGenerator<T>`] is the value of a dynamic-returns task:
//! the list of its items' refs, made when the task ends. It is an ordinary
//! value: it can be stored and passed to other tasks.

use crate::object_ref::{ObjectRef, RefInner};
use ferroray_common::{ObjectId, Result, TaskId};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub(crate) struct GenInner {
    pub(crate) task: TaskId,
    /// The generator's own object (index 1): ready when the task ends.
    pub(crate) completion: Arc<RefInner>,
}

impl Drop for GenInner {
    fn drop(&mut self) {
        self.completion.core.drop_stream(self.task);
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
        ObjectRefGenerator { inner: Arc::new(GenInner { task, completion }), _t: PhantomData }
    }

    pub fn task_id(&self) -> TaskId {
        self.inner.task
    }

    fn wrap(r: Option<Arc<RefInner>>) -> Option<ObjectRef<T>> {
        r.map(ObjectRef::from_inner)
    }

    /// The next item: `Ok(None)` at the end, `Err(GetTimeout)` if none came in time.
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<ObjectRef<T>>> {
        self.inner.completion.core.stream_next(self.inner.task, Some(timeout)).map(Self::wrap)
    }

    /// The next item if it is already here, without waiting.
    pub fn next_ready(&self) -> Option<ObjectRef<T>> {
        self.inner
            .completion
            .core
            .stream_next(self.inner.task, Some(Duration::ZERO))
            .ok()
            .flatten()
            .map(ObjectRef::from_inner)
    }

    /// A ref that is ready when the task has ended; its `get` gives the task's
    /// failure, if it failed.
    pub fn completed(&self) -> ObjectRef<()> {
        ObjectRef::from_inner(self.inner.completion.clone())
    }

    /// Whether the task has ended (every item it made is known here).
    pub fn is_finished(&self) -> bool {
        self.inner.completion.core.stream_ended(self.inner.task)
    }

    /// Stops the remote task at its next yield and drops the generator.
    pub fn close(self) -> Result<()> {
        self.inner.completion.core.cancel(ObjectId::for_return(self.inner.task, 0), false, true)
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

impl<T> Iterator for ObjectRefGenerator<T> {
    type Item = ObjectRef<T>;

    /// Blocks until the next item is reported. A lost connection to the
    /// node ends the stream with one ref holding that error.
    fn next(&mut self) -> Option<ObjectRef<T>> {
        match self.inner.completion.core.stream_next(self.inner.task, None) {
            Ok(r) => Self::wrap(r),
            Err(_) => None,
        }
    }
}

impl<T> futures::Stream for ObjectRefGenerator<T> {
    type Item = ObjectRef<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ObjectRef<T>>> {
        self.inner.completion.core.stream_poll(self.inner.task, cx.waker()).map(Self::wrap)
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
