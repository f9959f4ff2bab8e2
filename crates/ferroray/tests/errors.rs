//! Task errors keep their type: a serializable error comes back as itself
//! (`Error::downcast_task_error`), a `ferroray::Error` passed on with `?` by
//! a nested task stays the same variant, and `retry_exceptions_of::<E>()`
//! retries by exact type.

mod common;

use common::{cluster, get, scratch_dir};
use ferroray::Error;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LookupError {
    NotFound(String),
    Invalid { code: u32 },
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NotFound(k) => write!(f, "{k} not found"),
            LookupError::Invalid { code } => write!(f, "invalid ({code})"),
        }
    }
}

/// Same shape as `LookupError`: only the type name tells them apart.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum OtherError {
    NotFound(String),
}

#[ferroray::remote(max_retries = 0)]
fn lookup(key: String) -> Result<u32, LookupError> {
    match key.as_str() {
        "one" => Ok(1),
        "bad" => Err(LookupError::Invalid { code: 7 }),
        _ => Err(LookupError::NotFound(key)),
    }
}

/// Passes the nested task's error on with `?`.
#[ferroray::remote(max_retries = 0)]
fn lookup_plus_one(key: String) -> Result<u32, Error> {
    Ok(lookup::remote(key).get()? + 1)
}

#[ferroray::remote]
fn plus_one(x: u32) -> u32 {
    x + 1
}

/// Two levels of nesting.
#[ferroray::remote(max_retries = 0)]
fn lookup_plus_two(key: String) -> Result<u32, Error> {
    Ok(lookup_plus_one::remote(key).get()? + 1)
}

#[ferroray::remote(max_retries = 0)]
fn io_fails() -> Result<u32, std::io::Error> {
    Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no entry"))
}

#[ferroray::remote(max_retries = 0)]
fn string_fails() -> Result<u32, String> {
    Err("plain text".to_string())
}

#[test]
fn a_serializable_error_comes_back_as_itself() {
    let _c = cluster();
    assert_eq!(get(&lookup::remote("one".to_string())).unwrap(), 1);
    let err = get(&lookup::remote("two".to_string())).unwrap_err();
    assert_eq!(err.downcast_task_error::<LookupError>(), Some(LookupError::NotFound("two".into())));
    let err = get(&lookup::remote("bad".to_string())).unwrap_err();
    assert_eq!(err.downcast_task_error::<LookupError>(), Some(LookupError::Invalid { code: 7 }));
    // The type name and message are there as before.
    let Error::Task(t) = &err else { panic!("{err:?}") };
    assert_eq!(t.type_name, std::any::type_name::<LookupError>());
    assert_eq!(t.message, "invalid (7)");
    assert!(t.is::<LookupError>());
    // `String` is serializable too.
    let err = get(&string_fails::remote()).unwrap_err();
    assert_eq!(err.downcast_task_error::<String>().as_deref(), Some("plain text"));
}

#[test]
fn a_serializable_error_comes_back_as_itself_through_nested_tasks() {
    let _c = cluster();
    assert_eq!(get(&lookup_plus_two::remote("one".to_string())).unwrap(), 3);
    let err = get(&lookup_plus_one::remote("two".to_string())).unwrap_err();
    assert_eq!(err.downcast_task_error::<LookupError>(), Some(LookupError::NotFound("two".into())));
    let err = get(&lookup_plus_two::remote("bad".to_string())).unwrap_err();
    assert_eq!(err.downcast_task_error::<LookupError>(), Some(LookupError::Invalid { code: 7 }));
    // It is the innermost task's error, with where it happened.
    let Error::Task(t) = &err else { panic!("{err:?}") };
    assert_eq!(t.task_name, "lookup");
    // A failed argument passes the error on to the dependent unchanged.
    let err = get(&plus_one::remote(lookup::remote("bad".to_string()))).unwrap_err();
    assert_eq!(err.downcast_task_error::<LookupError>(), Some(LookupError::Invalid { code: 7 }));
}

#[test]
fn a_non_serializable_error_keeps_its_message_only() {
    let _c = cluster();
    let err = get(&io_fails::remote()).unwrap_err();
    let Error::Task(t) = &err else { panic!("{err:?}") };
    assert_eq!(t.type_name, std::any::type_name::<std::io::Error>());
    assert_eq!(t.message, "no entry");
    assert_eq!(t.value, None);
    assert!(t.is::<std::io::Error>());
    assert_eq!(err.downcast_task_error::<String>(), None);
    assert_eq!(err.downcast_task_error::<LookupError>(), None);
}

#[test]
fn asking_for_the_wrong_type_gives_none() {
    let _c = cluster();
    let err = get(&lookup::remote("two".to_string())).unwrap_err();
    assert_eq!(err.downcast_task_error::<OtherError>(), None, "same encoding, another type");
    assert_eq!(err.downcast_task_error::<String>(), None);
    assert_eq!(err.downcast_task_error::<Error>(), None);
    assert_eq!(Error::GetTimeout.downcast_task_error::<LookupError>(), None);
}

// ---- a ferroray::Error passed on with `?` keeps its variant ----

#[ferroray::remote(max_retries = 0)]
fn invalid() -> Result<u32, Error> {
    Err(Error::InvalidOption("no such mode".into()))
}

#[ferroray::remote]
fn pass_on_invalid() -> Result<u32, Error> {
    invalid::remote().get()
}

#[ferroray::remote]
fn sleep_ms(ms: u64) -> u64 {
    for _ in 0..ms / 10 {
        if ferroray::is_cancelled() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ms
}

/// The child is cancelled before the parent reads it.
#[ferroray::remote]
fn pass_on_cancelled() -> Result<u64, Error> {
    let child = sleep_ms::remote(60_000);
    ferroray::cancel(&child)?;
    child.get()
}

#[ferroray::remote]
fn pass_on_timeout() -> Result<u64, Error> {
    sleep_ms::remote(60_000).get_timeout(Duration::from_millis(50))
}

fn attempts(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[ferroray::remote(max_retries = 0)]
fn die() -> u32 {
    // SAFETY: killing our own process on purpose.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

/// Records each attempt; passes on the child's `WorkerCrashed`. Its own
/// worker is fine, so it must not be retried as a system failure.
#[ferroray::remote(max_retries = 3)]
fn pass_on_crash(dir: String) -> Result<u32, Error> {
    let n = attempts(&dir);
    std::fs::write(Path::new(&dir).join(format!("attempt-{n}")), "").unwrap();
    die::remote().get()
}

#[test]
fn a_ferroray_error_passed_on_with_question_mark_keeps_its_variant() {
    let _c = cluster();
    assert_eq!(get(&invalid::remote()).unwrap_err(), Error::InvalidOption("no such mode".into()));
    assert_eq!(get(&pass_on_invalid::remote()).unwrap_err(), Error::InvalidOption("no such mode".into()));
    assert_eq!(get(&pass_on_cancelled::remote()).unwrap_err(), Error::TaskCancelled);
    assert_eq!(get(&pass_on_timeout::remote()).unwrap_err(), Error::GetTimeout);
}

#[test]
fn a_passed_on_worker_crash_is_the_parents_application_error() {
    let _c = cluster();
    let d = scratch_dir("pass-on-crash");
    let dir = d.to_string_lossy().to_string();
    let err = get(&pass_on_crash::remote(dir.clone())).unwrap_err();
    assert!(matches!(err, Error::WorkerCrashed { .. }), "{err:?}");
    assert_eq!(attempts(&dir), 1, "the parent's own worker did not crash: no retry");
    // With retry_exceptions it is retried like any error of the task's own.
    let d = scratch_dir("pass-on-crash-retried");
    let dir = d.to_string_lossy().to_string();
    let err =
        get(&pass_on_crash::options().max_retries(1).retry_exceptions_of::<Error>().remote(dir.clone())).unwrap_err();
    assert!(matches!(err, Error::WorkerCrashed { .. }), "{err:?}");
    assert_eq!(attempts(&dir), 2);
}

// ---- retry_exceptions_of::<E>() ----

#[derive(Debug)]
pub struct Flaky;
#[derive(Debug)]
pub struct NotFlaky;
impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("flaky")
    }
}
impl std::fmt::Display for NotFlaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not flaky")
    }
}

/// Fails on the first attempt with `Flaky`, then succeeds.
#[ferroray::remote]
fn flaky_once(dir: String) -> Result<usize, Flaky> {
    let n = attempts(&dir);
    std::fs::write(Path::new(&dir).join(format!("attempt-{n}")), "").unwrap();
    if n == 0 {
        Err(Flaky)
    } else {
        Ok(n + 1)
    }
}

/// Fails on the first attempt with `NotFlaky` (whose name ends with
/// "Flaky"), then succeeds.
#[ferroray::remote]
fn not_flaky_once(dir: String) -> Result<usize, NotFlaky> {
    let n = attempts(&dir);
    std::fs::write(Path::new(&dir).join(format!("attempt-{n}")), "").unwrap();
    if n == 0 {
        Err(NotFlaky)
    } else {
        Ok(n + 1)
    }
}

fn fresh(name: &str) -> String {
    scratch_dir(name).to_string_lossy().to_string()
}

#[test]
fn retry_exceptions_of_retries_exactly_the_types_named() {
    let _c = cluster();
    let dir = fresh("of-flaky");
    assert_eq!(get(&flaky_once::options().retry_exceptions_of::<Flaky>().remote(dir.clone())).unwrap(), 2);
    let dir = fresh("of-not-flaky");
    let err = get(&not_flaky_once::options().retry_exceptions_of::<Flaky>().remote(dir.clone())).unwrap_err();
    assert!(matches!(&err, Error::Task(t) if t.is::<NotFlaky>()), "{err:?}");
    assert_eq!(attempts(&dir), 1, "NotFlaky is not Flaky, whatever its name ends with");
    // Several types: each call adds one.
    let dir = fresh("of-both");
    let both = not_flaky_once::options().retry_exceptions_of::<Flaky>().retry_exceptions_of::<NotFlaky>();
    assert_eq!(get(&both.remote(dir.clone())).unwrap(), 2);
    // The string form stays a suffix match: "Flaky" catches NotFlaky too.
    let dir = fresh("for-suffix");
    assert_eq!(get(&not_flaky_once::options().retry_exceptions_for(&["Flaky"]).remote(dir.clone())).unwrap(), 2);
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HugeError(Vec<u8>);
impl std::fmt::Display for HugeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes of detail", self.0.len())
    }
}

#[ferroray::remote(max_retries = 0)]
fn huge_fails() -> Result<u32, HugeError> {
    Err(HugeError(vec![7; 4 << 20]))
}

#[test]
fn an_error_value_too_large_to_carry_keeps_its_message_only() {
    let _c = cluster();
    let err = get(&huge_fails::remote()).unwrap_err();
    let Error::Task(t) = &err else { panic!("{err:?}") };
    assert_eq!(t.message, format!("{} bytes of detail", 4 << 20));
    assert_eq!(t.value, None);
    assert!(t.is::<HugeError>());
    assert!(err.downcast_task_error::<HugeError>().is_none());
}

/// Yields `Ok(0)`, then fails the stream with a serializable error.
#[ferroray::remote(max_retries = 0)]
fn stream_then_fail() -> impl Iterator<Item = Result<u32, LookupError>> {
    vec![Ok(0), Err(LookupError::Invalid { code: 9 })].into_iter()
}

#[test]
fn a_generators_error_comes_back_as_itself() {
    let _c = cluster();
    let refs: Vec<_> = stream_then_fail::remote().collect();
    assert_eq!(refs.len(), 2, "the item, then one ref holding the error");
    assert_eq!(get(&refs[0]).unwrap(), 0);
    let err = get(&refs[1]).unwrap_err();
    assert_eq!(err.downcast_task_error::<LookupError>(), Some(LookupError::Invalid { code: 9 }));
}
