//! Where the control store's tables live: [`TableStore`], in the head's
//! memory ([`MemoryStore`], the default) or in a Redis server
//! ([`RedisStore`], `ferroray start --head --storage redis://HOST:PORT[/DB]`),
//! where a restarted head finds them again.
//!
//! A table is rows of bytes by key (`crate::control` encodes its records).
//! The head keeps every table in memory and serves from there; a store only
//! records what changed, so that a later head can [`TableStore::load`] it:
//! - A write ([`TableStore::put`], [`TableStore::delete`]) never blocks the
//!   head: the Redis store notes the key as changed, and a thread of its own
//!   writes the changed rows as they are now, in one `MULTI`/`EXEC`, with a
//!   connect timeout and a command timeout ([`CONNECT_TIMEOUT`],
//!   [`COMMAND_TIMEOUT`]). [`TableStore::flush`] waits, for a bounded time,
//!   until what was written so far is stored.
//! - Redis going away while the head runs is logged as an error (once per
//!   outage); the head keeps serving from memory, and changes wait. Once
//!   Redis answers again the thread rewrites every table whole (Redis may
//!   have restarted empty), logs that it is back, and carries on. A head
//!   that stops during an outage loses the changes made during it.
//! - Redis unreachable when the head starts fails the start
//!   ([`ClusterError::StorageUnreachable`], naming the URL).
//!
//! In Redis each table is one hash, `ferroray:<table>`, in the database the
//! URL names (`/DB`, default 0). One storage serves one cluster at a time.
//!
//! The [`CLUSTER`] table holds the head's credentials when the store is
//! durable ([`head_credentials`]): the cluster token and the head's
//! certificate and private key, so that a restarted head is the same head
//! to the nodes that pinned it. Whoever can read that Redis can join the
//! cluster, or pose as its head (`docs/security.md`).

use crate::error::{ClusterError, Result};
use crate::tls::HeadIdentity;
use ferroray_common::ClusterToken;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The node table (`crate::control`).
pub const NODES: &str = "nodes";
/// The cluster's credentials ([`head_credentials`]).
pub const CLUSTER: &str = "cluster";
/// The names of actors (`crate::control::ActorNames`).
pub const ACTORS: &str = "actors";
/// The jobs (`crate::control::JobTable`).
pub const JOBS: &str = "jobs";
/// The exported functions (`crate::control::FunctionTable`).
pub const FUNCTIONS: &str = "functions";
/// Every table a store loads when it opens.
pub const TABLES: [&str; 5] = [NODES, CLUSTER, ACTORS, JOBS, FUNCTIONS];

/// The prefix of a table's key in Redis.
pub const REDIS_PREFIX: &str = "ferroray:";
/// How long connecting to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command (or one `MULTI`/`EXEC`) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a start waits for the credentials it made to be stored.
pub const START_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// One table's rows by key.
pub type Table = BTreeMap<String, Vec<u8>>;

/// The control store's tables, as the head last wrote them.
pub trait TableStore: Send + Sync {
    /// `memory`, or the storage's URL (without a password), for messages.
    fn describe(&self) -> String;
    /// Whether the tables outlive the head.
    fn durable(&self) -> bool;
    /// `table`'s rows (as they were when the store opened, with the writes
    /// made since).
    fn load(&self, table: &str) -> Table;
    /// Records a row; never blocks on the storage.
    fn put(&self, table: &str, key: &str, value: Vec<u8>);
    /// Removes a row; never blocks on the storage.
    fn delete(&self, table: &str, key: &str);
    /// Waits until every write made so far is stored, for at most
    /// `timeout`.
    fn flush(&self, timeout: Duration) -> Result<()>;
}

/// A store for `--storage URL`, or the head's memory without one.
pub fn open(url: Option<&str>) -> Result<Arc<dyn TableStore>> {
    match url {
        None => Ok(Arc::new(MemoryStore::default())),
        Some(url) => Ok(Arc::new(RedisStore::open(url)?)),
    }
}

/// Checks the form of a `--storage` URL (without connecting).
pub fn check_url(url: &str) -> Result<()> {
    let shown = redact(url);
    if !url.starts_with("redis://") {
        return Err(ClusterError::Config(format!("--storage {shown}: expected redis://HOST:PORT[/DB]")));
    }
    redis::Client::open(url).map_err(|e| ClusterError::Config(format!("--storage {shown}: {e}")))?;
    Ok(())
}

/// `url` with the password, if any, replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_string() };
            format!("{scheme}://{hidden}@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

/// The token and the head's certificate and key: with a durable store, the
/// ones it holds, or fresh ones written to it (and stored before the head
/// serves); else fresh ones.
pub fn head_credentials(store: &dyn TableStore) -> Result<(ClusterToken, HeadIdentity)> {
    if !store.durable() {
        return Ok((ClusterToken::random()?, HeadIdentity::generate()?));
    }
    let bad = |reason: String| ClusterError::Storage { url: store.describe(), reason };
    let table = store.load(CLUSTER);
    let text = |key: &str| table.get(key).map(|v| String::from_utf8_lossy(v).into_owned());
    match (text("token"), text("cert"), text("key")) {
        (Some(token), Some(cert), Some(key)) => {
            let token =
                ClusterToken::from_hex(token.trim()).ok_or_else(|| bad("the stored token is not hex".into()))?;
            let identity =
                HeadIdentity::from_pem(&cert, &key).map_err(|e| bad(format!("the stored certificate: {e}")))?;
            Ok((token, identity))
        }
        (None, None, None) => {
            let (token, identity) = (ClusterToken::random()?, HeadIdentity::generate()?);
            let (cert, key) = identity.to_pem();
            store.put(CLUSTER, "token", token.to_hex().into_bytes());
            store.put(CLUSTER, "cert", cert.as_bytes().to_vec());
            store.put(CLUSTER, "key", key.as_bytes().to_vec());
            store.flush(START_FLUSH_TIMEOUT)?;
            Ok((token, identity))
        }
        _ => Err(bad(format!(
            "the {CLUSTER} table holds only some of the head's credentials (token, cert, key); \
             delete the key {REDIS_PREFIX}{CLUSTER} to make new ones"
        ))),
    }
}

/// The tables in the head's memory only: gone with the head.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<BTreeMap<String, Table>>,
}

impl TableStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn durable(&self) -> bool {
        false
    }

    fn load(&self, table: &str) -> Table {
        lock(&self.tables).get(table).cloned().unwrap_or_default()
    }

    fn put(&self, table: &str, key: &str, value: Vec<u8>) {
        lock(&self.tables).entry(table.to_string()).or_default().insert(key.to_string(), value);
    }

    fn delete(&self, table: &str, key: &str) {
        if let Some(t) = lock(&self.tables).get_mut(table) {
            t.remove(key);
        }
    }

    fn flush(&self, _timeout: Duration) -> Result<()> {
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The tables in a Redis server, with a copy in memory; see the module's
/// docs.
pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    state: Mutex<State>,
    /// The writer waits here for work (or the close).
    work: Condvar,
    /// Flushes wait here for `written` to grow.
    done: Condvar,
}

struct State {
    tables: BTreeMap<String, Table>,
    /// Rows changed since last written.
    dirty: BTreeSet<(String, String)>,
    /// Every table to be written whole (after a failure: Redis's state is
    /// unknown).
    resync: bool,
    /// Writes made, and of those, the ones stored.
    made: u64,
    written: u64,
    /// Why the last write failed, while it does.
    failing: Option<String>,
    closed: bool,
}

impl RedisStore {
    /// Connects to `url`, loads [`TABLES`], and starts the writer thread.
    pub fn open(url: &str) -> Result<RedisStore> {
        check_url(url)?;
        let shown = redact(url);
        let client = redis::Client::open(url).map_err(|e| ClusterError::Config(format!("--storage {shown}: {e}")))?;
        let mut con = connect(&client).map_err(|e| storage_error(&shown, e))?;
        let mut tables = BTreeMap::new();
        for table in TABLES {
            let rows: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                .arg(format!("{REDIS_PREFIX}{table}"))
                .query(&mut con)
                .map_err(|e| storage_error(&shown, e))?;
            tables.insert(table.to_string(), rows.into_iter().collect::<Table>());
        }
        let shared = Arc::new(Shared {
            url: shown,
            state: Mutex::new(State {
                tables,
                dirty: BTreeSet::new(),
                resync: false,
                made: 0,
                written: 0,
                failing: None,
                closed: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("ferroray-storage".into())
            .spawn(move || writer.write_loop(client, Some(con)))
            .map_err(ClusterError::Io)?;
        Ok(RedisStore { shared })
    }
}

fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(con)
}

fn storage_error(url: &str, e: redis::RedisError) -> ClusterError {
    let unreachable = e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped();
    let (url, reason) = (url.to_string(), e.to_string());
    if unreachable {
        ClusterError::StorageUnreachable { url, reason }
    } else {
        ClusterError::Storage { url, reason }
    }
}

/// One batch of writes: `(table, key, value)`, `None` to delete; `whole`
/// tables are replaced.
struct Batch {
    rows: Vec<(String, String, Option<Vec<u8>>)>,
    whole: Vec<(String, Table)>,
    upto: u64,
}

impl Shared {
    fn write_loop(&self, client: redis::Client, mut con: Option<redis::Connection>) {
        let mut pause = Duration::from_millis(100);
        loop {
            let batch = {
                let mut s = lock(&self.state);
                while !s.closed && s.dirty.is_empty() && !s.resync {
                    s = self.work.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                if s.closed {
                    return;
                }
                let whole = if std::mem::take(&mut s.resync) {
                    s.tables.iter().map(|(t, rows)| (t.clone(), rows.clone())).collect()
                } else {
                    Vec::new()
                };
                let dirty = std::mem::take(&mut s.dirty);
                let rows = dirty.into_iter().map(|(t, k)| {
                    let v = s.tables.get(&t).and_then(|rows| rows.get(&k)).cloned();
                    (t, k, v)
                });
                Batch { rows: rows.collect(), whole, upto: s.made }
            };
            let result = match con.as_mut() {
                Some(c) => write(c, &batch),
                None => connect(&client).and_then(|mut c| {
                    let r = write(&mut c, &batch);
                    con = Some(c);
                    r
                }),
            };
            let mut s = lock(&self.state);
            match result {
                Ok(()) => {
                    s.written = s.written.max(batch.upto);
                    if s.failing.take().is_some() {
                        tracing::info!("the storage at {} answers again: its tables are rewritten", self.url);
                    }
                    pause = Duration::from_millis(100);
                    self.done.notify_all();
                }
                Err(e) => {
                    con = None;
                    // What Redis holds now is unknown: rewrite it all.
                    s.resync = true;
                    let reason = e.to_string();
                    if s.failing.is_none() {
                        tracing::error!(
                            "the storage at {} fails: {reason}; the head serves from memory and writes again \
                             once it answers (a head stopped meanwhile loses the changes)",
                            self.url
                        );
                    }
                    s.failing = Some(reason);
                    self.done.notify_all();
                    let (guard, _) = self.work.wait_timeout(s, pause).unwrap_or_else(|p| p.into_inner());
                    if guard.closed {
                        return;
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

fn write(con: &mut redis::Connection, batch: &Batch) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (table, rows) in &batch.whole {
        let key = format!("{REDIS_PREFIX}{table}");
        pipe.cmd("DEL").arg(&key).ignore();
        if !rows.is_empty() {
            let cmd = pipe.cmd("HSET").arg(&key);
            for (k, v) in rows {
                cmd.arg(k).arg(v.as_slice());
            }
            cmd.ignore();
        }
    }
    for (table, k, v) in &batch.rows {
        let key = format!("{REDIS_PREFIX}{table}");
        match v {
            Some(v) => pipe.cmd("HSET").arg(&key).arg(k).arg(v.as_slice()).ignore(),
            None => pipe.cmd("HDEL").arg(&key).arg(k).ignore(),
        };
    }
    pipe.query::<()>(con)
}

impl TableStore for RedisStore {
    fn describe(&self) -> String {
        self.shared.url.clone()
    }

    fn durable(&self) -> bool {
        true
    }

    fn load(&self, table: &str) -> Table {
        lock(&self.shared.state).tables.get(table).cloned().unwrap_or_default()
    }

    fn put(&self, table: &str, key: &str, value: Vec<u8>) {
        let mut s = lock(&self.shared.state);
        s.tables.entry(table.to_string()).or_default().insert(key.to_string(), value);
        s.dirty.insert((table.to_string(), key.to_string()));
        s.made += 1;
        self.shared.work.notify_one();
    }

    fn delete(&self, table: &str, key: &str) {
        let mut s = lock(&self.shared.state);
        if let Some(rows) = s.tables.get_mut(table) {
            rows.remove(key);
        }
        s.dirty.insert((table.to_string(), key.to_string()));
        s.made += 1;
        self.shared.work.notify_one();
    }

    fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared.state);
        let target = s.made;
        while s.written < target {
            let now = Instant::now();
            if now >= deadline {
                let reason =
                    s.failing.clone().unwrap_or_else(|| format!("no answer within {} ms", timeout.as_millis()));
                return Err(ClusterError::StorageUnreachable { url: self.shared.url.clone(), reason });
            }
            s = self.shared.done.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(())
    }
}

impl Drop for RedisStore {
    /// Stores what it can within a second, then stops the writer (which
    /// ends by itself within [`COMMAND_TIMEOUT`] if it is in a command).
    fn drop(&mut self) {
        if let Err(e) = self.flush(Duration::from_secs(1)) {
            tracing::warn!("stopping with writes not stored: {e}");
        }
        lock(&self.shared.state).closed = true;
        self.shared.work.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_never_shown() {
        assert_eq!(redact("redis://:secret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("redis://me:secret@h:1"), "redis://me:***@h:1");
        assert_eq!(redact("redis://me@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        check_url("redis://127.0.0.1:6379/3").unwrap();
        let err = check_url("http://:pw@h:1").unwrap_err().to_string();
        assert!(err.contains("expected redis://HOST:PORT") && !err.contains("pw"), "{err}");
    }

    #[test]
    fn memory_keeps_rows_and_makes_fresh_credentials() {
        let store = MemoryStore::default();
        store.put(NODES, "a", b"1".to_vec());
        store.put(NODES, "b", b"2".to_vec());
        store.delete(NODES, "a");
        store.flush(Duration::ZERO).unwrap();
        assert_eq!(store.load(NODES), Table::from([("b".to_string(), b"2".to_vec())]));
        let (t1, i1) = head_credentials(&store).unwrap();
        let (t2, i2) = head_credentials(&store).unwrap();
        assert!(!t1.matches(&t2) && i1.fingerprint() != i2.fingerprint());
        assert!(store.load(CLUSTER).is_empty(), "nothing to keep them for");
    }
}
