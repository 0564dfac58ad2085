//! [`Guard`]: what an agent's statements may do. SQLite asks it about every statement as it
//! is prepared (the authorizer) and every few thousand steps as it runs (the progress
//! handler); it refuses transaction control, other databases, TEMP objects and the pragmas
//! the runtime rests on, and interrupts a statement that runs too long.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization, TransactionOperation};

use crate::sync::lock;

/// How long one statement may run (Cloudflare's limit on a query's duration).
pub(crate) const MAX_STATEMENT_TIME: Duration = Duration::from_secs(30);
/// How many of SQLite's virtual machine steps pass between two looks at the clock.
pub(crate) const STEPS_PER_LOOK: i32 = 10_000;

/// What the authorizer and the progress handler know.
#[derive(Default)]
pub(crate) struct Guard {
    /// The runtime itself is running a statement: it may begin, commit and roll back.
    runtime: AtomicBool,
    /// Why the authorizer refused the last statement.
    refused: Mutex<Option<String>>,
    /// When the statement running now must have ended.
    deadline: Mutex<Option<Instant>>,
}

/// Pragmas a statement may read and set: none changes the runtime's durability, limits or
/// memory, or reaches past the database.
const SETTABLE: &[&str] = &[
    "user_version",
    "application_id",
    "foreign_keys",
    "defer_foreign_keys",
    "recursive_triggers",
    "case_sensitive_like",
    "ignore_check_constraints",
    "legacy_alter_table",
    "reverse_unordered_selects",
    "incremental_vacuum",
    "optimize",
];

/// Pragmas that read the schema or check the database, with any argument (`table_info(t)`).
const INTROSPECTION: &[&str] = &[
    "table_list",
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Pragmas a statement may read only, without an argument (with one, they would set).
const READABLE: &[&str] = &[
    "page_count",
    "page_size",
    "max_page_count",
    "freelist_count",
    "schema_version",
    "data_version",
    "encoding",
    "auto_vacuum",
    "journal_mode",
    "collation_list",
    "function_list",
    "pragma_list",
];

impl Guard {
    /// Runs `f` as the runtime: its statements may control transactions.
    pub(crate) fn as_runtime<T>(&self, f: impl FnOnce() -> T) -> T {
        self.runtime.store(true, Ordering::Release);
        let done = f();
        self.runtime.store(false, Ordering::Release);
        done
    }

    /// Why the last statement was refused, if it was (once).
    pub(crate) fn take_refusal(&self) -> Option<String> {
        lock(&self.refused).take()
    }

    /// A statement starts: it must end within [`MAX_STATEMENT_TIME`].
    pub(crate) fn start_clock(&self) {
        *lock(&self.deadline) = Some(Instant::now() + MAX_STATEMENT_TIME);
    }

    /// The progress handler: `true` interrupts the statement.
    pub(crate) fn overtime(&self) -> bool {
        let over = lock(&self.deadline).is_some_and(|deadline| Instant::now() >= deadline);
        if over {
            *lock(&self.refused) = Some(format!(
                "the statement ran for over {} s and was interrupted",
                MAX_STATEMENT_TIME.as_secs()
            ));
        }
        over
    }

    /// The authorizer.
    pub(crate) fn authorize(&self, context: &AuthContext<'_>) -> Authorization {
        if self.runtime.load(Ordering::Acquire) {
            return Authorization::Allow;
        }
        let refused = match context.action {
            AuthAction::Transaction { operation } | AuthAction::Savepoint { operation, .. } => {
                let what = match operation {
                    TransactionOperation::Begin => "begin",
                    TransactionOperation::Release => "commit or release",
                    TransactionOperation::Rollback => "roll back",
                    _ => "control",
                };
                format!(
                    "statements cannot {what} a transaction or savepoint: each turn is one \
                     transaction, committed when the turn ends and rolled back if its hook fails"
                )
            }
            AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
                "an agent's SQL reaches its own database only (ATTACH and DETACH are refused)"
                    .into()
            }
            AuthAction::CreateTempIndex { .. }
            | AuthAction::CreateTempTable { .. }
            | AuthAction::CreateTempTrigger { .. }
            | AuthAction::CreateTempView { .. } => {
                "TEMP tables, views, indexes and triggers are not supported: they would be \
                 outside the database's size limit"
                    .into()
            }
            AuthAction::Pragma { pragma_name, pragma_value }
                if !allowed(pragma_name, pragma_value) =>
            {
                format!(
                    "PRAGMA {pragma_name}{} is not allowed: the runtime sets what durability, \
                     limits and memory rest on",
                    if pragma_value.is_some() { " with a value" } else { "" }
                )
            }
            _ => return Authorization::Allow,
        };
        *lock(&self.refused) = Some(refused);
        Authorization::Deny
    }
}

fn allowed(name: &str, value: Option<&str>) -> bool {
    let name = name.to_ascii_lowercase();
    SETTABLE.contains(&name.as_str())
        || INTROSPECTION.contains(&name.as_str())
        || (value.is_none() && READABLE.contains(&name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn pragmas_are_allowed_by_name_and_by_whether_they_set() {
        assert!(allowed("user_version", Some("3")));
        assert!(allowed("TABLE_INFO", None));
        assert!(allowed("table_info", Some("cache")), "PRAGMA table_info(cache)");
        assert!(allowed("journal_mode", None));
        assert!(!allowed("journal_mode", Some("DELETE")));
        assert!(!allowed("max_page_count", Some("1")));
        for refused in [
            "hard_heap_limit",
            "soft_heap_limit",
            "mmap_size",
            "cache_size",
            "synchronous",
            "wal_autocheckpoint",
            "temp_store",
            "writable_schema",
        ] {
            assert!(!allowed(refused, Some("1")), "{refused}");
        }
    }
}
