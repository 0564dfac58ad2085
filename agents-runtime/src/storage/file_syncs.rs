//! Files written outside the store (each instance's SQLite write-ahead log) that the output
//! gate's next flush makes durable along with the store: one group commit for both.
//!
//! A database commits a turn into its log with a plain `write` (SQLite's `synchronous =
//! NORMAL`), which a killed process does not lose; the flusher then `fsync`s every log written
//! since its last flush, with the store's own flush, before it declares those writes durable.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::sync::lock;

/// A file to `fsync` at the next flush, and the directory to `fsync` once after it was
/// created (so its name survives a power cut too).
#[derive(Debug)]
pub(crate) struct SyncFile {
    file: File,
    /// `Some` until the directory was synced once.
    dir: Mutex<Option<PathBuf>>,
    /// Listed for the next flush (changed under the list's lock).
    listed: std::sync::atomic::AtomicBool,
    /// A sync failed: what it did not write may be gone from the page cache (Linux marks
    /// such pages clean), so no later sync of this file can vouch for it.
    broken: std::sync::atomic::AtomicBool,
}

impl SyncFile {
    /// `file`, whose directory entry is new if `new_in` names its directory.
    pub(crate) fn new(file: File, new_in: Option<PathBuf>) -> Self {
        Self {
            file,
            dir: Mutex::new(new_in),
            listed: Default::default(),
            broken: Default::default(),
        }
    }

    /// Whether its directory still waits for a sync.
    pub(crate) fn dir_pending(&self) -> bool {
        lock(&self.dir).is_some()
    }

    fn sync(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        if self.broken.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "an earlier sync of this log failed: what it held may not be on disk",
            ));
        }
        if let Err(e) = self.file.sync_data() {
            self.broken.store(true, Ordering::Release);
            return Err(e);
        }
        let dir = lock(&self.dir).clone();
        if let Some(dir) = dir {
            File::open(&dir)?.sync_all()?;
            lock(&self.dir).take();
        }
        Ok(())
    }
}

/// A flush syncs this many files or fewer on its own thread…
const FILES_PER_THREAD: usize = 4;
/// …and uses at most this many threads.
const MAX_THREADS: usize = 16;

/// The files written since the last flush.
#[derive(Debug, Default)]
pub(crate) struct FileSyncs {
    waiting: Mutex<Vec<Arc<SyncFile>>>,
}

impl FileSyncs {
    /// `file` was written: the next flush syncs it (once, however often it was written).
    pub(crate) fn wrote(&self, file: &Arc<SyncFile>) {
        use std::sync::atomic::Ordering;
        let mut waiting = lock(&self.waiting);
        if !file.listed.swap(true, Ordering::AcqRel) {
            waiting.push(file.clone());
        }
    }

    /// Syncs every file written before this call; those that fail stay listed for the next
    /// flush, and the first error is returned.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let files = {
            let mut waiting = lock(&self.waiting);
            for file in waiting.iter() {
                file.listed.store(false, Ordering::Release);
            }
            std::mem::take(&mut *waiting)
        };
        // The files are synced side by side: the filesystem's journal commits the syncs that
        // wait together once, where one after another each would wait for a commit of its own.
        let threads = files.len().div_ceil(FILES_PER_THREAD).min(MAX_THREADS);
        let failed: Vec<(Arc<SyncFile>, std::io::Error)> = if threads <= 1 {
            files.into_iter().filter_map(|file| file.sync().err().map(|e| (file, e))).collect()
        } else {
            let chunk = files.len().div_ceil(threads);
            let sync_chunk = |chunk: &[Arc<SyncFile>]| -> Vec<(Arc<SyncFile>, std::io::Error)> {
                let failed =
                    chunk.iter().filter_map(|file| file.sync().err().map(|e| (file.clone(), e)));
                failed.collect()
            };
            std::thread::scope(|scope| {
                let workers: Vec<_> = files
                    .chunks(chunk)
                    .map(|chunk| {
                        let spawned = std::thread::Builder::new()
                            .name("agents-log-sync".into())
                            .spawn_scoped(scope, move || sync_chunk(chunk));
                        // No thread to be had: this one syncs the chunk.
                        (chunk, spawned.map_err(|_| sync_chunk(chunk)))
                    })
                    .collect();
                let mut failed = Vec::new();
                for (chunk, worker) in workers {
                    match worker.map(|handle| handle.join()) {
                        Ok(Ok(chunk_failed)) | Err(chunk_failed) => failed.extend(chunk_failed),
                        // A sync that panicked: none of its chunk counts as synced.
                        Ok(Err(_)) => failed.extend(chunk.iter().map(|file| {
                            (file.clone(), std::io::Error::other("a log sync panicked"))
                        })),
                    }
                }
                failed
            })
        };
        let mut first_error = None;
        for (file, e) in failed {
            first_error.get_or_insert(e);
            self.wrote(&file);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The runtime gave up on the writes not yet durable (the disk failed): the files are no
    /// longer its concern; their instances restart from what reads back.
    pub(crate) fn forget(&self) {
        use std::sync::atomic::Ordering;
        for file in std::mem::take(&mut *lock(&self.waiting)) {
            file.listed.store(false, Ordering::Release);
        }
    }

    /// How many files wait for the next flush.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.waiting).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_written_twice_is_synced_once_and_its_new_directory_once() {
        let dir = std::env::temp_dir().join(format!("file-syncs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("log");
        let file = File::create(&path).expect("file");
        let file = Arc::new(SyncFile::new(file, Some(dir.clone())));
        let syncs = FileSyncs::default();
        syncs.wrote(&file);
        syncs.wrote(&file);
        assert_eq!(syncs.len(), 1);
        syncs.sync().expect("synced");
        assert_eq!(syncs.len(), 0);
        assert!(lock(&file.dir).is_none(), "the directory is synced once");
        syncs.wrote(&file);
        assert_eq!(syncs.len(), 1, "written again after the flush: listed again");
        syncs.forget();
        assert_eq!(syncs.len(), 0);
        std::fs::remove_dir_all(&dir).expect("cleaned");
    }
}
