//! Helpers shared by the node's tests.

use ferroray_common::WorkerId;
use ferroray_node::{Inbox, LocalConnection, Node};
use ferroray_protocol::FromNode;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// A local client that puts every message on a channel.
struct ChannelClient(Mutex<Sender<FromNode>>);

impl Inbox for ChannelClient {
    fn deliver(&self, msg: FromNode) {
        let _ = self.0.lock().unwrap().send(msg);
    }

    fn closed(&self, _reason: &str) {}
}

/// An in-process connection whose messages arrive on the returned channel.
pub fn connect(node: &Node, id: WorkerId) -> (LocalConnection, Receiver<FromNode>) {
    let (tx, rx) = channel();
    let conn = node.connect_local(id, Arc::new(ChannelClient(Mutex::new(tx)))).expect("local connection");
    (conn, rx)
}
