//! The alarm of the Durable Objects storage API, one per instance: what `on_alarm` is told,
//! its retries, and the run under way that `getAlarm` does not report. `storage.setAlarm`,
//! `getAlarm` and `deleteAlarm` are methods of [`Storage`](super::Storage).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::wakeups::Wakeups;

/// An instance's alarm as its hooks see it: the server's index of due alarms, and the alarm
/// whose `on_alarm` is running, which `get_alarm` does not report unless it was set again.
pub(crate) struct AlarmSlot {
    pub(crate) wakeups: Arc<Wakeups>,
    /// What the instance last read or wrote of its alarm, queue and entry in the index: only
    /// its own turns change them, so reads after the first come from here.
    pub(crate) known: Mutex<Known>,
    /// The due time of the alarm being run (0: none).
    running: AtomicU64,
    /// Whether the running `on_alarm` set or deleted the alarm.
    changed: AtomicBool,
}

impl AlarmSlot {
    pub(crate) fn new(wakeups: Arc<Wakeups>) -> Self {
        let known = Mutex::default();
        Self { wakeups, known, running: AtomicU64::new(0), changed: AtomicBool::new(false) }
    }

    /// Forgets what is known (the instance restarts after its writes were lost): the next
    /// reads go to the store.
    pub(crate) fn forget(&self) {
        *crate::sync::lock(&self.known) = Known::default();
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

    /// Whether `get_alarm` hides the stored alarm due at `at`: it is the one `on_alarm` runs
    /// for, and the hook has not set or deleted the alarm since.
    pub(crate) fn hides(&self, at: u64) -> bool {
        let running = self.running.load(Ordering::Acquire);
        running == at && running != 0 && !self.changed.load(Ordering::Acquire)
    }

    /// The running hook (if any) set or deleted the alarm.
    pub(crate) fn touched(&self) {
        self.changed.store(true, Ordering::Release);
    }
}

/// The alarm as stored: when it is due, and how many times it has been retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoredAlarm {
    pub(crate) at: u64,
    pub(crate) retries: u32,
}

/// An instance's alarm, whether its queue holds items, and its due time in the index, as far
/// as they are known (`None`: read the store).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Known {
    pub(crate) alarm: Option<Option<StoredAlarm>>,
    pub(crate) queued: Option<bool>,
    pub(crate) wake: Option<Option<u64>>,
}

/// Milliseconds since the Unix epoch of `time` (0 before it).
pub(crate) fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
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
