//! WebSocket messages: text or binary, cheap to clone so one serialization serves a broadcast.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

/// A WebSocket data message, as received by `on_message` and sent by `send`/`broadcast`.
///
/// Cloning is a reference-count increment: a broadcast builds its message once and every
/// recipient's outbox shares the same bytes.
///
/// ```
/// use agents_runtime::Message;
///
/// let text = Message::from("hello");
/// assert_eq!(text.as_text(), Some("hello"));
/// let binary = Message::from(vec![1u8, 2, 3]);
/// assert_eq!(binary.as_text(), None);
/// assert_eq!(binary.len(), 3);
/// // A typed frame serializes straight to its JSON text.
/// let json = Message::json(&serde_json::json!({ "type": "join" })).unwrap();
/// assert_eq!(json.as_text(), Some(r#"{"type":"join"}"#));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame (always valid UTF-8). The JS `typeof message === "string"` case.
    Text(Text),
    /// A binary frame. The JS `ArrayBuffer` / `ArrayBufferView` case.
    Binary(Bytes),
}

impl Message {
    /// A text message of `bytes` (shared, not copied), if they are UTF-8.
    pub(crate) fn text_from_bytes(bytes: Bytes) -> Option<Self> {
        Utf8Bytes::try_from(bytes).ok().map(|text| Message::Text(Text::from_wire(text)))
    }

    /// Serializes `value` to a JSON text message, once.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        serde_json::to_string(value).map(Self::from)
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::Binary(_) => None,
        }
    }

    /// The bytes, if this is a binary message.
    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Self::Text(_) => None,
            Self::Binary(bytes) => Some(bytes),
        }
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text(_))
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self, Self::Binary(_))
    }

    /// The payload size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f.debug_tuple("Text").field(&text.as_str()).finish(),
            Self::Binary(bytes) => f.debug_tuple("Binary").field(&bytes.len()).finish(),
        }
    }
}

/// UTF-8 text shared by reference count; dereferences to `str`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(Utf8Bytes);

impl Text {
    /// The text as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub(crate) fn from_wire(text: Utf8Bytes) -> Self {
        Self(text)
    }

    pub(crate) fn into_wire(self) -> Utf8Bytes {
        self.0
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Self(Utf8Bytes::from(text))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Self(Utf8Bytes::from(text))
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::Text(text.into())
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::Text(text.into())
    }
}

impl From<&String> for Message {
    fn from(text: &String) -> Self {
        Self::Text(text.as_str().into())
    }
}

impl From<Text> for Message {
    fn from(text: Text) -> Self {
        Self::Text(text)
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Self {
        Self::Binary(bytes)
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Binary(bytes.into())
    }
}

impl From<&[u8]> for Message {
    fn from(bytes: &[u8]) -> Self {
        Self::Binary(Bytes::copy_from_slice(bytes))
    }
}

impl From<serde_json::Value> for Message {
    fn from(value: serde_json::Value) -> Self {
        Self::from(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_payload() {
        let message = Message::from("x".repeat(1000));
        let copy = message.clone();
        let (Message::Text(a), Message::Text(b)) = (&message, &copy) else {
            panic!("expected text messages");
        };
        assert_eq!(a.as_ptr(), b.as_ptr());
    }

    #[test]
    fn json_serializes_once_into_text() {
        let message = Message::json(&serde_json::json!({"type": "join"})).expect("serializable");
        assert_eq!(message.as_text(), Some(r#"{"type":"join"}"#));
        assert!(message.as_binary().is_none());
    }
}
