#[ferroray::remote(num_returns = "dynamic")]
fn f() -> Vec<i64> {
    vec![1]
}

fn main() {}
