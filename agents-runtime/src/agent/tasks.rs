//! [`Schedule`] and [`QueueItem`]: the stored calls of `#[callback]` methods, as hooks and
//! the callbacks themselves see them.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A pending schedule (`Schedule<T>` of the Agents SDK).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Schedule {
    /// Its id, unique within the instance.
    pub id: String,
    /// The `#[callback]` method it calls.
    pub callback: String,
    /// The payload the method gets, as JSON; [`payload`](Self::payload) decodes it.
    pub payload: serde_json::Value,
    /// When it next runs.
    pub time: SystemTime,
    /// How it was scheduled.
    pub kind: ScheduleKind,
}

impl Schedule {
    /// The payload as a `T`.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.payload.clone()).map_err(|e| {
            Error::msg(format!("the payload of schedule {} does not decode: {e}", self.id))
        })
    }

    /// Its type, as the Agents SDK names it.
    pub fn schedule_type(&self) -> ScheduleType {
        match self.kind {
            ScheduleKind::Scheduled => ScheduleType::Scheduled,
            ScheduleKind::Delayed { .. } => ScheduleType::Delayed,
            ScheduleKind::Cron { .. } => ScheduleType::Cron,
            ScheduleKind::Interval { .. } => ScheduleType::Interval,
        }
    }
}

/// How a schedule was made, and what makes it repeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// At a time, once.
    Scheduled,
    /// After a delay, once.
    Delayed {
        /// The delay it was scheduled with.
        delay: Duration,
    },
    /// At every time a cron expression matches.
    Cron {
        /// The expression.
        cron: String,
    },
    /// Every interval, from when it was scheduled (`scheduleEvery`).
    Interval {
        /// The interval.
        interval: Duration,
    },
}

/// The `type` of a schedule: `"scheduled"`, `"delayed"`, `"cron"` or `"interval"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleType {
    /// At a time, once.
    Scheduled,
    /// After a delay, once.
    Delayed,
    /// By a cron expression.
    Cron,
    /// Every interval.
    Interval,
}

impl ScheduleType {
    /// The name the Agents SDK gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Delayed => "delayed",
            Self::Cron => "cron",
            Self::Interval => "interval",
        }
    }
}

/// A queued call (`QueueItem<T>` of the Agents SDK).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct QueueItem {
    /// Its id, unique within the instance.
    pub id: String,
    /// The `#[callback]` method it calls.
    pub callback: String,
    /// The payload the method gets, as JSON; [`payload`](Self::payload) decodes it.
    pub payload: serde_json::Value,
    /// When it was queued.
    pub created_at: SystemTime,
}

impl QueueItem {
    /// The payload as a `T`.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.payload.clone()).map_err(|e| {
            Error::msg(format!("the payload of queue item {} does not decode: {e}", self.id))
        })
    }
}
