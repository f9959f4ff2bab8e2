//! `#[remote]` and `#[actor]` reject what cannot work, with errors that point at the
//! user's code (compile-fail cases under tests/ui, checked by trybuild).

#[test]
fn remote_attribute_errors_point_at_the_users_code() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
