//! A node's membership: its row in `agents_rs_nodes`, the lease it renews, and the fence it
//! puts up itself when renewals stop being acknowledged.
//!
//! Every incarnation of a node is one unbroken run of lease: a renewal only extends a lease
//! that has not lapsed in PostgreSQL's clock (`lease_until > now()`), so if it lapsed (the
//! process was stopped, PostgreSQL was away) the node joins again under a new incarnation, and
//! what it owned under the old one is anyone's to take. The node's own view of its lease runs
//! on its boot clock from when it *sent* the last acknowledged renewal, and ends a margin
//! before the lease can have ended in PostgreSQL; past it the node is fenced: it runs no turn,
//! commits nothing and releases no frame of any agent it owned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::error::ClusterError;
use super::pg::{Lane, Pg};

/// Where a node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Not a member yet (or again): joining.
    Joining,
    /// A member under this incarnation, while its lease holds.
    Member { incarnation: i64 },
    /// The lease of this incarnation lapsed (or may have): everything it owned is gone. The
    /// node joins again under a new incarnation.
    Fenced { incarnation: i64 },
    /// Another process took this node id: this one stays fenced.
    Replaced,
    /// It left the cluster (shutdown).
    Left,
}

/// The node's view of its lease: shared by everything that must stop when it ends.
pub(crate) struct Lease {
    /// Until when (nanoseconds of [`boot_clock`]) the lease holds; 0: it does not.
    valid_until: AtomicU64,
    standing: watch::Sender<Standing>,
}

impl Lease {
    fn new() -> Self {
        Self { valid_until: AtomicU64::new(0), standing: watch::Sender::new(Standing::Joining) }
    }

    /// The incarnation whose lease holds now, if any.
    pub(crate) fn holding(&self) -> Option<i64> {
        let Standing::Member { incarnation } = *self.standing.borrow() else { return None };
        let now = boot_clock();
        (now < self.valid_until.load(Ordering::Acquire)).then_some(incarnation)
    }

    /// Where the node stands, as the renewal loop last saw it.
    pub(crate) fn standing(&self) -> Standing {
        *self.standing.borrow()
    }

    /// Changes of where the node stands.
    pub(crate) fn watch(&self) -> watch::Receiver<Standing> {
        self.standing.subscribe()
    }

    /// The lease of `incarnation` holds until `trusted` after `sent` (a [`boot_clock`] reading).
    fn hold(&self, incarnation: i64, sent: u64, trusted: Duration) {
        let until = sent.saturating_add(u64::try_from(trusted.as_nanos()).unwrap_or(u64::MAX));
        self.valid_until.store(until, Ordering::Release);
        self.standing.send_if_modified(|standing| {
            let next = Standing::Member { incarnation };
            std::mem::replace(standing, next) != next
        });
    }

    fn end(&self, next: Standing) {
        self.valid_until.store(0, Ordering::Release);
        self.standing.send_if_modified(|standing| std::mem::replace(standing, next) != next);
    }
}

/// Nanoseconds of the clock leases are measured on: `CLOCK_BOOTTIME`, which keeps counting
/// while the process is stopped and while the machine (a VM) is suspended, where the monotonic
/// clock stops: a node resumed after its lease ran out in PostgreSQL knows it.
pub(crate) fn boot_clock() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// A node of the cluster: who it is, where others reach it, and its lease.
pub(crate) struct Node {
    pub(crate) id: Arc<str>,
    pub(crate) addr: Arc<str>,
    /// How long a renewal holds in PostgreSQL.
    pub(crate) ttl: Duration,
    pub(crate) lease: Arc<Lease>,
}

impl Node {
    /// Joins the cluster as `id`, reachable at `addr`, and keeps renewing its lease of `ttl`
    /// on `pg`'s runtime until [`leave`](Self::leave). A row left under the same id (a previous
    /// run of this node that was killed) is taken over at once.
    pub(crate) async fn join(
        pg: &Arc<Pg>,
        id: &str,
        addr: &str,
        ttl: Duration,
    ) -> Result<Arc<Self>, ClusterError> {
        let node =
            Arc::new(Self { id: id.into(), addr: addr.into(), ttl, lease: Arc::new(Lease::new()) });
        let sent = boot_clock();
        let incarnation = register(pg, &node, None).await?.ok_or_else(|| {
            ClusterError::new("joining the cluster: the node's row was not taken")
        })?;
        node.lease.hold(incarnation, sent, node.margin_ttl());
        pg.spawn(renew_forever(pg.clone(), node.clone()));
        Ok(node)
    }

    /// Leaves the cluster: every agent this incarnation owns is released and its row removed,
    /// so other nodes take its agents at their next event instead of after the lease.
    pub(crate) async fn leave(&self, pg: &Pg) -> Result<(), ClusterError> {
        let Standing::Member { incarnation } = self.lease.standing() else {
            self.lease.end(Standing::Left);
            return Ok(());
        };
        self.lease.end(Standing::Left);
        let id = self.id.to_string();
        pg.run("leaving the cluster", super::pg::QUERY_TIMEOUT, move |client| async move {
            client
                .execute(
                    "UPDATE agents_rs_agents SET owner_node = NULL, owner_inc = NULL
                      WHERE owner_node = $1 AND owner_inc = $2",
                    &[&id, &incarnation],
                )
                .await?;
            client
                .execute(
                    "DELETE FROM agents_rs_nodes WHERE node_id = $1 AND incarnation = $2",
                    &[&id, &incarnation],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// How long after sending an acknowledged renewal the node trusts its lease: the lease's
    /// length less a fifth, for the time the renewal took to be applied and clock drift.
    fn margin_ttl(&self) -> Duration {
        self.ttl - self.ttl / 5
    }
}

/// Inserts or takes over the node's row under a new incarnation. `rejoin`: the incarnation
/// this process last had; then a row another process took (a different incarnation whose
/// lease holds) is left alone and `None` returned.
async fn register(pg: &Pg, node: &Node, rejoin: Option<i64>) -> Result<Option<i64>, ClusterError> {
    let (id, addr, ttl) = (node.id.to_string(), node.addr.to_string(), node.ttl.as_secs_f64());
    pg.run_on(Lane::Lease, "joining the cluster", super::pg::QUERY_TIMEOUT, move |client| async move {
        let first = rejoin.is_none();
        let last = rejoin.unwrap_or(-1);
        let row = client
            .query_opt(
                "INSERT INTO agents_rs_nodes (node_id, addr, incarnation, lease_until)
                 VALUES ($1, $2, nextval('agents_rs_incarnations'), now() + make_interval(secs => $3))
                 ON CONFLICT (node_id) DO UPDATE
                    SET addr = EXCLUDED.addr, incarnation = EXCLUDED.incarnation,
                        lease_until = EXCLUDED.lease_until, joined_at = now()
                  WHERE $4 OR agents_rs_nodes.incarnation = $5
                     OR agents_rs_nodes.lease_until <= now()
                 RETURNING incarnation",
                &[&id, &addr, &ttl, &first, &last],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    })
    .await
}

/// Renews the lease every third of its length; fences the node when it lapses, and joins again.
async fn renew_forever(pg: Arc<Pg>, node: Arc<Node>) {
    let period = node.ttl / 3;
    let mut outage: Option<String> = None;
    loop {
        let sent = Instant::now();
        let sent_boot = boot_clock();
        let standing = node.lease.standing();
        let result = match standing {
            Standing::Left | Standing::Replaced => return,
            Standing::Member { incarnation } => renew(&pg, &node, incarnation).await.map(|renewed| {
                match renewed {
                    true => node.lease.hold(incarnation, sent_boot, node.margin_ttl()),
                    false => {
                        tracing::warn!(node = %node.id, incarnation, "the node's lease lapsed: it fenced itself and joins again");
                        node.lease.end(Standing::Fenced { incarnation });
                    }
                }
            }),
            Standing::Fenced { incarnation } => {
                register(&pg, &node, Some(incarnation)).await.map(|joined| match joined {
                    Some(next) => {
                        tracing::info!(node = %node.id, incarnation = next, "the node joined the cluster again");
                        node.lease.hold(next, sent_boot, node.margin_ttl());
                    }
                    None => {
                        tracing::error!(node = %node.id, "another process took this node id: this node stays fenced; give each node its own --node-id");
                        node.lease.end(Standing::Replaced);
                    }
                })
            }
            Standing::Joining => Ok(()),
        };
        match result {
            Ok(()) => {
                if let Some(error) = outage.take() {
                    tracing::info!(node = %node.id, "PostgreSQL answers again (after: {error})");
                }
            }
            Err(error) => {
                if outage.is_none() {
                    tracing::error!(node = %node.id, "renewing the node's lease failed: {error}");
                }
                outage = Some(error.to_string());
                if let (Standing::Member { incarnation }, None) = (standing, node.lease.holding()) {
                    tracing::warn!(node = %node.id, incarnation, "the node's lease ran out unrenewed: it fenced itself");
                    node.lease.end(Standing::Fenced { incarnation });
                }
            }
        }
        tokio::time::sleep_until((sent + period).into()).await;
    }
}

/// Extends the lease of `incarnation` if it still holds in PostgreSQL; `false` if not.
async fn renew(pg: &Pg, node: &Node, incarnation: i64) -> Result<bool, ClusterError> {
    let (id, ttl) = (node.id.to_string(), node.ttl.as_secs_f64());
    // A renewal that takes longer than the lease is trusted is useless: give up then.
    pg.run_on(
        Lane::Lease,
        "renewing the node's lease",
        node.margin_ttl(),
        move |client| async move {
            let renewed = client
                .execute(
                    "UPDATE agents_rs_nodes SET lease_until = now() + make_interval(secs => $3)
                  WHERE node_id = $1 AND incarnation = $2 AND lease_until > now()",
                    &[&id, &incarnation, &ttl],
                )
                .await?;
            Ok(renewed == 1)
        },
    )
    .await
}
