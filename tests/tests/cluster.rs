//! Cluster mode: three nodes of the examples server on one PostgreSQL, each test starting its
//! own PostgreSQL (`initdb` in a temporary directory) and its own nodes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agents_tests::child::ChildServer;
use agents_tests::{Client, Postgres, TempDir, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const SERVER: &str = env!("CARGO_BIN_EXE_examples-server");

/// A cluster of `n` nodes on a fresh database of `postgres`, with a lease of `lease`.
struct Cluster {
    nodes: Vec<ChildServer>,
    url: String,
    dirs: Vec<TempDir>,
}

impl Cluster {
    async fn start(postgres: &Postgres, n: usize, lease: &str) -> Self {
        Self::start_with(postgres, n, lease, &[]).await
    }

    /// [`start`](Self::start), each node with the arguments `more` too.
    async fn start_with(postgres: &Postgres, n: usize, lease: &str, more: &[&str]) -> Self {
        let url = postgres.database();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = TempDir::new("cluster-node");
            let id = format!("n{i}");
            let mut args = vec!["--cluster-url", &url, "--node-id", &id, "--cluster-lease", lease];
            args.extend_from_slice(more);
            nodes.push(ChildServer::start_args(SERVER, dir.path(), &args).await);
            dirs.push(dir);
        }
        Self { nodes, url, dirs }
    }

    fn db(&self) -> &str {
        self.url.rsplit('/').next().expect("a database name")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_room_spans_three_nodes_and_every_message_arrives_once() {
    let Some(postgres) = agents_tests::postgres("cluster chat room") else { return };
    let cluster = Cluster::start(&postgres, 3, "2s").await;
    // Two clients on each node, joining one after another.
    let mut clients: Vec<(String, Client)> = Vec::new();
    for i in 0..6 {
        let node = &cluster.nodes[i % 3];
        let user = format!("u{i}");
        let client =
            node.server().connect(&format!("/agents/chat-room/lobby?username={user}")).await;
        // Everyone already in hears the join, wherever they are.
        for (_, earlier) in clients.iter_mut() {
            let join = earlier.recv_json().await;
            assert_eq!(join["type"], "join");
            assert_eq!(join["user"], user.as_str());
        }
        clients.push((user, client));
    }
    let owners = postgres.psql(
        cluster.db(),
        "SELECT count(*) FROM agents_rs_agents WHERE agent = 'chat-room' AND name = 'lobby' AND owner_node IS NOT NULL",
    );
    assert_eq!(owners, "1", "one owner row");
    for (user, client) in clients.iter_mut() {
        client.send_text(format!("hello from {user}")).await;
    }
    for (me, client) in clients.iter_mut() {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..6 {
            let message = client.recv_json().await;
            assert_eq!(message["type"], "message", "{me}: {message}");
            *seen.entry(message["text"].as_str().expect("text").to_owned()).or_default() += 1;
        }
        assert_eq!(seen.len(), 6, "{me} heard every message: {seen:?}");
        assert!(seen.values().all(|&n| n == 1), "{me} heard each once: {seen:?}");
        client.expect_silence(Duration::from_millis(200)).await;
    }
    // A client leaving is heard on every node.
    let (gone, mut client) = clients.remove(0);
    client.close(Some((1000, "bye"))).await;
    for (_, other) in clients.iter_mut() {
        let leave = other.recv_json().await;
        assert_eq!(leave["type"], "leave");
        assert_eq!(leave["user"], gone.as_str());
    }
}

/// The node that owns `agent/name` now, by index, if a live one does.
fn owner(postgres: &Postgres, cluster: &Cluster, agent: &str, name: &str) -> Option<usize> {
    let node = postgres.psql(
        cluster.db(),
        &format!(
            "SELECT a.owner_node FROM agents_rs_agents a JOIN agents_rs_nodes n
               ON n.node_id = a.owner_node AND n.incarnation = a.owner_inc AND n.lease_until > now()
              WHERE a.agent = '{agent}' AND a.name = '{name}'"
        ),
    );
    node.strip_prefix('n')?.parse().ok()
}

/// What writers saw acknowledged: the highest count (every increment up to it is confirmed),
/// and how many increments were acknowledged.
#[derive(Default)]
struct Acked {
    max: i64,
    increments: u64,
}

/// Calls `increment` on counter `name` through the nodes in turn (the next one when a socket
/// dies), until `stop`; every acknowledged count goes into `acked`.
async fn writer(
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
    first: usize,
    name: &'static str,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) {
    let mut node = first;
    while !stop.load(Ordering::Acquire) {
        let addr = addrs.lock().expect("addrs")[node % 3];
        node += 1;
        let url = format!("ws://{addr}/agents/counter/{name}");
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url)).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for n in 0u64.. {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let id = n.to_string();
            let frame = json!({ "type": "rpc", "id": id, "method": "increment", "args": [] });
            if ws.send(WsMessage::text(frame.to_string())).await.is_err() {
                break;
            }
            let answered = loop {
                let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, ws.next()).await else {
                    break None;
                };
                let WsMessage::Text(text) = message else { continue };
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                if frame["type"] == "rpc" && frame["id"] == id.as_str() {
                    break Some(frame);
                }
            };
            let Some(frame) = answered else { break };
            match frame["result"].as_i64() {
                Some(count) if frame["success"] == true => {
                    let mut acked = acked.lock().expect("acked");
                    acked.max = acked.max.max(count);
                    acked.increments += 1;
                }
                // Not acknowledged (its node cannot reach the owner yet): try again soon.
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_loses_no_acknowledged_increment() {
    let Some(postgres) = agents_tests::postgres("cluster owner SIGKILL") else { return };
    let mut cluster = Cluster::start(&postgres, 3, "1500ms").await;
    let addrs = Arc::new(Mutex::new(cluster.nodes.iter().map(|n| n.addr).collect::<Vec<_>>()));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|i| tokio::spawn(writer(addrs.clone(), i, "c", acked.clone(), stop.clone())))
        .collect();
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut owner_node = None;
        for _ in 0..200 {
            owner_node = owner(&postgres, &cluster, "counter", "c");
            if owner_node.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let victim = owner_node.expect("the counter has a live owner");
        let before = acked.lock().expect("acked").increments;
        let dir = TempDir::new("cluster-node");
        let id = format!("n{victim}");
        let args = ["--cluster-url", &cluster.url, "--node-id", &id, "--cluster-lease", "1500ms"];
        // Even rounds restart the node at once (its new incarnation lets its agents go);
        // odd ones leave it dead, so another node takes over once its lease ran out.
        let restart_now = round % 2 == 0;
        if restart_now {
            let next = ChildServer::start_args(SERVER, dir.path(), &args).await;
            std::mem::replace(&mut cluster.nodes[victim], next).kill().await;
            addrs.lock().expect("addrs")[victim] = cluster.nodes[victim].addr;
        } else {
            cluster.nodes[victim].child.kill().await.expect("SIGKILL");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while acked.lock().expect("acked").increments < before + 20 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: no increment acknowledged after the owner died"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !restart_now {
            let next = ChildServer::start_args(SERVER, dir.path(), &args).await;
            cluster.nodes[victim] = next;
            addrs.lock().expect("addrs")[victim] = cluster.nodes[victim].addr;
        }
        cluster.dirs.push(dir);
    }
    stop.store(true, Ordering::Release);
    for writer in writers {
        writer.await.expect("a writer");
    }
    let (max, increments) = {
        let acked = acked.lock().expect("acked");
        (acked.max, acked.increments)
    };
    let client = cluster.nodes[0].server().connect("/agents/counter/c").await;
    let count = client.initial_state.expect("a state")["count"].as_i64().expect("a count");
    assert!(count >= max, "the count {count} lost acknowledged increments (up to {max})");
    assert!(increments > 60, "increments went on: {increments}");
}

/// Sends signal `signal` (`STOP`, `CONT`) to `node`.
fn signal(node: &ChildServer, signal: &str) {
    let pid = node.child.id().expect("a running node").to_string();
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status();
    assert!(status.expect("runs kill").success(), "kill -{signal} {pid}");
}

/// Calls `increment` and returns the count it answered.
async fn increment(client: &mut Client, id: &str) -> i64 {
    client.send_rpc(id, "increment", json!([])).await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "rpc" && frame["id"] == id {
            assert_eq!(frame["success"], true, "{frame}");
            return frame["result"].as_i64().expect("a count");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_and_nothing_it_does_after_reaches_anyone() {
    let Some(postgres) = agents_tests::postgres("cluster SIGSTOP") else { return };
    let cluster = Cluster::start(&postgres, 3, "1500ms").await;
    // Node 0 owns the counter (its first event came there); node 1 relays to it.
    let mut local = cluster.nodes[0].server().connect("/agents/counter/s").await;
    let mut relayed = cluster.nodes[1].server().connect("/agents/counter/s").await;
    for n in 1..=3 {
        assert_eq!(increment(&mut local, &format!("l{n}")).await, n);
    }
    assert_eq!(increment(&mut relayed, "r1").await, 4);
    // The local socket heard the relayed increment's state (sent before the pause).
    let state = local.recv_json().await;
    assert_eq!(state["state"]["count"], 4, "{state}");
    assert_eq!(owner(&postgres, &cluster, "counter", "s"), Some(0));

    signal(&cluster.nodes[0], "STOP");
    // What the paused owner will read when it resumes.
    for n in 0..5 {
        local.send_rpc(&format!("stale{n}"), "increment", json!([])).await;
    }
    // Its lease runs out: node 1 ends its link, and the relayed socket is told to reconnect.
    let closed = relayed.expect_close().await;
    assert_eq!(closed.code, 1013, "{closed:?}");
    let mut moved = cluster.nodes[1].server().connect("/agents/counter/s").await;
    assert_eq!(increment(&mut moved, "m1").await, 5, "the next owner has every committed write");
    let owner_now = owner(&postgres, &cluster, "counter", "s");
    assert!(owner_now.is_some_and(|node| node != 0), "another node owns it: {owner_now:?}");

    signal(&cluster.nodes[0], "CONT");
    // The stale owner's socket is closed without an answer to what it sent meanwhile.
    let mut ws = local.into_inner();
    loop {
        let next =
            tokio::time::timeout(WAIT, ws.next()).await.expect("the stale owner closes the socket");
        match next {
            Some(Ok(WsMessage::Close(frame))) => {
                let code = frame.map(|frame| u16::from(frame.code));
                assert_eq!(code, Some(1013), "closed with 1013");
                break;
            }
            Some(Ok(WsMessage::Text(text))) => panic!("the stale owner sent {text}"),
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
    // None of its writes landed: the count goes on from the new owner's.
    assert_eq!(increment(&mut moved, "m2").await, 6);
    let fresh = cluster.nodes[2].server().connect("/agents/counter/s").await;
    assert_eq!(fresh.initial_state.expect("a state")["count"], 6);
}

/// What a client hears for an increment sent while PostgreSQL is away: an RPC error or a
/// close with 1013, never nothing.
async fn refused(mut client: Client, id: &str) -> String {
    client.send_rpc(id, "increment", json!([])).await;
    let mut ws = client.into_inner();
    loop {
        let next =
            tokio::time::timeout(WAIT, ws.next()).await.expect("an answer or a close in time");
        match next {
            Some(Ok(WsMessage::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                if frame["type"] == "rpc" && frame["id"] == id {
                    assert_eq!(frame["success"], false, "no success without PostgreSQL: {frame}");
                    return frame["error"].as_str().expect("an error").to_owned();
                }
            }
            Some(Ok(WsMessage::Close(frame))) => {
                let frame = frame.expect("a close frame with a code");
                assert_eq!(u16::from(frame.code), 1013, "{frame:?}");
                return frame.reason.to_string();
            }
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_is_an_error_and_service_comes_back_by_itself() {
    let Some(postgres) = agents_tests::postgres("cluster PostgreSQL away") else { return };
    let cluster = Cluster::start(&postgres, 3, "1500ms").await;
    let mut client = cluster.nodes[0].server().connect("/agents/counter/p").await;
    assert_eq!(increment(&mut client, "a").await, 1);
    assert_eq!(increment(&mut client, "b").await, 2);

    postgres.stop();
    let why = refused(client, "c").await;
    assert!(!why.is_empty(), "the refusal says why");
    // A new socket, on any node, is refused with a reason too.
    let closed =
        cluster.nodes[1].server().connect_raw("/agents/counter/p").await.expect_close().await;
    assert_eq!(closed.code, 1013, "{closed:?}");
    assert!(!closed.reason.is_empty(), "the close says why");

    postgres.restart();
    // Service resumes by itself: the nodes join again, and the counter goes on from what
    // was committed.
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    let count = loop {
        assert!(tokio::time::Instant::now() < deadline, "service did not come back");
        let mut client = cluster.nodes[2].server().connect_raw("/agents/counter/p").await;
        client.send_rpc("d", "increment", json!([])).await;
        let mut ws = client.into_inner();
        let answer = loop {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON");
                    if frame["type"] == "rpc" && frame["id"] == "d" {
                        break Some(frame);
                    }
                }
                Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    break None;
                }
                Ok(Some(Ok(_))) => {}
            }
        };
        match answer {
            Some(frame) if frame["success"] == true => {
                break frame["result"].as_i64().expect("a count");
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert_eq!(count, 3, "every committed increment is there, the refused one is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_presence_are_right_from_every_node() {
    let Some(postgres) = agents_tests::postgres("cluster tags and presence") else { return };
    let cluster = Cluster::start(&postgres, 3, "2s").await;
    let server = |i: usize| cluster.nodes[i].server();
    let mut admin0 = server(0).connect("/agents/tags-agent/t?role=admin").await;
    let mut user1 = server(1).connect("/agents/tags-agent/t").await;
    let mut admin2 = server(2).connect("/agents/tags-agent/t?role=admin").await;
    for (client, tags) in [(&mut admin0, 2), (&mut user1, 1), (&mut admin2, 2)] {
        let told = client.recv_json().await;
        assert_eq!(told["type"], "tags");
        assert_eq!(told["tags"].as_array().expect("tags").len(), tags, "{told}");
    }
    user1.send_text("notify:hi").await;
    assert_eq!(admin0.recv_text().await, "hi");
    assert_eq!(admin2.recv_text().await, "hi");
    user1.send_rpc("n", "notifyAdmins", json!(["again"])).await;
    let answer = user1.recv_json().await;
    assert_eq!(
        answer["result"], 2,
        "get_connections(tag) finds the admins on both nodes: {answer}"
    );
    assert_eq!(admin0.recv_text().await, "again");
    assert_eq!(admin2.recv_text().await, "again");
    user1.expect_silence(Duration::from_millis(200)).await;

    // Presence: each join is seen from every node, with the connection states the owner holds.
    let mut people = Vec::new();
    for (i, name) in ["ada", "bo", "cy"].into_iter().enumerate() {
        let mut client = server(i).connect(&format!("/agents/presence-agent/p?name={name}")).await;
        let own = client.recv_json().await;
        assert_eq!(own["users"].as_object().expect("users").len(), i + 1, "{own}");
        for (_, earlier) in people.iter_mut() {
            let seen: Value = Client::recv_json(earlier).await;
            assert_eq!(seen["users"].as_object().expect("users").len(), i + 1, "{seen}");
        }
        // The joiner hears the broadcast of its own join too.
        let broadcast = client.recv_json().await;
        assert_eq!(broadcast["users"].as_object().expect("users").len(), i + 1);
        people.push((name, client));
    }
    let names: Vec<String> = {
        let (_, last) = people.last_mut().expect("people");
        last.send_text("ping").await;
        assert_eq!(last.recv_text().await, "pong");
        let mut ada = server(0).connect("/agents/presence-agent/p?name=dee").await;
        let seen = ada.recv_json().await;
        seen["users"]
            .as_object()
            .expect("users")
            .values()
            .map(|u| u["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["ada", "bo", "cy", "dee"], "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_left_its_node_wakes_on_another_with_its_state() {
    let Some(postgres) = agents_tests::postgres("cluster wake elsewhere") else { return };
    let cluster = Cluster::start_with(&postgres, 2, "2s", &["--hibernate-after", "300ms"]).await;
    let (url, nodes) = (&cluster.url, &cluster.nodes);
    let mut client = nodes[0].server().connect("/agents/counter/h").await;
    for n in 1..=3 {
        assert_eq!(increment(&mut client, &n.to_string()).await, n);
    }
    client.close(Some((1000, "done"))).await;
    // Idle without connections, it leaves node 0's memory and lets go of its row.
    let db = url.rsplit('/').next().expect("a database");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let owner = postgres.psql(db, "SELECT coalesce(owner_node, '-') FROM agents_rs_agents WHERE agent = 'counter' AND name = 'h'");
        if owner == "-" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node 0 still owns it: {owner}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = nodes[1].server().connect("/agents/counter/h").await;
    assert_eq!(
        client.initial_state.as_ref().expect("a state")["count"],
        3,
        "woken on node 1 with its state"
    );
    assert_eq!(increment(&mut client, "4").await, 4);
    let owner = postgres.psql(db, "SELECT owner_node || ':' || epoch FROM agents_rs_agents WHERE agent = 'counter' AND name = 'h'");
    assert_eq!(owner, "n1:2", "node 1 owns it at the next epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_of_a_dead_owner_fires_on_another_node() {
    let Some(postgres) = agents_tests::postgres("cluster alarms after a death") else { return };
    let cluster = Cluster::start(&postgres, 2, "1500ms").await;
    let mut client = cluster.nodes[0].server().connect("/agents/reminders/r").await;
    client.send_rpc("1", "remindIn", json!([1000, "from a dead node"])).await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "rpc" && frame["id"] == "1" {
            assert_eq!(frame["success"], true, "{frame}");
            break;
        }
    }
    let mut nodes = cluster.nodes.into_iter();
    nodes.next().expect("node 0").kill().await;
    let survivor = nodes.next().expect("node 1");
    // Node 1 takes the agent over once node 0's lease ran out (until then it refuses with
    // 1013), and runs the schedule node 0 left due.
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    let fired = 'found: loop {
        assert!(tokio::time::Instant::now() < deadline, "the reminder never fired");
        let mut ws = survivor.server().connect_raw("/agents/reminders/r").await.into_inner();
        while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, ws.next()).await {
            let WsMessage::Text(text) = message else { continue };
            let frame: Value = serde_json::from_str(&text).expect("JSON");
            let fired = match frame["type"].as_str() {
                Some("reminder") => frame["text"].clone(),
                Some("cf_agent_state") => frame["state"]["fired"][0]["text"].clone(),
                _ => Value::Null,
            };
            if !fired.is_null() {
                break 'found fired;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(fired, "from a dead node");
}

/// Calls `method` with `args` and returns its result (the call must succeed).
async fn call(client: &mut Client, id: &str, method: &str, args: Value) -> Value {
    client.send_rpc(id, method, args).await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "rpc" && frame["id"] == id {
            assert_eq!(frame["success"], true, "{method}: {frame}");
            return frame["result"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_sql_database_moves_to_the_next_owner() {
    let Some(postgres) = agents_tests::postgres("cluster SQL") else { return };
    let cluster = Cluster::start(&postgres, 2, "1500ms").await;
    let mut client = cluster.nodes[0].server().connect("/agents/catalog/books").await;
    call(&mut client, "1", "put", json!(["dune", "Herbert"])).await;
    call(&mut client, "2", "put", json!(["emma", "Austen"])).await;
    assert_eq!(call(&mut client, "3", "remove", json!(["emma"])).await, true);
    let mut nodes = cluster.nodes.into_iter();
    nodes.next().expect("node 0").kill().await;
    let survivor = nodes.next().expect("node 1");
    // Node 1 takes the agent over once node 0's lease ran out, and reads the database as
    // node 0 committed it.
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    let found = loop {
        assert!(tokio::time::Instant::now() < deadline, "node 1 never took the catalog over");
        let mut ws = survivor.server().connect_raw("/agents/catalog/books").await.into_inner();
        let frame = json!({ "type": "rpc", "id": "g", "method": "search", "args": [""] });
        if ws.send(WsMessage::text(frame.to_string())).await.is_err() {
            continue;
        }
        let mut answer = None;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, ws.next()).await {
            let WsMessage::Text(text) = message else { continue };
            let frame: Value = serde_json::from_str(&text).expect("JSON");
            if frame["type"] == "rpc" && frame["id"] == "g" {
                answer = Some(frame);
                break;
            }
        }
        match answer {
            Some(frame) if frame["success"] == true => break frame["result"].clone(),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(
        found,
        json!([{ "key": "dune", "value": "Herbert" }]),
        "what was committed, no more"
    );
    let mut client = survivor.server().connect("/agents/catalog/books").await;
    call(&mut client, "4", "put", json!(["odyssey", "Homer"])).await;
    assert_eq!(call(&mut client, "5", "count", json!([])).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_link_refuses_strangers_and_bad_frames() {
    let Some(postgres) = agents_tests::postgres("cluster link input") else { return };
    let cluster = Cluster::start(&postgres, 1, "2s").await;
    let node = cluster.nodes[0].server();
    let link = |headers: &str| {
        format!(
            "GET /_agents/cluster/link HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n{headers}\r\n"
        )
    };
    // Without the cluster's secret, or with the wrong one: 403.
    let (status, _) = node
        .raw_http(link("Upgrade: agents-rs-link/1\r\nx-agents-node: evil\r\n").as_bytes(), b"")
        .await;
    assert_eq!(status, 403);
    let wrong =
        "Upgrade: agents-rs-link/1\r\nx-agents-node: evil\r\nAuthorization: Bearer nope\r\n";
    assert_eq!(node.raw_http(link(wrong).as_bytes(), b"").await.0, 403);
    // Another protocol: 400.
    assert_eq!(node.raw_http(link("Upgrade: websocket\r\n").as_bytes(), b"").await.0, 400);

    // With the secret, a link whose frames do not decode is ended, and the node serves on.
    let secret = postgres.psql(cluster.db(), "SELECT secret FROM agents_rs_secret");
    let mut stream = tokio::net::TcpStream::connect(node.addr).await.expect("connects");
    let head = link(&format!(
        "Upgrade: agents-rs-link/1\r\nx-agents-node: n9\r\nAuthorization: Bearer {secret}\r\n"
    ));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut answer = vec![0u8; 512];
    let n = stream.read(&mut answer).await.expect("reads the 101");
    assert!(answer[..n].starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&answer[..n]));
    // A frame of kind 99, then one claiming to be larger than any frame may be.
    stream.write_all(&[0, 0, 0, 3, 99, 0, 0]).await.expect("writes");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the node ends a link whose frame does not decode");
    let mut stream = tokio::net::TcpStream::connect(node.addr).await.expect("connects");
    stream.write_all(head.as_bytes()).await.expect("writes");
    let _ = stream.read(&mut answer).await.expect("reads the 101");
    stream.write_all(&[0xff, 0xff, 0xff, 0xff]).await.expect("writes");
    let ended = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the node ends a link with an oversized frame");
    let mut client = node.connect("/agents/counter/after").await;
    assert_eq!(increment(&mut client, "1").await, 1, "the node serves on");
}

#[tokio::test]
async fn outside_a_cluster_the_node_link_is_not_found() {
    let server = agents_tests::examples().await;
    let head = "GET /_agents/cluster/link HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: agents-rs-link/1\r\n\r\n";
    assert_eq!(server.raw_http(head.as_bytes(), b"").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernated_agent_is_woken_through_another_node_with_its_state() {
    let Some(postgres) = agents_tests::postgres("cluster hibernation") else { return };
    let cluster = Cluster::start_with(&postgres, 2, "2s", &["--hibernate-after", "300ms"]).await;
    let (url, nodes) = (&cluster.url, &cluster.nodes);
    let path = "/agents/hibernating-counter/h";
    let mut a = nodes[0].server().connect(path).await;
    for n in 1..=2 {
        a.send_text("count").await;
        let reply = a.recv_json_skipping_state().await;
        assert_eq!(
            (reply["counter"].as_u64(), reply["local"].as_u64()),
            (Some(n), Some(n)),
            "{reply}"
        );
    }
    // Idle past `hibernate_after`: the agent leaves memory on node 0, its socket stays open.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut b = nodes[1].server().connect(path).await;
    assert_eq!(b.initial_state.as_ref().expect("a state")["counter"], 2, "woken with its state");
    b.send_text("count").await;
    let reply = b.recv_json_skipping_state().await;
    assert_eq!(reply["counter"], 3, "{reply}");
    assert_eq!(reply["local"], 1, "the in-memory count started over: the agent had hibernated");
    // Node 0 still owns it, and its own socket came through the hibernation.
    let db = url.rsplit('/').next().expect("a database");
    let owner = postgres
        .psql(db, "SELECT owner_node FROM agents_rs_agents WHERE agent = 'hibernating-counter'");
    assert_eq!(owner, "n0");
    let mut heard = Vec::new();
    while !heard.iter().any(|state: &Value| state["state"]["counter"] == 3) {
        assert!(heard.len() < 4, "node 0's socket never heard the count of 3: {heard:?}");
        heard.push(a.recv_json().await);
    }
}
