//! [`TempDir`]: a directory of a test's own.

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    /// Creates `{tmp}/agents-rs-{what}-{pid}-{n}`.
    pub fn new(what: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("agents-rs-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creates a temporary directory");
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
