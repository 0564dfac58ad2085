//! The reference agents of `examples/`, driven through real sockets: every behaviour the
//! issue lists for MyAgent, ChatRoom, PresenceAgent, ChatAgent, SecureAgent, TagsAgent and
//! FileAgent, plus routing and the close handshake.

use agents_tests::{Closed, examples};
use serde_json::json;

// --- routing -------------------------------------------------------------------------------

#[tokio::test]
async fn http_routing_answers() {
    let server = examples().await;
    assert_eq!(
        server.http("GET", "/agents/my-agent/r1", b"").await,
        (200, "Hello from HTTP!".into())
    );
    // Sub-paths and query strings reach the instance too.
    assert_eq!(
        server.http("POST", "/agents/my-agent/r1/callback?code=1", b"body").await,
        (200, "Hello from HTTP!".into())
    );
    assert_eq!(
        server.http("GET", "/agents/no-such-agent/r1", b"").await,
        (400, "Invalid request".into())
    );
    assert_eq!(
        server.http("GET", "/agents/MyAgent/r1", b"").await,
        (400, "Invalid request".into())
    );
    for outside in ["/", "/agents", "/agents/", "/agents/my-agent", "/api/my-agent/r1"] {
        assert_eq!(server.http("GET", outside, b"").await, (404, "Not found".into()), "{outside}");
    }
    // An agent without on_request answers as the reference's default does.
    assert_eq!(
        server.http("GET", "/agents/file-agent/r1", b"").await,
        (404, "Not implemented".into())
    );
}

#[tokio::test]
async fn websocket_routing_answers() {
    let server = examples().await;
    assert_eq!(
        server.refused_upgrade("/agents/no-such-agent/r1").await,
        (400, "Invalid request".into())
    );
    assert_eq!(server.refused_upgrade("/agents/my-agent").await, (404, "Not found".into()));
    let mut client = server.connect("/agents/my-agent/r1/some/sub/path?x=1").await;
    assert_eq!(client.recv_text().await, "Welcome!");
}

#[tokio::test]
async fn http_body_over_the_limit_is_413() {
    let server = agents_tests::start(agents_examples::server().max_request_body_size(16)).await;
    assert_eq!(server.http("POST", "/agents/my-agent/r1", &[b'x'; 16]).await.0, 200);
    assert_eq!(
        server.http("POST", "/agents/my-agent/r1", &[b'x'; 17]).await,
        (413, "Payload Too Large".into())
    );
}

// --- MyAgent -------------------------------------------------------------------------------

#[tokio::test]
async fn my_agent_welcomes_and_echoes_text_and_binary() {
    let server = examples().await;
    let mut client = server.connect("/agents/my-agent/echo").await;
    assert_eq!(client.recv_text().await, "Welcome!");
    client.send_text("hello").await;
    assert_eq!(client.recv_text().await, "hello");
    client.send_text("").await;
    assert_eq!(client.recv_text().await, "");
    client.send_text("héllo 🌍").await;
    assert_eq!(client.recv_text().await, "héllo 🌍");
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    client.send_binary(blob.clone()).await;
    assert_eq!(client.recv_binary().await, blob);
    client.send_binary(Vec::new()).await;
    assert_eq!(client.recv_binary().await, Vec::<u8>::new());
}

#[tokio::test]
async fn client_close_is_answered_with_the_same_code_and_reason() {
    let server = examples().await;
    let mut client = server.connect("/agents/my-agent/bye").await;
    assert_eq!(client.recv_text().await, "Welcome!");
    assert_eq!(
        client.close(Some((4000, "see you"))).await,
        Closed { code: 4000, reason: "see you".into() }
    );

    let mut client = server.connect("/agents/my-agent/bye").await;
    assert_eq!(client.recv_text().await, "Welcome!");
    assert_eq!(client.close(Some((1000, ""))).await, Closed { code: 1000, reason: String::new() });

    // An empty close frame (1005, "no status") is answered with an empty one, not with 1005.
    let mut client = server.connect("/agents/my-agent/bye").await;
    assert_eq!(client.recv_text().await, "Welcome!");
    assert_eq!(client.close(None).await, Closed { code: 1005, reason: String::new() });
}

// --- ChatRoom ------------------------------------------------------------------------------

#[tokio::test]
async fn chat_room_broadcasts_join_message_and_leave() {
    let server = examples().await;
    let mut ada = server.connect("/agents/chat-room/lobby?username=Ada").await;
    let mut bob = server.connect("/agents/chat-room/lobby?username=Bob%20B").await;

    // Ada hears Bob join; Bob (the joiner) does not hear his own join.
    let join = ada.recv_json().await;
    assert_eq!((join["type"].as_str(), join["user"].as_str()), (Some("join"), Some("Bob B")));
    assert!(join["timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000_000));

    bob.send_text("hi all").await;
    for client in [&mut ada, &mut bob] {
        let message = client.recv_json().await;
        assert_eq!(message["type"], "message");
        assert_eq!(message["user"], "Bob B");
        assert_eq!(message["text"], "hi all");
        assert!(message["timestamp"].is_u64());
    }

    // Binary is ignored: the next frame Ada sees is the text that follows it.
    bob.send_binary(vec![1, 2, 3]).await;
    bob.send_text("after binary").await;
    assert_eq!(ada.recv_json().await["text"], "after binary");
    assert_eq!(bob.recv_json().await["text"], "after binary");

    bob.close(Some((1000, ""))).await;
    let leave = ada.recv_json().await;
    assert_eq!((leave["type"].as_str(), leave["user"].as_str()), (Some("leave"), Some("Bob B")));
}

#[tokio::test]
async fn chat_room_username_defaults_to_anonymous_and_rooms_are_separate() {
    let server = examples().await;
    let mut here = server.connect("/agents/chat-room/a").await;
    let mut elsewhere = server.connect("/agents/chat-room/b").await;
    here.send_text("x").await;
    assert_eq!(here.recv_json().await["user"], "Anonymous");
    elsewhere.send_text("y").await;
    // Room b only ever sees its own message.
    assert_eq!(elsewhere.recv_json().await["text"], "y");
}

// --- PresenceAgent -------------------------------------------------------------------------

#[tokio::test]
async fn presence_tracks_who_is_here() {
    let server = examples().await;
    let mut ada = server.connect("/agents/presence-agent/p?name=Ada&_pk=ada").await;
    // To the new user directly, then the broadcast that includes them.
    for _ in 0..2 {
        let presence = ada.recv_json().await;
        assert_eq!(presence["type"], "presence");
        assert_eq!(presence["users"]["ada"]["name"], "Ada");
    }
    let mut bob = server.connect("/agents/presence-agent/p?_pk=bob").await;
    let seen_by_ada = ada.recv_json().await;
    assert_eq!(seen_by_ada["users"]["bob"]["name"], "Anonymous");
    assert_eq!(seen_by_ada["users"].as_object().map(|u| u.len()), Some(2));
    let first_seen = seen_by_ada["users"]["ada"]["lastSeen"].as_u64().expect("lastSeen");
    bob.recv_json().await;
    bob.recv_json().await;

    ada.send_text("ping").await;
    assert_eq!(ada.recv_text().await, "pong");

    bob.close(Some((1000, ""))).await;
    let after = ada.recv_json().await;
    assert_eq!(
        after["users"],
        json!({ "ada": { "name": "Ada", "lastSeen": after["users"]["ada"]["lastSeen"] } })
    );
    assert!(after["users"]["ada"]["lastSeen"].as_u64().expect("lastSeen") >= first_seen);
}

// --- ChatAgent and SecureAgent ---------------------------------------------------------------

#[tokio::test]
async fn chat_agent_without_token_is_closed_4001() {
    let server = examples().await;
    for path in
        ["/agents/chat-agent/c", "/agents/chat-agent/c?token=", "/agents/chat-agent/c?other=1"]
    {
        let mut client = server.connect(path).await;
        // Nothing but the close comes back (runtime.rs shows such a message is not handled).
        client.send_text("sneaky").await;
        assert_eq!(
            client.expect_close_now().await,
            Closed { code: 4001, reason: "Unauthorized".into() }
        );
    }
}

#[tokio::test]
async fn chat_agent_welcomes_and_echoes() {
    let server = examples().await;
    let mut client = server.connect("/agents/chat-agent/c?token=t1&_pk=conn-1").await;
    assert_eq!(client.recv_json().await, json!({ "type": "welcome", "id": "conn-1" }));
    client.send_text(r#"{"a":[1,2]}"#).await;
    assert_eq!(client.recv_json().await, json!({ "type": "echo", "data": { "a": [1, 2] } }));
    client.send_text("not json {{{").await;
    assert_eq!(client.recv_json().await, json!({ "type": "echo", "data": "not json {{{" }));
    client.send_binary(vec![0, 159, 146, 150]).await;
    assert_eq!(client.recv_binary().await, vec![0, 159, 146, 150]);
}

#[tokio::test]
async fn secure_agent_authenticates_by_token() {
    let server = examples().await;
    let mut anonymous = server.connect("/agents/secure-agent/s").await;
    assert_eq!(
        anonymous.expect_close_now().await,
        Closed { code: 4001, reason: "Unauthorized".into() }
    );
    let mut client = server.connect("/agents/secure-agent/s?token=abc").await;
    assert_eq!(
        client.recv_json().await,
        json!({ "type": "authenticated", "user": { "id": "user-abc", "role": "member" } })
    );
}

// --- TagsAgent -----------------------------------------------------------------------------

#[tokio::test]
async fn tags_come_from_the_role_and_notify_reaches_admins_only() {
    let server = examples().await;
    let mut admin = server.connect("/agents/tags-agent/t?role=admin&_pk=a1").await;
    let mut moderator = server.connect("/agents/tags-agent/t?role=moderator&_pk=m1").await;
    let mut user = server.connect("/agents/tags-agent/t?role=root&_pk=u1").await;
    assert_eq!(
        admin.recv_json().await,
        json!({ "type": "tags", "id": "a1", "tags": ["a1", "admin"] })
    );
    assert_eq!(
        moderator.recv_json().await,
        json!({ "type": "tags", "id": "m1", "tags": ["m1", "moderator"] })
    );
    assert_eq!(user.recv_json().await, json!({ "type": "tags", "id": "u1", "tags": ["u1"] }));

    user.send_text("notify:deploy at 5").await;
    assert_eq!(admin.recv_text().await, "deploy at 5");
    // The others got nothing: the next thing they see is a message sent after it.
    let mut admin2 = server.connect("/agents/tags-agent/t?role=admin&_pk=a2").await;
    admin2.recv_json().await;
    moderator.send_text("notify:second").await;
    assert_eq!(admin.recv_text().await, "second");
    assert_eq!(admin2.recv_text().await, "second");
    // Neither notification reached the moderator or the plain user.
    assert_eq!(moderator.close_expecting_nothing().await.code, 1000);
    assert_eq!(user.close_expecting_nothing().await.code, 1000);
    // Tags belong to the connection, not to the id: a second socket with m1's id has none.
    let mut probe = server.connect("/agents/tags-agent/t?_pk=m1").await;
    assert_eq!(probe.recv_json().await["tags"], json!(["m1"]));
}

// --- FileAgent -----------------------------------------------------------------------------

#[tokio::test]
async fn file_agent_acknowledges_binary_uploads() {
    let server = examples().await;
    let mut client = server.connect("/agents/file-agent/f").await;
    client.send_binary(vec![7u8; 12_345]).await;
    assert_eq!(client.recv_json().await, json!({ "status": "received", "size": 12345 }));
    // A JSON command is accepted silently; text that is not JSON is an error for on_error
    // (logged), and the connection stays open.
    client.send_text(r#"{"cmd":"list"}"#).await;
    client.send_text("not json").await;
    client.send_binary(Vec::new()).await;
    assert_eq!(client.recv_json().await, json!({ "status": "received", "size": 0 }));
}
