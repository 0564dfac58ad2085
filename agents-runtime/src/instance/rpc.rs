//! `#[callable]` RPC: what a generated dispatcher receives and returns, streaming responses,
//! and argument decoding with clear errors.

use crate::instance::log_budget::clip_middle;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ConnectionError;
use crate::wire::protocol::RpcResponse;

/// What `#[callable]` says about a method (`getCallableMethods()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallableInfo {
    /// The name clients call it by.
    pub name: &'static str,
    /// `#[callable(description = "...")]`.
    pub description: Option<&'static str>,
    /// `#[callable(streaming)]`: results arrive through a [`StreamingResponse`].
    pub streaming: bool,
}

/// One call to a callable method, as the generated dispatcher receives it.
#[derive(Debug)]
pub struct Call {
    /// The method name as the client wrote it.
    pub method: String,
    /// Positional JSON arguments.
    pub args: Vec<Value>,
    /// The response stream, when the call came over a connection.
    pub stream: Option<StreamingResponse>,
}

/// How a call ended, for the runtime to answer.
#[derive(Debug, PartialEq)]
pub enum CallOutcome {
    /// Success; `None` for a method returning `()` (the frame then has no `result`).
    Value(Option<Value>),
    /// A streaming method returned; it answers through its stream.
    Streamed,
    /// The method (or argument decoding) failed with this message.
    Error(String),
    /// No method of that name: `Method X does not exist`.
    NotFound,
    /// A method of the agent that is not `#[callable]`: `Method X is not callable`.
    NotCallable,
}

impl CallOutcome {
    /// Turns what a callable returned into an outcome; `unit` when it returns `()`.
    pub fn from_result<T: Serialize, E: Into<crate::Error>>(
        result: Result<T, E>,
        unit: bool,
    ) -> Self {
        match result {
            Ok(_) if unit => Self::Value(None),
            Ok(value) => match serde_json::to_value(value) {
                Ok(value) => Self::Value(Some(value)),
                Err(e) => Self::Error(format!("Result is not JSON-serializable: {e}")),
            },
            Err(e) => Self::Error(e.into().to_string()),
        }
    }
}

/// Decodes argument `index` (`name`) of `method`; a missing argument reads as `null`, so only
/// `Option` parameters may be left out.
pub fn decode_arg<T: DeserializeOwned>(
    args: &mut std::vec::IntoIter<Value>,
    method: &str,
    index: usize,
    name: &str,
) -> Result<T, String> {
    let value = args.next().unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(|e| {
        let why = e.to_string();
        let why = clip_middle(&why);
        format!("Invalid argument {index} (`{name}`) for method {method}: {why}")
    })
}

/// Whether `name` is a method every JavaScript agent has (`setState`, `broadcast`, hooks…):
/// calling one answers `Method X is not callable`, as on Cloudflare.
pub fn is_agent_method(name: &str) -> bool {
    const METHODS: &[&str] = &[
        "constructor",
        "setState",
        "broadcast",
        "getConnections",
        "getConnection",
        "getConnectionTags",
        "onStart",
        "onRequest",
        "onConnect",
        "onMessage",
        "onClose",
        "onError",
        "onStateChanged",
        "onStateUpdate",
        "validateStateChange",
        "shouldSendProtocolMessages",
        "shouldConnectionBeReadonly",
        "setConnectionReadonly",
        "isConnectionReadonly",
        "isConnectionProtocolEnabled",
        "destroy",
        "schedule",
        "sql",
        "fetch",
        "alarm",
    ];
    METHODS.contains(&name)
}

/// Refuses more arguments than the method takes. Trailing `null`s do not count: JavaScript
/// sends `undefined` arguments as `null`.
pub fn check_arity(args: &[Value], method: &str, expected: usize) -> Result<(), String> {
    let given = args.iter().rposition(|arg| !arg.is_null()).map_or(0, |last| last + 1);
    if given > expected {
        let s = if expected == 1 { "" } else { "s" };
        return Err(format!("Method {method} takes {expected} argument{s}, got {}", args.len()));
    }
    Ok(())
}

/// The response channel of a `#[callable(streaming)]` method (Cloudflare's
/// `StreamingResponse`): chunks with [`send`](Self::send), then [`end`](Self::end) or
/// [`error`](Self::error). After the stream is closed, further calls do nothing and return
/// `false`. Cheap to clone; it can be moved into a spawned task.
///
/// ```no_run
/// use agents_runtime::prelude::*;
///
/// #[derive(Default)]
/// struct Numbers;
///
/// #[agent]
/// impl Numbers {
///     /// `await agent.call("countTo", [3], { onChunk, onDone })`: chunks 0, 1, 2, then 3.
///     #[callable(streaming)]
///     fn count_to(&self, stream: StreamingResponse, last: u32) -> Result<()> {
///         for i in 0..last {
///             if !stream.send(i) {
///                 return Ok(()); // the client is gone
///             }
///         }
///         stream.end(last);
///         Ok(())
///     }
/// }
/// ```
#[derive(Clone)]
pub struct StreamingResponse {
    inner: Arc<StreamInner>,
}

struct StreamInner {
    id: String,
    sink: Box<dyn Fn(RpcResponse) -> Result<(), ConnectionError> + Send + Sync>,
    closed: AtomicBool,
}

impl StreamingResponse {
    pub(crate) fn new(
        id: String,
        sink: impl Fn(RpcResponse) -> Result<(), ConnectionError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner: Arc::new(StreamInner {
                id,
                sink: Box::new(sink),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The call id this stream answers.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Whether `end` or `error` was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Sends one chunk (`done: false`). `false` if the stream is closed or the chunk cannot be
    /// serialized (which ends the stream with an error).
    pub fn send(&self, chunk: impl Serialize) -> bool {
        if self.is_closed() {
            tracing::warn!(
                id = self.id(),
                "StreamingResponse::send after the stream was closed: data not sent"
            );
            return false;
        }
        match serde_json::to_value(chunk) {
            Ok(chunk) => {
                (self.inner.sink)(RpcResponse::result(self.id(), Some(chunk), false)).is_ok()
            }
            Err(e) => {
                self.error(format!("Result is not JSON-serializable: {e}"));
                false
            }
        }
    }

    /// Ends the stream with a final chunk (`done: true`).
    pub fn end(&self, last: impl Serialize) -> bool {
        match serde_json::to_value(last) {
            Ok(last) => self.close_with(RpcResponse::result(self.id(), Some(last), true)),
            Err(e) => self.error(format!("Result is not JSON-serializable: {e}")),
        }
    }

    /// Ends the stream with no final chunk (`end()` without an argument).
    pub fn end_empty(&self) -> bool {
        self.close_with(RpcResponse::result(self.id(), None, true))
    }

    /// Ends the stream with an error (`success: false`).
    pub fn error(&self, message: impl fmt::Display) -> bool {
        self.close_with(RpcResponse::error(self.id(), message.to_string()))
    }

    fn close_with(&self, frame: RpcResponse) -> bool {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        (self.inner.sink)(frame).is_ok()
    }
}

impl fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("id", &self.id())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recording() -> (StreamingResponse, Arc<Mutex<Vec<String>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let stream = StreamingResponse::new("s1".into(), move |answer: RpcResponse| {
            let message = answer.to_message();
            log.lock().expect("lock").push(message.as_text().unwrap_or_default().to_owned());
            Ok(())
        });
        (stream, sent)
    }

    #[test]
    fn a_stream_sends_chunks_then_closes_once() {
        let (stream, sent) = recording();
        assert!(stream.send(1));
        assert!(stream.end(2));
        assert!(!stream.error("late"));
        assert!(!stream.send(3));
        assert!(stream.is_closed());
        let sent = sent.lock().expect("lock");
        assert_eq!(sent.len(), 2);
        assert!(sent[0].contains(r#""done":false"#) && sent[0].contains(r#""result":1"#));
        assert!(sent[1].contains(r#""done":true"#) && sent[1].contains(r#""result":2"#));
    }

    #[test]
    fn arguments_decode_with_clear_errors() {
        let mut args = vec![serde_json::json!(1), serde_json::json!("x")].into_iter();
        assert_eq!(decode_arg::<i64>(&mut args, "add", 0, "a"), Ok(1));
        let err = decode_arg::<i64>(&mut args, "add", 1, "b").unwrap_err();
        assert_eq!(
            err,
            "Invalid argument 1 (`b`) for method add: invalid type: string \"x\", expected i64"
        );
        assert_eq!(decode_arg::<Option<i64>>(&mut args, "add", 2, "c"), Ok(None));
        assert_eq!(
            check_arity(&[Value::from(1), Value::from(2), Value::from(3)], "add", 2),
            Err("Method add takes 2 arguments, got 3".into())
        );
        assert_eq!(check_arity(&[Value::from(1), Value::from(2), Value::Null], "add", 2), Ok(()));
    }

    #[test]
    fn outcomes_from_results() {
        assert_eq!(
            CallOutcome::from_result(Ok::<_, crate::Error>(()), true),
            CallOutcome::Value(None)
        );
        assert_eq!(
            CallOutcome::from_result(Ok::<_, crate::Error>(3), false),
            CallOutcome::Value(Some(3.into()))
        );
        assert_eq!(
            CallOutcome::from_result(Err::<(), _>(crate::Error::msg("bad")), false),
            CallOutcome::Error("bad".into())
        );
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::super::decode_arg;

        proptest! {
            /// An `i64` argument decodes exactly when the client sent an integer in range;
            /// anything else is an error naming the argument, never a panic.
            #[test]
            fn integer_arguments_decode_or_are_refused_by_name(
                value in prop_oneof![
                    any::<i64>().prop_map(Value::from),
                    any::<u64>().prop_map(Value::from),
                    any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                    ".{0,20}".prop_map(Value::from),
                    any::<bool>().prop_map(Value::from),
                    Just(Value::Null),
                ],
            ) {
                let mut args = vec![value.clone()].into_iter();
                let decoded = decode_arg::<i64>(&mut args, "m", 0, "n");
                match value.as_i64() {
                    Some(n) => prop_assert_eq!(decoded, Ok(n)),
                    None => {
                        let error = decoded.expect_err("refused");
                        prop_assert!(error.starts_with("Invalid argument 0 (`n`) for method m: "), "{}", error);
                    }
                }
            }
        }
    }
}
