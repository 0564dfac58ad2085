//! [`Sql`]: an instance's database as its hooks use it (`ctx.sql()`), and [`SqlSession`]: the
//! database of an awake instance, with the turn's transaction and its place in the output gate.

use std::sync::Arc;

use super::databases::{Databases, Slot};
use super::{SqlCursor, SqlError, SqlParams, SqlValue};
use crate::storage::durability::OutputGate;

/// The database of an awake instance: opened at its first statement, closed when the instance
/// hibernates or leaves memory (when this is dropped).
pub(crate) struct SqlSession {
    databases: Arc<Databases>,
    agent: &'static str,
    name: Arc<str>,
    slot: Option<Arc<Slot>>,
}

impl SqlSession {
    pub(crate) fn new(databases: Arc<Databases>, agent: &'static str, name: Arc<str>) -> Self {
        Self { databases, agent, name, slot: None }
    }

    /// A hook starts: if it fails, [`hook_failed`](Self::hook_failed) rolls back its
    /// statements only.
    pub(crate) fn hook_started(&self) {
        if let Some(slot) = &self.slot {
            let _ = self.databases.with_open(slot, |db| db.hook_started());
        }
    }

    /// The hook under way failed: its statements are rolled back; if they were the turn's
    /// only ones, frames no longer wait for them.
    pub(crate) fn hook_failed(&self, gate: &OutputGate) {
        let Some(slot) = &self.slot else { return };
        match self.databases.with_open(slot, |db| db.hook_failed()) {
            Some(Ok(true)) => {}
            Some(Ok(false)) | None => gate.release(),
            Some(Err(e)) => {
                tracing::error!(agent = self.agent, name = %self.name, "SQL rollback: {e}");
                gate.fail(&format!("the turn's SQL statements cannot be kept: {e}"));
            }
        }
    }

    /// The turn is over: its statements are committed, and frames wait for the commit to be
    /// durable; if it fails, they are told the writes were lost and the instance restarts.
    pub(crate) fn end_turn(&self, gate: &OutputGate) {
        let Some(slot) = &self.slot else { return };
        let committed = self.databases.with_open(slot, |db| match db.commit() {
            // Cluster mode: the database's image goes to the store, as a write of the turn.
            Ok(true) if slot.image.is_some() => {
                db.image().map(|image| Some(Committed::Image(image)))
            }
            // Committed: the flusher syncs the log; if the log cannot be reached (no file
            // descriptor left), a checkpoint makes the commit durable here instead.
            Ok(true) => match db.log() {
                Ok(log) => Ok(Some(Committed::Log(log))),
                Err(e) => db.checkpoint().map(|()| Some(Committed::Log(None))).map_err(|c| {
                    SqlError::new(format!("the commit cannot be made durable: {e}; {c}"))
                }),
            },
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        });
        match committed {
            Some(Ok(Some(Committed::Log(log)))) => {
                if let Some(log) = log {
                    gate.files().wrote(&log);
                }
                gate.wrote_outside();
                gate.release();
            }
            Some(Ok(Some(Committed::Image(image)))) => match keep_image(slot, gate, &image) {
                Ok(()) => gate.release(),
                Err(e) => {
                    tracing::error!(agent = self.agent, name = %self.name, "SQL commit failed: {e}");
                    gate.fail(&format!("the SQL commit failed: {e}"));
                }
            },
            Some(Ok(None)) | None => gate.release(),
            Some(Err(e)) => {
                tracing::error!(agent = self.agent, name = %self.name, "SQL commit failed: {e}");
                gate.fail(&format!("the SQL commit failed: {e}"));
            }
        }
    }

    fn slot(&mut self) -> Result<Arc<Slot>, SqlError> {
        if let Some(slot) = &self.slot {
            return Ok(slot.clone());
        }
        let slot = self.databases.slot(self.agent, &self.name)?;
        self.slot = Some(slot.clone());
        Ok(slot)
    }
}

/// What a commit left to make durable: the database's log (a file the flusher syncs), or
/// its image (cluster mode: a write to the store).
enum Committed {
    Log(Option<Arc<crate::storage::file_syncs::SyncFile>>),
    Image(Vec<u8>),
}

/// The largest image of a database a cluster keeps (a PostgreSQL value holds at most 1 GiB).
const MAX_IMAGE: usize = 256 << 20;

/// Writes `image` where `slot` keeps it, as a write of the turn behind `gate`.
fn keep_image(slot: &Slot, gate: &OutputGate, image: &[u8]) -> Result<(), SqlError> {
    let Some(kept) = &slot.image else { return Ok(()) };
    if image.len() > MAX_IMAGE {
        return Err(SqlError::new(format!(
            "in a cluster an agent's SQL database is at most {} MiB ({} MiB now)",
            MAX_IMAGE >> 20,
            image.len() >> 20
        )));
    }
    gate.may_write().map_err(|e| SqlError::new(e.to_string()))?;
    let stored = crate::storage::encode_value(image);
    gate.wrote(kept.store.put(&kept.key, &stored)).map_err(|e| SqlError::new(e.to_string()))
}

/// The instance's SQLite database (`this.sql`, `ctx.storage.sql`): see
/// [`Context::sql`](crate::Context::sql).
///
/// Every statement of a turn belongs to one transaction, committed when the turn ends; the
/// statements of a hook that fails are rolled back. Values are always bound parameters.
pub struct Sql<'a> {
    session: &'a mut SqlSession,
    gate: &'a OutputGate,
}

impl<'a> Sql<'a> {
    pub(crate) fn new(session: &'a mut SqlSession, gate: &'a OutputGate) -> Self {
        Self { session, gate }
    }

    /// Runs one statement with `params` bound to its `?`, `?1`… parameters (`exec(query,
    /// ...bindings)`), and returns its rows.
    ///
    /// `params` is `()`, a tuple of `Serialize` values, or a list of [`SqlValue`]s; the
    /// [`sql!`](crate::sql!) macro binds `{expr}`s in the text instead. A wrong statement,
    /// a value over a limit or a statement that begins or ends a transaction is an error.
    pub fn exec(&mut self, query: &str, params: impl SqlParams) -> Result<SqlCursor, SqlError> {
        let params = params.into_values()?;
        self.run(query, &params)
    }

    fn run(&mut self, query: &str, params: &[SqlValue]) -> Result<SqlCursor, SqlError> {
        let slot = self.session.slot()?;
        let gate = self.gate;
        let before_write = || {
            gate.may_write().map_err(|e| SqlError::new(e.to_string()))?;
            gate.hold();
            Ok(())
        };
        self.session.databases.with(&slot, |db| {
            // After the store gave up on writes, a database's log may hold commits that were
            // never synced: what this turn sends waits for a sync of it first.
            if db.take_fresh()
                && gate.losses_seen()
                && let Some(log) = db.log()?
            {
                gate.files().wrote(&log);
                gate.wrote_outside();
            }
            db.exec(query, params, before_write)
        })
    }

    /// The size of the database in bytes (`databaseSize`), this turn's changes included.
    pub fn database_size(&mut self) -> Result<u64, SqlError> {
        let slot = self.session.slot()?;
        self.session.databases.with(&slot, |db| db.size())
    }

    /// Drops every table, view, index and trigger (Cloudflare's `deleteAll()` for SQL) and
    /// gives their pages back, in the turn's transaction; the key-value storage has its own
    /// [`Storage::delete_all`](crate::storage::Storage::delete_all). Returns how many objects
    /// were dropped.
    pub fn delete_all(&mut self) -> Result<usize, SqlError> {
        let objects = self.run(
            "SELECT type, name FROM sqlite_schema WHERE type IN ('trigger', 'view', 'table') \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 ELSE 2 END",
            &[],
        )?;
        let objects: Vec<(String, String)> = objects.to_array()?;
        // Tables that reference each other drop in any order; the check is at the commit.
        self.run("PRAGMA defer_foreign_keys = ON", &[])?;
        for (kind, name) in &objects {
            let quoted = name.replace('"', "\"\"");
            self.run(&format!("DROP {kind} IF EXISTS \"{quoted}\""), &[])?;
        }
        self.run("PRAGMA incremental_vacuum", &[])?;
        Ok(objects.len())
    }
}
