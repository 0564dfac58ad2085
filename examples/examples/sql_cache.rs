//! The seeds' `onStart` example with SQL: an agent that rebuilds in-memory data from its
//! database when it starts, and keeps both in step (the book's SQL chapter).
//!
//! `cargo run -p agents-examples --example sql_cache`, then call `remember(key, value)` and
//! `recall(key)` on `ws://127.0.0.1:8787/agents/my-agent/{name}`; the data is kept in
//! `./.agents-data/sql/my-agent/`.

use std::collections::HashMap;

use agents_runtime::prelude::*;
use serde::Deserialize;

// ANCHOR: on_start
/// A row of the `cache` table.
#[derive(Deserialize)]
struct CacheRow {
    key: String,
    value: String,
}

#[derive(Default)]
struct MyAgent {
    /// What the `cache` table holds, in memory: rebuilt by `on_start`.
    cache: HashMap<String, String>,
}

#[agent(rename_all = "camelCase")]
impl MyAgent {
    async fn on_start(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        // Initialize resources
        tracing::info!("Agent {} starting...", ctx.name());
        ctx.sql().exec(
            "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            (),
        )?;
        // Load data from storage
        let saved: Vec<CacheRow> = sql!(ctx, "SELECT * FROM cache")?.to_array()?;
        for row in saved {
            // Rebuild in-memory state from persistent storage
            self.cache.insert(row.key, row.value);
        }
        Ok(())
    }

    async fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _c: &ConnectionContext,
    ) -> Result<()> {
        // By the time connections arrive, on_start has completed
        conn.send(format!("{} entries cached", self.cache.len()))?;
        Ok(())
    }

    /// Stores `value` under `key`, in the table and in memory.
    #[callable]
    fn remember(&mut self, ctx: &mut Context<Self>, key: String, value: String) -> Result<()> {
        sql!(ctx, "INSERT OR REPLACE INTO cache (key, value) VALUES ({key}, {value})")?;
        self.cache.insert(key, value);
        Ok(())
    }

    /// The value under `key`, from memory.
    #[callable]
    fn recall(&mut self, _ctx: &mut Context<Self>, key: String) -> Result<Option<String>> {
        Ok(self.cache.get(&key).cloned())
    }
}
// ANCHOR_END: on_start

// ANCHOR: migrations
/// Schema versions, applied in order by `on_start`; `PRAGMA user_version` says how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "ALTER TABLE cache ADD COLUMN updated INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS cache_by_updated ON cache (updated)",
];

/// Brings the database to the last version. Every statement is in the turn's transaction:
/// if one fails, `on_start` fails and none of them is kept.
fn migrate<A: Agent>(ctx: &mut Context<A>) -> Result<()> {
    let version: usize = ctx.sql().exec("PRAGMA user_version", ())?.one()?;
    for (done, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        ctx.sql().exec(migration, ())?;
        ctx.sql().exec(&format!("PRAGMA user_version = {}", done + 1), ())?;
    }
    Ok(())
}
// ANCHOR_END: migrations

/// `MyAgent` with the migrations, at `/agents/versioned/{name}`.
#[derive(Default)]
struct Versioned;

#[agent]
impl Versioned {
    async fn on_start(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        migrate(ctx)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().init();
    // The data (its SQL database included) goes to `./.agents-data`, the builder's default.
    Server::builder().bind("127.0.0.1:8787").await?.run().await
}
