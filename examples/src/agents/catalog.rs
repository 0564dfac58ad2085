//! `Catalog`: an agent that keeps its data in its own SQLite database, as the seeds' `onStart`
//! example does with ``this.sql`SELECT * FROM cache` ``. Keys and values are any strings:
//! they are bound as parameters, never written into the statements.

use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};

use crate::now_ms;

/// Most entries `search` returns.
pub const MAX_SEARCH_RESULTS: usize = 100;

// ANCHOR: catalog
/// An entry, as `search` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// A key-value catalog in SQL; see the module documentation.
#[derive(Default)]
pub struct Catalog;

#[agent]
impl Catalog {
    /// Creates the table the first time (every start: `IF NOT EXISTS`).
    async fn on_start(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        ctx.sql().exec(
            "CREATE TABLE IF NOT EXISTS cache (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                updated INTEGER NOT NULL
            )",
            (),
        )?;
        Ok(())
    }

    /// Sets `key` to `value`; returns the number of rows written (1).
    #[callable]
    fn put(&mut self, ctx: &mut Context<Self>, key: String, value: String) -> Result<u64> {
        let now = now_ms();
        let written = sql!(
            ctx,
            "INSERT INTO cache (key, value, updated) VALUES ({key}, {value}, {now})
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated = excluded.updated"
        )?;
        Ok(written.rows_written())
    }

    /// The value of `key`, or `null`.
    #[callable]
    fn get(&mut self, ctx: &mut Context<Self>, key: String) -> Result<Option<String>> {
        Ok(sql!(ctx, "SELECT value FROM cache WHERE key = {key}")?.one_or_none()?)
    }

    /// The entries whose key starts with `prefix`, in key order, at most 100.
    #[callable]
    fn search(&mut self, ctx: &mut Context<Self>, prefix: String) -> Result<Vec<Entry>> {
        let limit = MAX_SEARCH_RESULTS as i64;
        let rows = match prefix_end(&prefix) {
            Some(end) => sql!(
                ctx,
                "SELECT key, value FROM cache WHERE key >= {prefix} AND key < {end}
                 ORDER BY key LIMIT {limit}"
            )?,
            None => sql!(
                ctx,
                "SELECT key, value FROM cache WHERE key >= {prefix} ORDER BY key LIMIT {limit}"
            )?,
        };
        Ok(rows.to_array()?)
    }

    /// How many entries there are.
    #[callable]
    fn count(&mut self, ctx: &mut Context<Self>) -> Result<u64> {
        Ok(ctx.sql().exec("SELECT count(*) FROM cache", ())?.one()?)
    }

    /// Removes `key`; returns whether it was there.
    #[callable]
    fn remove(&mut self, ctx: &mut Context<Self>, key: String) -> Result<bool> {
        Ok(sql!(ctx, "DELETE FROM cache WHERE key = {key}")?.rows_written() == 1)
    }
}
// ANCHOR_END: catalog

/// The first string after every string that starts with `prefix` (in SQLite's byte order,
/// which is UTF-8's and so code points'), or `None` if there is none: the prefix's last
/// character that can be, moved up by one, with what follows it dropped.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_end_of_a_prefix_range_is_its_last_character_moved_up() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }
}
