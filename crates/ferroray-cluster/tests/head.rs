//! The head's server on a real TCP port, over TLS, driven through the
//! client: who gets in (a man in the middle and a plain-TCP peer among
//! them), heartbeats, death by silence, and re-registration racing the
//! close of the old connection.

use ferroray_cluster::client::HeadClient;
use ferroray_cluster::head::{self, Control, HeadConfig};
use ferroray_cluster::tls::{self, Credentials, HeadIdentity};
use ferroray_cluster::wire::*;
use ferroray_cluster::ClusterError;
use ferroray_common::{ClusterToken, ResourceSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn desc(id: u64) -> NodeDesc {
    NodeDesc {
        node_id: id,
        address: "127.0.0.1".into(),
        resources: ResourceSet::new().with("CPU", 1.0).with("a", 2.0).into_fixed(),
        store_capacity: 1 << 20,
        pid: 1,
        ..Default::default()
    }
}

struct Head {
    address: String,
    /// The token and the pinned fingerprint of this head's certificate.
    token: Credentials,
    control: Arc<Control>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn head(heartbeat_ms: u64, timeout_ms: u64) -> Head {
    head_with(heartbeat_ms, timeout_ms, ClusterToken::random().unwrap()).await
}

async fn head_with(heartbeat_ms: u64, timeout_ms: u64, token: ClusterToken) -> Head {
    let identity = HeadIdentity::generate().unwrap();
    let config = HeadConfig {
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        node_timeout: Duration::from_millis(timeout_ms),
        handshake_timeout: Duration::from_millis(300),
        ..HeadConfig::new(token.clone(), identity.server_config().unwrap())
    };
    let token = Credentials { token, fingerprint: identity.fingerprint() };
    let control = Control::new(config, desc(1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(head::serve(
        listener,
        async move {
            let _ = rx.await;
        },
        control.clone(),
    ));
    Head { address, token, control, stop: Some(tx), task }
}

impl Head {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap();
    }
}

/// A TLS connection to the head that has sent nothing yet.
async fn tls_raw(h: &Head) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(&h.address).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(h.token.fingerprint).unwrap());
    connector.connect(tls::head_name(), tcp).await.unwrap()
}

/// Collects what the head logs on this thread (the tests that use it run
/// on a current-thread runtime, so the head's tasks log here too).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || logs.clone()).with_ansi(false).finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.expect("the test timed out")
}

#[tokio::test(flavor = "current_thread")]
async fn nodes_register_report_and_are_seen() {
    within(async {
        let h = head(50, 1000).await;
        let mut node = HeadClient::connect(&h.address, &h.token, Some(desc(2))).await.unwrap();
        assert_eq!(node.registered.head_node_id, 1);
        assert_eq!(node.registered.heartbeat_interval_ms, 50);
        let load =
            NodeLoad { available: ResourceSet::new().with("a", 0.5).into_fixed(), tasks: 3, ..Default::default() };
        node.writer.send(ToHeadKind::Heartbeat(load.clone())).await.unwrap();
        let mut client = HeadClient::connect(&h.address, &h.token, None).await.unwrap();
        // The heartbeat and the view travel on different connections: wait
        // until the first is in.
        let view = loop {
            let v = client.view().await.unwrap();
            if v.nodes.iter().any(|n| n.load.as_ref().is_some_and(|l| l.tasks == 3)) {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(view.nodes.len(), 2);
        assert!(view.nodes[0].is_head && view.nodes[0].alive);
        assert_eq!(view.nodes[1].desc.as_ref().unwrap().node_id, 2);
        assert_eq!(view.nodes[1].load.as_ref().unwrap(), &load);
        h.stop().await;
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn strangers_are_refused_before_anything_else() {
    within(async {
        let h = head(50, 1000).await;
        // A wrong token.
        let wrong = Credentials { token: ClusterToken::zero(), ..h.token.clone() };
        let err = HeadClient::connect(&h.address, &wrong, Some(desc(2))).await.err().unwrap();
        assert!(matches!(err, ClusterError::WrongToken), "{err}");
        // A first frame that claims 1 GiB: refused without reading it.
        let mut raw = tls_raw(&h).await;
        raw.write_all(&(1u32 << 30).to_le_bytes()).await.unwrap();
        raw.flush().await.unwrap();
        let mut rest = Vec::new();
        raw.read_to_end(&mut rest).await.unwrap();
        assert!(String::from_utf8_lossy(&rest).contains("exceeds the limit"));
        // Silence, before the TLS handshake and after it: closed after the
        // handshake timeout.
        let mut quiet = tokio::net::TcpStream::connect(&h.address).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        assert_eq!(quiet.read(&mut buf).await.unwrap(), 0);
        assert!(started.elapsed() < Duration::from_secs(3));
        let mut quiet = tls_raw(&h).await;
        let started = Instant::now();
        assert_eq!(quiet.read(&mut buf).await.unwrap_or(0), 0);
        assert!(started.elapsed() < Duration::from_secs(3));
        // A client may not send heartbeats; a node must describe itself.
        let mut client = HeadClient::connect(&h.address, &h.token, None).await.unwrap();
        client.writer.send(ToHeadKind::Heartbeat(NodeLoad::default())).await.unwrap();
        assert!(matches!(client.reader.receive().await, Err(ClusterError::Refused(_))));
        // Bad resources in a description.
        let mut bad = desc(3);
        bad.resources.insert("CPU".into(), -10_000);
        let err = HeadClient::connect(&h.address, &h.token, Some(bad)).await.err().unwrap();
        assert!(err.to_string().contains("node resources"), "{err}");
        // None of it got in, and the head still serves.
        let mut client = HeadClient::connect(&h.address, &h.token, None).await.unwrap();
        assert_eq!(client.view().await.unwrap().nodes.len(), 1);
        h.stop().await;
    })
    .await
}

/// A man in the middle: a head of its own with the right token (say it
/// stole it) but its own certificate. A node pinning the real head's
/// certificate gives up in the handshake, before it sends the token.
#[tokio::test(flavor = "current_thread")]
async fn a_head_with_another_certificate_is_refused_by_the_caller() {
    within(async {
        let real = head(50, 1000).await;
        let impostor = head_with(50, 1000, real.token.token.clone()).await;
        assert_ne!(impostor.token.fingerprint, real.token.fingerprint);
        let err = HeadClient::connect(&impostor.address, &real.token, Some(desc(2))).await.err().unwrap();
        assert!(matches!(err, ClusterError::Tls(_)), "{err}");
        assert!(err.to_string().contains("is not the one in the token file"), "{err}");
        assert!(!err.is_retryable(), "a wrong certificate stays wrong");
        // Nothing reached the impostor's node table; the real head takes
        // the node.
        assert_eq!(impostor.control.nodes.lock().view(Instant::now()).nodes.len(), 1);
        HeadClient::connect(&real.address, &real.token, Some(desc(2))).await.unwrap();
        impostor.stop().await;
        real.stop().await;
    })
    .await
}

/// A peer speaking the control protocol over plain TCP, with the right
/// token even, gets no answer in it: the head refuses the handshake, logs
/// it once for the address, and serves on.
#[tokio::test(flavor = "current_thread")]
async fn a_plain_tcp_peer_is_refused_and_logged() {
    let logs = Logs::default();
    let _guard = logs.capture();
    within(async {
        let h = head(50, 1000).await;
        let register = ToHead::new(ToHeadKind::Register(Register {
            protocol: CONTROL_PROTOCOL_VERSION,
            token: h.token.token.as_bytes().to_vec(),
            role: PeerRole::Node as i32,
            node: Some(desc(2)),
        }));
        let mut frame = Vec::new();
        ferroray_protocol::frame::encode_into(&mut frame, register).unwrap();
        for _ in 0..2 {
            let mut plain = tokio::net::TcpStream::connect(&h.address).await.unwrap();
            plain.write_all(&frame).await.unwrap();
            let mut answer = Vec::new();
            // Closed at once (a reset is as good as an end).
            let _ = plain.read_to_end(&mut answer).await;
            // At most a TLS alert record (content type 21), never a frame.
            assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
            let decoded = ferroray_protocol::frame::read_frame::<_, FromHead>(&mut &answer[..]);
            assert!(!matches!(decoded, Ok(Some(_))), "a plain peer got an answer: {decoded:?}");
        }
        let mut client = HeadClient::connect(&h.address, &h.token, None).await.unwrap();
        assert_eq!(client.view().await.unwrap().nodes.len(), 1, "the plain peer never registered");
        h.stop().await;
    })
    .await;
    let text = logs.text();
    assert_eq!(text.matches("refused a connection from 127.0.0.1").count(), 1, "logged once: {text}");
    assert!(text.contains("tls:"), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_node_is_declared_dead_and_refused_after() {
    within(async {
        let (heartbeat, timeout) = (50, 300);
        let h = head(heartbeat, timeout).await;
        let node = HeadClient::connect(&h.address, &h.token, Some(desc(2))).await.unwrap();
        let started = Instant::now();
        // It never sends a heartbeat (a hung node: its connection stays open).
        loop {
            let dead = h.control.nodes.lock().view(Instant::now()).nodes.iter().any(|n| !n.alive);
            if dead {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(timeout), "dead after {took:?}");
        assert!(took < Duration::from_millis(timeout + 4 * heartbeat + 500), "dead only after {took:?}");
        // Its next heartbeat is answered with the verdict.
        let (mut reader, mut writer) = (node.reader, node.writer);
        writer.send(ToHeadKind::Heartbeat(NodeLoad::default())).await.unwrap();
        let err = reader.receive().await.err().unwrap();
        assert!(err.to_string().contains("declared dead"), "{err}");
        assert!(!err.is_retryable());
        // And so is registering again under its id.
        let err = HeadClient::connect(&h.address, &h.token, Some(desc(2))).await.err().unwrap();
        assert!(err.to_string().contains("declared dead"), "{err}");
        h.stop().await;
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn leaving_is_death_at_once() {
    within(async {
        let h = head(50, 10_000).await;
        let mut node = HeadClient::connect(&h.address, &h.token, Some(desc(2))).await.unwrap();
        node.writer.send(ToHeadKind::Leave(Empty {})).await.unwrap();
        assert!(node.reader.receive().await.is_err(), "the head closes after a leave");
        let view = h.control.nodes.lock().view(Instant::now());
        assert_eq!(view.nodes[1].death_cause, "stopped");
        h.stop().await;
    })
    .await
}

/// A node whose link broke registers again at once, racing the head's
/// notice that the old connection closed: "in use" is a retryable answer,
/// and it gets in within a few tries. Each round also checks the id is
/// never bound to two open connections. Bounded at 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_races_the_close_of_the_old_connection() {
    within(async {
        let h = head(50, 10_000).await;
        let deadline = Instant::now() + Duration::from_secs(3);
        let (mut rounds, mut busy) = (0, 0);
        let mut current = HeadClient::connect(&h.address, &h.token, Some(desc(2))).await.unwrap();
        while Instant::now() < deadline {
            drop(current);
            let tried = Instant::now();
            current = loop {
                match HeadClient::connect(&h.address, &h.token, Some(desc(2))).await {
                    Ok(c) => break c,
                    Err(e) if e.is_retryable() => {
                        assert!(matches!(e, ClusterError::Busy(_)), "{e}");
                        busy += 1;
                        assert!(tried.elapsed() < Duration::from_secs(2), "never got back in");
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            // While `current` is open nobody else gets the id.
            let err = HeadClient::connect(&h.address, &h.token, Some(desc(2))).await.err().unwrap();
            assert!(matches!(err, ClusterError::Busy(_)), "{err}");
            rounds += 1;
        }
        assert!(rounds > 10, "{rounds} rounds");
        let view = h.control.nodes.lock().view(Instant::now());
        assert!(view.nodes.iter().all(|n| n.alive));
        eprintln!("{rounds} rounds, {busy} busy answers");
        h.stop().await;
    })
    .await
}
