//! Actors, the caller's side: handles, creation options, and what the
//! `#[actor]` macro expands to.
//!
//! A handle is a counted ref to the actor's *handle object* (the return
//! object of its creation task, see `ferroray_common::ActorId`): cloning,
//! dropping, nesting it in a value or passing it to a task count exactly
//! as for any `ObjectRef`, and the actor ends when the last one anywhere
//! is gone and its calls are done. Each method call carries the handle
//! object among its `contained` refs, so a handle used only for one call
//! keeps the actor until that call is done.

use crate::object_ref::{ObjectRef, RefInner};
use crate::task::TaskCall;
use crate::worker::CoreWorker;
use crate::{global, TaskOptions};
use ferroray_common::{ActorId, Error, Result};
use ferroray_protocol::{ActorExecutor, ActorSpec, ActorTask, FromNode, ReturnKind, ToNode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::sync::Arc;

/// A type made an actor by `#[ferroray::actor]`.
pub trait ActorClass: 'static {
    /// The name workers find it by: its module path and type name.
    const CLASS: &'static str;
    /// What a handle's methods are called on (generated beside the type).
    type Methods: From<RawActorHandle> + AsRef<RawActorHandle>;
    /// It has an `async fn` method: its calls run on an event loop.
    const ASYNC: bool;
}

/// What the `#[actor]` expansion knows of a class that decides its
/// executor.
#[derive(Debug, Clone, Copy)]
pub struct ActorKind {
    /// It has an `async fn` method (see [`ActorClass::ASYNC`]).
    pub asynchronous: bool,
    /// Its state is `Send + Sync`, so threads may share it.
    pub shareable: bool,
}

/// The untyped part of an [`ActorHandle`]: the actor's id and a counted
/// ref to its handle object, or why the actor could not be created.
#[derive(Clone)]
pub struct RawActorHandle {
    actor: std::result::Result<(ActorId, ObjectRef<()>), Error>,
    class: Arc<str>,
    /// What the front that made the actor keeps with it (`ActorOptions::front`),
    /// when this handle came from the creation or from `get_actor_raw`.
    front: Arc<[u8]>,
}

impl RawActorHandle {
    /// The actor's id; `None` if it could not be created.
    pub fn id(&self) -> Option<ActorId> {
        self.actor.as_ref().ok().map(|(id, _)| *id)
    }

    /// The registered name of the actor's type.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// What the front that made the actor keeps with it (empty if none, or
    /// for a handle that travelled in a value: the front carries its own).
    pub fn front(&self) -> &[u8] {
        &self.front
    }

    /// Starts a method call: `name` is the method's registered name.
    pub fn call(&self, name: &'static str, opts: TaskOptions) -> TaskCall {
        let call = TaskCall::new(name, opts);
        match &self.actor {
            Ok((id, handle)) => call.on_actor(*id, handle.inner.clone()),
            Err(e) => call.failed(e.clone()),
        }
    }

    /// A handle from its handle object's ref (a front decoding a handle it
    /// passed in a value) and its class's name.
    pub fn from_handle(handle: ObjectRef<()>, class: &str) -> Self {
        let id = ActorId(handle.id().task);
        RawActorHandle { actor: Ok((id, handle)), class: class.into(), front: Arc::from([]) }
    }

    /// The handle object's ref: what a front passes to carry the handle.
    pub fn handle(&self) -> Result<&ObjectRef<()>> {
        self.actor.as_ref().map(|(_, h)| h).map_err(Clone::clone)
    }

    /// Starts a method call of an actor of another language's front
    /// (`TaskCall::foreign`).
    pub fn call_foreign(&self, function: ferroray_protocol::FunctionDescriptor, opts: TaskOptions) -> TaskCall {
        let call = TaskCall::foreign(function, opts);
        match &self.actor {
            Ok((id, handle)) => call.on_actor(*id, handle.inner.clone()),
            Err(e) => call.failed(e.clone()),
        }
    }

    /// Ends the actor now (see [`ActorHandle::kill`]); with `no_restart`
    /// false it may restart, within its `max_restarts`.
    pub fn kill(&self, no_restart: bool) -> Result<()> {
        match &self.actor {
            Ok((id, handle)) => handle.inner.core.kill_actor(*id, no_restart),
            Err(e) => Err(e.clone()),
        }
    }

    /// Ends the actor once the calls already made to it are done.
    pub fn terminate(&self) -> Result<()> {
        match &self.actor {
            Ok((id, handle)) => handle.inner.core.terminate_actor(*id),
            Err(e) => Err(e.clone()),
        }
    }

    fn failed(class: &'static str, e: Error) -> Self {
        RawActorHandle { actor: Err(e), class: class.into(), front: Arc::from([]) }
    }
}

impl std::fmt::Debug for RawActorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.actor {
            Ok((id, _)) => write!(f, "ActorHandle({}, {id})", self.class),
            Err(e) => write!(f, "ActorHandle({}, failed: {e})", self.class),
        }
    }
}

/// A handle's wire form: the handle object's ref (counted where it lands)
/// and the class, checked against the type it is read as.
#[derive(Serialize, Deserialize)]
#[serde(rename = "ActorHandle")]
struct Wire {
    handle: ObjectRef<()>,
    class: String,
}

impl Serialize for RawActorHandle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.actor {
            Ok((_, handle)) => Wire { handle: handle.clone(), class: self.class.to_string() }.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(format!("a handle to an actor that was never created: {e}"))),
        }
    }
}

impl<'de> Deserialize<'de> for RawActorHandle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let id = ActorId(w.handle.id().task);
        Ok(RawActorHandle { actor: Ok((id, w.handle)), class: w.class.into(), front: Arc::from([]) })
    }
}

/// A handle to an actor of type `A`: its methods are called through it
/// (`h.incr().remote(5)`). `Clone + Send + Sync`; it can be passed to tasks
/// and actor methods, also nested inside values, and is counted like a ref:
/// a non-detached actor ends when the last handle anywhere is dropped and
/// its calls are done.
pub struct ActorHandle<A: ActorClass> {
    methods: A::Methods,
    _class: PhantomData<fn() -> A>,
}

impl<A: ActorClass> ActorHandle<A> {
    pub fn from_raw(raw: RawActorHandle) -> Self {
        ActorHandle { methods: A::Methods::from(raw), _class: PhantomData }
    }

    pub fn raw(&self) -> &RawActorHandle {
        self.methods.as_ref()
    }

    /// The actor's id; `None` if it could not be created (then every call
    /// fails with the reason).
    pub fn id(&self) -> Option<ActorId> {
        self.raw().id()
    }

    /// Ends the actor once the calls already made to it are done (calls
    /// made later fail with `ActorDied`). Ray's `actor.__ray_terminate__`.
    pub fn terminate(&self) -> Result<()> {
        self.raw().terminate()
    }

    /// Ends the actor now: calls running on it are interrupted and fail,
    /// and it does not restart. Ray's `ray.kill(actor)`.
    pub fn kill(&self) -> Result<()> {
        self.raw().kill(true)
    }
}

impl<A: ActorClass> std::ops::Deref for ActorHandle<A> {
    type Target = A::Methods;
    fn deref(&self) -> &A::Methods {
        &self.methods
    }
}

impl<A: ActorClass> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle::from_raw(self.raw().clone())
    }
}

impl<A: ActorClass> std::fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.raw().fmt(f)
    }
}

impl<A: ActorClass> Serialize for ActorHandle<A> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.raw().serialize(s)
    }
}

impl<'de, A: ActorClass> Deserialize<'de> for ActorHandle<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = RawActorHandle::deserialize(d)?;
        if &*raw.class != A::CLASS {
            return Err(serde::de::Error::custom(format!(
                "a handle to a {} actor read as a handle to {}",
                raw.class,
                A::CLASS
            )));
        }
        Ok(ActorHandle::from_raw(raw))
    }
}

/// Creation options of an actor, set by `#[actor(...)]` and overridden by
/// `A::options()`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActorOptions {
    /// Found by `get_actor(name)`; unique among live actors.
    pub name: Option<String>,
    /// Lives until killed rather than until its last handle is dropped.
    pub detached: bool,
    /// Times its process is started again after it dies.
    pub max_restarts: crate::Retries,
    /// Times a call is run again after the process died under it.
    pub max_task_retries: crate::Retries,
    /// Calls run at once: `None` is 1, or 1000 for an async actor (as Ray).
    pub max_concurrency: Option<u32>,
    /// Resources held for the actor's whole life: none by default (Ray
    /// places an actor with 1 CPU and then holds 0; here what is asked is
    /// what is held, and nothing is asked unless set).
    pub num_cpus: f64,
    pub num_gpus: f64,
    pub resources: Vec<(String, f64)>,
    /// Kept with the actor for another language's front, and given back
    /// by `get_actor_raw` ([`RawActorHandle::front`]): Python keeps the
    /// class's method table here. Empty for Rust actors.
    pub front: Vec<u8>,
}

impl Default for ActorOptions {
    fn default() -> Self {
        ActorOptions {
            name: None,
            detached: false,
            max_restarts: crate::Retries::Count(0),
            max_task_retries: crate::Retries::Count(0),
            max_concurrency: None,
            num_cpus: 0.0,
            num_gpus: 0.0,
            resources: Vec::new(),
            front: Vec::new(),
        }
    }
}

impl ActorOptions {
    fn task_options(&self) -> TaskOptions {
        TaskOptions {
            num_cpus: self.num_cpus,
            num_gpus: self.num_gpus,
            resources: self.resources.clone(),
            max_retries: crate::Retries::Count(0),
            ..TaskOptions::default()
        }
    }

    /// The spec the node keeps; an error for options no executor can honour.
    fn spec(&self, class: &str, kind: ActorKind) -> Result<ActorSpec> {
        let max_concurrency =
            self.max_concurrency.unwrap_or(if kind.asynchronous { DEFAULT_ASYNC_CONCURRENCY } else { 1 });
        if max_concurrency == 0 {
            return Err(Error::InvalidOption(format!("actor {class}: max_concurrency must be at least 1")));
        }
        let executor = if kind.asynchronous {
            ActorExecutor::Async
        } else if max_concurrency > 1 {
            ActorExecutor::Threaded
        } else {
            ActorExecutor::Serial
        };
        if executor == ActorExecutor::Threaded && !kind.shareable {
            return Err(Error::InvalidOption(format!(
                "actor {class} with max_concurrency {max_concurrency} runs its calls on threads at once, so its state \
                 must be Send + Sync (or give it an async method: an async actor's state stays on one thread)"
            )));
        }
        Ok(ActorSpec {
            class: class.to_string(),
            name: self.name.clone(),
            detached: self.detached,
            max_restarts: self.max_restarts.to_wire(),
            max_task_retries: self.max_task_retries.to_wire(),
            max_concurrency,
            executor,
            front: self.front.clone(),
        })
    }
}

/// An async actor's `max_concurrency` unless set: Ray's default.
const DEFAULT_ASYNC_CONCURRENCY: u32 = 1000;

/// The builder methods of a generated actor options type (which has an
/// `opts: ActorOptions` field).
#[macro_export]
#[doc(hidden)]
macro_rules! __actor_options_methods {
    () => {
        /// A name to find the actor by (`ferroray::get_actor`), unique among
        /// live actors: `remote` fails at once if it is taken. Like Ray's
        /// `name=`.
        pub fn name(mut self, name: &str) -> Self {
            self.opts.name = ::core::option::Option::Some(::std::string::ToString::to_string(name));
            self
        }
        /// The actor lives until killed, not until its last handle is
        /// dropped or its creator's job ends. Like Ray's
        /// `lifetime="detached"`.
        pub fn lifetime_detached(mut self) -> Self {
            self.opts.detached = true;
            self
        }
        /// Times the actor's process is started again (the constructor
        /// runs again with its original arguments) after it dies: default
        /// 0. Like Ray's `max_restarts` (where forever is `-1`).
        pub fn max_restarts(mut self, n: impl ::core::convert::Into<$crate::task::Retries>) -> Self {
            self.opts.max_restarts = ::core::convert::Into::into(n);
            self
        }
        /// Times a call is run again when the actor's process died under
        /// it (and the actor restarts): default 0. Like Ray's
        /// `max_task_retries`.
        pub fn max_task_retries(mut self, n: impl ::core::convert::Into<$crate::task::Retries>) -> Self {
            self.opts.max_task_retries = ::core::convert::Into::into(n);
            self
        }
        /// Calls run at once: default 1 (one at a time), or 1000 for an
        /// actor with an `async fn` method (as Ray). Above 1 a synchronous
        /// actor runs its calls on a pool of threads (`&self` methods
        /// together, a `&mut self` method alone), so its state must be
        /// `Send + Sync`. Like Ray's `max_concurrency`.
        pub fn max_concurrency(mut self, n: u32) -> Self {
            self.opts.max_concurrency = ::core::option::Option::Some(n);
            self
        }
        /// CPUs the actor holds for its whole life: default 0.
        pub fn num_cpus(mut self, n: impl ::core::convert::Into<f64>) -> Self {
            self.opts.num_cpus = ::core::convert::Into::into(n);
            self
        }
        /// GPUs the actor holds for its whole life: default 0.
        pub fn num_gpus(mut self, n: impl ::core::convert::Into<f64>) -> Self {
            self.opts.num_gpus = ::core::convert::Into::into(n);
            self
        }
        /// An amount of a custom resource the actor holds for its whole
        /// life; call once per resource.
        pub fn resource(mut self, name: &str, amount: impl ::core::convert::Into<f64>) -> Self {
            self.opts.resources.push((::std::string::ToString::to_string(name), ::core::convert::Into::into(amount)));
            self
        }
        /// Several custom resources at once, e.g. `.resources([("disk", 2)])`;
        /// like Ray's `resources={"disk": 2}`.
        pub fn resources<N: ::core::convert::AsRef<str>, A: ::core::convert::Into<f64>>(
            mut self,
            resources: impl ::core::iter::IntoIterator<Item = (N, A)>,
        ) -> Self {
            for (name, amount) in resources {
                self = self.resource(name.as_ref(), amount);
            }
            self
        }
    };
}

impl TaskCall {
    /// Creates the actor `class` with these constructor arguments: the
    /// node registers it (and its name) before this returns; it starts in
    /// the background.
    pub fn create_actor(self, class: &str, opts: &ActorOptions, kind: ActorKind) -> Result<RawActorHandle> {
        let actor = ActorTask::Create(Box::new(opts.spec(class, kind)?));
        let (spec, core, keep) = self.with_options(opts.task_options()).into_spec(ReturnKind::Fixed(1), Some(actor))?;
        let id = ActorId(spec.task_id);
        // The node holds the handle object for this process from the
        // `CreateActor` on, as for a `Submit`'s returns.
        let handle = ObjectRef::from_inner(RefInner::owned(&core, id.handle_object()));
        let reply = core.request(|req| ToNode::CreateActor { req, spec: Box::new(spec) });
        drop(keep);
        match reply? {
            FromNode::ActorCreated { result: Ok(()), .. } => {
                Ok(RawActorHandle { actor: Ok((id, handle)), class: class.into(), front: opts.front.as_slice().into() })
            }
            FromNode::ActorCreated { result: Err(e), .. } => Err(e),
            other => Err(Error::Protocol(format!("unexpected reply to CreateActor: {other:?}"))),
        }
    }
}

/// A handle to an actor that could not be created: its calls fail with `e`.
pub fn failed_handle<A: ActorClass>(e: Error) -> ActorHandle<A> {
    ActorHandle::from_raw(RawActorHandle::failed(A::CLASS, e))
}

/// The live actor named `name`, as a handle of type `A` (an error if there
/// is none, or if it is of another type).
pub fn get_actor<A: ActorClass>(name: &str) -> Result<ActorHandle<A>> {
    let raw = get_actor_raw(name)?;
    if raw.class() != A::CLASS {
        return Err(Error::InvalidOption(format!("the actor named {name:?} is a {}, not a {}", raw.class(), A::CLASS)));
    }
    Ok(ActorHandle::from_raw(raw))
}

/// The live actor named `name`, of whatever class (its handle says which).
pub fn get_actor_raw(name: &str) -> Result<RawActorHandle> {
    let core = global::core_or_init()?;
    let (id, class, front) = match core.request(|req| ToNode::GetActor { req, name: name.to_string() })? {
        FromNode::ActorFound { result, .. } => result?,
        other => return Err(Error::Protocol(format!("unexpected reply to GetActor: {other:?}"))),
    };
    let handle = ObjectRef::from_inner(RefInner::borrowed(&core, id.handle_object()));
    Ok(RawActorHandle { actor: Ok((id, handle)), class: class.into(), front: front.into() })
}

impl CoreWorker {
    /// Ends actor `id` now; calls running on it are interrupted. With
    /// `no_restart: false` it restarts if it has restarts left.
    pub fn kill_actor(&self, id: ActorId, no_restart: bool) -> Result<()> {
        self.send(ToNode::KillActor { actor: id, no_restart })
    }

    /// Ends actor `id` once the calls already made to it are done.
    pub fn terminate_actor(&self, id: ActorId) -> Result<()> {
        self.send(ToNode::TerminateActor { actor: id })
    }
}
