//! The alarm clock: one task per server that sleeps until the first instance's alarm is due
//! and sends the due instances an [`Event::Alarm`], starting those that are not in memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::instance::directory::Directory;
use crate::instance::event::Event;
use crate::storage::wakeups::{DueInstance, now_ms};

/// How often the clock reads the store's index for alarms coming into its horizon (and wakes
/// at least this often, so a wall clock that jumps is followed).
const REFILL_EVERY: Duration = Duration::from_secs(1);
/// How often the clock reads the overdue part of the index again: entries whose instance did
/// not move them (it could not start, or its mailbox refused the event).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How long past due an entry must be before a sweep sends its instance the event again.
const OVERDUE_AFTER: Duration = Duration::from_secs(5);
/// In a cluster, other nodes write the index too, and an owner that dies leaves its entries
/// due: every node sweeps the overdue ones this often, and wakes their instances (acquiring
/// the ones nobody live owns).
const CLUSTER_SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long past due an entry must be before a node of a cluster sweeps it up.
const CLUSTER_OVERDUE_AFTER: Duration = Duration::from_secs(1);
/// Most instances woken in one pass; the clock yields between passes.
const PASS: usize = 4096;

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Runs for the server's life.
pub(crate) async fn run(directory: Arc<Directory>) {
    let wakeups = directory.wakeups.clone();
    let mut next_refill = 0;
    let mut next_sweep = 0;
    let mut unknown = HashSet::new();
    let (sweep_every, overdue_after) = match directory.cluster {
        Some(_) => (CLUSTER_SWEEP_EVERY, CLUSTER_OVERDUE_AFTER),
        None => (SWEEP_EVERY, OVERDUE_AFTER),
    };
    loop {
        let now = now_ms();
        if now >= next_refill {
            let overdue = (now >= next_sweep).then(|| now.saturating_sub(ms(overdue_after)));
            let (store, index) = (directory.commits.store().clone(), wakeups.clone());
            let read = tokio::task::spawn_blocking(move || index.refill(&*store, now, overdue));
            match read.await {
                Ok(Ok(())) => {
                    next_refill = now + ms(REFILL_EVERY);
                    if overdue.is_some() {
                        next_sweep = now + ms(sweep_every);
                    }
                }
                // Tried again at the next refill, not at once.
                Ok(Err(e)) => {
                    next_refill = now + ms(REFILL_EVERY);
                    tracing::error!("alarms: cannot read the index of alarms: {e}");
                }
                Err(e) => {
                    next_refill = now + ms(REFILL_EVERY);
                    tracing::error!("alarms: the index read failed: {e}");
                }
            }
        }
        let due = wakeups.take_due(now, PASS);
        let full = due.len() == PASS;
        for instance in due {
            wake(&directory, instance, &mut unknown);
        }
        if full {
            tokio::task::yield_now().await;
            continue;
        }
        let wait = wakeups.next_due().map_or(u64::MAX, |due| due.saturating_sub(now));
        let wait = Duration::from_millis(wait.min(next_refill.saturating_sub(now)).max(1));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wakeups.earlier() => {}
        }
    }
}

/// Sends a due instance its event from a task of its own (its mailbox may be full).
fn wake(directory: &Arc<Directory>, due: DueInstance, unknown: &mut HashSet<String>) {
    let Some(class) = directory.classes.get(due.agent.as_str()).copied() else {
        // An agent this server does not host (any more): its alarms wait in the store.
        if unknown.insert(due.agent.clone()) {
            tracing::warn!(agent = %due.agent, "alarms: an alarm is due for an agent this server does not host");
        }
        return;
    };
    let directory = directory.clone();
    tokio::spawn(async move {
        if directory.dispatch(&class, &due.name, Event::Alarm).await.is_none() {
            // Refused (shutting down, or max_instances): the overdue sweep tries again.
            tracing::debug!(agent = class.name, name = %due.name, "alarms: the instance did not take its alarm");
        }
    });
}
