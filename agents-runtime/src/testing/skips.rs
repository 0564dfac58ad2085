//! Checks that need a tool a machine may lack (PostgreSQL, Chromium, nginx, mdbook, root):
//! skipped where it is missing, said where a reader of `cargo test`'s output sees it, counted
//! for a summary, and failed under `CI=true`, where everything must be installed.

use super::postgres::Postgres;

/// A PostgreSQL server of the test's own ([`Postgres::start`]), or `None` after [`skip`]
/// when PostgreSQL is not installed (which fails under `CI=true`).
pub fn postgres(check: &str) -> Option<Postgres> {
    match Postgres::start() {
        Ok(server) => {
            ran(check);
            Some(server)
        }
        Err(why) => {
            skip(check, &format!("{why}; .ci/run installs it"));
            None
        }
    }
}

/// Skips `check` for want of a tool (`why` says which, and how to install it), or fails under
/// `CI=true`, where everything must be installed. The skip is said where a reader of
/// `cargo test`'s output sees it (straight to the process's standard error, which the test
/// harness does not capture: it captures `eprintln!`, and shows it only for failing tests),
/// and recorded for the summary that `tests/tests/zz_skipped_checks.rs` prints at the end.
pub fn skip(check: &str, why: &str) {
    use std::io::Write;
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{check} must run under CI: {why}");
    let _ = writeln!(std::io::stderr(), "SKIPPED {check}: {why}");
    if let Some(dir) = skips_dir() {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(slug(check)), format!("{check}: {why}\n"));
    }
}

/// `check` ran: it is no longer counted as skipped.
pub fn ran(check: &str) {
    if let Some(dir) = skips_dir() {
        let _ = std::fs::remove_file(dir.join(slug(check)));
    }
}

/// The checks whose last run skipped, with why, in name order.
pub fn skipped_checks() -> Vec<String> {
    let Some(entries) = skips_dir().and_then(|dir| std::fs::read_dir(dir).ok()) else {
        return Vec::new();
    };
    let mut skipped: Vec<String> = entries
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .map(|text| text.trim_end().to_owned())
        .collect();
    skipped.sort();
    skipped
}

/// Where skips are recorded: `target/<profile>/skipped-checks`, beside the test binaries
/// (which live in its `deps` folder).
fn skips_dir() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("skipped-checks"))
}

fn slug(check: &str) -> String {
    check.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}
