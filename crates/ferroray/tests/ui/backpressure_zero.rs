// Backpressure 0 cannot be given: not in the attribute, not by the builder.
#[ferroray::remote(generator_backpressure = 0)]
fn zero() -> impl Iterator<Item = u64> {
    0..3
}

#[ferroray::remote]
fn count() -> impl Iterator<Item = u64> {
    0..3
}

fn main() {
    let _ = count::options().generator_backpressure(0);
}
