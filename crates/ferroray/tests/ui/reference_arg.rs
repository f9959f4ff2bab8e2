#[ferroray::remote]
fn len(s: &str) -> usize {
    s.len()
}

fn main() {}
