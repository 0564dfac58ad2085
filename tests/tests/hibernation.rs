//! Hibernation: an idle instance leaves memory while its sockets stay open, with their id,
//! uri, tags, connection state and flags; the next event wakes it (`on_start` again, plain
//! fields reset, state kept); auto-responses and pings do not wake it.

use std::time::Duration;

use agents_runtime::prelude::*;
use agents_runtime::{ServerHandle, WebSocketRequestResponsePair};
use agents_tests::{TestServer, eventually, start};
use serde::{Deserialize, Serialize};
use serde_json::json;

const NAP: Duration = Duration::from_millis(150);

async fn server() -> TestServer {
    start(agents_examples::server().agent::<Napper>().agent::<Insomniac>().hibernate_after(NAP))
        .await
}

async fn asleep(handle: &ServerHandle) {
    eventually("the instance hibernates", || {
        handle.live_instances() == 0 && handle.hibernated_instances() == 1
    })
    .await;
}

#[tokio::test]
async fn the_hibernating_counter_keeps_its_state_and_loses_its_field() {
    let server = server().await;
    let handle = &server.handle;
    let mut client = server.connect("/agents/hibernating-counter/h1").await;
    assert_eq!(client.initial_state, Some(json!({ "counter": 0 })));
    client.send_text("count").await;
    assert_eq!(
        client.recv_json().await,
        json!({ "type": "cf_agent_state", "state": { "counter": 1 } })
    );
    assert_eq!(client.recv_json().await, json!({ "counter": 1, "local": 1 }));
    client.send_text("count").await;
    assert_eq!(client.recv_json_skipping_state().await, json!({ "counter": 2, "local": 2 }));
    assert_eq!(handle.live_instances(), 1);

    asleep(handle).await;
    // The runtime answers the auto-response and protocol pings: the instance sleeps on.
    client.send_text("ping").await;
    assert_eq!(client.recv_text().await, "pong");
    client.ping(b"are you there").await;
    tokio::time::sleep(NAP / 2).await;
    assert_eq!((handle.live_instances(), handle.hibernated_instances()), (0, 1), "still asleep");

    // A message wakes it: the state frame shows the persisted counter, the field starts over.
    client.send_text("count").await;
    assert_eq!(
        client.recv_json().await,
        json!({ "type": "cf_agent_state", "state": { "counter": 3 } })
    );
    assert_eq!(client.recv_json().await, json!({ "counter": 3, "local": 1 }));
    assert_eq!(handle.live_instances(), 1);
    let late = server.connect("/agents/hibernating-counter/h1").await;
    assert_eq!(late.initial_state, Some(json!({ "counter": 3 })), "a new client gets the state");

    // Anything but `count` gets a clear error and changes nothing.
    client.send_text("count please").await;
    assert_eq!(client.recv_json().await, json!({ "error": "send the text message `count`" }));
}

/// Per-connection state for [`Napper`].
#[derive(Clone, Serialize, Deserialize)]
struct Seat {
    user: String,
}

/// Reports what survives a nap: connection id, uri, tags, state, readonly flag, and how many
/// times it started.
#[derive(Default)]
struct Napper {
    starts_seen_in_memory: u32,
}

#[agent(connection_state = Seat)]
impl Napper {
    fn on_start(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        self.starts_seen_in_memory += 1;
        if ctx.get_websocket_auto_response().is_none() {
            ctx.set_websocket_auto_response(Some(WebSocketRequestResponsePair::new(
                "ping", "pong",
            )?));
        }
        Ok(())
    }

    fn connection_tags(
        &mut self,
        _ctx: &mut Context<Self>,
        _conn: &Connection<Seat>,
        c: &ConnectionContext,
    ) -> Vec<String> {
        vec![c.query("team").map_or("none".into(), |t| t.into_owned())]
    }

    fn should_connection_be_readonly(
        &mut self,
        _ctx: &mut Context<Self>,
        _conn: &Connection<Seat>,
        c: &ConnectionContext,
    ) -> bool {
        c.query("readonly").is_some()
    }

    fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection<Seat>,
        c: &ConnectionContext,
    ) -> Result<()> {
        conn.set_state(Seat { user: c.query("user").unwrap_or_default().into_owned() })?;
        Ok(())
    }

    fn on_message(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection<Seat>,
        message: Message,
    ) -> Result<()> {
        let reply = match message.as_text() {
            Some("who") => json!({
                "id": conn.id(),
                "uri": conn.uri(),
                "tags": conn.tags().iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "user": conn.state().map(|s| s.user),
                "readonly": conn.is_readonly(),
                "starts": self.starts_seen_in_memory,
                "team": ctx.get_connections(Some("red")).count(),
            }),
            Some("when") => json!({
                "autoResponseAt": ctx.get_websocket_auto_response_timestamp(conn).map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
                }),
            }),
            Some("stop") => {
                ctx.set_websocket_auto_response(None);
                json!({ "pair": ctx.get_websocket_auto_response().map(|p| (p.request().to_owned(), p.response().to_owned())) })
            }
            _ => json!({ "echo": message.as_text() }),
        };
        conn.send(reply.to_string())?;
        Ok(())
    }
}

#[tokio::test]
async fn connections_keep_id_uri_tags_state_and_flags_through_hibernation() {
    let server = server().await;
    let handle = &server.handle;
    let path = "/agents/napper/n?_pk=alice-1&team=red&user=alice&readonly=1";
    let mut alice = server.connect(path).await;
    alice.send_text("who").await;
    let before = alice.recv_json().await;
    assert_eq!(before["starts"], 1);
    assert_eq!(before["id"], "alice-1");
    assert_eq!(before["tags"], json!(["alice-1", "red"]));
    assert_eq!(before["user"], "alice");
    assert_eq!(before["readonly"], true);

    asleep(handle).await;
    alice.send_text("who").await;
    let after = alice.recv_json().await;
    assert_eq!(after["starts"], 1, "a fresh struct: the in-memory field started over");
    assert_eq!(handle.live_instances(), 1, "the message woke the instance");
    for key in ["id", "uri", "tags", "user", "readonly", "team"] {
        assert_eq!(after[key], before[key], "{key} survives hibernation");
    }
}

#[tokio::test]
async fn the_auto_response_is_answered_asleep_timestamped_and_can_be_removed() {
    let server = server().await;
    let handle = &server.handle;
    let mut client = server.connect("/agents/napper/a").await;
    client.send_text("when").await;
    assert_eq!(client.recv_json().await, json!({ "autoResponseAt": null }));
    asleep(handle).await;
    let before = agents_examples::now_ms();
    client.send_text("ping").await;
    assert_eq!(client.recv_text().await, "pong");
    // Only the exact request is answered; anything else wakes the instance.
    assert_eq!(handle.live_instances(), 0);
    client.send_text("when").await;
    let at = client.recv_json().await["autoResponseAt"].as_u64().expect("a timestamp");
    assert!(at >= before && at <= agents_examples::now_ms(), "{before} <= {at}");
    client.send_text("stop").await;
    assert_eq!(client.recv_json().await, json!({ "pair": null }));
    client.send_text("ping").await;
    assert_eq!(client.recv_json().await, json!({ "echo": "ping" }), "removed: the agent hears it");
    client.send_text("when").await;
    assert_eq!(client.recv_json().await["autoResponseAt"], at, "the timestamp stays readable");
}

/// `#[agent(hibernate = false)]`: stays in memory while it has connections.
#[derive(Default)]
struct Insomniac {
    messages: u32,
}

#[agent(hibernate = false)]
impl Insomniac {
    fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _message: Message,
    ) -> Result<()> {
        self.messages += 1;
        conn.send(self.messages.to_string())?;
        Ok(())
    }
}

#[tokio::test]
async fn an_agent_that_opts_out_stays_in_memory_while_connected() {
    let server = server().await;
    let handle = &server.handle;
    let mut client = server.connect("/agents/insomniac/i").await;
    client.send_text("x").await;
    assert_eq!(client.recv_text().await, "1");
    tokio::time::sleep(NAP * 4).await;
    assert_eq!((handle.live_instances(), handle.hibernated_instances()), (1, 0));
    client.send_text("x").await;
    assert_eq!(client.recv_text().await, "2", "the field was kept");
    // Without connections it leaves memory like any instance.
    client.close(Some((1000, ""))).await;
    eventually("the instance leaves", || {
        handle.live_instances() == 0 && handle.hibernated_instances() == 0
    })
    .await;
}

#[tokio::test]
async fn a_client_leaving_while_asleep_wakes_the_instance_for_on_close() {
    let server = server().await;
    let handle = &server.handle;
    let mut stays = server.connect("/agents/presence-agent/p?name=Ann").await;
    let _ = stays.recv_json().await; // presence for Ann
    let _ = stays.recv_json().await; // broadcast
    let mut leaves = server.connect("/agents/presence-agent/p?name=Bob").await;
    let _ = leaves.recv_json().await;
    let _ = stays.recv_json().await; // Bob joined
    asleep(handle).await;
    leaves.close(Some((1000, "bye"))).await;
    // on_close ran (it broadcasts the new presence), with Bob's connection state intact.
    let presence = stays.recv_json().await;
    let users = presence["users"].as_object().expect("users by id");
    let names: Vec<_> = users.values().map(|user| user["name"].clone()).collect();
    assert_eq!(names, [json!("Ann")], "{presence}");
}

#[tokio::test]
async fn shutdown_closes_the_sockets_of_asleep_and_awake_instances_with_1001() {
    let server = server().await;
    let handle = server.handle.clone();
    let mut sleeper = server.connect("/agents/hibernating-counter/asleep").await;
    asleep(&handle).await;
    // An instance that opts out of hibernation stays awake however long the test takes.
    let mut waker = server.connect("/agents/insomniac/awake").await;
    waker.send_text("x").await;
    assert_eq!(waker.recv_text().await, "1");
    assert_eq!((handle.live_instances(), handle.hibernated_instances()), (1, 1));
    drop(handle);
    let shutting_down = tokio::spawn(server.shut_down());
    for client in [&mut sleeper, &mut waker] {
        let closed = client.expect_close().await;
        assert_eq!((closed.code, closed.reason.as_str()), (1001, "Server shutting down"));
    }
    shutting_down.await.expect("the server shuts down");
}
