//! The control store's tables in a real Redis server (`storage::RedisStore`):
//! the node table and the head's credentials read back by a second store, as
//! by a restarted head; Redis going away and coming back empty while the
//! store is in use; an unusable key. Each test starts its own `redis-server`
//! (`support`) and kills it at the end.

mod support;

use ferroray_cluster::control::{Health, NodeTable, HEAD_RESTARTED};
use ferroray_cluster::storage::{self, RedisStore, TableStore};
use ferroray_cluster::wire::{NodeDesc, NodeLoad};
use ferroray_cluster::ClusterError;
use ferroray_common::{NodeId, ResourceSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::RedisServer;

const T: Duration = Duration::from_millis(500);

fn desc(id: u64) -> NodeDesc {
    NodeDesc {
        node_id: id,
        address: "127.0.0.1".into(),
        resources: ResourceSet::new().with("CPU", 2.0).with("a", 1.5).into_fixed(),
        store_capacity: 1 << 20,
        pid: 100 + id as u32,
        ..Default::default()
    }
}

fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection_with_timeout(Duration::from_secs(2)).unwrap()
}

#[test]
fn the_node_table_and_the_credentials_round_trip_through_redis() {
    let server = RedisServer::start("round-trip");
    let t0 = Instant::now();
    let store: Arc<dyn TableStore> = Arc::new(RedisStore::open(&server.url()).unwrap());
    assert!(store.durable() && store.describe() == server.url());
    let (token, identity) = storage::head_credentials(&*store).unwrap();
    let mut table = NodeTable::restore(T, store.clone(), t0).unwrap();
    table.register_head(desc(9), t0);
    for id in 1..=3 {
        table.register(desc(id), id, t0).unwrap();
    }
    table.heartbeat(NodeId(1), NodeLoad { tasks: 3, ..Default::default() }, t0).unwrap();
    table.leave(NodeId(3), "stopped");
    store.flush(Duration::from_secs(5)).unwrap();
    drop(table);
    drop(store);

    let mut con = redis(&server.url());
    let rows: i64 = redis::cmd("HLEN").arg("ferroray:nodes").query(&mut con).unwrap();
    assert_eq!(rows, 4);

    // A second store, as a restarted head opens it.
    let t1 = Instant::now();
    let store: Arc<dyn TableStore> = Arc::new(RedisStore::open(&server.url()).unwrap());
    let (token2, identity2) = storage::head_credentials(&*store).unwrap();
    assert!(token2.matches(&token), "the same token");
    assert_eq!(identity2.fingerprint(), identity.fingerprint(), "the same certificate");
    identity2.server_config().unwrap();
    let mut table = NodeTable::restore(T, store.clone(), t1).unwrap();
    table.register_head(desc(8), t1);
    assert_eq!(table.health(NodeId(1)), Some(&Health::Alive));
    assert_eq!(table.health(NodeId(2)), Some(&Health::Alive));
    assert_eq!(table.health(NodeId(3)), Some(&Health::Dead { cause: "stopped".into() }));
    assert_eq!(table.health(NodeId(9)), Some(&Health::Dead { cause: HEAD_RESTARTED.into() }));
    let view = table.view(t1);
    let one = view.nodes.iter().find(|n| n.desc.as_ref().unwrap().node_id == 1).unwrap();
    assert_eq!(one.desc.as_ref().unwrap(), &desc(1), "the description as registered");
    assert_eq!(one.load.as_ref().unwrap().tasks, 0, "loads are not stored");
    // Node 1 rejoins on its new connection; node 2 stays silent and dies
    // one timeout after the restart.
    table.register(desc(1), 50, t1).unwrap();
    assert!(table.sweep(t1 + T).is_empty());
    table.heartbeat(NodeId(1), NodeLoad::default(), t1 + T).unwrap();
    assert_eq!(table.sweep(t1 + T + Duration::from_millis(1)), vec![NodeId(2)]);
    store.flush(Duration::from_secs(5)).unwrap();
    drop(table);
    drop(store);
    let store: Arc<dyn TableStore> = Arc::new(RedisStore::open(&server.url()).unwrap());
    let table = NodeTable::restore(T, store, Instant::now()).unwrap();
    assert!(matches!(table.health(NodeId(2)), Some(Health::Dead { cause }) if cause.contains("no heartbeat")));
    assert_eq!(table.health(NodeId(8)), Some(&Health::Dead { cause: HEAD_RESTARTED.into() }));
}

#[test]
fn redis_going_away_blocks_nothing_and_coming_back_empty_gets_everything() {
    let mut server = RedisServer::start("outage");
    let url = format!("{}/3", server.url());
    let store = RedisStore::open(&url).unwrap();
    store.put(storage::NODES, "a", b"1".to_vec());
    store.flush(Duration::from_secs(5)).unwrap();
    // The database the URL names, not the default one.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis(&server.url())).unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    server.kill();
    let started = Instant::now();
    store.put(storage::NODES, "b", b"2".to_vec());
    store.delete(storage::NODES, "a");
    assert!(started.elapsed() < Duration::from_millis(100), "writes never wait for Redis");
    let err = store.flush(Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, ClusterError::StorageUnreachable { .. }) && err.is_retryable(), "{err:?}");
    assert!(err.to_string().starts_with(&format!("cannot reach the storage at {url}: ")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "bounded: {:?}", started.elapsed());
    assert_eq!(store.load(storage::NODES).len(), 1, "served from memory meanwhile");

    // Back, empty (it saves nothing): every table is written again.
    server.run();
    store.put(storage::NODES, "c", b"3".to_vec());
    store.flush(Duration::from_secs(10)).unwrap();
    let again = RedisStore::open(&url).unwrap();
    let rows: Vec<(String, Vec<u8>)> = again.load(storage::NODES).into_iter().collect();
    assert_eq!(rows, vec![("b".into(), b"2".to_vec()), ("c".into(), b"3".to_vec())]);
}

#[test]
fn a_key_of_another_type_is_a_clear_error() {
    let server = RedisServer::start("wrongtype");
    let _: () = redis::cmd("SET").arg("ferroray:nodes").arg("x").query(&mut redis(&server.url())).unwrap();
    let err = RedisStore::open(&server.url()).err().unwrap();
    assert!(matches!(err, ClusterError::Storage { .. }) && !err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}
