//! The alarm (`storage.setAlarm` and `on_alarm`) and the queue over real sockets: a failing
//! `on_alarm` is retried with backoff and told its retry count, an alarm set inside `on_alarm`
//! runs, a replaced or deleted alarm does not, an alarm survives a restart; queued callbacks
//! run in order, can be dequeued, are retried then dropped, and run after a crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agents_runtime::prelude::*;
use agents_runtime::storage::MemoryStore;
use agents_tests::{Client, Endpoint, TempDir, start};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

fn now_ms() -> u64 {
    agents_examples::now_ms()
}

fn ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Records each `on_alarm` run; fails the first `fail` runs and sets the alarm again `rearm`
/// times, both read from storage (the struct does not outlive a hibernation).
#[derive(Default)]
struct Alarmist;

#[agent(rename_all = "camelCase")]
impl Alarmist {
    #[callable]
    fn arm(&mut self, ctx: &mut Context<Self>, in_ms: u64) -> Result<Option<u64>> {
        ctx.storage().set_alarm(SystemTime::now() + Duration::from_millis(in_ms))?;
        Ok(ctx.storage().get_alarm()?.map(ms))
    }

    #[callable]
    fn disarm(&mut self, ctx: &mut Context<Self>) -> Result<bool> {
        ctx.storage().delete_alarm()
    }

    #[callable]
    fn alarm(&self, ctx: &mut Context<Self>) -> Result<Option<u64>> {
        Ok(ctx.storage().get_alarm()?.map(ms))
    }

    #[callable]
    fn behave(&mut self, ctx: &mut Context<Self>, fail: u32, rearm: u32) -> Result<()> {
        ctx.storage().put("fail", &fail)?;
        ctx.storage().put("rearm", &rearm)
    }

    async fn on_alarm(&mut self, ctx: &mut Context<Self>, info: AlarmInfo) -> Result<()> {
        let seen = ctx.storage().get_alarm()?.map(ms);
        let run = json!({
            "type": "alarm",
            "retry": info.retry_count,
            "isRetry": info.is_retry,
            "scheduled": ms(info.scheduled_time),
            "at": now_ms(),
            "seen": seen,
        });
        ctx.broadcast(Message::json(&run)?, &[]);
        let fail: u32 = ctx.storage().get("fail")?.unwrap_or(0);
        if fail > 0 {
            ctx.storage().put("fail", &(fail - 1))?;
            return Err(Error::msg("not yet"));
        }
        let rearm: u32 = ctx.storage().get("rearm")?.unwrap_or(0);
        if rearm > 0 {
            ctx.storage().put("rearm", &(rearm - 1))?;
            ctx.storage().set_alarm(SystemTime::now() + Duration::from_millis(100))?;
            let after = ctx.storage().get_alarm()?.map(ms);
            ctx.broadcast(Message::json(&json!({ "type": "rearmed", "alarm": after }))?, &[]);
        }
        Ok(())
    }
}

/// Calls `method` and returns its result (skipping broadcasts, which are returned too).
async fn call(client: &mut Client, method: &str, args: Value) -> (Value, Vec<Value>) {
    client.send_rpc("call", method, args).await;
    let mut others = Vec::new();
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "rpc" && frame["id"] == "call" {
            assert_eq!(frame["success"], true, "{method}: {frame}");
            return (frame["result"].clone(), others);
        }
        others.push(frame);
    }
}

/// The next frame of type `kind`, among `kept` first.
async fn next_of(client: &mut Client, kept: &mut Vec<Value>, kind: &str) -> Value {
    if let Some(index) = kept.iter().position(|frame| frame["type"] == kind) {
        return kept.remove(index);
    }
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_failing_on_alarm_is_retried_with_backoff_and_told_its_retry_count() {
    let server = start(Server::builder()).await;
    let mut client = server.connect("/agents/alarmist/flaky").await;
    call(&mut client, "behave", json!([2, 0])).await;
    let (due, mut kept) = call(&mut client, "arm", json!([0])).await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(next_of(&mut client, &mut kept, "alarm").await);
    }
    let retries: Vec<_> =
        runs.iter().map(|run| (run["retry"].clone(), run["isRetry"].clone())).collect();
    assert_eq!(
        retries,
        [(json!(0), json!(false)), (json!(1), json!(true)), (json!(2), json!(true))]
    );
    for run in &runs {
        assert_eq!(run["seen"], Value::Null, "get_alarm does not report the alarm being run");
    }
    assert_eq!(runs[0]["scheduled"], due);
    let at = |n: usize| runs[n]["at"].as_u64().expect("a time");
    // Backoff: 2 s before the first retry, 4 s before the second (lower bounds only).
    assert!(at(1) >= at(0) + 2_000, "{runs:?}");
    assert!(at(2) >= at(1) + 4_000, "{runs:?}");
    assert_eq!(
        call(&mut client, "alarm", json!([])).await.0,
        Value::Null,
        "deleted after it succeeded"
    );
    client.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn on_alarm_can_set_the_next_alarm_and_get_alarm_sees_it() {
    let server = start(Server::builder()).await;
    let mut client = server.connect("/agents/alarmist/chain").await;
    call(&mut client, "behave", json!([0, 2])).await;
    let (_, mut kept) = call(&mut client, "arm", json!([50])).await;
    for _ in 0..2 {
        next_of(&mut client, &mut kept, "alarm").await;
        let rearmed = next_of(&mut client, &mut kept, "rearmed").await;
        assert!(
            rearmed["alarm"].as_u64().is_some(),
            "the alarm set in on_alarm is reported: {rearmed}"
        );
    }
    next_of(&mut client, &mut kept, "alarm").await;
    assert_eq!(call(&mut client, "alarm", json!([])).await.0, Value::Null);
    client.expect_silence(Duration::from_millis(400)).await;
}

#[tokio::test]
async fn a_replaced_alarm_runs_once_and_a_deleted_one_never() {
    let server = start(Server::builder()).await;
    let mut client = server.connect("/agents/alarmist/moved").await;
    call(&mut client, "arm", json!([200])).await;
    let (later, mut kept) = call(&mut client, "arm", json!([400])).await;
    let run = next_of(&mut client, &mut kept, "alarm").await;
    assert_eq!(run["scheduled"], later, "only the alarm set last runs");
    client.expect_silence(Duration::from_millis(500)).await;
    call(&mut client, "arm", json!([200])).await;
    assert_eq!(call(&mut client, "disarm", json!([])).await.0, json!(true));
    assert_eq!(call(&mut client, "disarm", json!([])).await.0, json!(false));
    client.expect_silence(Duration::from_millis(600)).await;
}

#[tokio::test]
async fn an_alarm_survives_a_restart() {
    let dir = TempDir::new("alarm-restart");
    let first = start(Server::builder().data_dir(dir.path())).await;
    let mut client = first.connect("/agents/alarmist/kept").await;
    let (due, _) = call(&mut client, "arm", json!([600])).await;
    client.close(None).await;
    first.shut_down().await;
    let second = start(Server::builder().data_dir(dir.path())).await;
    let mut client = second.connect("/agents/alarmist/kept").await;
    let mut kept = Vec::new();
    let run = next_of(&mut client, &mut kept, "alarm").await;
    assert_eq!(run["scheduled"], due);
}

/// Lets the test hold a queued callback forever: a server whose run "crashes" mid-queue.
struct Hang(Arc<AtomicBool>);

/// Runs queued work; `done` lists what ran, in order.
#[derive(Default)]
struct Worker;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct WorkerState {
    done: Vec<String>,
}

#[agent(state = WorkerState, rename_all = "camelCase")]
impl Worker {
    #[callable]
    fn enqueue(&mut self, ctx: &mut Context<Self>, items: Vec<String>) -> Result<Vec<String>> {
        items.into_iter().map(|item| ctx.queue(WorkerCallback::Work(item))).collect()
    }

    #[callable]
    fn dequeue(&mut self, ctx: &mut Context<Self>, id: String) -> Result<bool> {
        ctx.dequeue(&id)
    }

    #[callable]
    fn pending(&self, ctx: &mut Context<Self>) -> Result<Vec<String>> {
        ctx.get_queues()?.into_iter().map(|item| item.payload::<String>()).collect()
    }

    #[callable]
    fn enqueue_failing(&mut self, ctx: &mut Context<Self>) -> Result<String> {
        ctx.queue(WorkerCallback::Fail)
    }

    #[callable]
    fn attempts(&self, ctx: &mut Context<Self>) -> Result<u32> {
        Ok(ctx.storage().get("attempts")?.unwrap_or(0))
    }

    #[callable]
    fn queue_a_schedule_callback(&mut self, ctx: &mut Context<Self>) -> Result<String> {
        ctx.queue(WorkerCallback::Timed)
    }

    #[callable]
    fn hold_then_clear(&mut self, ctx: &mut Context<Self>) -> Result<(usize, usize)> {
        ctx.queue(WorkerCallback::Work("x".into()))?;
        ctx.queue(WorkerCallback::Work("y".into()))?;
        let held = ctx.get_queues()?.len();
        Ok((held, ctx.dequeue_all()?))
    }

    #[callback]
    async fn work(
        &mut self,
        ctx: &mut Context<Self>,
        item: String,
        queued: &QueueItem,
    ) -> Result<()> {
        assert_eq!(queued.payload::<String>()?, item);
        if let Some(hang) = ctx.env().get::<Hang>()
            && hang.0.load(Ordering::Acquire)
        {
            std::future::pending::<()>().await;
        }
        let mut done = ctx.state().done.clone();
        done.push(item);
        ctx.set_state(WorkerState { done })
    }

    #[callback]
    fn fail(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        let attempts: u32 = ctx.storage().get("attempts")?.unwrap_or(0);
        ctx.storage().put("attempts", &(attempts + 1))?;
        Err(Error::msg("always fails"))
    }

    #[callback]
    fn timed(&mut self, _schedule: &Schedule) {}
}

/// Waits until the worker's state lists `expected`, reading state broadcasts.
async fn wait_done(client: &mut Client, expected: &[&str]) {
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "cf_agent_state" && frame["state"]["done"] == json!(expected) {
            return;
        }
    }
}

#[tokio::test]
async fn queued_callbacks_run_in_order_and_can_be_dequeued() {
    let server = start(Server::builder()).await;
    let mut client = server.connect("/agents/worker/fifo").await;
    let items: Vec<String> = (0..20).map(|n| format!("item {n}")).collect();
    let (ids, _) = call(&mut client, "enqueue", json!([items])).await;
    assert_eq!(ids.as_array().map(Vec::len), Some(20));
    let expected: Vec<&str> = items.iter().map(String::as_str).collect();
    wait_done(&mut client, &expected).await;
    assert_eq!(call(&mut client, "pending", json!([])).await.0, json!([]));
    let (held, _) = call(&mut client, "holdThenClear", json!([])).await;
    assert_eq!(held, json!([2, 2]), "both were queued, then removed before they ran");
    let error = {
        client.send_rpc("wrong", "queueAScheduleCallback", json!([])).await;
        loop {
            let frame = client.recv_json().await;
            if frame["id"] == "wrong" {
                break frame["error"].as_str().unwrap_or_default().to_owned();
            }
        }
    };
    assert!(error.contains("callback `timed` takes a `&Schedule`"), "{error}");
    client.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_failing_queued_callback_is_tried_three_times_then_dropped() {
    let server = start(Server::builder()).await;
    let mut client = server.connect("/agents/worker/failing").await;
    call(&mut client, "enqueueFailing", json!([])).await;
    let mut attempts = 0;
    for _ in 0..200 {
        attempts = call(&mut client, "attempts", json!([])).await.0.as_u64().unwrap_or(0);
        let pending = call(&mut client, "pending", json!([])).await.0;
        if attempts == 3 && pending == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(attempts, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(call(&mut client, "attempts", json!([])).await.0, json!(3), "dropped after three");
}

#[tokio::test]
async fn work_queued_before_a_crash_runs_on_the_next_server() {
    let store = Arc::new(MemoryStore::new());
    let hang = Arc::new(AtomicBool::new(true));
    let first = start(Server::builder().store(store.clone()).env(Hang(hang.clone()))).await;
    let mut client = first.connect("/agents/worker/crashing").await;
    call(&mut client, "enqueue", json!([["a", "b", "c"]])).await;
    // The first server is stuck in the first callback for good: as good as crashed.
    let second = start(Server::builder().store(store)).await;
    let mut client: Client = Endpoint::connect(&second, "/agents/worker/crashing").await;
    // It may have run them all before this client connected.
    if client.initial_state.as_ref().map(|state| &state["done"]) != Some(&json!(["a", "b", "c"])) {
        wait_done(&mut client, &["a", "b", "c"]).await;
    }
    drop(first);
}
