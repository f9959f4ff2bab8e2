//! What `#[remote]` generates, used from a scope full of names it might
//! clash with: the user's own `Options`, `DynamicOptions`, `NAME`, `Result`,
//! `ObjectRef`, `remote`, `options` and `vec!` all stay the user's, and the
//! generated `f::remote(..)` / `f::options()..remote(..)` still work. Also:
//! numeric options take integers and floats, in the attribute and the builder.

mod common;

use common::{cluster, cluster_with, get};
use serde::{Deserialize, Serialize};

// Names the expansion used to declare or name unqualified.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct Options {
    pub label: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct DynamicOptions(pub u32);

/// A user `Result` that is not `std`'s: the expansion must not pick it up.
#[allow(dead_code)]
type Result = ();

#[allow(dead_code)]
struct ObjectRef;

#[allow(dead_code)]
struct TaskOptions;

/// A user's glob import stays unambiguous: the expansion adds no glob, and
/// no name a glob could bring, to this scope.
mod user_glob {
    #[derive(Debug, PartialEq)]
    pub struct Probe;
}
use user_glob::*;

/// Read by the attribute below: must be this one, not the generated `NAME`.
const NAME: u32 = 2;

#[allow(dead_code)]
fn remote() -> &'static str {
    "the user's remote"
}

#[allow(dead_code)]
fn options() -> &'static str {
    "the user's options"
}

/// The expansion must write `::std::vec!`, never `vec!`.
#[allow(unused_macros)]
macro_rules! vec {
    ($($t:tt)*) => {
        compile_error!("the #[remote] expansion used the caller's `vec!`")
    };
}

#[ferroray::remote]
fn relabel(o: Options, suffix: String) -> Options {
    Options { label: o.label + &suffix }
}

#[ferroray::remote(num_cpus = NAME, max_retries = 0)]
fn wrap(n: u32) -> DynamicOptions {
    DynamicOptions(n)
}

/// `self::` in the signature means the function's module, as written.
#[ferroray::remote]
fn same(o: self::Options) -> self::Options {
    o
}

#[ferroray::remote(num_returns = 2)]
fn split(o: Options) -> (Options, DynamicOptions) {
    let n = o.label.len() as u32;
    (o, DynamicOptions(n))
}

#[ferroray::remote]
fn labels(n: u32) -> impl Iterator<Item = Options> {
    (0..n).map(|i| Options { label: i.to_string() })
}

/// Named like a dependency crate (`futures`): the expansion must not put the
/// name where it would be ambiguous with the crate (a `use` path).
#[ferroray::remote]
fn futures(x: i64) -> i64 {
    x * 2
}

mod inner {
    /// `super::` in the signature means the parent of the function's module.
    #[ferroray::remote]
    pub fn upper(o: super::Options) -> super::Options {
        super::Options { label: o.label.to_uppercase() }
    }
}

// Integer and float amounts in the attribute.
#[ferroray::remote(num_cpus = 1, num_gpus = 0, resources = [("disk", 1)])]
fn int_attr(x: i64) -> i64 {
    x + 1
}

#[ferroray::remote(num_cpus = 0.5, num_gpus = 0.0, resources = [("disk", 0.5)])]
fn float_attr(x: i64) -> i64 {
    x + 2
}

#[test]
fn user_names_do_not_collide_with_generated_ones() {
    let _c = cluster();
    let o = Options { label: "a".into() };
    assert_eq!(get(&relabel::remote(o.clone(), "b".to_string())).unwrap(), Options { label: "ab".into() });
    let r = relabel::options().num_cpus(1).remote(o.clone(), "c".to_string());
    assert_eq!(get(&r).unwrap().label, "ac");

    assert_eq!(get(&wrap::remote(7)).unwrap(), DynamicOptions(7));
    assert_eq!(get(&same::remote(o.clone())).unwrap(), o);
    assert_eq!(get(&inner::upper::remote(o.clone())).unwrap().label, "A");
    assert_eq!(get(&futures::remote(21)).unwrap(), 42);

    let (a, b) = split::remote(Options { label: "xyz".into() });
    assert_eq!(get(&a).unwrap().label, "xyz");
    assert_eq!(get(&b).unwrap(), DynamicOptions(3));

    let items: Vec<String> = labels::remote(3).map(|r| get(&r).unwrap().label).collect();
    assert_eq!(items, ["0", "1", "2"]);
    let dynamic = labels::options().num_cpus(1).num_returns_dynamic().remote(2);
    let refs = get(&dynamic).unwrap();
    let items: Vec<String> = refs.into_iter().map(|r| get(&r).unwrap().label).collect();
    assert_eq!(items, ["0", "1"]);

    // The user's items are untouched, and the generated ones are reachable.
    assert_eq!(remote(), "the user's remote");
    assert_eq!(options(), "the user's options");
    assert_eq!(NAME, 2);
    assert_eq!(Probe, user_glob::Probe);
    assert!(wrap::NAME.ends_with("::wrap"));
    let _: wrap::Options = wrap::options();
    let _: labels::DynamicOptions = labels::options().num_returns_dynamic();
}

#[test]
fn numeric_options_take_integers_and_floats() {
    let _c = cluster_with(ferroray::Config::default().num_cpus(2).resource("disk", 2));
    assert_eq!(get(&int_attr::remote(1)).unwrap(), 2);
    assert_eq!(get(&float_attr::remote(1)).unwrap(), 3);
    let r = int_attr::options().num_cpus(1).num_gpus(0).resource("disk", 1).max_retries(0).remote(10);
    assert_eq!(get(&r).unwrap(), 11);
    let r = int_attr::options().num_cpus(0.5).num_gpus(0.0).resource("disk", 0.5).remote(20);
    assert_eq!(get(&r).unwrap(), 21);
    let r = int_attr::options().num_cpus(2u8).num_gpus(0u32).resource("disk", 2u32).remote(30);
    assert_eq!(get(&r).unwrap(), 31);
    // An integer amount is checked like a float one.
    let r = int_attr::options().num_cpus(-1).remote(1);
    assert!(matches!(get(&r), Err(ferroray::Error::InvalidOption(_))));
}

/// Two remote functions under one registered name: a `mod` inside a
/// function body has the same `module_path!` as a `mod` of that name at
/// the top (the function is skipped). Calling either is a clear error, not a
/// silent call of the other.
mod clash {
    #[ferroray::remote]
    pub fn which() -> u32 {
        1
    }
}

#[allow(dead_code)]
fn holds_a_clashing_module() -> ferroray::ObjectRef<u32> {
    mod clash {
        #[ferroray::remote]
        pub fn which() -> u32 {
            2
        }
    }
    clash::which::remote()
}

#[test]
fn two_functions_registered_under_one_name_are_an_error() {
    let _c = common::cluster();
    match common::get(&clash::which::remote()) {
        Err(ferroray::Error::InvalidOption(m)) => assert!(m.contains("registered as"), "{m}"),
        other => panic!("expected the clash to be an error, got {other:?}"),
    }
}
