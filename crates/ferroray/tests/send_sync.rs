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

fn is_unpin<T: Unpin>() {}
fn is_static<T: 'static>() {}

#[test]
fn the_futures_and_streams_of_refs_can_move_between_threads() {
    // An awaited ref can be spawned on a multi-threaded executor.
    is_send::<ferroray::ObjectRefFuture<Rc<Cell<i64>>>>();
    is_unpin::<ferroray::ObjectRefFuture<i64>>();
    is_static::<ferroray::ObjectRefFuture<i64>>();
    is_send::<ferroray::NextItem<'static, Rc<Cell<i64>>>>();
    is_send::<ferroray::AsCompleted<ObjectRef<i64>>>();
    is_unpin::<ferroray::AsCompleted<ObjectRef<i64>>>();
}
