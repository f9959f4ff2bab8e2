pub struct Counter(i64);

#[ferroray::actor]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    pub fn add(&mut self, by: i64) -> i64 {
        self.0 += by;
        self.0
    }
}

fn main() {
    let c = Counter::remote();
    let _ = c.add().remote("five");
}
