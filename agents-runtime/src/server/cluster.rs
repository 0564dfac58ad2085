//! A server in cluster mode: it joins the cluster when it binds, hands what the other nodes'
//! links bring to its instances, fences them when its lease runs out, and leaves the cluster
//! at shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use crate::cluster::{Cluster, ClusterConfig, Inbound, Standing};
use crate::error::Error;
use crate::instance::inbound::Links;
use crate::instance::{ClusterEvent, Directory, Event};

/// Joins the cluster `config` names, as a node others reach at its `node_addr`, else at
/// `local` (the address the server is bound to).
pub(super) async fn join(config: &ClusterConfig, local: SocketAddr) -> Result<Arc<Cluster>, Error> {
    let addr = match &config.node_addr {
        Some(addr) => addr.clone(),
        None if local.ip().is_unspecified() => {
            return Err(Error::msg(format!(
                "the server listens on {local}, which other nodes cannot dial: give the address \
                 they reach it on (--node-addr HOST:PORT, ServerBuilder::cluster's node_addr)"
            )));
        }
        None => local.to_string(),
    };
    let cluster = Cluster::join(config, &addr).await.map_err(|e| Error::msg(e.to_string()))?;
    tracing::info!(node = %cluster.node.id, addr, "joined the cluster");
    Ok(Arc::new(cluster))
}

/// The node's links deliver to `directory` from now on; keep the returned handle while the
/// server runs.
pub(super) fn hear_links(cluster: &Cluster, directory: &Arc<Directory>) -> Arc<Links> {
    let links = Links::new(directory);
    let inbound: Arc<dyn Inbound> = links.clone();
    cluster.peers.set_inbound(Arc::downgrade(&inbound) as Weak<dyn Inbound>);
    links
}

/// Runs for the server's life: when the node's lease runs out, the gateways' links end (their
/// sockets reconnect, and find the agents wherever they run next) and every instance hears it
/// is not this node's any more.
pub(super) async fn fence_on_lapse(cluster: Arc<Cluster>, directory: Arc<Directory>) {
    let mut standing = cluster.lease().watch();
    let mut member = match *standing.borrow() {
        Standing::Member { incarnation } => Some(incarnation),
        _ => None,
    };
    loop {
        if standing.changed().await.is_err() {
            return;
        }
        let now = *standing.borrow_and_update();
        // A fence the watch folded into the next join shows as a new incarnation.
        let rejoined = matches!(now, Standing::Member { incarnation } if member.is_some_and(|m| m != incarnation));
        if let Standing::Member { incarnation } = now {
            member = Some(incarnation);
        }
        if rejoined || matches!(now, Standing::Fenced { .. } | Standing::Replaced) {
            tracing::warn!(node = %cluster.node.id, "fenced: this node's agents are not its own any more");
            cluster.peers.drop_gateways();
            directory.tell_all(|| Event::Cluster(Box::new(ClusterEvent::Fenced)));
        }
    }
}

/// Leaves the cluster at shutdown, once the store is flushed.
pub(super) async fn leave(cluster: &Cluster) {
    match cluster.leave().await {
        Ok(()) => tracing::info!(node = %cluster.node.id, "left the cluster"),
        Err(e) => {
            tracing::warn!(node = %cluster.node.id, "leaving the cluster failed (its lease will end): {e}")
        }
    }
}
