//! [`Mailbox`]: an instance's events in arrival order, at most `mailbox_capacity` of them. It
//! lives as long as the instance, hibernation included, and allocates nothing while empty.
//! A hibernated instance has no task: its mailbox keeps the record the task left, and the
//! next event starts a task from it, as a Durable Object is woken by its next event.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::Semaphore;

use crate::instance::event::Event;
use crate::sync::lock;

/// A hibernated instance, as its task left it: starting it again is the one thing to do.
/// `O` is the owner of the mailbox, the instance.
pub(crate) trait Sleeper<O>: Send {
    /// Starts the host task of `instance` again from this record.
    fn wake(self: Box<Self>, instance: Arc<O>);
}

/// Why an event was not taken; the event comes back.
pub(crate) enum Refused {
    /// `mailbox_capacity` events wait already.
    Full(Event),
    /// The instance is gone (it left memory, or the server shut down): the directory has, or
    /// makes, another.
    Closed,
}

/// The mailbox of an instance of type `O` (generic only to keep this module below the
/// instance's).
pub(crate) struct Mailbox<O> {
    inner: Mutex<Inner<O>>,
    /// One permit per free place: senders wait here, first come first served.
    room: Semaphore,
}

struct Inner<O> {
    queue: VecDeque<Event>,
    host: Host<O>,
}

/// Where the instance is, and whether the directory forgot it (shutdown): then its task ends
/// once it has no connections left and nothing queued, told once through
/// [`Mailbox::poll_recv`]. (The flag lives in the variants, in the room of the enum's tag:
/// every instance carries this.)
enum Host<O> {
    /// A task runs the instance; the waker is set while it waits for an event. `Waits`:
    /// whether its turn waits for something (see [`Mailbox::turn`]).
    Running(Option<Waker>, Forgotten, Waits),
    /// Hibernated: no task. The next event starts one from this record.
    Asleep(Box<dyn Sleeper<O>>, Forgotten),
    /// The instance is gone: events are refused.
    Closed,
}

impl<O> Host<O> {
    fn forgotten(&self) -> Forgotten {
        match self {
            Host::Running(_, forgotten, _) | Host::Asleep(_, forgotten) => *forgotten,
            Host::Closed => Forgotten::Told,
        }
    }
}

/// Whether the running turn waited for something: then events that come are heard late.
#[derive(Clone, Copy, PartialEq)]
enum Waits {
    No,
    Yes,
}

#[derive(Clone, Copy, PartialEq)]
enum Forgotten {
    No,
    /// Forgotten, and the task not told yet.
    Untold,
    Told,
}

/// A place in the mailbox of instance `O`, taken ahead of the event (see [`Mailbox::reserve`]).
pub(crate) struct Permit<O: AsRef<Mailbox<O>>> {
    instance: Arc<O>,
}

impl<O: AsRef<Mailbox<O>>> Permit<O> {
    /// Puts `event` in the place this permit holds; the instance is started if it hibernated.
    /// `Err` gives the event back if the instance is gone.
    pub(crate) fn send(self, event: Event) -> Result<(), Event> {
        self.instance.as_ref().as_ref().push(&self.instance, event)
    }
}

impl<O: AsRef<Mailbox<O>>> Mailbox<O> {
    pub(crate) fn new(capacity: usize) -> Self {
        let host = Host::Running(None, Forgotten::No, Waits::No);
        let inner = Inner { queue: VecDeque::new(), host };
        Self { inner: Mutex::new(inner), room: Semaphore::new(capacity) }
    }

    /// Puts `event` at the back, unless the mailbox is full or closed. `owner` is the instance
    /// this mailbox belongs to: a hibernated one is started.
    pub(crate) fn try_send(&self, owner: &Arc<O>, event: Event) -> Result<(), Refused> {
        match self.room.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(Refused::Full(event)),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Refused::Closed),
        }
        self.push(owner, event).map_err(|_| Refused::Closed)
    }

    /// Puts `event` at the back, waiting for room; `Err` gives it back if the instance is gone.
    pub(crate) async fn send(&self, owner: &Arc<O>, event: Event) -> Result<(), Event> {
        match self.room.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(event),
        }
        self.push(owner, event)
    }

    /// Waits for a place, then holds it for [`Permit::send`]; `None` if the instance is gone.
    pub(crate) async fn reserve(owner: Arc<O>) -> Option<Permit<O>> {
        (*owner).as_ref().room.acquire().await.ok()?.forget();
        Some(Permit { instance: owner })
    }

    /// Queues an event whose place is taken: wakes the task, or starts it.
    fn push(&self, owner: &Arc<O>, event: Event) -> Result<(), Event> {
        let mut inner = lock(&self.inner);
        let asleep = match &mut inner.host {
            Host::Closed => {
                drop(inner);
                self.room.add_permits(1);
                return Err(event);
            }
            Host::Running(waker, _, waits) => {
                let waker = waker.take();
                if *waits == Waits::Yes {
                    event.heard_late();
                }
                inner.queue.push_back(event);
                drop(inner);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return Ok(());
            }
            Host::Asleep(_, forgotten) => {
                let running = Host::Running(None, *forgotten, Waits::No);
                std::mem::replace(&mut inner.host, running)
            }
        };
        inner.queue.push_back(event);
        drop(inner);
        if let Host::Asleep(record, _) = asleep {
            record.wake(owner.clone());
        }
        Ok(())
    }

    /// The next event; `None` once, when the directory forgot the instance.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut inner = lock(&self.inner);
        if let Some(event) = inner.queue.pop_front() {
            drop(inner);
            self.room.add_permits(1);
            return Poll::Ready(Some(event));
        }
        match &mut inner.host {
            Host::Running(_, forgotten @ Forgotten::Untold, _) => {
                *forgotten = Forgotten::Told;
                Poll::Ready(None)
            }
            Host::Running(Some(waker), _, _) if waker.will_wake(cx.waker()) => Poll::Pending,
            Host::Running(waker, _, _) => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            // Only the instance's task receives, and it runs: neither asleep nor closed.
            Host::Asleep(..) | Host::Closed => Poll::Pending,
        }
    }

    /// The next event; `None` once, when the directory forgot the instance.
    pub(crate) async fn recv(&self) -> Option<Event> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Runs `turn`, the instance's turn. Once it waits for something (storage, a timer,
    /// another service), what waits in the mailbox, and what comes until the turn ends, is
    /// told it will be heard late ([`Event::heard_late`]): a socket's 101 is not held back
    /// for its connect turn then.
    pub(crate) async fn turn(&self, turn: impl Future<Output = ()> + Unpin) {
        let mut turn = turn;
        let mut waited = false;
        poll_fn(|cx| {
            let polled = Pin::new(&mut turn).poll(cx);
            if polled.is_pending() && !waited {
                waited = true;
                self.turn_waits(Waits::Yes);
            }
            polled
        })
        .await;
        if waited {
            self.turn_waits(Waits::No);
        }
    }

    fn turn_waits(&self, now: Waits) {
        let mut inner = lock(&self.inner);
        let Inner { queue, host } = &mut *inner;
        if let Host::Running(_, _, waits) = host {
            *waits = now;
            if now == Waits::Yes {
                queue.iter().for_each(Event::heard_late);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.inner).queue.is_empty()
    }

    /// Whether the instance is gone: events are refused.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(lock(&self.inner).host, Host::Closed)
    }

    /// Whether the directory forgot the instance (shutdown).
    pub(crate) fn is_forgotten(&self) -> bool {
        lock(&self.inner).host.forgotten() != Forgotten::No
    }

    /// Gives back the queue's memory if it is empty and at most `places` long: an instance
    /// that goes idle frees a small queue (the next event allocates one again), and one idle
    /// for a while frees the queue a burst grew.
    pub(crate) fn shrink(&self, places: usize) {
        let mut inner = lock(&self.inner);
        if inner.queue.is_empty() && inner.queue.capacity() <= places {
            inner.queue = VecDeque::new();
        }
    }

    /// Hands `record` to the mailbox for the next event to start the instance from, unless
    /// events came meanwhile: then `record` comes back and the task goes on.
    pub(crate) fn sleep<S: Sleeper<O> + 'static>(&self, record: Box<S>) -> Result<(), Box<S>> {
        let mut inner = lock(&self.inner);
        if !inner.queue.is_empty() || inner.host.forgotten() != Forgotten::No {
            return Err(record);
        }
        inner.queue = VecDeque::new();
        inner.host = Host::Asleep(record, Forgotten::No);
        Ok(())
    }

    /// Closes the mailbox if nothing waits in it: later events are refused (their senders go
    /// to the directory again). Returns whether it closed.
    pub(crate) fn close_if_empty(&self) -> bool {
        let mut inner = lock(&self.inner);
        if !inner.queue.is_empty() {
            return false;
        }
        inner.host = Host::Closed;
        drop(inner);
        self.room.close();
        true
    }

    /// The directory forgot the instance (shutdown): its task hears it once, and ends when it
    /// has no connections left. A hibernated instance has connections: their closes wake it.
    pub(crate) fn forget(&self) {
        let mut inner = lock(&self.inner);
        let waker = match &mut inner.host {
            Host::Running(waker, forgotten, _) => {
                *forgotten = Forgotten::Untold;
                waker.take()
            }
            Host::Asleep(_, forgotten) => {
                *forgotten = Forgotten::Untold;
                None
            }
            Host::Closed => None,
        };
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::{Mailbox, Refused, Sleeper};
    use crate::instance::event::Event;

    /// An owner that counts how often it was woken.
    struct Owner {
        mailbox: Mailbox<Owner>,
        woken: AtomicUsize,
    }

    impl AsRef<Mailbox<Owner>> for Owner {
        fn as_ref(&self) -> &Mailbox<Owner> {
            &self.mailbox
        }
    }

    struct Record(Arc<Mutex<Vec<&'static str>>>);

    impl Sleeper<Owner> for Record {
        fn wake(self: Box<Self>, owner: Arc<Owner>) {
            owner.woken.fetch_add(1, Ordering::Relaxed);
            self.0.lock().unwrap().push("woken");
        }
    }

    fn owner(capacity: usize) -> Arc<Owner> {
        Arc::new(Owner { mailbox: Mailbox::new(capacity), woken: AtomicUsize::new(0) })
    }

    fn recv(owner: &Owner) -> Option<Event> {
        let waker = std::task::Waker::noop();
        match owner.mailbox.poll_recv(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(event) => event,
            std::task::Poll::Pending => panic!("nothing to receive"),
        }
    }

    #[test]
    fn a_full_mailbox_refuses_until_an_event_is_taken() {
        let owner = owner(2);
        assert!(owner.mailbox.try_send(&owner, Event::Alarm).is_ok());
        assert!(owner.mailbox.try_send(&owner, Event::StorageLost).is_ok());
        assert!(matches!(owner.mailbox.try_send(&owner, Event::Alarm), Err(Refused::Full(_))));
        assert!(matches!(recv(&owner), Some(Event::Alarm)), "in arrival order");
        assert!(owner.mailbox.try_send(&owner, Event::Alarm).is_ok());
        assert!(matches!(recv(&owner), Some(Event::StorageLost)));
    }

    #[test]
    fn an_empty_mailbox_holds_no_memory_and_a_closed_one_refuses() {
        let owner = owner(1024);
        assert_eq!(super::lock(&owner.mailbox.inner).queue.capacity(), 0);
        owner.mailbox.try_send(&owner, Event::Alarm).ok().unwrap();
        assert!(!owner.mailbox.close_if_empty(), "an event waits");
        recv(&owner);
        owner.mailbox.shrink(16);
        assert_eq!(super::lock(&owner.mailbox.inner).queue.capacity(), 0);
        assert!(owner.mailbox.close_if_empty());
        assert!(matches!(owner.mailbox.try_send(&owner, Event::Alarm), Err(Refused::Closed)));
        let sent = futures_util::FutureExt::now_or_never(owner.mailbox.send(&owner, Event::Alarm));
        assert!(matches!(sent, Some(Err(Event::Alarm))), "a waiting sender is refused too");
    }

    #[test]
    fn the_next_event_wakes_a_sleeping_instance_once() {
        let owner = owner(8);
        let log = Arc::new(Mutex::new(Vec::new()));
        owner.mailbox.try_send(&owner, Event::Alarm).ok().unwrap();
        let record = Box::new(Record(log.clone()));
        let record = owner.mailbox.sleep(record).expect_err("an event waits: no sleep");
        recv(&owner);
        assert!(owner.mailbox.sleep(record).is_ok());
        assert_eq!(owner.woken.load(Ordering::Relaxed), 0);
        owner.mailbox.try_send(&owner, Event::Alarm).ok().unwrap();
        owner.mailbox.try_send(&owner, Event::StorageLost).ok().unwrap();
        assert_eq!(owner.woken.load(Ordering::Relaxed), 1, "woken by the first event only");
        assert!(matches!(recv(&owner), Some(Event::Alarm)));
        assert_eq!(*log.lock().unwrap(), ["woken"]);
    }

    #[test]
    fn a_forgotten_instance_hears_it_once_and_does_not_sleep() {
        let owner = owner(8);
        owner.mailbox.try_send(&owner, Event::Alarm).ok().unwrap();
        owner.mailbox.forget();
        assert!(matches!(recv(&owner), Some(Event::Alarm)), "queued events come first");
        assert!(recv(&owner).is_none());
        assert!(owner.mailbox.is_forgotten());
        let record = Box::new(Record(Arc::default()));
        assert!(owner.mailbox.sleep(record).is_err(), "shutting down: the task stays to end");
    }

    /// A socket's connect, queued or arriving while the turn ahead of it waits, does not
    /// hold back the socket's 101 (the socket task may write it); while turns run at once,
    /// it does.
    #[tokio::test]
    async fn connects_behind_a_turn_that_waits_let_their_101_go() {
        use std::task::{Context, Poll, Waker};

        use crate::instance::event::{ConnectRequest, ConnectionParts};
        use crate::outbox::{Link, LinkHandle, Next};
        use crate::request::ConnectionContext;
        use crate::storage::MemoryStore;
        use crate::storage::durability::GroupCommit;

        let commits =
            GroupCommit::start(Arc::new(MemoryStore::new()), std::time::Duration::from_secs(5));
        let connect = || {
            let link = Arc::new(Link::new(8, None));
            link.hold_response(b"HTTP/1.1 101 \r\n\r\n");
            let parts = ConnectionParts {
                key: 1,
                id: "c".into(),
                uri: "/".into(),
                link: LinkHandle::new(link.clone()).into(),
            };
            let conn_ctx = ConnectionContext::new(
                http::Method::GET,
                http::Uri::from_static("/"),
                http::HeaderMap::new(),
            );
            (link, Event::Connect(Box::new(ConnectRequest { parts, conn_ctx })))
        };
        let released = |link: &Link| {
            let next =
                link.poll_next(&mut Context::from_waker(Waker::noop()), &commits, false, false);
            matches!(next, Poll::Ready(Next::Write))
        };
        let owner = owner(8);
        let mailbox = &owner.mailbox;

        let (queued, event) = connect();
        mailbox.try_send(&owner, event).ok().unwrap();
        mailbox.turn(Box::pin(async {})).await;
        assert!(!released(&queued), "a turn that does not wait holds nothing up");

        let (arriving, event) = connect();
        let mut event = Some(event);
        let mut polls = 0;
        let waits = std::future::poll_fn(|cx| {
            polls += 1;
            if polls == 1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if polls == 2 {
                assert!(released(&queued), "what was queued is told at the first wait");
                mailbox.try_send(&owner, event.take().unwrap()).ok().unwrap();
                assert!(released(&arriving), "what comes while it waits is told at once");
            }
            Poll::Ready(())
        });
        mailbox.turn(Box::pin(waits)).await;
    }
}
