// Ray's "retry forever" (-1) is `"forever"` in the attribute and
// `Retries::Forever` in the builder; a negative count does not compile.
#[ferroray::remote(max_retries = -1)]
fn a() -> i64 {
    1
}

#[ferroray::remote(max_retries = "forever")]
fn b() -> i64 {
    1
}

fn main() {
    let _ = b::options().max_retries(ferroray::Retries::Forever).max_retries(3);
    let _ = b::options().max_retries(-1);
}
