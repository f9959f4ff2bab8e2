// A threaded actor's state is shared by threads: it must be `Send + Sync`.
use std::rc::Rc;

pub struct Shared {
    count: Rc<u32>,
}

#[ferroray::actor(max_concurrency = 4)]
impl Shared {
    pub fn new() -> Self {
        Shared { count: Rc::new(0) }
    }

    pub fn count(&self) -> u32 {
        *self.count
    }
}

fn main() {}
