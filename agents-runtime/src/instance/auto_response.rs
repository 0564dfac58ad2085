//! Auto-response (`setWebSocketAutoResponse`): a request text the runtime answers itself,
//! from the socket task, without waking or even queueing for the instance.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::sync::lock;

/// Longest request or response, in characters (UTF-16 code units, as in JavaScript).
pub const MAX_AUTO_RESPONSE_LEN: usize = 2048;

/// A request text and the response the runtime sends back for it
/// (`WebSocketRequestResponsePair`); set with
/// [`Context::set_websocket_auto_response`](crate::Context::set_websocket_auto_response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSocketRequestResponsePair {
    request: Box<str>,
    response: Message,
}

impl WebSocketRequestResponsePair {
    /// The pair `request` → `response`, each at most [`MAX_AUTO_RESPONSE_LEN`] characters.
    pub fn new(request: impl Into<String>, response: impl Into<String>) -> Result<Self> {
        let (request, response) = (request.into(), response.into());
        for (what, text) in [("request", &request), ("response", &response)] {
            let len = crate::instance::tags::utf16_len(text);
            if len > MAX_AUTO_RESPONSE_LEN {
                return Err(Error::msg(format!(
                    "the auto-response {what} is {len} characters; the limit is {MAX_AUTO_RESPONSE_LEN}"
                )));
            }
        }
        Ok(Self { request: request.into(), response: response.into() })
    }

    /// The text a client sends (`getRequest()`).
    pub fn request(&self) -> &str {
        &self.request
    }

    /// The text the runtime answers with (`getResponse()`).
    pub fn response(&self) -> &str {
        self.response.as_text().unwrap_or_default()
    }
}

/// One instance's auto-response, read by every socket task of the instance.
#[derive(Debug, Default)]
pub(crate) struct AutoResponse {
    /// Whether a pair is set: the per-message check is this one load when none is.
    set: AtomicBool,
    pair: Mutex<Option<Arc<WebSocketRequestResponsePair>>>,
}

impl AutoResponse {
    pub(crate) fn set(&self, pair: Option<WebSocketRequestResponsePair>) {
        let mut slot = lock(&self.pair);
        self.set.store(pair.is_some(), Ordering::Release);
        *slot = pair.map(Arc::new);
    }

    pub(crate) fn get(&self) -> Option<WebSocketRequestResponsePair> {
        lock(&self.pair).as_deref().cloned()
    }

    /// The response to `text` if it is exactly the configured request.
    pub(crate) fn answer(&self, text: &str) -> Option<Message> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        let pair = lock(&self.pair).clone()?;
        (*pair.request == *text).then(|| pair.response.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_the_exact_request() {
        let slot = AutoResponse::default();
        assert_eq!(slot.answer("ping"), None);
        slot.set(Some(WebSocketRequestResponsePair::new("ping", "pong").expect("short")));
        assert_eq!(slot.answer("ping").as_ref().and_then(Message::as_text), Some("pong"));
        for other in ["Ping", "ping ", "", "pong"] {
            assert_eq!(slot.answer(other), None, "{other:?}");
        }
        assert_eq!(slot.get().map(|p| p.request().to_owned()).as_deref(), Some("ping"));
        slot.set(None);
        assert_eq!(slot.answer("ping"), None);
        assert_eq!(slot.get(), None);
    }

    #[test]
    fn long_pairs_are_refused() {
        let long = "x".repeat(MAX_AUTO_RESPONSE_LEN + 1);
        let fits = "é".repeat(MAX_AUTO_RESPONSE_LEN);
        assert!(WebSocketRequestResponsePair::new(fits.clone(), fits).is_ok());
        let err = WebSocketRequestResponsePair::new(long.clone(), "ok").unwrap_err().to_string();
        assert!(err.contains("request is 2049 characters"), "{err}");
        assert!(WebSocketRequestResponsePair::new("ok", long).is_err());
    }
}
