//! The alarm of the Durable Objects storage API: `storage.setAlarm`, `getAlarm` and
//! `deleteAlarm` on [`Storage`], one alarm per instance; the `on_alarm` hook runs when it is due.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::kv::Storage;
use super::timers::{StoredAlarm, Timers};
use super::wakeups::Wakeups;
use crate::error::Result;

/// An instance's alarm as its hooks see it: the server's index of due alarms, and the alarm
/// whose `on_alarm` is running, which `get_alarm` does not report unless it was set again.
pub(crate) struct AlarmSlot {
    pub(crate) wakeups: Arc<Wakeups>,
    /// The due time of the alarm being run (0: none).
    running: AtomicU64,
    /// Whether the running `on_alarm` set or deleted the alarm.
    changed: AtomicBool,
}

impl AlarmSlot {
    pub(crate) fn new(wakeups: Arc<Wakeups>) -> Self {
        Self { wakeups, running: AtomicU64::new(0), changed: AtomicBool::new(false) }
    }

    /// `on_alarm` starts for the alarm due at `at`.
    pub(crate) fn begin_run(&self, at: u64) {
        self.changed.store(false, Ordering::Release);
        self.running.store(at, Ordering::Release);
    }

    /// `on_alarm` is done; returns whether it set or deleted the alarm.
    pub(crate) fn end_run(&self) -> bool {
        self.running.store(0, Ordering::Release);
        self.changed.swap(false, Ordering::AcqRel)
    }
}

/// Milliseconds since the Unix epoch of `time` (0 before it).
fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

impl Storage<'_> {
    fn timers(&self) -> Timers<'_> {
        Timers::new(self.gate, self.keys, &self.alarm.wakeups)
    }

    /// When the alarm is set for, if it is (`storage.getAlarm()`). While `on_alarm` runs, the
    /// alarm it runs for is not reported, unless the hook set it again.
    pub fn get_alarm(&self) -> Result<Option<SystemTime>> {
        let Some(alarm) = self.timers().alarm()? else { return Ok(None) };
        let running = self.alarm.running.load(Ordering::Acquire);
        if running == alarm.at && running != 0 && !self.alarm.changed.load(Ordering::Acquire) {
            return Ok(None);
        }
        Ok(Some(UNIX_EPOCH + Duration::from_millis(alarm.at)))
    }

    /// Sets the alarm for `time`, replacing the one set before (`storage.setAlarm(time)`):
    /// `on_alarm` runs then, waking the instance if it is hibernated or out of memory, and
    /// after a restart. A time in the past runs it at once. Like any write, it is durable
    /// before the frames sent after it go out.
    pub fn set_alarm(&self, time: SystemTime) -> Result<()> {
        let at = to_ms(time).max(1);
        self.timers().set_alarm(StoredAlarm { at, retries: 0 })?;
        self.alarm.changed.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes the alarm if one is set (`storage.deleteAlarm()`); returns whether one was.
    /// Inside `on_alarm`, it also stops the retries of a run that fails.
    pub fn delete_alarm(&self) -> Result<bool> {
        let deleted = self.timers().delete_alarm()?;
        self.alarm.changed.store(true, Ordering::Release);
        Ok(deleted)
    }
}

/// What `on_alarm` is told about the run (`alarmInfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlarmInfo {
    /// How many times this alarm has been retried after `on_alarm` failed (0 the first time).
    pub retry_count: u32,
    /// Whether this run is a retry (`retry_count > 0`).
    pub is_retry: bool,
    /// When the alarm was set for.
    pub scheduled_time: SystemTime,
}

impl AlarmInfo {
    pub(crate) fn new(alarm: StoredAlarm) -> Self {
        Self {
            retry_count: alarm.retries,
            is_retry: alarm.retries > 0,
            scheduled_time: UNIX_EPOCH + Duration::from_millis(alarm.at),
        }
    }
}

/// Most retries of a failing `on_alarm`, as on Durable Objects.
pub const MAX_ALARM_RETRIES: u32 = 6;

/// The delay before retry number `retry` (from 1): 2 s, doubling each time.
pub(crate) fn alarm_retry_delay(retry: u32) -> Duration {
    Duration::from_secs(2) * 2u32.saturating_pow(retry.saturating_sub(1).min(16))
}
