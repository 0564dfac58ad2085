//! Auto-response (`setWebSocketAutoResponse`): a request text the runtime answers itself,
//! from the socket task, without waking or even queueing for the instance.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

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

/// The pairs instances have set, shared: the instances of a class usually set the same pair
/// in `on_start`, so each keeps a reference to one copy rather than a copy of its own (a
/// hibernated instance keeps its pair). At most [`MAX_SHARED`] distinct pairs are shared.
static SHARED: Mutex<Vec<Weak<WebSocketRequestResponsePair>>> = Mutex::new(Vec::new());

/// Most distinct pairs shared; past them (pairs that differ per instance), each instance keeps
/// its own.
const MAX_SHARED: usize = 32;

/// `pair`, as the copy other instances use if one does.
fn shared(pair: WebSocketRequestResponsePair) -> Arc<WebSocketRequestResponsePair> {
    let mut pairs = lock(&SHARED);
    if let Some(found) = pairs.iter().filter_map(Weak::upgrade).find(|found| **found == pair) {
        return found;
    }
    let pair = Arc::new(pair);
    if pairs.len() >= MAX_SHARED {
        pairs.retain(|weak| weak.strong_count() > 0);
    }
    if pairs.len() < MAX_SHARED {
        pairs.push(Arc::downgrade(&pair));
    }
    pair
}

impl AutoResponse {
    pub(crate) fn set(&self, pair: Option<WebSocketRequestResponsePair>) {
        let pair = pair.map(shared);
        let mut slot = lock(&self.pair);
        self.set.store(pair.is_some(), Ordering::Release);
        *slot = pair;
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
    fn instances_setting_the_same_pair_share_one_copy() {
        let (one, two, other) =
            (AutoResponse::default(), AutoResponse::default(), AutoResponse::default());
        let pair =
            || WebSocketRequestResponsePair::new("shared-ping", "shared-pong").expect("short");
        one.set(Some(pair()));
        two.set(Some(pair()));
        other.set(Some(WebSocketRequestResponsePair::new("shared-ping", "other").expect("short")));
        let held = |slot: &AutoResponse| lock(&slot.pair).clone().expect("set");
        assert!(Arc::ptr_eq(&held(&one), &held(&two)));
        assert!(!Arc::ptr_eq(&held(&one), &held(&other)));
        assert_eq!(other.answer("shared-ping").as_ref().and_then(Message::as_text), Some("other"));
        // Unset everywhere, the copy goes; a later pair is a new one.
        one.set(None);
        two.set(None);
        assert_eq!(two.answer("shared-ping"), None);
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
