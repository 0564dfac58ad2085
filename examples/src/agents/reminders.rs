//! `Reminders`: an agent that wakes itself. Reminders are schedules (after a delay, at a time,
//! every N seconds, or by a cron expression); when one fires, the agent adds it to its state
//! and tells every client, whether or not it was in memory or had a client connected.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agents_runtime::ScheduleType;
use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};

use crate::now_ms;

/// Most reminders pending in one instance; more are refused.
pub const MAX_PENDING_REMINDERS: usize = 1000;
/// Most reminders kept in the state's `fired` list (the newest).
pub const MAX_FIRED: usize = 100;
/// The longest reminder text, in characters.
const MAX_TEXT: usize = 1000;
/// The longest interval of `remindEvery`, in seconds: a year.
const MAX_INTERVAL_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

// ANCHOR: reminders
/// The synced state: the reminders that fired, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemindersState {
    /// The last [`MAX_FIRED`] reminders that fired.
    pub fired: Vec<Fired>,
}

/// A reminder that fired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// The schedule's id.
    pub id: String,
    /// What to be reminded of.
    pub text: String,
    /// When it fired, in milliseconds since the epoch.
    pub at: u64,
}

/// A pending reminder, as `list()` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The schedule's id, for `cancel`.
    pub id: String,
    /// `"delayed"`, `"scheduled"`, `"interval"` or `"cron"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it fires next, in milliseconds since the epoch.
    pub time: u64,
    /// What to be reminded of.
    pub text: String,
}

/// What every client gets when a reminder fires, besides the new state.
#[derive(Serialize)]
#[serde(tag = "type", rename = "reminder")]
struct ReminderFrame<'a> {
    id: &'a str,
    text: &'a str,
}

/// Reminders that fire by themselves; see the module documentation.
#[derive(Default)]
pub struct Reminders {
    /// How many reminders are pending, once counted (when one is first added after the
    /// instance started), kept up to date after.
    pending: Option<usize>,
}

#[agent(state = RemindersState, rename_all = "camelCase")]
impl Reminders {
    /// A reminder in `ms` milliseconds; returns its id.
    #[callable]
    fn remind_in(&mut self, ctx: &mut Context<Self>, ms: u64, text: String) -> Result<String> {
        self.add(ctx, Duration::from_millis(ms), text)
    }

    /// A reminder at `epoch_ms` (a time in the past fires at once); returns its id.
    #[callable]
    fn remind_at(
        &mut self,
        ctx: &mut Context<Self>,
        epoch_ms: u64,
        text: String,
    ) -> Result<String> {
        let at = UNIX_EPOCH.checked_add(Duration::from_millis(epoch_ms));
        let at = at.ok_or_else(|| Error::msg("epochMs is past the times this system can hold"))?;
        self.add(ctx, at, text)
    }

    /// A reminder in `cron`'s times (five fields, or six with seconds first); returns its id.
    #[callable]
    fn remind_cron(
        &mut self,
        ctx: &mut Context<Self>,
        cron: String,
        text: String,
    ) -> Result<String> {
        self.add(ctx, When::cron(cron), text)
    }

    /// A reminder every `seconds` (at least a second, at most a year); returns its id.
    #[callable]
    fn remind_every(
        &mut self,
        ctx: &mut Context<Self>,
        seconds: f64,
        text: String,
    ) -> Result<String> {
        if !(1.0..=MAX_INTERVAL_SECONDS).contains(&seconds) {
            return Err(Error::msg("seconds must be a number from 1 to 31536000 (a year)"));
        }
        self.check(ctx, &text)?;
        let callback = RemindersCallback::Remind(text);
        let schedule = ctx.schedule_every(Duration::from_secs_f64(seconds), callback)?;
        // An interval schedule is idempotent: the same one again is not a new reminder.
        self.pending = None;
        Ok(schedule.id)
    }

    /// Cancels a pending reminder; returns whether it was pending.
    #[callable]
    fn cancel(&mut self, ctx: &mut Context<Self>, id: String) -> Result<bool> {
        let cancelled = ctx.cancel_schedule(&id)?;
        if let Some(pending) = &mut self.pending {
            *pending = pending.saturating_sub(usize::from(cancelled));
        }
        Ok(cancelled)
    }

    /// The pending reminders, soonest first.
    #[callable]
    fn list(&self, ctx: &mut Context<Self>) -> Result<Vec<Pending>> {
        let schedules = ctx.get_schedules(ScheduleCriteria::all())?;
        schedules.iter().map(pending).collect()
    }

    /// A reminder fires: it joins the state's `fired` list (every client gets the new state)
    /// and every client gets `{"type":"reminder","id":…,"text":…}`.
    #[callback]
    fn remind(&mut self, ctx: &mut Context<Self>, text: String, schedule: &Schedule) -> Result<()> {
        let mut fired = ctx.state().fired.clone();
        fired.push(Fired { id: schedule.id.clone(), text: text.clone(), at: now_ms() });
        let excess = fired.len().saturating_sub(MAX_FIRED);
        fired.drain(..excess);
        ctx.set_state(RemindersState { fired })?;
        ctx.broadcast(Message::json(&ReminderFrame { id: &schedule.id, text: &text })?, &[]);
        if let Some(pending) = &mut self.pending
            && matches!(schedule.schedule_type(), ScheduleType::Delayed | ScheduleType::Scheduled)
        {
            *pending = pending.saturating_sub(1);
        }
        Ok(())
    }
}
// ANCHOR_END: reminders

impl Reminders {
    /// Schedules a reminder of `text` `when`.
    fn add(
        &mut self,
        ctx: &mut Context<Self>,
        when: impl Into<When>,
        text: String,
    ) -> Result<String> {
        self.check(ctx, &text)?;
        let when = when.into();
        let repeats = matches!(when, When::Cron(_));
        let schedule = ctx.schedule(when, RemindersCallback::Remind(text))?;
        match &mut self.pending {
            // A cron schedule is idempotent: the same one again is not a new reminder.
            Some(_) if repeats => self.pending = None,
            Some(pending) => *pending += 1,
            None => {}
        }
        Ok(schedule.id)
    }

    /// Refuses a reminder over the limits.
    fn check(&mut self, ctx: &Context<Self>, text: &str) -> Result<()> {
        if text.chars().count() > MAX_TEXT {
            return Err(Error::msg("a reminder has at most 1000 characters"));
        }
        let pending = match self.pending {
            Some(pending) => pending,
            None => *self.pending.insert(ctx.get_schedules(ScheduleCriteria::all())?.len()),
        };
        if pending >= MAX_PENDING_REMINDERS {
            return Err(Error::msg("at most 1000 reminders may be pending; cancel some first"));
        }
        Ok(())
    }
}

/// A schedule as `list()` shows it.
fn pending(schedule: &Schedule) -> Result<Pending> {
    let time = schedule.time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Ok(Pending {
        id: schedule.id.clone(),
        kind: schedule.schedule_type().as_str().to_owned(),
        time: u64::try_from(time.as_millis()).unwrap_or(u64::MAX),
        text: schedule.payload()?,
    })
}
