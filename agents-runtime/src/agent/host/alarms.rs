//! An instance's due alarms as turns: `on_alarm` with its retries, the callbacks of due
//! schedules, and the queue, each call a turn of its own (state changes broadcast, writes
//! gated); then the instance's entry in the server's index moves to its next due time.

use std::time::Duration;

use super::panics::caught;
use super::turn::{report, run_state_changes};
use super::{Awake, Host};
use crate::agent::Agent;
use crate::agent::callback::{Trigger, unknown_callback};
use crate::agent::queue;
use crate::agent::schedule;
use crate::agent::tasks::Schedule;
use crate::error::{Error, Result};
use crate::storage::alarm::StoredAlarm;
use crate::storage::timers::Ran;
use crate::storage::wakeups::now_ms;
use crate::storage::{AlarmInfo, MAX_ALARM_RETRIES, alarm_retry_delay};

/// Most schedules, and most queued calls, one wake runs; the rest come due again at once.
const BATCH: usize = 256;
/// Attempts at a failing schedule or queue callback, as the Agents SDK's default `retry`.
const CALLBACK_ATTEMPTS: u32 = 3;
/// The delay after the first failed attempt; it doubles, up to `CALLBACK_MAX_DELAY`.
const CALLBACK_BASE_DELAY: Duration = Duration::from_millis(100);
const CALLBACK_MAX_DELAY: Duration = Duration::from_secs(3);

impl<A: Agent> Host<A> {
    /// The instance's alarm is due (`Event::Alarm`): runs what is due, then moves its entry
    /// in the index to what is due next. If the instance cannot start, the entry stays due
    /// and the server's alarm clock tries again later.
    pub(super) async fn run_alarms(&mut self) {
        let Ok(awake) = self.wake().await else { return };
        let now = now_ms();
        run_alarm(awake, now).await;
        let ran = run_schedules(awake, now).await;
        run_queue(awake).await;
        let Awake { agent, ctx, .. } = awake;
        if let Err(e) = ctx.timers().settle(ran) {
            report(agent, ctx, None, Error::msg(format!("cannot store the next alarm: {e}"))).await;
        }
    }
}

/// `on_alarm`, if the alarm is due: deleted after it succeeds (unless it set the alarm
/// again), retried with backoff after it fails, at most `MAX_ALARM_RETRIES` times.
async fn run_alarm<A: Agent>(awake: &mut Awake<A>, now: u64) {
    let Awake { agent, ctx, .. } = awake;
    let alarm = match ctx.timers().alarm() {
        Ok(Some(alarm)) if alarm.at <= now => alarm,
        Ok(_) => return,
        Err(e) => return report(agent, ctx, None, e.into()).await,
    };
    let instance = ctx.instance().clone();
    instance.alarm.begin_run(alarm.at);
    ctx.begin_turn(None);
    let ran = caught(agent.on_alarm(ctx, AlarmInfo::new(alarm))).await.and_then(|ran| ran);
    // Whether the hook set or deleted the alarm: then that is what stands.
    let changed = instance.alarm.end_run();
    let settled = match ran {
        Ok(()) if changed => Ok(()),
        Ok(()) => ctx.timers().delete_alarm().map(drop),
        Err(e) => {
            let retries = alarm.retries + 1;
            let why = format!(
                "on_alarm failed (run {} of at most {}): {e}",
                retries,
                MAX_ALARM_RETRIES + 1
            );
            report(agent, ctx, None, Error::msg(why)).await;
            if changed {
                Ok(())
            } else if retries > MAX_ALARM_RETRIES {
                tracing::error!(
                    agent = A::NAME,
                    name = ctx.name(),
                    "on_alarm failed {retries} times; the alarm is dropped"
                );
                ctx.timers().delete_alarm().map(drop)
            } else {
                let delay =
                    u64::try_from(alarm_retry_delay(retries).as_millis()).unwrap_or(u64::MAX);
                ctx.timers().set_alarm(StoredAlarm { at: now_ms().saturating_add(delay), retries })
            }
        }
    };
    if let Err(e) = settled {
        report(agent, ctx, None, Error::msg(format!("cannot store the alarm after on_alarm: {e}")))
            .await;
    }
    run_state_changes(awake).await;
}

/// The callbacks of the schedules due by `now`, earliest first; returns what becomes of
/// each (a one-off is removed, a repeating one moved to its next time), for `settle`.
async fn run_schedules<A: Agent>(awake: &mut Awake<A>, now: u64) -> Vec<Ran> {
    let due = match awake.ctx.timers().due_before(now.saturating_add(1), BATCH) {
        Ok(due) => due,
        Err(e) => {
            report(&mut awake.agent, &mut awake.ctx, None, e.into()).await;
            return Vec::new();
        }
    };
    let mut done = Vec::new();
    for (at, id) in due {
        // A callback's SQL commit failed: the instance restarts before the others run (they
        // stay due).
        if awake.ctx.instance().gate.failure_pending() {
            break;
        }
        let Awake { agent, ctx, .. } = &mut *awake;
        let timers = ctx.timers();
        let schedule = match schedule::load(&timers, &id) {
            Ok(Some(schedule)) if schedule::due_ms(&schedule) == at => schedule,
            // An index entry no record matches (a batch cut short by a failure): dropped.
            Ok(_) => {
                if let Err(e) = timers.drop_due(at, &id) {
                    report(agent, ctx, None, e.into()).await;
                }
                continue;
            }
            // A record that does not decode can never run: reported and removed.
            Err(e) => {
                let removed = timers.remove_schedule(&id, at);
                let why = format!("schedule {id} is removed, it cannot be read: {e}");
                report(agent, ctx, None, Error::msg(why)).await;
                if let Err(e) = removed {
                    report(agent, ctx, None, e.into()).await;
                }
                continue;
            }
        };
        let known = A::CALLBACKS.contains(&schedule.callback.as_str());
        let result = if known {
            call(agent, ctx, &schedule.callback, &schedule.payload, Trigger::Schedule(&schedule))
                .await
        } else {
            Err(unknown_callback::<A>(&schedule.callback))
        };
        if let Err(e) = result {
            let Awake { agent, ctx, .. } = &mut *awake;
            let why = format!("schedule {} ({}) failed: {e}", schedule.id, schedule.callback);
            report(agent, ctx, None, Error::msg(why)).await;
        }
        run_state_changes(awake).await;
        done.push((schedule, known));
    }
    // Looked at once every callback ran: a later one may have cancelled an earlier schedule.
    let mut ran = Vec::new();
    for (schedule, known) in done {
        match after_run::<A>(awake, &schedule, known).await {
            Ok(Some(change)) => ran.push(change),
            Ok(None) => {}
            Err(e) => report(&mut awake.agent, &mut awake.ctx, None, e).await,
        }
    }
    ran
}

/// What becomes of a schedule whose callback ran: nothing if the callback cancelled or
/// changed it; moved to its next time if it repeats (and its callback exists); else removed.
async fn after_run<A: Agent>(
    awake: &mut Awake<A>,
    schedule: &Schedule,
    known: bool,
) -> Result<Option<Ran>> {
    match schedule::load(&awake.ctx.timers(), &schedule.id)? {
        Some(stored) if stored == *schedule => {}
        _ => return Ok(None),
    }
    let next = if known { schedule::next_time(schedule, now_ms())? } else { None };
    schedule::after_run(schedule, next).map(Some)
}

/// Queued calls, in order, each removed once it ran (or failed its attempts).
async fn run_queue<A: Agent>(awake: &mut Awake<A>) {
    for _ in 0..BATCH {
        if awake.ctx.instance().gate.failure_pending() {
            return; // as for schedules: the rest waits for the restart
        }
        let Awake { agent, ctx, .. } = &mut *awake;
        let (seq, item) = match queue::first(&ctx.timers()) {
            Ok(Some((seq, Ok(item)))) => (seq, item),
            Ok(Some((seq, Err(e)))) => {
                // An item that does not decode can never run: reported and removed.
                let removed = ctx.timers().unqueue(&[seq]);
                let why = format!("a queued call is removed, it cannot be read: {e}");
                report(agent, ctx, None, Error::msg(why)).await;
                match removed {
                    Ok(_) => continue,
                    Err(e) => return report(agent, ctx, None, e.into()).await,
                }
            }
            Ok(None) => return,
            Err(e) => return report(agent, ctx, None, e).await,
        };
        let ran = if A::CALLBACKS.contains(&item.callback.as_str()) {
            call(agent, ctx, &item.callback, &item.payload, Trigger::Queue(&item)).await
        } else {
            Err(unknown_callback::<A>(&item.callback))
        };
        if let Err(e) = ran {
            let why = format!("queued call {} ({}) failed: {e}", item.id, item.callback);
            report(agent, ctx, None, Error::msg(why)).await;
        }
        if let Err(e) = ctx.timers().unqueue(&[seq]) {
            // Left queued: it runs again on the next wake.
            return report(agent, ctx, None, e.into()).await;
        }
        run_state_changes(awake).await;
    }
}

/// Calls `callback` with `payload`, as a turn, retrying a failure with backoff (100 ms,
/// doubling, at most 3 s) for `CALLBACK_ATTEMPTS` attempts in all, as the Agents SDK does.
async fn call<A: Agent>(
    agent: &mut A,
    ctx: &mut crate::Context<A>,
    callback: &str,
    payload: &serde_json::Value,
    trigger: Trigger<'_>,
) -> Result<()> {
    let mut delay = CALLBACK_BASE_DELAY;
    let mut attempt = 1;
    loop {
        ctx.begin_turn(None);
        let run = agent.run_callback(ctx, callback, payload.clone(), trigger);
        match caught(run).await.and_then(|ran| ran) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= CALLBACK_ATTEMPTS => return Err(e),
            Err(_) => {
                // The next attempt starts from what the turn had before this one.
                ctx.hook_failed();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(CALLBACK_MAX_DELAY);
                attempt += 1;
            }
        }
    }
}
