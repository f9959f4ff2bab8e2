//! Handles are `Send + Sync` whatever they point to, so they can be shared
//! across threads and moved into other tasks' arguments.

use ferroray::{Buffer, Error, ObjectRef};
use std::cell::Cell;
use std::rc::Rc;

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}
fn is_clone<T: Clone>() {}

#[test]
fn object_refs_are_send_sync_clone() {
    is_send::<ObjectRef<i64>>();
    is_sync::<ObjectRef<i64>>();
    is_clone::<ObjectRef<i64>>();
    // Even when the value type itself is neither.
    is_send::<ObjectRef<Rc<Cell<i64>>>>();
    is_sync::<ObjectRef<Rc<Cell<i64>>>>();
    is_send::<Buffer>();
    is_sync::<Buffer>();
    is_send::<Error>();
    is_sync::<Error>();
}
