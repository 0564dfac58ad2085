//! Hooks run under `catch_unwind`: a panicking hook becomes an [`Error`] for `on_error`, and
//! its instance keeps running.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use crate::error::Error;

/// Runs `hook` to completion; a panic in it comes back as `Err("a hook panicked: …")`.
pub(super) async fn caught<T>(hook: impl Future<Output = T>) -> Result<T, Error> {
    AssertUnwindSafe(hook).catch_unwind().await.map_err(|panic| panicked(&*panic))
}

/// The error a panic becomes.
pub(super) fn panicked(panic: &(dyn Any + Send)) -> Error {
    let message = if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    };
    Error::msg(format!("a hook panicked: {message}"))
}

#[cfg(test)]
mod tests {
    use super::caught;

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_message() {
        let error = caught(async { panic!("boom") }).await.unwrap_err();
        assert_eq!(error.to_string(), "a hook panicked: boom");
        let error = caught(async { std::panic::panic_any(7_u8) }).await.unwrap_err();
        assert_eq!(error.to_string(), "a hook panicked: (non-string panic payload)");
        assert_eq!(caught(async { 3 }).await.unwrap(), 3);
    }
}
