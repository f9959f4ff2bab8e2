//! From Ray's guide "Ray generators", generators from actor tasks: a method
//! that yields gives an `ObjectRefGenerator`, on a regular actor, an async
//! one and a threaded one.
//!
//! `cargo run -p ferroray --example actor_generators`
//!
//! Ray's `def f(self): for i in range(5): yield i` becomes a method returning
//! `impl Iterator<Item = u64>`; the async actor's `async def f` an `async fn`
//! returning `impl Stream<Item = u64>`; the threaded actor
//! (`@ray.remote(max_concurrency=5)`) `#[actor(max_concurrency = 5)]`.

use futures::Stream;

pub struct Actor;

#[ferroray::actor]
impl Actor {
    pub fn new() -> Self {
        Actor
    }

    pub fn f(&self) -> impl Iterator<Item = u64> {
        0..5
    }
}

pub struct AsyncActor;

#[ferroray::actor]
impl AsyncActor {
    pub fn new() -> Self {
        AsyncActor
    }

    pub async fn f(&self) -> impl Stream<Item = u64> {
        futures::stream::iter(0..5)
    }
}

pub struct ThreadedActor;

#[ferroray::actor(max_concurrency = 5)]
impl ThreadedActor {
    pub fn new() -> Self {
        ThreadedActor
    }

    pub fn f(&self) -> impl Iterator<Item = u64> {
        0..5
    }
}

fn main() -> ferroray::Result<()> {
    ferroray::init()?;
    let actor = Actor::remote();
    let items: Vec<u64> = actor.f().remote().map(|r| r.get()).collect::<ferroray::Result<_>>()?;
    println!("Actor.f yielded {items:?}");

    let actor = AsyncActor::remote();
    let items: Vec<u64> = actor.f().remote().map(|r| r.get()).collect::<ferroray::Result<_>>()?;
    println!("AsyncActor.f yielded {items:?}");

    let actor = ThreadedActor::remote();
    let items: Vec<u64> = actor.f().remote().map(|r| r.get()).collect::<ferroray::Result<_>>()?;
    println!("ThreadedActor.f yielded {items:?}");
    ferroray::shutdown();
    Ok(())
}
