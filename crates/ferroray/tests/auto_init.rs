//! A test binary that never calls `init` (nor anything that does): the
//! facade's constructor must still be linked in, so its first `remote()`
//! starts the cluster and its workers start as workers.

use std::time::Duration;

#[ferroray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[test]
fn a_binary_that_never_calls_init_works() {
    let r = add::remote(1, 2);
    assert_eq!(r.get_timeout(Duration::from_secs(30)), Ok(3));
    assert!(ferroray::is_initialized());
    drop(r);
    ferroray::shutdown();
}
