//! Who owns which agent: `agents_rs_agents`, one row per `(agent, name)` with its owner and
//! epoch. A node acquires an agent nobody live owns (the epoch goes up by one), releases it
//! when it lets it go (the epoch stays), and learns who owns it otherwise.

use super::error::ClusterError;
use super::pg::{Pg, QUERY_TIMEOUT};

/// A node under one incarnation: what an owner row names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) node: String,
    pub(crate) incarnation: i64,
}

/// Who owns an agent, after an attempt to acquire it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This node does, from now on, at this epoch, under this incarnation of the node.
    Acquired { epoch: i64, incarnation: i64 },
    /// A live node does: its id, incarnation and the address other nodes reach it on.
    Other { holder: Holder, addr: String },
}

/// Acquires `(agent, name)` for `me` if nobody live owns it (or `me` does already), else says
/// who does. One statement: the upsert, and the owner it did not replace.
pub(crate) async fn acquire(
    pg: &Pg,
    me: &Holder,
    agent: &str,
    name: &str,
) -> Result<Owner, ClusterError> {
    check_name(name)?;
    for _ in 0..8 {
        let (agent, name, node, inc) =
            (agent.to_owned(), name.to_owned(), me.node.clone(), me.incarnation);
        let row = pg
            .run("acquiring an agent", QUERY_TIMEOUT, move |client| async move {
                client
                    .query_opt(
                        "WITH acquired AS (
                            INSERT INTO agents_rs_agents (agent, name, owner_node, owner_inc, epoch)
                            VALUES ($1, $2, $3, $4, 1)
                            ON CONFLICT (agent, name) DO UPDATE
                               SET owner_node = EXCLUDED.owner_node, owner_inc = EXCLUDED.owner_inc,
                                   epoch = agents_rs_agents.epoch + 1
                             WHERE agents_rs_agents.owner_node IS NULL
                                OR (agents_rs_agents.owner_node = $3 AND agents_rs_agents.owner_inc = $4)
                                OR NOT EXISTS (
                                     SELECT 1 FROM agents_rs_nodes n
                                      WHERE n.node_id = agents_rs_agents.owner_node
                                        AND n.incarnation = agents_rs_agents.owner_inc
                                        AND n.lease_until > now())
                            RETURNING epoch)
                         SELECT epoch, NULL::text, NULL::bigint, NULL::text FROM acquired
                         UNION ALL
                         SELECT NULL::bigint, a.owner_node, a.owner_inc, n.addr
                           FROM agents_rs_agents a
                           JOIN agents_rs_nodes n ON n.node_id = a.owner_node
                                AND n.incarnation = a.owner_inc AND n.lease_until > now()
                          WHERE a.agent = $1 AND a.name = $2 AND NOT EXISTS (SELECT 1 FROM acquired)",
                        &[&agent, &name, &node, &inc],
                    )
                    .await
            })
            .await?;
        let Some(row) = row else {
            // The owner let go or died between the two reads: try again.
            continue;
        };
        if let Some(epoch) = row.get::<_, Option<i64>>(0) {
            return Ok(Owner::Acquired { epoch, incarnation: inc });
        }
        let holder = Holder { node: row.get(1), incarnation: row.get(2) };
        return Ok(Owner::Other { holder, addr: row.get(3) });
    }
    Err(ClusterError::new(format!(
        "acquiring {agent}/{name}: its owner changed eight times in a row; try again"
    )))
}

/// Lets go of `(agent, name)`, owned by `me` at `epoch`: the row keeps its epoch and names no
/// owner, so the next event acquires it anywhere. `false` if `me` did not own it at that epoch.
pub(crate) async fn release(
    pg: &Pg,
    me: &Holder,
    agent: &str,
    name: &str,
    epoch: i64,
) -> Result<bool, ClusterError> {
    let (agent, name, node, inc) =
        (agent.to_owned(), name.to_owned(), me.node.clone(), me.incarnation);
    pg.run("releasing an agent", QUERY_TIMEOUT, move |client| async move {
        let released = client
            .execute(
                "UPDATE agents_rs_agents SET owner_node = NULL, owner_inc = NULL
                  WHERE agent = $1 AND name = $2 AND epoch = $3
                    AND owner_node = $4 AND owner_inc = $5",
                &[&agent, &name, &epoch, &node, &inc],
            )
            .await?;
        Ok(released == 1)
    })
    .await
}

/// PostgreSQL's `text` holds no NUL character; an instance name with one cannot be owned.
fn check_name(name: &str) -> Result<(), ClusterError> {
    match name.contains('\0') {
        true => Err(ClusterError::new(
            "an instance name with a NUL character cannot be kept in a cluster",
        )),
        false => Ok(()),
    }
}
