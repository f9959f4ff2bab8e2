pub struct Counter(i64);

#[ferroray::actor(max_restart = 2)]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }
}

fn main() {}
