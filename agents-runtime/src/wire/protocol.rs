//! The Cloudflare Agents wire protocol: the JSON frames the official `agents` client sends
//! ([`ClientFrame`]) and expects ([`ServerFrame`]). The server, the Rust [`AgentClient`] and
//! in-process stubs all speak it through these types.
//!
//! [`AgentClient`]: crate::client::AgentClient

use std::borrow::Cow;
use std::sync::LazyLock;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::message::Message;

/// `Connection is readonly`: a readonly connection tried to change the state.
pub(crate) const READONLY: &str = "Connection is readonly";
/// `State update rejected`: the generic answer to a refused client update.
pub(crate) const STATE_REJECTED: &str = "State update rejected";

/// A frame a client sends that the runtime answers itself instead of passing it to
/// `on_message`. Read in one pass through [`RawClientFrame`].
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", try_from = "RawClientFrame")]
pub(crate) enum ClientFrame {
    /// `{"type":"cf_agent_state","state":…}`: the client sets the agent's state.
    #[serde(rename = "cf_agent_state")]
    State { state: Value },
    /// `{"type":"rpc","id":"…","method":"…","args":[…]}`
    #[serde(rename = "rpc")]
    Rpc(RpcRequest),
}

/// A client frame's fields as read, before its `type` says which of them count: one pass
/// over the text, where an internally tagged enum would first copy the frame into a tree.
#[derive(Deserialize)]
struct RawClientFrame {
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    state: Option<Value>,
    id: Option<Value>,
    method: Option<Value>,
    args: Option<Value>,
}

impl TryFrom<RawClientFrame> for ClientFrame {
    type Error = &'static str;

    fn try_from(raw: RawClientFrame) -> Result<Self, Self::Error> {
        match raw.kind.as_ref().and_then(Value::as_str) {
            Some("cf_agent_state") => match raw.state {
                Some(state) => Ok(ClientFrame::State { state }),
                None => Err("a state frame without `state`"),
            },
            Some("rpc") => match (raw.id, raw.method, raw.args) {
                (
                    Some(Value::String(id)),
                    Some(Value::String(method)),
                    Some(Value::Array(args)),
                ) => Ok(ClientFrame::Rpc(RpcRequest { id, method, args })),
                _ => Err("an RPC frame without a string `id` and `method` and an array `args`"),
            },
            _ => Err("not a protocol frame"),
        }
    }
}

/// One RPC call as the client sent it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RpcRequest {
    pub(crate) id: String,
    pub(crate) method: String,
    pub(crate) args: Vec<Value>,
}

/// A frame the server sends. `S` is how the state is held: borrowed from the agent when the
/// server sends it, a [`Value`] when a client reads it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum ServerFrame<'a, S = Value> {
    /// Who the connection reached; `stateFollows`: the next frame is the state.
    #[serde(rename = "cf_agent_identity")]
    Identity {
        #[serde(default)]
        name: Cow<'a, str>,
        #[serde(default)]
        agent: Cow<'a, str>,
        #[serde(rename = "stateFollows", default, skip_serializing_if = "is_false")]
        state_follows: bool,
    },
    /// The agent's state, on connect and after every change.
    #[serde(rename = "cf_agent_state")]
    State {
        #[serde(default)]
        state: S,
    },
    /// The client's state update was refused.
    #[serde(rename = "cf_agent_state_error")]
    StateError { error: Cow<'a, str> },
    /// The MCP servers the agent uses (the empty list here; see `mcp_servers_of`).
    #[serde(rename = "cf_agent_mcp_servers")]
    McpServers { mcp: McpServers },
    /// An RPC answer or stream chunk.
    #[serde(rename = "rpc")]
    Rpc(Cow<'a, RpcResponse>),
}

/// A server frame that is not the state (its type parameter unused).
type Stateless<'a> = ServerFrame<'a, ()>;

/// The MCP state of the `cf_agent_mcp_servers` frame.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct McpServers {
    pub(crate) prompts: Vec<Value>,
    pub(crate) resources: Vec<Value>,
    pub(crate) servers: serde_json::Map<String, Value>,
    pub(crate) tools: Vec<Value>,
}

/// What a client is told of an answer lost with the writes before it (a full disk).
pub(crate) fn storage_failed(why: &str) -> String {
    format!("Storage failed, the agent restarts from its last durable state: {why}")
}

/// The `type` of a server frame, and its `id` if it has one: for a frame the output gate
/// held when its writes were lost. `None` for a message that is not a protocol frame.
pub(crate) fn server_frame_kind(message: &Message) -> Option<(String, Option<String>)> {
    #[derive(Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        id: Option<String>,
    }
    let frame: Frame = serde_json::from_str(message.as_text()?).ok()?;
    Some((frame.kind, frame.id))
}

/// One RPC answer: a result (`success: true`, final when `done` is true or absent, a stream
/// chunk when `done` is false) or an error (`success: false`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RpcResponse {
    pub(crate) id: String,
    /// Absent reads as `true`, as the official client reads it.
    #[serde(default = "yes")]
    pub(crate) success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) done: Option<bool>,
    /// `None`: no `result` key, as JavaScript leaves out `undefined`; `Some(Null)`: `null`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub(crate) result: Option<Value>,
    /// A message that is not a string reads as none ("Unknown error occurred").
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "text")]
    pub(crate) error: Option<String>,
}

impl RpcResponse {
    /// A successful answer: a final one (`done: true`) or a stream chunk (`done: false`).
    pub(crate) fn result(id: impl Into<String>, result: Option<Value>, done: bool) -> Self {
        Self { id: id.into(), success: true, done: Some(done), result, error: None }
    }

    /// A failed answer.
    pub(crate) fn error(id: impl Into<String>, error: impl Into<String>) -> Self {
        Self { id: id.into(), success: false, done: None, result: None, error: Some(error.into()) }
    }

    /// Whether nothing follows this answer for its call.
    pub(crate) fn is_final(&self) -> bool {
        !self.success || self.done != Some(false)
    }

    /// The frame that carries it.
    pub(crate) fn to_message(&self) -> Message {
        encode(&ServerFrame::<'_, ()>::Rpc(Cow::Borrowed(self)))
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

fn yes() -> bool {
    true
}

/// A string, or `None` for any other JSON value.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(text) => Some(text),
        _ => None,
    })
}

/// A key that is there, `null` included (`Option<Value>` alone reads `null` as absent).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A server frame as a text message. The frame types hold only strings, maps and JSON
/// values, which always serialize.
fn encode<S: Serialize>(frame: &ServerFrame<'_, S>) -> Message {
    serde_json::to_string(frame).expect("a protocol frame serializes").into()
}

impl ClientFrame {
    /// The protocol frame `text` is, if it is one. Anything else (not JSON, another `type`,
    /// an RPC without a string `id`/`method` or an array `args`, a state frame without
    /// `state`) is `None` and goes to `on_message` untouched.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        // Cheap filter first: most user messages are not protocol frames.
        let maybe = text.trim_start().starts_with('{')
            && (text.contains("\"rpc\"") || text.contains("\"cf_agent_state\""));
        if !maybe {
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

impl ServerFrame<'_> {
    /// The server frame `text` is, if it is one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// `{"type":"cf_agent_identity","name":…,"agent":…[,"stateFollows":true]}`
pub(crate) fn identity(name: &str, agent: &str, state_follows: bool) -> Message {
    let (name, agent) = (Cow::Borrowed(name), Cow::Borrowed(agent));
    encode(&Stateless::Identity { name, agent, state_follows })
}

/// `{"type":"cf_agent_state","state":…}`, serialized in one pass from the state itself.
pub(crate) fn state<T: Serialize + ?Sized>(state: &T) -> serde_json::Result<Message> {
    serde_json::to_string(&ServerFrame::State { state }).map(Message::from)
}

/// The same frame as [`state`] around a state already serialized to `json`: a state change is
/// serialized once, for the store and for every client.
pub(crate) fn state_from_json(json: &str) -> Message {
    let mut frame = String::with_capacity(json.len() + 36);
    frame.push_str(r#"{"type":"cf_agent_state","state":"#);
    frame.push_str(json);
    frame.push('}');
    Message::from(frame)
}

/// `{"type":"cf_agent_state_error","error":…}`
pub(crate) fn state_error(error: &str) -> Message {
    encode(&Stateless::StateError { error: Cow::Borrowed(error) })
}

/// `{"error":…}`: why a connection's setup failed, sent before its close (1011).
pub(crate) fn setup_error(error: &str) -> Message {
    #[derive(Serialize)]
    struct SetupError<'a> {
        error: &'a str,
    }
    serde_json::to_string(&SetupError { error }).expect("a string serializes").into()
}

/// The MCP frame with no servers, which every connection of an agent without MCP servers gets
/// on connect (built once).
pub(crate) fn mcp_servers() -> Message {
    static EMPTY: LazyLock<Message> =
        LazyLock::new(|| encode(&Stateless::McpServers { mcp: McpServers::default() }));
    EMPTY.clone()
}

/// The MCP frame of an agent's MCP servers (`mcp`: the SDK's `MCPServersState` shape).
pub(crate) fn mcp_servers_of<M: Serialize>(mcp: &M) -> serde_json::Result<Message> {
    #[derive(Serialize)]
    struct Frame<'a, M> {
        mcp: &'a M,
        #[serde(rename = "type")]
        kind: &'static str,
    }
    Ok(serde_json::to_string(&Frame { mcp, kind: "cf_agent_mcp_servers" })?.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_state_frame_from_json_matches_the_serialized_one() {
        let state = serde_json::json!({ "count": 1, "names": ["a", "é"] });
        let json = serde_json::to_string(&state).expect("serializes");
        assert_eq!(state_from_json(&json), state_frame_of(&state));
    }

    fn state_frame_of(state: &serde_json::Value) -> Message {
        super::state(state).expect("serializes")
    }

    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Option<ClientFrame> {
        ClientFrame::parse(text)
    }

    #[test]
    fn protocol_frames_are_recognised() {
        assert_eq!(
            parse(r#"{"type":"cf_agent_state","state":{"count":1}}"#),
            Some(ClientFrame::State { state: json!({"count":1}) })
        );
        assert_eq!(
            parse(r#"{"state":null,"type":"cf_agent_state"}"#),
            Some(ClientFrame::State { state: Value::Null })
        );
        assert_eq!(
            parse(r#"{"args":[1,"x"],"id":"u1","method":"add","type":"rpc"}"#),
            Some(ClientFrame::Rpc(RpcRequest {
                id: "u1".into(),
                method: "add".into(),
                args: vec![json!(1), json!("x")]
            }))
        );
    }

    #[test]
    fn everything_else_goes_to_on_message() {
        for text in [
            "this is not json {{{",
            "null",
            "undefined",
            "",
            "{}",
            "[]",
            r#"{"type":"cf_agent_state"}"#,
            r#"{"type":"rpc","id":"1","method":"m"}"#,
            r#"{"type":"rpc","id":"1","method":"m","args":null}"#,
            r#"{"type":"rpc","id":1,"method":"m","args":[]}"#,
            r#"{"type":"rpc","method":"m","args":[]}"#,
            r#"{"type":"unknown","rpc":"x"}"#,
            r#"{"type":999}"#,
            r#"["rpc","cf_agent_state"]"#,
            "hello rpc",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn server_frames_read_back_as_they_were_sent() {
        for response in [
            RpcResponse::result("1", None, true),
            RpcResponse::result("2", Some(json!(null)), false),
            RpcResponse::result("3", Some(json!({"a": [1]})), true),
            RpcResponse::error("4", "Method m does not exist"),
        ] {
            let message = response.to_message();
            let parsed = ServerFrame::parse(message.as_text().expect("text"));
            assert_eq!(parsed, Some(ServerFrame::Rpc(Cow::Owned(response))));
        }
        let error = state_error("no");
        assert_eq!(
            ServerFrame::parse(error.as_text().expect("text")),
            Some(ServerFrame::StateError { error: "no".into() })
        );
        let ask = ClientFrame::Rpc(RpcRequest { id: "7".into(), method: "m".into(), args: vec![] });
        let text = serde_json::to_string(&ask).expect("serializes");
        assert_eq!(ClientFrame::parse(&text), Some(ask));
    }

    #[test]
    fn the_client_reads_frames_as_leniently_as_the_official_one() {
        let read = |text: &str| ServerFrame::parse(text).expect("a server frame");
        let ServerFrame::Rpc(answer) = read(r#"{"type":"rpc","id":"1","result":2}"#) else {
            panic!("an rpc frame")
        };
        assert!(answer.success && answer.is_final(), "no `success` or `done`: a final result");
        let ServerFrame::Rpc(answer) = read(r#"{"type":"rpc","id":"1","success":false,"error":7}"#)
        else {
            panic!("an rpc frame")
        };
        assert_eq!((answer.success, answer.error.as_deref()), (false, None));
        assert_eq!(read(r#"{"type":"cf_agent_state"}"#), ServerFrame::State { state: Value::Null });
    }

    #[test]
    fn a_state_frame_ignores_other_fields_and_an_rpc_frame_needs_its_types() {
        assert_eq!(
            parse(r#"{"type":"cf_agent_state","state":1,"id":5,"args":"x"}"#),
            Some(ClientFrame::State { state: json!(1) })
        );
        assert_eq!(
            parse(r#"{"type":"cf_agent_state","state":{"a":[1,{"b":null}]}}"#),
            Some(ClientFrame::State { state: json!({"a":[1,{"b":null}]}) })
        );
    }

    #[test]
    fn frames_have_the_shape_the_js_client_reads() {
        let text =
            |m: Message| serde_json::from_str::<Value>(m.as_text().expect("text")).expect("json");
        assert_eq!(
            text(identity("r", "counter", true)),
            json!({"type":"cf_agent_identity","name":"r","agent":"counter","stateFollows":true})
        );
        assert_eq!(
            text(identity("r", "counter", false)),
            json!({"type":"cf_agent_identity","name":"r","agent":"counter"})
        );
        assert_eq!(
            text(RpcResponse::result("1", None, true).to_message()),
            json!({"type":"rpc","id":"1","success":true,"done":true})
        );
        assert_eq!(
            text(RpcResponse::result("1", Some(json!(null)), true).to_message()),
            json!({"type":"rpc","id":"1","success":true,"done":true,"result":null})
        );
        assert_eq!(
            text(state(&json!({"count": 1})).expect("serializable")),
            json!({"type":"cf_agent_state","state":{"count":1}})
        );
        assert_eq!(
            text(mcp_servers()),
            json!({"mcp":{"prompts":[],"resources":[],"servers":{},"tools":[]},"type":"cf_agent_mcp_servers"})
        );
        assert_eq!(text(setup_error("no \"tags\"")), json!({"error": "no \"tags\""}));
        assert_eq!(
            text(RpcResponse::error("1", "bad").to_message()),
            json!({"type":"rpc","id":"1","success":false,"error":"bad"})
        );
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::super::{ClientFrame, RpcRequest};

        /// JSON values of a few levels, as arguments arrive.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                ".{0,40}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    proptest::collection::btree_map(".{0,8}", inner, 0..4)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Any text is a protocol frame or goes to `on_message`; never a panic.
            #[test]
            fn any_text_is_read_without_panicking(text in ".{0,300}") {
                let _ = ClientFrame::parse(&text);
            }

            /// Any JSON object with a `type` of the protocol's is read without panicking, and
            /// is a protocol frame exactly when its fields have the protocol's types.
            #[test]
            fn frames_with_the_protocols_types_and_any_fields(
                kind in prop_oneof![Just("rpc"), Just("cf_agent_state")],
                fields in proptest::collection::btree_map(
                    prop_oneof![Just("id"), Just("method"), Just("args"), Just("state"), Just("x")],
                    json(),
                    0..5,
                ),
            ) {
                let mut object: serde_json::Map<String, Value> =
                    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                object.insert("type".into(), kind.into());
                let parsed = ClientFrame::parse(&Value::Object(object.clone()).to_string());
                let expected = match kind {
                    "cf_agent_state" => object.contains_key("state"),
                    _ => object.get("id").is_some_and(Value::is_string)
                        && object.get("method").is_some_and(Value::is_string)
                        && object.get("args").is_some_and(Value::is_array),
                };
                prop_assert_eq!(parsed.is_some(), expected);
            }

            /// An RPC frame the client writes is read back as it was written.
            #[test]
            fn rpc_frames_read_back(
                id in ".{0,40}",
                method in ".{0,40}",
                args in proptest::collection::vec(json(), 0..5),
            ) {
                let frame = ClientFrame::Rpc(RpcRequest { id, method, args });
                let text = serde_json::to_string(&frame).expect("serializes");
                prop_assert_eq!(ClientFrame::parse(&text), Some(frame));
            }
        }
    }
}
