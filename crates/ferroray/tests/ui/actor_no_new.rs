pub struct Counter(i64);

#[ferroray::actor]
impl Counter {
    pub fn value(&self) -> i64 {
        self.0
    }
}

fn main() {}
