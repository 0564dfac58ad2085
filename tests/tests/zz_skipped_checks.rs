//! The summary of skipped checks, last among the integration tests (cargo runs them in name
//! order): how many checks skipped in their last run for want of a tool, which, and how to
//! install it. It fails under `CI=true`, where nothing may skip; elsewhere the count is
//! printed where a reader of `cargo test`'s output sees it (the README lists the tools).

use std::io::Write;

#[test]
fn no_check_skipped_for_want_of_a_tool() {
    let skipped = agents_tests::skipped_checks();
    if skipped.is_empty() {
        return;
    }
    let list: Vec<String> = skipped.iter().map(|check| format!("  - {check}")).collect();
    let summary = format!(
        "{} check(s) skipped in their last run for want of a tool (see the README's \"Set up\"):\n{}",
        skipped.len(),
        list.join("\n")
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{summary}");
    let _ = writeln!(std::io::stderr(), "SKIPPED {summary}");
}
