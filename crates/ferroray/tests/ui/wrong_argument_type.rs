#[ferroray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn main() {
    let _ = add::remote("one", 2);
}
