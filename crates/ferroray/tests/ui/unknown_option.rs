#[ferroray::remote(num_cpu = 2)]
fn f() -> i64 {
    1
}

fn main() {}
