// A remote function inside a function body is refused, even beside a
// module-level remote function of the same name (whose check passes).
#[ferroray::remote]
fn local(x: i64) -> i64 {
    x
}

fn main() {
    #[ferroray::remote]
    fn local(x: i64) -> i64 {
        x + 1
    }
    let _ = local::remote(1);
}
