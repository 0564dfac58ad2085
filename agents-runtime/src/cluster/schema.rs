//! The cluster's tables, created or migrated when a node (or a [`PostgresStore`]) starts.
//!
//! Every step runs in one transaction under an advisory lock, so nodes starting together
//! migrate once; `agents_rs_schema` holds the version reached. A database migrated by a newer
//! release is refused rather than guessed at.
//!
//! [`PostgresStore`]: super::PostgresStore

use super::error::ClusterError;
use super::pg::{Pg, QUERY_TIMEOUT};

/// The advisory lock migrations hold (any number of our own; "agents-rs" in ASCII, folded).
const MIGRATION_LOCK: i64 = 0x6167_656e_7473_7273;

/// The steps, in order; the schema's version is how many have run.
const STEPS: &[&str] = &[
    // 1: nodes and their leases, the owner of every agent, and every agent's data.
    "CREATE SEQUENCE agents_rs_incarnations;
     CREATE TABLE agents_rs_nodes (
         node_id     text PRIMARY KEY,
         addr        text NOT NULL,
         incarnation bigint NOT NULL,
         lease_until timestamptz NOT NULL,
         joined_at   timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE agents_rs_agents (
         agent      text NOT NULL,
         name       text NOT NULL,
         owner_node text,
         owner_inc  bigint,
         epoch      bigint NOT NULL,
         PRIMARY KEY (agent, name)
     );
     CREATE INDEX agents_rs_agents_owner ON agents_rs_agents (owner_node) WHERE owner_node IS NOT NULL;
     CREATE TABLE agents_rs_data (
         key   bytea PRIMARY KEY,
         value bytea NOT NULL
     );
     CREATE TABLE agents_rs_secret (
         secret text NOT NULL
     );
     INSERT INTO agents_rs_secret (secret) VALUES (md5(random()::text || clock_timestamp()::text) || md5(random()::text));",
];

/// The version this build writes and reads.
pub(crate) const VERSION: i32 = STEPS.len() as i32;

/// Brings the database to [`VERSION`], or fails if it is past it.
pub(crate) async fn migrate(pg: &Pg) -> Result<(), ClusterError> {
    let outcome = pg
        .run("migrating the cluster's tables", QUERY_TIMEOUT * 6, |mut client| async move {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS agents_rs_schema (version integer NOT NULL)",
            )
            .await?;
            let found: Option<i32> = tx
                .query_opt("SELECT version FROM agents_rs_schema", &[])
                .await?
                .map(|row| row.get(0));
            let from = found.unwrap_or(0);
            if from > VERSION {
                return Ok(Err(from));
            }
            for step in &STEPS[from as usize..] {
                tx.batch_execute(step).await?;
            }
            match found {
                None => {
                    tx.execute("INSERT INTO agents_rs_schema (version) VALUES ($1)", &[&VERSION])
                        .await?
                }
                Some(_) => {
                    tx.execute("UPDATE agents_rs_schema SET version = $1", &[&VERSION]).await?
                }
            };
            tx.commit().await?;
            Ok(Ok(()))
        })
        .await?;
    outcome.map_err(|found| {
        ClusterError::new(format!(
            "the cluster's tables are at version {found}, newer than this build's {VERSION}: \
             upgrade this node"
        ))
    })
}
