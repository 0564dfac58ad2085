//! Schedules over real sockets, through the `Reminders` agent of the examples server: a
//! reminder fires and reaches every client, an interval repeats until cancelled, a cron
//! expression fires at its next matching second, `list` and `cancel` answer, bad input is
//! refused; and reminders survive SIGKILL and wake instances that are not in memory.

use std::collections::BTreeSet;
use std::time::Duration;

use agents_tests::child::ChildServer;
use agents_tests::{Client, Endpoint, TempDir, WAIT, eventually, examples, start};
use serde_json::{Value, json};

/// The examples server binary this package builds.
const EXAMPLES_SERVER: &str = env!("CARGO_BIN_EXE_examples-server");

fn now_ms() -> u64 {
    agents_examples::now_ms()
}

/// A client of a `Reminders` instance that keeps the frames it is not waiting for.
struct Session {
    client: Client,
    next_id: u64,
    /// `reminder` frames, in order.
    reminders: Vec<Value>,
    /// The last state broadcast.
    state: Option<Value>,
}

impl Session {
    async fn open(server: &Endpoint, name: &str) -> Self {
        let client = server.connect(&format!("/agents/reminders/{name}")).await;
        let state = client.initial_state.clone();
        Self { client, next_id: 0, reminders: Vec::new(), state }
    }

    /// Calls `method`; its result, or its error.
    async fn call(&mut self, method: &str, args: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id.to_string();
        self.client.send_rpc(&id, method, args).await;
        loop {
            let frame = self.client.recv_json().await;
            if frame["type"] == "rpc" && frame["id"] == id.as_str() {
                return match frame["success"].as_bool() {
                    Some(true) => Ok(frame["result"].clone()),
                    _ => Err(frame["error"].as_str().unwrap_or_default().to_owned()),
                };
            }
            self.keep(frame);
        }
    }

    async fn ok(&mut self, method: &str, args: Value) -> Value {
        self.call(method, args.clone()).await.unwrap_or_else(|e| panic!("{method}({args}): {e}"))
    }

    fn keep(&mut self, frame: Value) {
        match frame["type"].as_str() {
            Some("reminder") => self.reminders.push(frame),
            Some("cf_agent_state") => self.state = Some(frame["state"].clone()),
            _ => panic!("an unexpected frame: {frame}"),
        }
    }

    /// Waits for the next `reminder` frame.
    async fn next_reminder(&mut self) -> Value {
        if !self.reminders.is_empty() {
            return self.reminders.remove(0);
        }
        loop {
            let frame = self.client.recv_json().await;
            self.keep(frame);
            if !self.reminders.is_empty() {
                return self.reminders.remove(0);
            }
        }
    }

    /// The ids in the last state's `fired` list.
    fn fired(&self) -> Vec<Value> {
        self.state.as_ref().and_then(|state| state["fired"].as_array().cloned()).unwrap_or_default()
    }
}

#[tokio::test]
async fn a_reminder_fires_and_reaches_every_client() {
    let server = examples().await;
    let mut setter = Session::open(&server, "kitchen").await;
    let mut other = Session::open(&server, "kitchen").await;
    assert_eq!(setter.state, Some(json!({ "fired": [] })));
    let before = now_ms();
    let id = setter.ok("remindIn", json!([300, "tea is ready"])).await;
    let id = id.as_str().expect("the id is a string").to_owned();
    for session in [&mut setter, &mut other] {
        let reminder = session.next_reminder().await;
        assert_eq!(reminder, json!({ "type": "reminder", "id": id, "text": "tea is ready" }));
        // The new state came before the frame.
        let fired = session.fired();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0]["id"], id.as_str());
        assert_eq!(fired[0]["text"], "tea is ready");
        let at = fired[0]["at"].as_u64().expect("a time");
        assert!(at >= before + 300, "it fired at {at}, before it was due ({})", before + 300);
    }
    assert_eq!(setter.ok("list", json!([])).await, json!([]), "a fired reminder is gone");
    assert_eq!(setter.ok("cancel", json!([id])).await, json!(false));
}

#[tokio::test]
async fn remind_every_repeats_until_cancelled() {
    let server = examples().await;
    let mut session = Session::open(&server, "ticker").await;
    let id = session.ok("remindEvery", json!([1, "tick"])).await;
    for _ in 0..3 {
        let reminder = session.next_reminder().await;
        assert_eq!(reminder["id"], id);
        assert_eq!(reminder["text"], "tick");
    }
    let listed = session.ok("list", json!([])).await;
    assert_eq!(listed[0]["type"], "interval");
    assert_eq!(session.ok("cancel", json!([id])).await, json!(true));
    assert_eq!(session.ok("list", json!([])).await, json!([]));
    // A tick already on its way when the cancel ran may still arrive; none after that.
    let fired = session.fired().len();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = session.call("list", json!([])).await.expect("lists");
    assert_eq!(after, json!([]));
    assert!(session.fired().len() <= fired + 1, "it kept firing after its cancel");
    session.reminders.clear();
    session.client.expect_silence(Duration::from_millis(1_200)).await;
}

#[tokio::test]
async fn a_cron_reminder_fires_at_the_next_matching_second() {
    let server = examples().await;
    let mut session = Session::open(&server, "cron").await;
    let asked = now_ms();
    let id = session.ok("remindCron", json!(["* * * * * *", "every second"])).await;
    let listed = session.ok("list", json!([])).await;
    assert_eq!(listed[0]["type"], "cron");
    let due = listed[0]["time"].as_u64().expect("a time");
    assert_eq!(due % 1000, 0, "a cron time is a whole second");
    assert!(due > asked && due <= asked + 1000, "the next matching second after {asked}: {due}");
    let first = session.next_reminder().await;
    assert_eq!(first["id"], id);
    let at = session.fired()[0]["at"].as_u64().expect("a time");
    assert!(at >= due, "it fired at {at}, before its time {due}");
    assert_eq!(session.next_reminder().await["id"], id, "it fires again the next second");
    let again = session.ok("remindCron", json!(["* * * * * *", "every second"])).await;
    assert_eq!(again, id, "the same cron schedule is not made twice");
    assert_eq!(session.ok("cancel", json!([id])).await, json!(true));
}

#[tokio::test]
async fn list_shows_every_kind_and_cancel_removes_one() {
    let server = examples().await;
    let mut session = Session::open(&server, "planner").await;
    let now = now_ms();
    let delayed = session.ok("remindIn", json!([60_000, "a"])).await;
    let scheduled = session.ok("remindAt", json!([now + 120_000, "b"])).await;
    let interval = session.ok("remindEvery", json!([30, "c"])).await;
    let cron = session.ok("remindCron", json!(["0 0 1 1 *", "d"])).await;
    let listed = session.ok("list", json!([])).await;
    let listed = listed.as_array().expect("a list");
    let kinds: Vec<(&Value, &str, &str)> = listed
        .iter()
        .map(|item| (&item["id"], item["type"].as_str().unwrap(), item["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            (&interval, "interval", "c"),
            (&delayed, "delayed", "a"),
            (&scheduled, "scheduled", "b"),
            (&cron, "cron", "d")
        ],
        "soonest first"
    );
    let time = |index: usize| listed[index]["time"].as_u64().expect("a time");
    assert!((now + 30_000..now + 31_000).contains(&time(0)));
    assert!((now + 60_000..now + 61_000).contains(&time(1)));
    assert_eq!(time(2), now + 120_000);
    assert_eq!(session.ok("cancel", json!([scheduled])).await, json!(true));
    assert_eq!(session.ok("cancel", json!([scheduled])).await, json!(false));
    assert_eq!(session.ok("cancel", json!(["no such id"])).await, json!(false));
    assert_eq!(session.ok("list", json!([])).await.as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn bad_reminders_are_refused_with_a_reason() {
    let server = examples().await;
    let mut session = Session::open(&server, "strict").await;
    let refused = [
        ("remindIn", json!([-1, "a"]), "invalid value"),
        ("remindIn", json!(["soon", "a"]), "invalid type"),
        ("remindAt", json!([1.5, "a"]), "invalid type"),
        ("remindEvery", json!([0, "a"]), "seconds must be a number from 1 to 31536000"),
        ("remindEvery", json!([0.5, "a"]), "seconds must be a number from 1 to 31536000"),
        ("remindEvery", json!([1e12, "a"]), "seconds must be a number from 1 to 31536000"),
        ("remindCron", json!(["61 * * * *", "a"]), "invalid cron expression `61 * * * *`"),
        ("remindCron", json!(["not a cron", "a"]), "invalid cron expression"),
        ("remindIn", json!([10, "x".repeat(1001)]), "at most 1000 characters"),
        ("remindIn", json!([10]), "(`text`) for method remindIn: invalid type: null"),
        ("cancel", json!([7]), "invalid type"),
        ("remind", json!(["sneaky"]), "not callable"),
    ];
    for (method, args, expected) in refused {
        let error = session.call(method, args.clone()).await.expect_err("refused");
        assert!(error.contains(expected), "{method}({args}): {error}");
    }
    assert_eq!(session.ok("list", json!([])).await, json!([]), "nothing was scheduled");
}

#[tokio::test]
async fn at_most_a_thousand_reminders_are_pending() {
    let server = examples().await;
    let mut session = Session::open(&server, "busy").await;
    for n in 0..agents_examples::agents::MAX_PENDING_REMINDERS {
        session.ok("remindIn", json!([3_600_000, n.to_string()])).await;
    }
    let error = session.call("remindIn", json!([10, "one more"])).await.expect_err("refused");
    assert!(error.contains("at most 1000 reminders"), "{error}");
    let first = session.ok("list", json!([])).await[0]["id"].clone();
    assert_eq!(session.ok("cancel", json!([first])).await, json!(true));
    session.ok("remindIn", json!([10, "now there is room"])).await;
    assert_eq!(session.next_reminder().await["text"], "now there is room");
}

#[tokio::test]
async fn more_reminders_due_at_once_than_one_wake_runs_all_fire() {
    let server = examples().await;
    let mut session = Session::open(&server, "crowd").await;
    // One wake runs 256 schedules; the rest come due again at once, not at the next sweep.
    let at = now_ms() + 300;
    for n in 0..300 {
        session.ok("remindAt", json!([at, n.to_string()])).await;
    }
    let mut texts = BTreeSet::new();
    while texts.len() < 300 {
        let reminder = session.next_reminder().await;
        assert!(texts.insert(reminder["text"].as_str().expect("a text").to_owned()), "once each");
    }
    assert_eq!(session.ok("list", json!([])).await, json!([]));
}

#[tokio::test]
async fn a_time_in_the_past_fires_at_once() {
    let server = examples().await;
    let mut session = Session::open(&server, "late").await;
    session.ok("remindAt", json!([1, "long overdue"])).await;
    assert_eq!(session.next_reminder().await["text"], "long overdue");
}

/// The ids of the `fired` list in a state.
fn fired_ids(state: &Value) -> BTreeSet<String> {
    let fired = state["fired"].as_array().cloned().unwrap_or_default();
    fired.iter().map(|entry| entry["id"].as_str().expect("an id").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_reminders_fire_after_sigkill_and_restart() {
    let dir = TempDir::new("reminders-sigkill");
    let server = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    let mut session = Session::open(&server.server(), "durable").await;
    let now = now_ms();
    let mut pending = BTreeSet::new();
    // Some due while the server is down, some after it is back.
    for n in 0..20u64 {
        let at = now + 300 + n * 150;
        let id = session.ok("remindAt", json!([at, format!("reminder {n}")])).await;
        pending.insert(id.as_str().expect("an id").to_owned());
    }
    let every = session.ok("remindEvery", json!([1, "repeating"])).await;
    // Acknowledged, so durable: the answers waited for the disk.
    server.kill().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let server = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let fired = loop {
        // A new client each time: its first state is what the instance stored.
        let client = server.server().connect("/agents/reminders/durable").await;
        let fired = fired_ids(client.initial_state.as_ref().expect("a state"));
        if pending.is_subset(&fired) && fired.contains(every.as_str().unwrap()) {
            break fired;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all fired: {pending:?} {fired:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(fired.len() > pending.len());
}

#[tokio::test]
async fn a_reminder_wakes_an_instance_that_is_not_in_memory() {
    let dir = TempDir::new("reminders-evicted");
    let nap = Duration::from_millis(200);
    let server = start(agents_examples::server().data_dir(dir.path()).hibernate_after(nap)).await;
    let mut session = Session::open(&server, "sleepy").await;
    let id = session.ok("remindIn", json!([1_500, "wake up"])).await;
    session.client.close(None).await;
    drop(session);
    let handle = server.handle.clone();
    eventually("the instance leaves memory", || handle.live_instances() == 0).await;
    assert_eq!(handle.hibernated_instances(), 0, "with no connection it is gone, not hibernated");
    let gone_at = now_ms();
    eventually("the alarm starts it", || handle.live_instances() == 1).await;
    eventually("it leaves memory again", || handle.live_instances() == 0).await;
    let client = server.connect("/agents/reminders/sleepy").await;
    let state = client.initial_state.expect("a state");
    assert_eq!(state["fired"][0]["id"], id);
    let at = state["fired"][0]["at"].as_u64().expect("a time");
    assert!(at > gone_at, "it fired while the instance was out of memory");
}

#[tokio::test]
async fn a_reminder_wakes_a_hibernated_instance_and_reaches_its_client() {
    let nap = Duration::from_millis(200);
    let server = start(agents_examples::server().hibernate_after(nap)).await;
    let mut session = Session::open(&server, "dozing").await;
    session.ok("remindIn", json!([1_000, "psst"])).await;
    let handle = server.handle.clone();
    eventually("the instance hibernates", || handle.hibernated_instances() == 1).await;
    assert_eq!(session.next_reminder().await["text"], "psst");
    assert_eq!(session.fired().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_server_wakes_an_evicted_instance_with_hibernate_after() {
    let dir = TempDir::new("reminders-cli");
    let server = ChildServer::start_limited(
        EXAMPLES_SERVER,
        dir.path(),
        1024,
        &["--hibernate-after", "100ms"],
    )
    .await;
    let mut session = Session::open(&server.server(), "cli").await;
    let id = session.ok("remindIn", json!([1_200, "from the store"])).await;
    session.client.close(None).await;
    drop(session);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let connected = now_ms();
    let client = server.server().connect("/agents/reminders/cli").await;
    let state = client.initial_state.expect("a state");
    assert_eq!(state["fired"][0]["id"], id, "{state}");
    let at = state["fired"][0]["at"].as_u64().expect("a time");
    assert!(at < connected, "it fired before anyone connected again");
}
