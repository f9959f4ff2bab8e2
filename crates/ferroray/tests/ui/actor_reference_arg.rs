pub struct Counter(i64);

#[ferroray::actor]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    pub fn add_len(&mut self, s: &str) -> i64 {
        self.0 += s.len() as i64;
        self.0
    }
}

fn main() {}
