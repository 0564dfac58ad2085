//! Hibernation: an idle instance leaves memory while its sockets stay open, with their id,
//! uri, tags, connection state and flags; the next event wakes it (`on_start` again, plain
//! fields reset, state kept); auto-responses and pings do not wake it. While it sleeps, its
//! idle sockets are parked (no task, no place in tokio's reactor) and come back for whatever
//! needs them.

use std::time::Duration;

use agents_runtime::prelude::*;
use agents_runtime::{ServerHandle, WebSocketRequestResponsePair};
use agents_tests::{TestServer, eventually, start};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NAP: Duration = Duration::from_millis(150);

async fn server() -> TestServer {
    start(agents_examples::server().agent::<Napper>().agent::<Insomniac>().hibernate_after(NAP))
        .await
}

/// Waits until the one instance with connections hibernates and every socket is parked.
async fn asleep(handle: &ServerHandle) {
    eventually("the instance hibernates and its sockets park", || {
        handle.live_instances() == 0
            && handle.hibernated_instances() == 1
            && handle.parked_connections() == handle.open_connections()
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
    eventually("the socket parks again", || handle.parked_connections() == 1).await;
    client.ping(b"and now?").await;
    client.send_text("ping").await;
    assert_eq!(client.recv_text().await, "pong", "answered again from the parked socket");

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

#[tokio::test]
async fn a_roomful_of_parked_sockets_wakes_for_one_message_and_each_gets_the_broadcast() {
    const PEOPLE: usize = 40;
    let server = server().await;
    let handle = &server.handle;
    let mut room = Vec::new();
    for i in 0..PEOPLE {
        room.push(server.connect(&format!("/agents/chat-room/parked?username=u{i}")).await);
    }
    for (i, client) in room.iter_mut().enumerate() {
        for _ in i + 1..PEOPLE {
            assert_eq!(client.recv_json().await["type"], "join");
        }
    }
    asleep(handle).await;
    assert_eq!(handle.parked_connections(), PEOPLE);

    room[7].send_text("hello, sleepers").await;
    for client in &mut room {
        let frame = client.recv_json().await;
        assert_eq!((&frame["type"], &frame["user"]), (&json!("message"), &json!("u7")));
        assert_eq!(frame["text"], "hello, sleepers");
    }
    assert_eq!(handle.parked_connections(), 0, "awake: every socket came back");
    asleep(handle).await;
    room[0].send_text("again").await;
    for client in &mut room {
        assert_eq!(client.recv_json().await["text"], "again", "parked twice, still in order");
    }
}

#[tokio::test]
async fn a_frame_split_across_parking_is_read_whole() {
    let server = server().await;
    let handle = &server.handle;
    let mut tcp = agents_tests::raw_upgrade(server.addr, "/agents/hibernating-counter/split").await;
    asleep(handle).await;
    // A masked text frame `count` in two writes with a pause between: the first bytes resume
    // the socket, which must not park again with half a frame read.
    let frame = masked_text(b"count");
    let (head, tail) = frame.split_at(3);
    tcp.write_all(head).await.expect("writes");
    tokio::time::sleep(NAP * 3).await;
    assert_eq!(handle.parked_connections(), 0, "half a frame keeps the socket out of the lot");
    tcp.write_all(tail).await.expect("writes");
    loop {
        let text = read_text(&mut tcp).await;
        if text.contains("\"local\"") {
            assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["counter"], 1);
            break;
        }
    }
}

/// A client's text frame: FIN, masked (with a fixed key; any key will do).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ key[i % 4]));
    frame
}

/// The next text frame from the server (unmasked, unfragmented, as ours are).
async fn read_text(tcp: &mut TcpStream) -> String {
    let read = async {
        let [first, second] = [tcp.read_u8().await?, tcp.read_u8().await?];
        assert_eq!(first, 0x81, "a whole text frame");
        let len = match second {
            126 => usize::from(tcp.read_u16().await?),
            127 => usize::try_from(tcp.read_u64().await?).expect("fits"),
            len => usize::from(len),
        };
        let mut payload = vec![0; len];
        tcp.read_exact(&mut payload).await?;
        std::io::Result::Ok(String::from_utf8(payload).expect("text"))
    };
    tokio::time::timeout(agents_runtime::testing::WAIT, read)
        .await
        .expect("in time")
        .expect("reads")
}
