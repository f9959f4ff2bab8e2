pub struct Counter(i64);

#[ferroray::actor]
impl Default for Counter {
    fn default() -> Self {
        Counter(0)
    }
}

fn main() {}
