pub struct Holder<T>(T);

#[ferroray::actor]
impl<T: Clone> Holder<T> {
    pub fn new(v: T) -> Self {
        Holder(v)
    }
}

fn main() {}
