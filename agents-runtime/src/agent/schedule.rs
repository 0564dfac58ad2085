//! Schedules, as the Agents SDK has them: `this.schedule(when, callback, payload)` (a delay, a
//! time or a cron expression), `scheduleEvery`, `getSchedule`, `getSchedules` and
//! `cancelSchedule`, on [`Context`]. Each schedule is stored with an index by due time; the
//! instance's alarm wakes it when the first is due, hibernated or not in memory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::agent::callback::{Callback, TriggerKind, prepare};
use crate::agent::context::Context;
use crate::agent::tasks::{Schedule, ScheduleKind, ScheduleType};
use crate::error::{Error, Result};
use crate::storage::timers::{Ran, Timers};
use crate::storage::wakeups::now_ms;

/// When a schedule runs, the `when` of `this.schedule(when, ...)`.
///
/// A [`Duration`] converts into a delay and a [`SystemTime`] into a time;
/// [`When::cron`] takes a cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum When {
    /// After a delay from now (a number of seconds in JavaScript): a `"delayed"` schedule.
    Delay(Duration),
    /// At a time (a `Date`): a `"scheduled"` schedule. A time in the past runs at once.
    At(SystemTime),
    /// At every time a cron expression matches, in UTC: a `"cron"` schedule.
    Cron(String),
}

impl When {
    /// Every time `expression` matches, in UTC: five fields (minute, hour, day of month,
    /// month, day of week, Sunday being 0 or 7) as in crontab, or six with seconds first
    /// (`"*/10 * * * * *"`: every ten seconds). Checked when scheduled.
    pub fn cron(expression: impl Into<String>) -> Self {
        Self::Cron(expression.into())
    }
}

impl From<Duration> for When {
    fn from(delay: Duration) -> Self {
        Self::Delay(delay)
    }
}

impl From<SystemTime> for When {
    fn from(time: SystemTime) -> Self {
        Self::At(time)
    }
}

/// Which schedules [`Context::get_schedules`] returns (`getSchedules(criteria)`).
#[derive(Clone, Debug, Default)]
pub struct ScheduleCriteria {
    id: Option<String>,
    kind: Option<ScheduleType>,
    start: Option<SystemTime>,
    end: Option<SystemTime>,
}

impl ScheduleCriteria {
    /// Every schedule.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only the schedule with this id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Only schedules of this type.
    pub fn of_type(mut self, kind: ScheduleType) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Only schedules that next run at or after `start` and at or before `end`
    /// (`timeRange`); either bound may be left open with `None`.
    pub fn between(mut self, start: Option<SystemTime>, end: Option<SystemTime>) -> Self {
        self.start = start;
        self.end = end;
        self
    }

    fn matches(&self, schedule: &Schedule) -> bool {
        self.id.as_ref().is_none_or(|id| *id == schedule.id)
            && self.kind.is_none_or(|kind| kind == schedule.schedule_type())
            && self.start.is_none_or(|start| schedule.time >= start)
            && self.end.is_none_or(|end| schedule.time <= end)
    }
}

/// A schedule as stored: times in milliseconds since the epoch.
#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    callback: String,
    payload: serde_json::Value,
    time: u64,
    #[serde(flatten)]
    kind: RecordKind,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum RecordKind {
    Scheduled,
    Delayed { delay: u64 },
    Cron { cron: String },
    Interval { interval: u64 },
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, ms)
}

fn from_ms(at: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(at)
}

impl From<&Schedule> for Record {
    fn from(schedule: &Schedule) -> Self {
        let kind = match &schedule.kind {
            ScheduleKind::Scheduled => RecordKind::Scheduled,
            ScheduleKind::Delayed { delay } => RecordKind::Delayed { delay: ms(*delay) },
            ScheduleKind::Cron { cron } => RecordKind::Cron { cron: cron.clone() },
            ScheduleKind::Interval { interval } => RecordKind::Interval { interval: ms(*interval) },
        };
        Self {
            id: schedule.id.clone(),
            callback: schedule.callback.clone(),
            payload: schedule.payload.clone(),
            time: to_ms(schedule.time),
            kind,
        }
    }
}

impl From<Record> for Schedule {
    fn from(record: Record) -> Self {
        let kind = match record.kind {
            RecordKind::Scheduled => ScheduleKind::Scheduled,
            RecordKind::Delayed { delay } => {
                ScheduleKind::Delayed { delay: Duration::from_millis(delay) }
            }
            RecordKind::Cron { cron } => ScheduleKind::Cron { cron },
            RecordKind::Interval { interval } => {
                ScheduleKind::Interval { interval: Duration::from_millis(interval) }
            }
        };
        Self {
            id: record.id,
            callback: record.callback,
            payload: record.payload,
            time: from_ms(record.time),
            kind,
        }
    }
}

/// Parses a cron expression of a schedule: five fields, or six with seconds first.
pub(crate) fn parse_cron(expression: &str) -> Result<Cron> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expression)
        .map_err(|e| Error::msg(format!("invalid cron expression `{expression}`: {e}")))
}

/// The first time after `after` (ms since the epoch) that `cron` matches.
pub(crate) fn next_cron_time(cron: &Cron, expression: &str, after: u64) -> Result<u64> {
    let after = i64::try_from(after)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .ok_or_else(|| Error::msg("the clock is out of the range of cron expressions"))?;
    let next = cron
        .find_next_occurrence(&after, false)
        .map_err(|e| Error::msg(format!("cron expression `{expression}` has no next time: {e}")))?;
    u64::try_from(next.timestamp_millis())
        .map_err(|_| Error::msg(format!("cron expression `{expression}` has no next time")))
}

/// A new schedule or queue id: 16 letters and digits.
pub(crate) fn new_id() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(16).map(char::from).collect()
}

/// The stored schedule `id`.
pub(crate) fn load(timers: &Timers<'_>, id: &str) -> Result<Option<Schedule>> {
    let Some(record) = timers.schedule(id)? else { return Ok(None) };
    let record: Record = serde_json::from_slice(&record)
        .map_err(|e| Error::msg(format!("storage: schedule {id} does not decode: {e}")))?;
    Ok(Some(record.into()))
}

/// Stores a new schedule.
fn add(timers: &Timers<'_>, schedule: &Schedule) -> Result<()> {
    let record = serde_json::to_vec(&Record::from(schedule))?;
    timers.add_schedule(&schedule.id, to_ms(schedule.time), &record)?;
    Ok(())
}

/// When `schedule` is due, in milliseconds since the epoch.
pub(crate) fn due_ms(schedule: &Schedule) -> u64 {
    to_ms(schedule.time)
}

/// What becomes of `schedule` after it ran: removed, or moved to `next`.
pub(crate) fn after_run(schedule: &Schedule, next: Option<u64>) -> Result<Ran> {
    let (id, was) = (schedule.id.clone(), to_ms(schedule.time));
    let Some(due) = next else { return Ok(Ran::Removed { id, due: was }) };
    let mut moved = Record::from(schedule);
    moved.time = due;
    Ok(Ran::Moved { id, was, due, record: serde_json::to_vec(&moved)? })
}

/// Removes `schedule` from the store.
pub(crate) fn remove(timers: &Timers<'_>, schedule: &Schedule) -> Result<()> {
    timers.remove_schedule(&schedule.id, to_ms(schedule.time))?;
    Ok(())
}

/// When a repeating schedule runs next after a run that ended at `now`; `None` for one that
/// does not repeat.
pub(crate) fn next_time(schedule: &Schedule, now: u64) -> Result<Option<u64>> {
    match &schedule.kind {
        ScheduleKind::Scheduled | ScheduleKind::Delayed { .. } => Ok(None),
        ScheduleKind::Cron { cron } => next_cron_time(&parse_cron(cron)?, cron, now).map(Some),
        ScheduleKind::Interval { interval } => Ok(Some(now.saturating_add(ms(*interval)))),
    }
}

impl<A: Agent> Context<A> {
    /// Schedules a call of a `#[callback]` method (`this.schedule(when, callback, payload)`):
    /// after a delay, at a time, or by a cron expression (see [`When`]). Returns the
    /// schedule, whose `id` [`cancel_schedule`](Self::cancel_schedule) takes.
    ///
    /// It is stored like any write, so it survives hibernation, restarts and crashes; when it
    /// is due the method runs as a turn of its own, waking the instance if needed. A cron
    /// schedule is idempotent, as in the Agents SDK: scheduling the same callback, payload and
    /// expression again returns the existing schedule.
    ///
    /// ```no_run
    /// # use agents_runtime::prelude::*;
    /// # #[derive(Default)] struct Reminders;
    /// # #[agent] impl Reminders {
    /// #[callback]
    /// fn remind(&mut self, ctx: &mut Context<Self>, text: String) {}
    ///
    /// #[callable]
    /// fn remind_later(&mut self, ctx: &mut Context<Self>) -> Result<String> {
    ///     let when = std::time::Duration::from_secs(60);
    ///     Ok(ctx.schedule(when, RemindersCallback::Remind("stretch".into()))?.id)
    /// }
    /// # }
    /// ```
    pub fn schedule<C: Callback<A>>(
        &mut self,
        when: impl Into<When>,
        callback: C,
    ) -> Result<Schedule> {
        let (name, payload) = prepare::<A, C>(callback, TriggerKind::Schedule)?;
        let now = now_ms();
        let (time, kind) = match when.into() {
            When::Delay(delay) => (now.saturating_add(ms(delay)), ScheduleKind::Delayed { delay }),
            When::At(time) => (to_ms(time), ScheduleKind::Scheduled),
            When::Cron(cron) => {
                let time = next_cron_time(&parse_cron(&cron)?, &cron, now)?;
                (time, ScheduleKind::Cron { cron })
            }
        };
        self.add_schedule(name, payload, time, kind)
    }

    /// Schedules a call of a `#[callback]` method every `interval`, the first one `interval`
    /// from now (`this.scheduleEvery(seconds, callback, payload)`). Idempotent, as in the
    /// Agents SDK: the same callback, payload and interval again returns the existing schedule.
    pub fn schedule_every<C: Callback<A>>(
        &mut self,
        interval: Duration,
        callback: C,
    ) -> Result<Schedule> {
        if interval < Duration::from_millis(1) {
            return Err(Error::msg("the interval of a schedule must be at least a millisecond"));
        }
        let (name, payload) = prepare::<A, C>(callback, TriggerKind::Schedule)?;
        let time = now_ms().saturating_add(ms(interval));
        self.add_schedule(name, payload, time, ScheduleKind::Interval { interval })
    }

    fn add_schedule(
        &mut self,
        callback: &'static str,
        payload: serde_json::Value,
        time: u64,
        kind: ScheduleKind,
    ) -> Result<Schedule> {
        let timers = self.timers();
        if matches!(kind, ScheduleKind::Cron { .. } | ScheduleKind::Interval { .. }) {
            let same =
                |s: &Schedule| s.callback == callback && s.payload == payload && s.kind == kind;
            if let Some(existing) =
                self.get_schedules(ScheduleCriteria::all())?.into_iter().find(same)
            {
                return Ok(existing);
            }
        }
        let schedule = Schedule {
            id: new_id(),
            callback: callback.to_owned(),
            payload,
            // Never at the epoch itself: the index of due alarms starts at 1 ms.
            time: from_ms(time.max(1)),
            kind,
        };
        add(&timers, &schedule)?;
        Ok(schedule)
    }

    /// The schedule with this id, if it is pending (`getScheduleById(id)`).
    pub fn get_schedule(&self, id: &str) -> Result<Option<Schedule>> {
        load(&self.timers(), id)
    }

    /// The pending schedules that meet `criteria` (`getSchedules(criteria)`), in order of
    /// their next run.
    pub fn get_schedules(&self, criteria: ScheduleCriteria) -> Result<Vec<Schedule>> {
        let timers = self.timers();
        let mut schedules = Vec::new();
        if let Some(id) = &criteria.id {
            schedules.extend(load(&timers, id)?);
        } else {
            for record in timers.schedules()? {
                let record: Record = serde_json::from_slice(&record)
                    .map_err(|e| Error::msg(format!("storage: a schedule does not decode: {e}")))?;
                schedules.push(Schedule::from(record));
            }
        }
        schedules.retain(|schedule| criteria.matches(schedule));
        schedules.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        Ok(schedules)
    }

    /// Cancels a schedule (`cancelSchedule(id)`); returns whether it was pending.
    pub fn cancel_schedule(&mut self, id: &str) -> Result<bool> {
        let timers = self.timers();
        let Some(schedule) = load(&timers, id)? else { return Ok(false) };
        remove(&timers, &schedule)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_have_five_or_six_fields() {
        let every_second = parse_cron("* * * * * *").expect("six fields");
        assert_eq!(next_cron_time(&every_second, "", 1_000).expect("next"), 2_000);
        assert_eq!(next_cron_time(&every_second, "", 1_500).expect("next"), 2_000);
        let hourly = parse_cron("0 * * * *").expect("five fields");
        assert_eq!(next_cron_time(&hourly, "", 1).expect("next"), 3_600_000);
        // 1970-01-01 was a Thursday; POSIX day 1 is Monday: 1970-01-05.
        let mondays = parse_cron("0 0 * * 1").expect("five fields");
        assert_eq!(next_cron_time(&mondays, "", 0).expect("next"), 4 * 86_400_000);
        for bad in ["", "* * *", "61 * * * *", "not a cron"] {
            let error = parse_cron(bad).expect_err(bad).to_string();
            assert!(error.starts_with("invalid cron expression"), "{error}");
        }
    }

    #[test]
    fn records_round_trip() {
        for kind in [
            ScheduleKind::Scheduled,
            ScheduleKind::Delayed { delay: Duration::from_millis(1500) },
            ScheduleKind::Cron { cron: "* * * * *".into() },
            ScheduleKind::Interval { interval: Duration::from_secs(2) },
        ] {
            let schedule = Schedule {
                id: new_id(),
                callback: "remind".into(),
                payload: serde_json::json!({"text": "hi"}),
                time: from_ms(1_234),
                kind,
            };
            let json = serde_json::to_vec(&Record::from(&schedule)).expect("serializes");
            let back: Record = serde_json::from_slice(&json).expect("deserializes");
            assert_eq!(Schedule::from(back), schedule);
        }
        assert_eq!(new_id().len(), 16);
        assert_ne!(new_id(), new_id());
    }
}
