#[ferroray::remote]
fn items() -> impl Iterator<Item = u64> {
    0..3
}

fn main() {
    let g = items::remote();
    // A generator is not a value: take its items with next(), or wait for
    // the task with completed().
    let _ = g.get();
    let _ = ferroray::get(&g);
}
