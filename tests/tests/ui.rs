//! The macro's diagnostics, pinned: each file in `ui/fail` must fail to compile with exactly
//! the committed `.stderr`; each file in `ui/pass` must compile. Regenerate the expected
//! output with `TRYBUILD=overwrite cargo test -p agents-tests --test ui` and review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
