#[ferroray::remote(num_returns = 3)]
fn two() -> (i64, i64) {
    (1, 2)
}

#[ferroray::remote(num_returns = 2)]
fn not_a_tuple() -> i64 {
    1
}

fn main() {}
