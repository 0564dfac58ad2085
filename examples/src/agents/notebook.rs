//! `Notebook`: the key-value storage API, and the seeds' `on_start` pattern of rebuilding
//! in-memory data from storage.

use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};

// ANCHOR: notebook
/// One stored note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Its place in the notebook, from 1.
    pub number: u64,
    /// What was written.
    pub text: String,
}

/// Notes kept in storage under `note:{number}`; the count is rebuilt in `on_start`.
#[derive(Default)]
pub struct Notebook {
    /// A cache of what storage holds, rebuilt whenever the instance starts.
    count: u64,
}

#[agent(rename_all = "camelCase")]
impl Notebook {
    fn on_start(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        // Rebuild in-memory data from persistent storage.
        let last: Vec<(String, Note)> =
            ctx.storage().list(ListOptions::prefix("note:").reverse().limit(1))?;
        self.count = last.first().map_or(0, |(_, note)| note.number);
        Ok(())
    }

    /// Stores a note (at most 1000 characters) and returns its number.
    #[callable]
    fn add_note(&mut self, ctx: &mut Context<Self>, text: String) -> Result<u64> {
        if text.chars().count() > 1000 {
            return Err(Error::msg("a note has at most 1000 characters"));
        }
        let number = self.count + 1;
        // Zero-padded, so key order is number order.
        ctx.storage().put(&format!("note:{number:020}"), &Note { number, text })?;
        self.count = number;
        Ok(number)
    }

    /// The last `limit` notes (at most 100), oldest first.
    #[callable]
    fn latest(&self, ctx: &mut Context<Self>, limit: usize) -> Result<Vec<Note>> {
        let options = ListOptions::prefix("note:").reverse().limit(limit.min(100));
        let mut notes: Vec<Note> =
            ctx.storage().list(options)?.into_iter().map(|(_, note)| note).collect();
        notes.reverse();
        Ok(notes)
    }

    /// Removes every note; returns how many there were.
    #[callable]
    fn clear(&mut self, ctx: &mut Context<Self>) -> Result<usize> {
        self.count = 0;
        ctx.storage().delete_all()
    }
}
// ANCHOR_END: notebook
