//! The public error type.
//!
//! Errors are values that travel: a failed task stores its [`Error`] as the
//! content of each of its return objects, and every `get` of those objects
//! (or of objects computed from them) returns it. So `Error` is `Clone` and
//! serializable, and carries strings rather than source errors, plus, when
//! the task's error type is serializable, that error value encoded (see
//! [`Error::downcast_task_error`]).

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure ferroray reports. `#[non_exhaustive]`: new kinds of failure
/// may be added, so a `match` outside this crate needs a `_` arm.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The task's own code failed: it returned `Err`, or it panicked.
    #[error("{0}")]
    Task(Box<TaskError>),
    /// `get`/`wait`/`next` with a timeout ran out of time.
    #[error("timed out waiting for the object")]
    GetTimeout,
    /// The task was cancelled before it produced this object.
    #[error("task was cancelled")]
    TaskCancelled,
    /// The worker running the task died (and no retries were left).
    #[error("worker died while running task {task}: {detail}")]
    WorkerCrashed { task: String, detail: String },
    /// The object's value is gone and cannot be recovered (its owner died,
    /// or it was freed).
    #[error("object {0} is lost")]
    ObjectLost(String),
    /// A task or runtime option is invalid.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A value could not be encoded or decoded.
    #[error("serialization failed: {0}")]
    Serialization(String),
    /// The worker has no remote function by this name (built from another binary?).
    #[error("unknown remote function {0:?}: the worker executable does not register it")]
    UnknownFunction(String),
    /// The task asks for more resources than the cluster has in total.
    #[error("task can never be scheduled: {0}")]
    Infeasible(String),
    /// The object store has no room even after spilling.
    #[error("object store is full: {0}")]
    StoreFull(String),
    /// A streaming generator's retry disagreed with what was already reported.
    #[error("generator replay mismatch: {0}")]
    ReplayMismatch(String),
    /// No cluster in this process, and none could be started here. A
    /// driver starts one on its first use of the API without `init`, so
    /// this comes from uses that need an existing one (decoding a ref in a
    /// process with no cluster) or from a process without the `ferroray`
    /// facade linked.
    #[error("ferroray is not initialized: call ferroray::init() first")]
    NotInitialized,
    #[error("ferroray is already initialized in this process")]
    AlreadyInitialized,
    /// The connection to the node daemon or a peer is gone.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// `Config::address` names a cluster this machine has no node of.
    #[error("no cluster to connect to: {0}")]
    NoCluster(String),
    /// A peer sent something that does not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("i/o error: {0}")]
    Io(String),
    /// The peer is not allowed in: another user, a wrong token, or a process
    /// the node did not start claiming to be its worker.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The actor a call went to is dead (and will not restart), or died
    /// while the call ran with no task retries left.
    #[error("actor {actor} is dead: {cause}")]
    ActorDied { actor: String, cause: ActorDeathCause },
}

/// Why an actor ended.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ActorDeathCause {
    /// `kill` ended it.
    #[error("killed")]
    Killed,
    /// Its process died (or a method panicked) and no restarts were left.
    #[error("its process died: {0}")]
    Crashed(String),
    /// Its constructor failed (or it could not be placed).
    #[error("its creation failed: {0}")]
    CreationFailed(String),
    /// Every handle to it was dropped.
    #[error("every handle to it was dropped")]
    OutOfScope,
    /// It ended itself, or was terminated after its queued calls.
    #[error("it exited")]
    Exited,
    /// Its job (the driver that created it) ended.
    #[error("its job ended")]
    JobEnded,
}

/// A failure inside the task's own code, with where it happened.
/// `#[non_exhaustive]`: read its fields; it is made by ferroray.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskError {
    /// The Rust type name of the error value (`std::any::type_name`), or
    /// `"panic"`.
    pub type_name: String,
    /// The error's `Display` text, or the panic message.
    pub message: String,
    /// The remote function's name.
    pub task_name: String,
    pub pid: u32,
    /// The error value itself, encoded like every other value
    /// ([`crate::value`]), when its type is
    /// `serde::Serialize` (and encoding succeeded); `None` for a panic or an
    /// error type that is not serializable. Read it back with
    /// [`TaskError::downcast`] / [`Error::downcast_task_error`].
    pub value: Option<Vec<u8>>,
}

impl TaskError {
    /// The most bytes of an encoded error value that travel; a larger value
    /// is left out (`value: None`; the type name and message still travel),
    /// so an error cannot make a task's result outgrow a message.
    pub const MAX_VALUE_BYTES: u64 = 1 << 20;

    /// `e` encoded for [`value`](Self::value), like every other value
    /// ([`crate::value`]); `None` if it does not encode or is over
    /// [`MAX_VALUE_BYTES`](Self::MAX_VALUE_BYTES).
    pub fn encode_value<E: Serialize + ?Sized>(e: &E) -> Option<Vec<u8>> {
        match crate::value::encoded_size(e) {
            Ok(n) if n <= Self::MAX_VALUE_BYTES => crate::value::to_vec_sized(e, n).ok(),
            _ => None,
        }
    }

    /// Whether the task's error value was of type `E` (compares
    /// `std::any::type_name::<E>()` with [`type_name`](Self::type_name);
    /// workers are the same executable as the driver, so the names agree).
    pub fn is<E>(&self) -> bool {
        self.type_name == std::any::type_name::<E>()
    }

    /// The task's error value as itself: `Some` when its type is `E` and it
    /// was carried (`E` is serializable, and encoded within
    /// [`MAX_VALUE_BYTES`](Self::MAX_VALUE_BYTES)) and decodes (the value
    /// format is not self-describing, so serde attributes that need one,
    /// like `#[serde(untagged)]`, do not round-trip); otherwise `None`.
    pub fn downcast<E: DeserializeOwned>(&self) -> Option<E> {
        if !self.is::<E>() {
            return None;
        }
        crate::value::from_slice(self.value.as_deref()?).ok()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} (pid={}) failed with {}: {}", self.task_name, self.pid, self.type_name, self.message)
    }
}

/// How a failed attempt should be treated; decided here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The process or machine failed: retried up to `max_retries`.
    System,
    /// The user's code failed: retried only with `retry_exceptions`.
    Application,
    /// Retrying cannot help (bad input, cancellation, unknown function).
    Fatal,
}

impl Error {
    /// A task error without an encoded value (a panic, or an error type that
    /// is not serializable).
    pub fn task(type_name: &str, message: impl Into<String>, task_name: &str, pid: u32) -> Self {
        Error::Task(Box::new(TaskError {
            type_name: type_name.to_string(),
            message: message.into(),
            task_name: task_name.to_string(),
            pid,
            value: None,
        }))
    }

    /// The user's error value of a failed task, recovered as itself: like
    /// Ray, where a task's exception is raised again in the caller as an
    /// instance of its own class.
    ///
    /// `Some(e)` when `self` is [`Error::Task`], the task failed with an
    /// `Err(e)` of type `E`, and `E` is `serde::Serialize` (so the value was
    /// carried; `E: DeserializeOwned` reads it back). `None` for another
    /// variant, another type, a panic, or an error type that is not
    /// serializable (those keep only [`TaskError::type_name`] and
    /// [`TaskError::message`]).
    ///
    /// ```
    /// # use ferroray_common::Error;
    /// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// enum MyErr { NotFound(String) }
    /// # let e = Error::task("x", "not found", "f", 1);
    /// // `e` as returned by `get` of a task that returned `Err(MyErr::NotFound(..))`:
    /// match e.downcast_task_error::<MyErr>() {
    ///     Some(MyErr::NotFound(what)) => println!("missing {what}"),
    ///     None => println!("some other failure: {e}"),
    /// }
    /// ```
    pub fn downcast_task_error<E: DeserializeOwned>(&self) -> Option<E> {
        match self {
            Error::Task(t) => t.downcast(),
            _ => None,
        }
    }

    /// The error a task's code returned, as it is stored as the task's
    /// result. An [`Error::Task`] (a nested task's failure passed on with
    /// `?`) is kept as it is. Any other variant is stored inside an
    /// [`Error::Task`] (so the node classifies it as the task's own,
    /// application failure, and does not, say, retry a parent as if its own
    /// worker had crashed when it passes on a child's `WorkerCrashed`), and
    /// [`Error::reraised`] takes it out again when the caller reads it.
    #[doc(hidden)]
    pub fn raised_by_task(self, task_name: &str, pid: u32) -> Self {
        match self {
            Error::Task(_) => self,
            e => Error::Task(Box::new(TaskError {
                type_name: std::any::type_name::<Error>().to_string(),
                message: e.to_string(),
                task_name: task_name.to_string(),
                pid,
                value: TaskError::encode_value(&e),
            })),
        }
    }

    /// Undoes [`Error::raised_by_task`]: what `get` returns, so a
    /// `ferroray::Error` a task returned arrives as the same variant.
    #[doc(hidden)]
    pub fn reraised(self) -> Self {
        match &self {
            Error::Task(t) => t.downcast::<Error>().unwrap_or(self),
            _ => self,
        }
    }

    pub fn failure_kind(&self) -> FailureKind {
        match self {
            Error::WorkerCrashed { .. } | Error::Disconnected(_) | Error::ObjectLost(_) => FailureKind::System,
            Error::Task(_) => FailureKind::Application,
            _ => FailureKind::Fatal,
        }
    }

    /// Whether another attempt might succeed, given the task's retry policy.
    pub fn is_retryable(&self, retry_exceptions: &RetryExceptions) -> bool {
        match self.failure_kind() {
            FailureKind::System => true,
            FailureKind::Application => match self {
                Error::Task(t) => retry_exceptions.matches(&t.type_name),
                _ => false,
            },
            FailureKind::Fatal => false,
        }
    }

    pub fn serialization(e: impl fmt::Display) -> Self {
        Error::Serialization(e.to_string())
    }

    pub fn io(e: impl fmt::Display) -> Self {
        Error::Io(e.to_string())
    }
}

impl From<crate::value::ValueError> for Error {
    fn from(e: crate::value::ValueError) -> Self {
        match e {
            crate::value::ValueError::Io(e) => Error::io(e),
            e => Error::serialization(e),
        }
    }
}

/// Which application errors a task retries. `#[non_exhaustive]`: new ways
/// of choosing may be added.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RetryExceptions {
    #[default]
    None,
    All,
    /// Type name suffixes (`retry_exceptions_for`): an error matches if its
    /// type name ends with one of these (so `"ParseIntError"` matches
    /// `core::num::error::ParseIntError`, but `"Error"` matches nearly
    /// everything, and `"Flaky"` also matches `NotFlaky`).
    Types(Vec<String>),
    /// Exact type names, as `std::any::type_name` gives them
    /// (`retry_exceptions_of::<E>()`): an error matches only if its type is
    /// one of these.
    ExactTypes(Vec<String>),
}

impl RetryExceptions {
    pub fn matches(&self, type_name: &str) -> bool {
        match self {
            RetryExceptions::None => false,
            RetryExceptions::All => true,
            RetryExceptions::Types(types) => types.iter().any(|t| type_name.ends_with(t.as_str())),
            RetryExceptions::ExactTypes(types) => types.iter().any(|t| t == type_name),
        }
    }

    /// Adds the exact type `E` (what `retry_exceptions_of::<E>()` does): to
    /// the list of exact types if there is one, otherwise replacing the
    /// policy (`None`, `All` or a suffix list) with one of just `E`.
    pub fn add_type<E: ?Sized>(&mut self) {
        let name = std::any::type_name::<E>().to_string();
        match self {
            RetryExceptions::ExactTypes(types) => {
                if !types.contains(&name) {
                    types.push(name)
                }
            }
            other => *other = RetryExceptions::ExactTypes(vec![name]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let crash = Error::WorkerCrashed { task: "f".into(), detail: "SIGKILL".into() };
        let app = Error::task("core::num::error::ParseIntError", "bad", "f", 1);
        assert!(crash.is_retryable(&RetryExceptions::None));
        assert!(!app.is_retryable(&RetryExceptions::None));
        assert!(app.is_retryable(&RetryExceptions::All));
        assert!(app.is_retryable(&RetryExceptions::Types(vec!["ParseIntError".into()])));
        assert!(!app.is_retryable(&RetryExceptions::Types(vec!["IoError".into()])));
        assert!(!Error::TaskCancelled.is_retryable(&RetryExceptions::All));
    }

    #[test]
    fn exact_types_match_only_that_type() {
        struct Flaky;
        struct NotFlaky;
        let flaky = Error::task(std::any::type_name::<Flaky>(), "m", "f", 1);
        let not_flaky = Error::task(std::any::type_name::<NotFlaky>(), "m", "f", 1);
        let mut policy = RetryExceptions::All;
        policy.add_type::<Flaky>();
        assert_eq!(policy, RetryExceptions::ExactTypes(vec![std::any::type_name::<Flaky>().into()]));
        assert!(flaky.is_retryable(&policy));
        assert!(!not_flaky.is_retryable(&policy), "a suffix is not enough");
        assert!(not_flaky.is_retryable(&RetryExceptions::Types(vec!["Flaky".into()])), "the string form is a suffix");
        policy.add_type::<NotFlaky>();
        policy.add_type::<NotFlaky>();
        assert!(matches!(&policy, RetryExceptions::ExactTypes(t) if t.len() == 2));
        assert!(not_flaky.is_retryable(&policy));
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let e = Error::task("MyErr", "boom", "parse", 42);
        assert_eq!(e.to_string(), "task parse (pid=42) failed with MyErr: boom");
        assert!(!Error::GetTimeout.to_string().ends_with('.'));
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum MyErr {
        Bad(u32),
    }

    fn with_value<E: Serialize>(e: &E) -> Error {
        let mut err = Error::task(std::any::type_name::<E>(), "m", "f", 1);
        if let Error::Task(t) = &mut err {
            t.value = Some(crate::value::to_vec(e).unwrap());
        }
        err
    }

    #[test]
    fn downcast_checks_the_type_name() {
        let e = with_value(&MyErr::Bad(7));
        assert_eq!(e.downcast_task_error::<MyErr>(), Some(MyErr::Bad(7)));
        // Same encoding, another type: refused by name, not decoded.
        assert_eq!(e.downcast_task_error::<u32>(), None);
        assert_eq!(Error::task(std::any::type_name::<MyErr>(), "m", "f", 1).downcast_task_error::<MyErr>(), None);
        assert_eq!(Error::GetTimeout.downcast_task_error::<MyErr>(), None);
    }

    #[test]
    fn an_error_value_over_the_limit_is_left_out() {
        let small = vec![0u8; 1000];
        assert_eq!(TaskError::encode_value(&small), Some(crate::value::to_vec(&small).unwrap()));
        let big = vec![0u8; TaskError::MAX_VALUE_BYTES as usize];
        assert_eq!(TaskError::encode_value(&big), None, "its length over the limit");
    }

    #[test]
    fn a_reraised_error_keeps_its_variant_and_is_an_application_failure() {
        let raised = Error::WorkerCrashed { task: "c".into(), detail: "SIGKILL".into() }.raised_by_task("p", 2);
        assert_eq!(raised.failure_kind(), FailureKind::Application);
        assert!(!raised.is_retryable(&RetryExceptions::None));
        assert_eq!(raised.reraised(), Error::WorkerCrashed { task: "c".into(), detail: "SIGKILL".into() });
        let app = with_value(&MyErr::Bad(1));
        assert_eq!(app.clone().raised_by_task("p", 2), app);
        assert_eq!(app.clone().reraised(), app);
    }
}
