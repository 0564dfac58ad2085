//! The guide (`book/`): its snippets come from compiled code, and it builds without broken
//! links.
//!
//! - every `{{#include path:anchor}}` names a file that exists and an anchor it defines;
//! - every local link of the Markdown (chapters and README) resolves;
//! - `mdbook build` succeeds without warnings, and every `href`/`src` of the HTML it writes
//!   points at a file that exists and, with a `#fragment`, at an `id` in it.
//!
//! mdbook is found on the PATH (or at `$MDBOOK`); `.ci/run` installs it. Without it the build
//! check fails under CI (`CI=true`) and is skipped, loudly, elsewhere.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use agents_tests::node::{describe, project};

fn chapters() -> Vec<PathBuf> {
    let dir = project("book/src");
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("book/src exists")
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    chapters
}

#[test]
fn every_include_names_an_existing_anchor() {
    let mut includes = 0;
    for chapter in chapters() {
        let text = std::fs::read_to_string(&chapter).expect("readable");
        for (_, rest) in text.match_indices("{{#include ").map(|(i, _)| text.split_at(i + 11)) {
            let target = &rest[..rest.find("}}").expect("closed include")];
            let (file, anchor) = target.split_once(':').unwrap_or((target, ""));
            let path = chapter.parent().expect("in a directory").join(file);
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {file}: {e}", chapter.display()));
            if !anchor.is_empty() {
                for marker in [format!("ANCHOR: {anchor}"), format!("ANCHOR_END: {anchor}")] {
                    assert!(
                        source.contains(&marker),
                        "{}: {file} lacks `{marker}`",
                        chapter.display()
                    );
                }
            }
            includes += 1;
        }
    }
    assert!(includes >= 20, "the chapters include the examples ({includes} includes found)");
}

#[test]
fn local_links_resolve() {
    let mut documents = chapters();
    documents.push(project("README.md"));
    for document in documents {
        let text = std::fs::read_to_string(&document).expect("readable");
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').expect("closed link")];
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let path = document.parent().expect("in a directory").join(target);
            assert!(path.exists(), "{}: broken link to {target}", document.display());
        }
    }
}

fn mdbook() -> Option<PathBuf> {
    let program = std::env::var_os("MDBOOK").map_or_else(|| PathBuf::from("mdbook"), PathBuf::from);
    let found = Command::new(&program).arg("--version").output().is_ok_and(|o| o.status.success());
    found.then_some(program)
}

#[test]
fn the_book_builds_without_broken_links() {
    let Some(mdbook) = mdbook() else {
        let hint = "no mdbook: install it with `cargo install mdbook --version 0.5.4 --locked \
                    --no-default-features --features search` or set MDBOOK to its path";
        agents_tests::skip("the book build", hint);
        return;
    };
    agents_tests::ran("the book build");
    let out = std::env::temp_dir().join(format!("agents-rs-book-{}", std::process::id()));
    let output = Command::new(&mdbook)
        .arg("build")
        .arg(project("book"))
        .arg("--dest-dir")
        .arg(&out)
        .output()
        .expect("mdbook runs");
    let log = describe(&output);
    assert!(output.status.success(), "mdbook build failed:\n{log}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("WARN") && !stderr.contains("ERROR"), "mdbook build warned:\n{log}");
    let broken = broken_links(&out);
    let _ = std::fs::remove_dir_all(&out);
    assert!(broken.is_empty(), "broken links in the built book:\n{}", broken.join("\n"));
}

/// Every local `href`/`src` of the HTML under `root` whose file or fragment is missing.
fn broken_links(root: &Path) -> Vec<String> {
    let pages = html_files(root);
    let ids: HashMap<PathBuf, HashSet<String>> = pages
        .iter()
        .map(|page| {
            let html = std::fs::read_to_string(page).expect("readable");
            (page.clone(), attribute_values(&html, "id").into_iter().collect())
        })
        .collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let html = std::fs::read_to_string(page).expect("readable");
        for target in [attribute_values(&html, "href"), attribute_values(&html, "src")].concat() {
            if target.contains("://")
                || target.starts_with("mailto:")
                || target.starts_with("data:")
                || target.starts_with("javascript:")
                || target.starts_with("//")
            {
                continue;
            }
            checked += 1;
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let file = file.split('?').next().unwrap_or_default();
            let resolved = if file.is_empty() {
                page.clone()
            } else {
                let base = if file.starts_with('/') {
                    root
                } else {
                    page.parent().expect("in a directory")
                };
                let joined = base.join(file.trim_start_matches('/'));
                if joined.is_dir() { joined.join("index.html") } else { joined }
            };
            let Ok(resolved) = resolved.canonicalize() else {
                broken.push(format!("{}: {target}", page.display()));
                continue;
            };
            let has_fragment = fragment.is_empty()
                || ids.get(&resolved).is_some_and(|ids| ids.contains(fragment))
                || resolved.extension().is_none_or(|e| e != "html");
            if !has_fragment {
                broken.push(format!("{}: {target} (no id `{fragment}`)", page.display()));
            }
        }
    }
    assert!(checked > 100, "the checker saw the book's links ({checked})");
    broken
}

fn html_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("readable").path();
        if path.is_dir() {
            found.extend(html_files(&path));
        } else if path.extension().is_some_and(|e| e == "html") {
            found.push(path.canonicalize().expect("exists"));
        }
    }
    found
}

/// The values of `name="..."` attributes, as written (mdBook quotes with `"`).
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let pattern = format!(" {name}=\"");
    html.match_indices(&pattern)
        .filter_map(|(i, p)| {
            let start = i + p.len();
            let end = html[start..].find('"')?;
            Some(html[start..start + end].replace("&amp;", "&"))
        })
        .collect()
}
