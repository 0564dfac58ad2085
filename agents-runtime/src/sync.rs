//! Locking helpers shared by every layer.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the data even if a thread panicked while holding it: every critical
/// section of the runtime leaves its data consistent between statements, and a panicking hook
/// must not take its instance's sockets down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
