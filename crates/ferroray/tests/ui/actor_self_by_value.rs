pub struct Counter(i64);

#[ferroray::actor]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    pub fn into_value(self) -> i64 {
        self.0
    }
}

fn main() {}
