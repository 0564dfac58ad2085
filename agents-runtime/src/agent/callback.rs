//! [`Callback`]: a call of one of an agent's `#[callback]` methods with its payload, which
//! schedules and the queue store and run later (the `callback` and `payload` of
//! `this.schedule(when, callback, payload)` and `this.queue(callback, payload)`).

use crate::agent::Agent;
use crate::agent::tasks::{QueueItem, Schedule};
use crate::error::{Error, Result};

/// A call of one of an agent's `#[callback]` methods with its payload, as
/// [`Context::schedule`](crate::Context::schedule) and [`Context::queue`](crate::Context::queue)
/// take it.
///
/// `#[agent]` generates `{Agent}Callback`, an enum with one variant per `#[callback]` method
/// (`remind` → `Remind(payload)`), which implements it. The method and the payload's type are
/// so checked when the code compiles; the payload is stored as JSON until the call runs.
///
/// The agent is the trait's parameter, not an associated type, so an agent that is private to
/// its module can have callbacks.
pub trait Callback<A: Agent>: Send {
    /// The method's name.
    fn name(&self) -> &'static str;

    /// What the method is told about why it runs: a `&Schedule`, a `&QueueItem`, or nothing.
    fn trigger(&self) -> Option<TriggerKind>;

    /// The payload, as JSON (`null` for a method without one).
    fn into_payload(self) -> serde_json::Result<serde_json::Value>;
}

/// Which kind of run a `#[callback]` method's last parameter takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerKind {
    /// `&Schedule`: it runs from schedules only.
    Schedule,
    /// `&QueueItem`: it runs from the queue only.
    Queue,
}

/// Why a `#[callback]` method runs: the schedule that came due or the queue item taken.
#[derive(Clone, Copy, Debug)]
pub enum Trigger<'a> {
    /// A schedule came due.
    Schedule(&'a Schedule),
    /// An item of the queue is being run.
    Queue(&'a QueueItem),
}

impl<'a> Trigger<'a> {
    /// The schedule, for a method that takes `&Schedule`; `#[agent]` calls it.
    pub fn schedule(self, callback: &str) -> Result<&'a Schedule> {
        match self {
            Self::Schedule(schedule) => Ok(schedule),
            Self::Queue(_) => Err(wrong_trigger(callback, TriggerKind::Schedule)),
        }
    }

    /// The queue item, for a method that takes `&QueueItem`; `#[agent]` calls it.
    pub fn queue_item(self, callback: &str) -> Result<&'a QueueItem> {
        match self {
            Self::Queue(item) => Ok(item),
            Self::Schedule(_) => Err(wrong_trigger(callback, TriggerKind::Queue)),
        }
    }
}

/// The error for running `callback`, which takes a `&Schedule` or a `&QueueItem`, the other way.
pub(crate) fn wrong_trigger(callback: &str, takes: TriggerKind) -> Error {
    match takes {
        TriggerKind::Schedule => Error::msg(format!(
            "callback `{callback}` takes a `&Schedule`: schedule it, it cannot be queued"
        )),
        TriggerKind::Queue => Error::msg(format!(
            "callback `{callback}` takes a `&QueueItem`: queue it, it cannot be scheduled"
        )),
    }
}

/// The error for a stored callback this build's agent does not have (a method renamed or
/// removed since it was scheduled).
pub fn unknown_callback<A: Agent>(callback: &str) -> Error {
    Error::msg(format!("{} has no #[callback] method named `{callback}`", A::NAME))
}

/// A stored payload as the type callback `callback` takes.
pub fn decode_payload<T: serde::de::DeserializeOwned>(
    payload: serde_json::Value,
    callback: &str,
) -> Result<T> {
    serde_json::from_value(payload).map_err(|e| {
        Error::msg(format!(
            "the payload of callback `{callback}` does not decode as {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}

/// A callback's name and payload, checked against the agent's methods and the way it is used.
pub(crate) fn prepare<A: Agent, C: Callback<A>>(
    callback: C,
    used_as: TriggerKind,
) -> Result<(&'static str, serde_json::Value)> {
    let name = callback.name();
    if let Some(takes) = callback.trigger().filter(|&takes| takes != used_as) {
        return Err(wrong_trigger(name, takes));
    }
    let payload = callback.into_payload().map_err(|e| {
        Error::msg(format!("the payload of callback `{name}` is not serializable: {e}"))
    })?;
    Ok((name, payload))
}
