//! Cluster mode: several server processes on one PostgreSQL database, each agent run by one
//! node at a time (its owner), fenced so that a node that lost an agent can neither commit its
//! writes nor reach its clients.
//!
//! PostgreSQL is the one authority: the nodes and their leases (`node.rs`), who owns which
//! agent at which epoch (`ownership.rs`), and every agent's data ([`PostgresStore`], whose
//! flushes check the fence). The tables are created or migrated at start (`schema.rs`). The
//! connections run on a runtime of their own (`pg.rs`).

mod error;
pub(crate) mod frames;
mod node;
mod ownership;
pub(crate) mod peers;
mod pg;
mod schema;
mod store;
#[cfg(all(test, feature = "testing"))]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use error::ClusterError;
pub use store::PostgresStore;

pub(crate) use node::{Lease, Node, Standing};
pub(crate) use ownership::{Holder, Owner};
pub(crate) use peers::{GatewayLink, Inbound, OwnerLink};

/// How a server joins a cluster: `ServerBuilder::cluster`.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
    pub url: String,
    /// The node's id, unique in the cluster; one is made up when `None`.
    pub node_id: Option<String>,
    /// The address other nodes reach this one on (`HOST:PORT`); the server's own address
    /// when `None`.
    pub node_addr: Option<String>,
    /// How long a lease renewal holds (the longest an agent waits for a new owner when its
    /// owner dies). Renewed every third of it.
    pub lease: Duration,
}

impl ClusterConfig {
    /// The default lease: 10 seconds.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

    /// A cluster on the database at `url`, with a node id made up and the default lease.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), node_id: None, node_addr: None, lease: Self::DEFAULT_LEASE }
    }
}

/// A node's part of the cluster: the connections, its membership and the store.
pub(crate) struct Cluster {
    pub(crate) pg: Arc<pg::Pg>,
    pub(crate) node: Arc<Node>,
    pub(crate) store: Arc<PostgresStore>,
    pub(crate) peers: Arc<peers::Peers>,
}

impl Cluster {
    /// Connects, creates or migrates the tables and joins as a node reachable at `addr`.
    pub(crate) async fn join(config: &ClusterConfig, addr: &str) -> Result<Self, ClusterError> {
        let pg = pg::Pg::new(&config.url, 16)?;
        schema::migrate(&pg).await?;
        let id = config.node_id.clone().unwrap_or_else(made_up_id);
        check_node_id(&id)?;
        let node =
            Node::join(&pg, &id, config.node_addr.as_deref().unwrap_or(addr), config.lease).await?;
        let store = Arc::new(PostgresStore::new(pg.clone(), Some(node.lease.clone())));
        let secret = pg
            .run("reading the cluster's secret", pg::QUERY_TIMEOUT, |client| async move {
                let row =
                    client.query_one("SELECT secret FROM agents_rs_secret LIMIT 1", &[]).await?;
                Ok(row.get::<_, String>(0))
            })
            .await?;
        let peers = peers::Peers::new(node.id.clone(), secret, node.lease.clone());
        pg.spawn(watch_members(pg.clone(), Arc::downgrade(&peers), config.lease));
        Ok(Self { pg, node, store, peers })
    }

    /// Who this node is now, if its lease holds.
    pub(crate) fn holder(&self) -> Option<Holder> {
        let incarnation = self.node.lease.holding()?;
        Some(Holder { node: self.node.id.to_string(), incarnation })
    }

    /// Acquires `(agent, name)` for this node if nobody live owns it, else says who does.
    pub(crate) async fn acquire(&self, agent: &str, name: &str) -> Result<Owner, ClusterError> {
        let me = self.holder().ok_or_else(fenced)?;
        ownership::acquire(&self.pg, &me, agent, name).await
    }

    /// Lets go of `(agent, name)`, owned at `epoch`.
    pub(crate) async fn release(
        &self,
        agent: &str,
        name: &str,
        epoch: i64,
    ) -> Result<bool, ClusterError> {
        let me = self.holder().ok_or_else(fenced)?;
        ownership::release(&self.pg, &me, agent, name, epoch).await
    }

    /// The node's lease: whether it may act, and changes of where it stands.
    pub(crate) fn lease(&self) -> &node::Lease {
        &self.node.lease
    }

    /// Leaves the cluster (shutdown).
    pub(crate) async fn leave(&self) -> Result<(), ClusterError> {
        self.node.leave(&self.pg).await
    }
}

/// Reads which nodes are live every third of a lease, and ends the links to owners that are
/// not, until the node's links are gone.
async fn watch_members(pg: Arc<pg::Pg>, peers: std::sync::Weak<peers::Peers>, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let Some(peers) = peers.upgrade() else { return };
        let live = pg
            .run("reading the live nodes", pg::QUERY_TIMEOUT, |client| async move {
                let rows = client
                    .query("SELECT node_id, incarnation FROM agents_rs_nodes WHERE lease_until > now()", &[])
                    .await?;
                Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
            })
            .await;
        // Without PostgreSQL nothing is known: the links stay as they are.
        if let Ok(live) = live {
            peers.keep_live(&live);
        }
    }
}

fn fenced() -> ClusterError {
    ClusterError::new("this node is fenced: its lease has run out (PostgreSQL unreachable?)")
}

/// A node id of 12 random lowercase letters and digits.
fn made_up_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let id: String = (0..12).map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())])).collect();
    format!("node-{id}")
}

/// A node id: 1 to 64 characters of letters, digits, `-`, `_` and `.`.
fn check_node_id(id: &str) -> Result<(), ClusterError> {
    let valid = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match valid {
        true => Ok(()),
        false => Err(ClusterError::new(format!(
            "the node id {id:?} is not valid: use 1 to 64 letters, digits, '-', '_' or '.'"
        ))),
    }
}
