//! Bad input gets a clear, typed error and the runtime keeps serving: a value
//! that fails to decode, an unknown function, invalid options, and garbage
//! written to the node's socket.

mod common;

use common::{cluster, get};
use ferroray::{Config, Error, TaskOptions};
use ferroray_protocol::{frame, FromNode, Role, ToNode, PROTOCOL_VERSION};
use serde::{Deserialize, Deserializer, Serialize};
use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

/// Serializes fine; never deserializes.
#[derive(Serialize)]
pub struct Poison(u8);
impl<'de> Deserialize<'de> for Poison {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u8::deserialize(d)?;
        Err(serde::de::Error::custom("poisoned value"))
    }
}

#[ferroray::remote]
fn takes_poison(_p: Poison) -> i64 {
    1
}

#[ferroray::remote]
fn gives_poison() -> Poison {
    Poison(1)
}

#[ferroray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn still_serving() {
    assert_eq!(get(&add::remote(20, 22)).unwrap(), 42);
}

#[test]
fn an_argument_that_fails_to_decode_is_a_serialization_error() {
    let _c = cluster();
    match get(&takes_poison::remote(Poison(3))) {
        Err(Error::Serialization(msg)) => {
            assert!(msg.contains("argument 0 of takes_poison"), "{msg}");
            // The value format keeps no custom serde message, only the kind.
            assert!(msg.contains("does not decode"), "{msg}");
        }
        other => panic!("expected a serialization error, got {:?}", other.map(|_| ())),
    }
    still_serving();
}

#[test]
fn a_result_that_fails_to_decode_is_a_serialization_error() {
    let _c = cluster();
    let r = gives_poison::remote();
    assert!(matches!(r.get_timeout(common::T), Err(Error::Serialization(m)) if m.contains("does not decode")));
    still_serving();
}

#[test]
fn an_unknown_function_is_reported_by_name() {
    let _c = cluster();
    let call = ferroray::__private::TaskCall::new("no::such::function", TaskOptions::default());
    let r = call.submit_one::<i64>();
    assert_eq!(get(&r), Err(Error::UnknownFunction("no::such::function".into())));
    still_serving();
}

#[test]
fn invalid_options_are_rejected_at_submission() {
    let _c = cluster();
    for (what, r) in [
        ("num_cpus", add::options().num_cpus(-1.0).remote(1, 2)),
        ("num_cpus", add::options().num_cpus(f64::NAN).remote(1, 2)),
        ("num_gpus", add::options().num_gpus(-2.0).remote(1, 2)),
        ("disk", add::options().resource("disk", -1.0).remote(1, 2)),
        // Over the node's message limits: refused here, not by the node.
        ("resource name", add::options().resource(&"r".repeat(300), 1.0).remote(1, 2)),
        ("CPU", add::options().num_cpus(1e13).remote(1, 2)),
    ] {
        match r.get_timeout(Duration::from_secs(5)) {
            Err(Error::InvalidOption(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("expected InvalidOption for {what}, got {other:?}"),
        }
    }
    still_serving();
}

#[ferroray::remote]
fn submits_over_the_limits() -> String {
    match add::options().num_cpus(1e13).remote(1, 2).get() {
        Err(e) => e.to_string(),
        Ok(v) => format!("ran: {v}"),
    }
}

#[test]
fn a_nested_call_over_the_limits_is_an_error_not_a_dead_worker() {
    let _c = cluster();
    let got = get(&submits_over_the_limits::remote()).unwrap();
    assert!(got.contains("invalid option") && got.contains("CPU"), "{got}");
    still_serving();
}

#[test]
fn invalid_config_is_rejected_by_init() {
    let _serial = common::serial();
    assert!(matches!(ferroray::init_with(Config::default().num_cpus(-1.0)), Err(Error::InvalidOption(_))));
    assert!(matches!(
        ferroray::init_with(Config::default().resource("x", f64::INFINITY)),
        Err(Error::InvalidOption(_))
    ));
    assert!(!ferroray::is_initialized());
}

fn connect() -> UnixStream {
    let name = ferroray::node_address().unwrap();
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let s = UnixStream::connect_addr(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn rejection(mut s: UnixStream) -> Error {
    match frame::read_frame::<_, FromNode>(&mut s) {
        Ok(Some(FromNode::Rejected(e))) => e,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn garbage_on_the_nodes_socket_is_rejected_and_others_are_served() {
    let _c = cluster();
    still_serving();
    // A length prefix far past the limit.
    let mut s = connect();
    s.write_all(&[0xff; 64]).unwrap();
    assert!(matches!(rejection(s), Error::Protocol(m) if m.contains("exceeds")));
    // A plausible length with a body that does not decode.
    let mut s = connect();
    let mut bytes = 12u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xee; 12]);
    s.write_all(&bytes).unwrap();
    assert!(matches!(rejection(s), Error::Protocol(m) if m.contains("malformed")));
    // A valid message that is not a hello.
    let mut s = connect();
    frame::write_frame(&mut s, ToNode::Blocked).unwrap();
    assert!(matches!(rejection(s), Error::Protocol(m) if m.contains("hello")));
    // A hello from another protocol version.
    let mut s = connect();
    let hello = ToNode::Hello {
        protocol: PROTOCOL_VERSION + 1,
        worker_id: ferroray_common_id(),
        pid: 1,
        role: Role::Driver,
        token: ferroray_common::ClusterToken::zero(),
    };
    frame::write_frame(&mut s, hello).unwrap();
    assert!(matches!(rejection(s), Error::Protocol(m) if m.contains("version")));
    still_serving();
}

fn ferroray_common_id() -> ferroray::__private::WorkerId {
    ferroray::__private::WorkerId(12345)
}

#[test]
fn a_value_too_large_for_the_store_is_a_clear_error() {
    let _c = common::cluster_with(Config::default().object_store_memory(8 << 20));
    match ferroray::put(ferroray::Buffer::from(vec![1u8; 16 << 20])) {
        Err(Error::StoreFull(msg)) => assert!(msg.contains("full"), "{msg}"),
        other => panic!("expected StoreFull, got {:?}", other.map(|_| ())),
    }
    // The same from a task: its result becomes the error.
    let r = big::remote(16 << 20);
    assert!(matches!(r.get_timeout(common::T), Err(Error::StoreFull(_))));
    still_serving();
    assert_eq!(ferroray::runtime_stats().unwrap().store_used_bytes, 0, "nothing half-written is left");
}

#[ferroray::remote(max_retries = 0)]
fn big(len: usize) -> ferroray::Buffer {
    ferroray::Buffer::from(vec![2u8; len])
}
