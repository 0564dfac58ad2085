//! Helpers for the integration tests: [`agents_runtime::testing`] (the helpers users get),
//! plus the examples server, the README's doctest and the book's checks.

pub use agents_runtime::testing::*;

/// The examples server with default limits.
pub async fn examples() -> TestServer {
    start(agents_examples::server()).await
}

pub mod node {
    //! The repository's Node projects (`tests/js`, `examples/web`): installed from their
    //! lockfiles with `npm ci` when `node_modules` is missing or older than the lockfile, once
    //! at a time across test processes. Node 20+ and npm must be on the PATH.

    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    /// `{workspace}/{relative}`.
    pub fn project(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
    }

    /// Installs the locked packages of the project at `relative` (to the workspace) unless
    /// they are current, and returns its directory.
    pub fn npm_ci(relative: &str) -> PathBuf {
        let dir = project(relative);
        let dir = dir.as_path();
        // Test binaries may run at once (nextest): one installs, the others wait for it.
        let lock = std::fs::File::create(dir.join(".npm-ci.lock")).expect("creates the lock file");
        lock.lock().expect("locks the Node project");
        let lockfile = dir.join("package-lock.json");
        let marker = dir.join("node_modules/.package-lock.json");
        let fresh = match (std::fs::metadata(&lockfile), std::fs::metadata(&marker)) {
            (Ok(lockfile), Ok(marker)) => marker.modified().ok() >= lockfile.modified().ok(),
            _ => false,
        };
        if !fresh {
            let output = run(Command::new("npm").arg("ci").current_dir(dir), "npm ci");
            assert!(
                output.status.success(),
                "npm ci failed in {}:\n{}",
                dir.display(),
                describe(&output)
            );
        }
        dir.to_path_buf()
    }

    /// Runs `command`, failing the test with a hint when the program is missing.
    pub fn run(command: &mut Command, what: &str) -> Output {
        command.output().unwrap_or_else(|e| {
            panic!("cannot run {what} (Node 20+ and npm must be installed): {e}")
        })
    }

    /// Exit status and both outputs, for a failure message.
    pub fn describe(output: &Output) -> String {
        format!(
            "status: {}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

/// The README's example agent, compiled as a doctest so it cannot drift from the API.
#[doc = include_str!("../../README.md")]
mod readme {}

#[cfg(test)]
mod book {
    //! The guide's snippets come from compiled code: every `{{#include path:anchor}}` must name
    //! a file that exists and an anchor it defines, and every local link must resolve.

    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn chapters() -> Vec<PathBuf> {
        let dir = root().join("book/src");
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
        assert!(includes >= 6, "the chapters include the examples ({includes} includes found)");
    }

    #[test]
    fn local_links_resolve() {
        let mut documents = chapters();
        documents.push(root().join("README.md"));
        for document in documents {
            let text = std::fs::read_to_string(&document).expect("readable");
            for (i, _) in text.match_indices("](") {
                let rest = &text[i + 2..];
                let target = &rest[..rest.find(')').expect("closed link")];
                let target = target.split('#').next().unwrap_or_default();
                if target.is_empty() || target.contains("://") {
                    continue;
                }
                let path = document.parent().expect("in a directory").join(target);
                assert!(path.exists(), "{}: broken link to {target}", document.display());
            }
        }
    }
}
