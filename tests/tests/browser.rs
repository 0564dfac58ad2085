//! The demo page the examples server serves at `/`, in a real browser: headless Chromium
//! (Debian's `chromium` package) driven by `playwright-core` from `tests/js/browser.test.mjs`.
//! Two pages chat, see presence change when one closes, share the counter, and one reconnects
//! by itself after the server restarts. The screenshots land in `target/ci-artifacts/`.
//!
//! A second test loads the page through nginx with TLS, configured by the production chapter's
//! `examples/deploy/nginx.conf`: the page's `wss://` sockets go through the proxy.
//!
//! Chromium is found at `$CHROMIUM` or `/usr/bin/chromium`, nginx at `$NGINX_PATH` or
//! `/usr/sbin/nginx`. Without them the tests that need them fail under CI (`CI=true`, where
//! `.ci/run` installs both) and are skipped, loudly, elsewhere.
//!
//! Also checked here: the committed bundle `examples/web/dist/app.js` is exactly what esbuild
//! makes today from `examples/web/src/app.js` and the locked npm packages.

use std::path::PathBuf;
use std::process::Command;

use agents_tests::node::{describe, npm_ci, project, run};

/// `$variable` if set, else the first of `defaults` that exists.
fn program(variable: &str, defaults: &[&str]) -> Option<PathBuf> {
    let candidates = std::env::var_os(variable)
        .map(PathBuf::from)
        .into_iter()
        .chain(defaults.iter().map(PathBuf::from));
    candidates.into_iter().find(|path| path.is_file())
}

#[test]
fn the_demo_page_works_in_chromium() {
    const CHROMIUM: &str = "the browser test's part that needs Chromium";
    const NGINX: &str = "the browser test's part that needs nginx";
    let Some(chromium) = program("CHROMIUM", &["/usr/bin/chromium", "/usr/bin/chromium-browser"])
    else {
        agents_tests::skip(CHROMIUM, "apt-get install chromium, or set CHROMIUM to its path");
        return;
    };
    agents_tests::ran(CHROMIUM);
    let nginx = match program("NGINX_PATH", &["/usr/sbin/nginx"]) {
        Some(nginx) => {
            agents_tests::ran(NGINX);
            nginx
        }
        None => {
            agents_tests::skip(NGINX, "apt-get install nginx, or set NGINX_PATH to its path");
            PathBuf::new()
        }
    };
    // The demo through a cluster of two nodes, on a PostgreSQL of the test's own.
    let postgres = agents_tests::postgres("the demo page through a cluster");
    let cluster_url = postgres.as_ref().map(|postgres| postgres.database()).unwrap_or_default();
    let dir = npm_ci("tests/js");
    let artifacts = artifacts();
    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=spec", "browser.test.mjs"])
        .current_dir(&dir)
        .env("EXAMPLES_SERVER", env!("CARGO_BIN_EXE_examples-server"))
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .env("NGINX_PATH", &nginx);
    if !cluster_url.is_empty() {
        node.env("CLUSTER_URL", &cluster_url);
    }
    let output = run(&mut node, "node");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "the browser test failed:\n{}", describe(&output));
    let screenshot = artifacts.join("demo.png");
    assert!(screenshot.is_file(), "the test saved {}", screenshot.display());
    println!("screenshots in {}", artifacts.display());
}

/// `$ARTIFACTS`, or `target/ci-artifacts` of this workspace.
fn artifacts() -> PathBuf {
    std::env::var_os("ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| project("target/ci-artifacts"))
}

#[test]
fn the_committed_bundle_is_current() {
    let dir = npm_ci("examples/web");
    let scratch = std::env::temp_dir().join(format!("agents-rs-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("creates a scratch directory");
    let fresh = scratch.join("app.js");
    let output = run(Command::new("node").arg("build.mjs").arg(&fresh).current_dir(&dir), "node");
    assert!(output.status.success(), "the bundle did not build:\n{}", describe(&output));
    let rebuilt = std::fs::read(&fresh).expect("reads the new bundle");
    let _ = std::fs::remove_dir_all(&scratch);
    let committed = std::fs::read(dir.join("dist/app.js")).expect("reads dist/app.js");
    assert!(
        rebuilt == committed,
        "examples/web/dist/app.js is stale: run `npm ci && npm run build` in examples/web and \
         commit the result ({} bytes committed, {} rebuilt)",
        committed.len(),
        rebuilt.len()
    );
}
