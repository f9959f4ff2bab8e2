struct S;

impl S {
    #[ferroray::remote]
    fn f(&self) -> i64 {
        1
    }
}

fn main() {}
