//! Object refs.

use crate::global;
use crate::worker::CoreWorker;
use ferroray_common::{Error, ObjectId, Result};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// One counted hold on an object in this process. Many `ObjectRef` clones
/// share one `RefInner`; the process's count for the object drops when the
/// `RefInner` does.
pub struct RefInner {
    pub(crate) id: ObjectId,
    pub(crate) core: Arc<CoreWorker>,
}

impl RefInner {
    /// A hold the node already counts (the process just submitted or put it).
    pub(crate) fn owned(core: &Arc<CoreWorker>, id: ObjectId) -> Arc<Self> {
        core.add_local_ref(id, false);
        Arc::new(RefInner { id, core: core.clone() })
    }

    /// A hold found in a value: tells the node if it is this process's first.
    pub(crate) fn borrowed(core: &Arc<CoreWorker>, id: ObjectId) -> Arc<Self> {
        core.add_local_ref(id, true);
        Arc::new(RefInner { id, core: core.clone() })
    }
}

impl Drop for RefInner {
    fn drop(&mut self) {
        self.core.remove_local_ref(self.id);
    }
}

/// A future value of type `T`: the result of a task, or an object made by
/// `put`. Cheap to clone; `Send + Sync` whatever `T` is. The object lives
/// while any handle to it lives, in any process.
///
/// `r.get()` blocks until the value is here; `r.await` (or `(&r).await`)
/// waits without blocking a thread, on any executor. Both give the value or
/// the task's error, and inside a task both lend its CPU while they wait.
pub struct ObjectRef<T> {
    pub(crate) inner: Arc<RefInner>,
    _t: PhantomData<fn() -> T>,
}

impl<T> ObjectRef<T> {
    pub(crate) fn from_inner(inner: Arc<RefInner>) -> Self {
        ObjectRef { inner, _t: PhantomData }
    }

    /// A handle to object `id`, named inside a value this process is
    /// reading (a front decoding its own values; Rust values do this in
    /// `Deserialize`). Counted as a new local handle: the value that named
    /// it keeps the object alive until the node has the count.
    pub fn borrowed(id: ObjectId) -> crate::Result<Self> {
        let core = global::core()?;
        Ok(ObjectRef::from_inner(RefInner::borrowed(&core, id)))
    }

    pub fn id(&self) -> ObjectId {
        self.inner.id
    }

    /// The same object seen as another type (for generic plumbing).
    pub fn cast<U>(self) -> ObjectRef<U> {
        ObjectRef::from_inner(self.inner)
    }

    /// Whether the value (or its error) is already known to this process.
    pub fn is_ready(&self) -> bool {
        self.inner.core.is_ready(self.inner.id)
    }

    /// Asks for every one of `refs` not here yet at once, each through the
    /// core that holds it (refs from before a `shutdown` and `init` name
    /// the old one), so that a `get` of each in turn finds them coming
    /// rather than asking one at a time. Best effort: a failure here shows
    /// again in the `get` of that ref, in its turn.
    pub fn prefetch_all<'a>(refs: impl IntoIterator<Item = &'a ObjectRef<T>>)
    where
        T: 'a,
    {
        let mut batch: Vec<ObjectId> = Vec::new();
        let mut core: Option<&Arc<crate::worker::CoreWorker>> = None;
        for r in refs {
            if core.is_some_and(|c| !Arc::ptr_eq(c, &r.inner.core)) {
                let _ = core.expect("checked").prefetch(&batch);
                batch.clear();
            }
            core = Some(&r.inner.core);
            batch.push(r.inner.id);
        }
        if let Some(c) = core {
            let _ = c.prefetch(&batch);
        }
    }
}

impl<T: DeserializeOwned> ObjectRef<T> {
    /// Blocks until the value is ready and returns it (or the task's error).
    /// A `ferroray::Error` the task itself returned (say a nested task's
    /// `TaskCancelled`, passed on with `?`) comes back as that same variant.
    pub fn get(&self) -> Result<T> {
        self.inner.core.get(self.inner.id, None).map_err(Error::reraised)
    }

    /// Like [`get`](Self::get), but gives up with `Error::GetTimeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.inner.core.get(self.inner.id, Some(timeout)).map_err(Error::reraised)
    }
}

impl<T> ObjectRef<T> {
    /// Blocks until the object is ready and gives its bytes and encoding as
    /// stored (see [`CoreWorker::get_raw`]), whatever `T` is.
    pub fn get_raw(&self, timeout: Option<Duration>) -> Result<crate::RawValue> {
        self.inner.core.get_raw(self.inner.id, timeout)
    }
}

/// `ref.await` (or `(&ref).await`): the value, without blocking a thread.
///
/// Works on any executor (`futures::executor::block_on`, tokio, ...): the
/// waker is registered where arrivals are dispatched, no particular runtime
/// is needed. Inside a task, awaiting a value that is not here yet lends the
/// task's CPU back to the node exactly as a blocking [`get`](ObjectRef::get)
/// does, so async tasks awaiting the tasks they submitted never deadlock on a
/// full node. Errors are those of `get`.
impl<T: DeserializeOwned> std::future::IntoFuture for ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = ObjectRefFuture<T>;

    fn into_future(self) -> ObjectRefFuture<T> {
        ObjectRefFuture { r: self }
    }
}

impl<T: DeserializeOwned> std::future::IntoFuture for &ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = ObjectRefFuture<T>;

    fn into_future(self) -> ObjectRefFuture<T> {
        ObjectRefFuture { r: self.clone() }
    }
}

/// The future an awaited [`ObjectRef`] becomes: `Send`, `Unpin`, `'static`
/// (it holds its own handle to the object); gives the value or the error.
#[must_use = "futures do nothing unless awaited"]
pub struct ObjectRefFuture<T> {
    r: ObjectRef<T>,
}

impl<T> fmt::Debug for ObjectRefFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRefFuture({})", self.r.inner.id)
    }
}

impl<T: DeserializeOwned> std::future::Future for ObjectRefFuture<T> {
    type Output = Result<T>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<T>> {
        let inner = &self.r.inner;
        inner.core.poll_get(inner.id, cx.waker()).map(|r| r.map_err(Error::reraised))
    }
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef::from_inner(self.inner.clone())
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}
impl<T> Eq for ObjectRef<T> {}
impl<T> std::hash::Hash for ObjectRef<T> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.inner.id.hash(h)
    }
}

impl<T> fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRef({})", self.inner.id)
    }
}

impl<T> Serialize for ObjectRef<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if let Some(ordinal) = crate::codec::placeholder(self.inner.id) {
            // Fingerprinting a yielded item: the ref's place, not its id.
            return s.serialize_newtype_struct("ObjectRef", &ordinal);
        }
        crate::codec::note_nested(&self.inner);
        s.serialize_newtype_struct("ObjectRef", &self.inner.id)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "ObjectRef")]
        struct Wire(ObjectId);
        let Wire(id) = Wire::deserialize(d)?;
        let core = global::core().map_err(serde::de::Error::custom)?;
        Ok(ObjectRef::from_inner(RefInner::borrowed(&core, id)))
    }
}
