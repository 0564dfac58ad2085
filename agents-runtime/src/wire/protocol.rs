//! The Cloudflare Agents wire protocol: the JSON frames the official `agents` client sends and
//! expects (`cf_agent_identity`, `cf_agent_state`, `cf_agent_state_error`,
//! `cf_agent_mcp_servers`, `rpc`).

use serde_json::{Map, Value};

use crate::message::Message;

/// `Connection is readonly`: a readonly connection tried to change the state.
pub(crate) const READONLY: &str = "Connection is readonly";
/// `State update rejected`: the reference's generic answer to a refused client update.
pub(crate) const STATE_REJECTED: &str = "State update rejected";

/// A client frame the runtime answers itself instead of passing it to `on_message`.
#[derive(Debug, PartialEq)]
pub(crate) enum ClientFrame {
    /// `{"type":"cf_agent_state","state":…}`
    State(Value),
    /// `{"type":"rpc","id":"…","method":"…","args":[…]}`
    Rpc(RpcRequest),
}

/// One RPC call as the client sent it.
#[derive(Debug, PartialEq)]
pub(crate) struct RpcRequest {
    pub(crate) id: String,
    pub(crate) method: String,
    pub(crate) args: Vec<Value>,
}

impl ClientFrame {
    /// The protocol frame `text` is, if it is one. Anything else (not JSON, another `type`,
    /// an RPC without a string `id`/`method` or an array `args`, a state frame without
    /// `state`) is `None` and goes to `on_message` untouched, as in the reference.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        // Cheap filter first: most user messages are not protocol frames.
        let maybe = text.trim_start().starts_with('{')
            && (text.contains("\"rpc\"") || text.contains("\"cf_agent_state\""));
        if !maybe {
            return None;
        }
        let Value::Object(mut frame) = serde_json::from_str::<Value>(text).ok()? else {
            return None;
        };
        match frame.get("type")?.as_str()? {
            "cf_agent_state" => frame.remove("state").map(ClientFrame::State),
            "rpc" => {
                let Some(Value::String(id)) = frame.remove("id") else { return None };
                let Some(Value::String(method)) = frame.remove("method") else { return None };
                let Some(Value::Array(args)) = frame.remove("args") else { return None };
                Some(ClientFrame::Rpc(RpcRequest { id, method, args }))
            }
            _ => None,
        }
    }
}

/// `{"type":"cf_agent_identity","name":…,"agent":…[,"stateFollows":true]}`
pub(crate) fn identity(name: &str, agent: &str, state_follows: bool) -> Message {
    let mut frame = Map::new();
    frame.insert("type".into(), "cf_agent_identity".into());
    frame.insert("name".into(), name.into());
    frame.insert("agent".into(), agent.into());
    if state_follows {
        frame.insert("stateFollows".into(), true.into());
    }
    Value::Object(frame).into()
}

/// `{"type":"cf_agent_state","state":…}`, serialized in one pass from the state itself.
pub(crate) fn state<T: serde::Serialize + ?Sized>(state: &T) -> serde_json::Result<Message> {
    #[derive(serde::Serialize)]
    struct StateFrame<'a, T: ?Sized> {
        r#type: &'static str,
        state: &'a T,
    }
    serde_json::to_string(&StateFrame { r#type: "cf_agent_state", state }).map(Message::from)
}

/// `{"type":"cf_agent_state","state":…}` around a state already serialized to `json`.
pub(crate) fn state_from_json(json: &str) -> Message {
    let mut frame = String::with_capacity(json.len() + 36);
    frame.push_str(r#"{"type":"cf_agent_state","state":"#);
    frame.push_str(json);
    frame.push('}');
    Message::from(frame)
}

/// `{"type":"cf_agent_state_error","error":…}`
pub(crate) fn state_error(error: &str) -> Message {
    serde_json::json!({ "type": "cf_agent_state_error", "error": error }).into()
}

/// The MCP frame with no servers, which every connection gets on connect.
pub(crate) fn mcp_servers() -> Message {
    Message::from(
        r#"{"mcp":{"prompts":[],"resources":[],"servers":{},"tools":[]},"type":"cf_agent_mcp_servers"}"#,
    )
}

/// A successful RPC frame: a final one (`done: true`) or a stream chunk (`done: false`).
/// `result: None` leaves the key out, as JavaScript does for `undefined`.
pub(crate) fn rpc_result(id: &str, result: Option<&Value>, done: bool) -> Message {
    let mut frame = Map::new();
    frame.insert("type".into(), "rpc".into());
    frame.insert("id".into(), id.into());
    frame.insert("success".into(), true.into());
    frame.insert("done".into(), done.into());
    if let Some(result) = result {
        frame.insert("result".into(), result.clone());
    }
    Value::Object(frame).into()
}

/// A failed RPC frame: `{"type":"rpc","id":…,"success":false,"error":…}`.
pub(crate) fn rpc_error(id: &str, error: &str) -> Message {
    serde_json::json!({ "type": "rpc", "id": id, "success": false, "error": error }).into()
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
            Some(ClientFrame::State(json!({"count":1})))
        );
        assert_eq!(
            parse(r#"{"state":null,"type":"cf_agent_state"}"#),
            Some(ClientFrame::State(Value::Null))
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
    fn frames_have_the_reference_shape() {
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
            text(rpc_result("1", None, true)),
            json!({"type":"rpc","id":"1","success":true,"done":true})
        );
        assert_eq!(
            text(rpc_result("1", Some(&json!(null)), true)),
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
    }
}
