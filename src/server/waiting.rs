//! Who waits for what on a session, kept under the session's own lock.
//!
//! A waiter checks the session and registers its waker under one lock, and
//! whoever changes the session takes the wakers under that same lock: no
//! wake-up can fall between the check and the wait, and no second lock is
//! taken per message (tokio's `Notify` has its own).

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

/// What a session's waiters wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Frames may be ready for the attached receiver.
    Frames,
    /// Inbound messages or the close may be ready for the application.
    Inbound,
    /// The outgoing queue drained or the session closed.
    OutgoingRoom,
    /// The application took inbound messages or the session closed.
    InboundRoom,
    /// A deadline may have moved earlier.
    Deadline,
}

const EVENTS: usize = 5;
const ALL: [Event; EVENTS] = [
    Event::Frames,
    Event::Inbound,
    Event::OutgoingRoom,
    Event::InboundRoom,
    Event::Deadline,
];

/// More waiters than this on one session (tasks that waited and went away
/// leave their waker behind) are all woken and forgotten: a waiter that is
/// still there looks again and registers anew.
const MAX_EXTRA_WAITERS: usize = 64;

#[derive(Default)]
pub(crate) struct Waiters {
    /// How often each event has happened; a waiter that saw the count before
    /// its check knows whether it missed one.
    counts: [u32; EVENTS],
    /// One waiter per event, the common case, without an allocation.
    first: [Option<Waker>; EVENTS],
    /// Further waiters (another task waiting for the same event); rare,
    /// so boxed: 8 bytes in every session rather than 24.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<(Event, Waker)>>>,
}

impl Waiters {
    /// How often `event` has happened so far (wrapping).
    pub fn count(&self, event: Event) -> u32 {
        self.counts[event as usize]
    }

    /// `waker` is woken the next time `event` happens.
    pub fn register(&mut self, event: Event, waker: &Waker) {
        let first = &mut self.first[event as usize];
        match first {
            None => *first = Some(waker.clone()),
            Some(known) if known.will_wake(waker) => {}
            Some(_) => {
                let more = self.more.get_or_insert_with(Default::default);
                if more
                    .iter()
                    .any(|(e, known)| *e == event && known.will_wake(waker))
                {
                    return;
                }
                if more.len() >= MAX_EXTRA_WAITERS {
                    for (_, stale) in more.drain(..) {
                        stale.wake();
                    }
                }
                more.push((event, waker.clone()));
            }
        }
    }

    /// `event` happened: its waiters, to wake once the lock is released.
    #[must_use = "the waiters must be woken"]
    pub fn happened(&mut self, event: Event) -> ToWake {
        let index = event as usize;
        self.counts[index] = self.counts[index].wrapping_add(1);
        let mut to_wake = ToWake {
            first: self.first[index].take(),
            more: Vec::new(),
        };
        if let Some(more) = self
            .more
            .as_mut()
            .filter(|more| more.iter().any(|(e, _)| *e == event))
        {
            let (matching, rest) = std::mem::take(&mut **more)
                .into_iter()
                .partition(|(e, _)| *e == event);
            **more = rest;
            to_wake.more = matching.into_iter().map(|(_, waker)| waker).collect();
        }
        to_wake
    }

    /// Every event happened (a close, a receiver coming or going).
    #[must_use = "the waiters must be woken"]
    pub fn all_happened(&mut self) -> ToWake {
        let mut to_wake = ToWake::default();
        for event in ALL {
            let index = event as usize;
            self.counts[index] = self.counts[index].wrapping_add(1);
            to_wake.more.extend(self.first[index].take());
        }
        if let Some(more) = self.more.take() {
            to_wake
                .more
                .extend(more.into_iter().map(|(_, waker)| waker));
        }
        to_wake
    }

    /// Ready once `event` happened after the count `seen`; else registers
    /// the task to be woken when it does.
    pub fn poll_changed(&mut self, event: Event, seen: u32, cx: &Context<'_>) -> Poll<()> {
        if self.count(event) != seen {
            return Poll::Ready(());
        }
        self.register(event, cx.waker());
        Poll::Pending
    }
}

/// Wakers taken under the session lock, woken after it is released.
#[derive(Default)]
pub(crate) struct ToWake {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl ToWake {
    /// These wakers and `other`'s.
    pub fn and(mut self, other: ToWake) -> ToWake {
        match (&self.first, other.first) {
            (None, first) => self.first = first,
            (Some(_), Some(waker)) => self.more.push(waker),
            (Some(_), None) => {}
        }
        self.more.extend(other.more);
        self
    }

    pub fn wake(self) {
        let wake = |waker: Waker| {
            if !is_being_polled(&waker) {
                waker.wake();
            }
        };
        if let Some(waker) = self.first {
            wake(waker);
        }
        for waker in self.more {
            wake(waker);
        }
    }
}

thread_local! {
    /// The task that a [`RepolledUntilIdle`] is polling on this thread.
    static BEING_POLLED: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

fn is_being_polled(waker: &Waker) -> bool {
    BEING_POLLED.with_borrow(|polled| polled.as_ref().is_some_and(|own| own.will_wake(waker)))
}

pin_project_lite::pin_project! {
    /// Runs a future whose every poll looks again at everything it waits
    /// for before it returns pending (a loop around a `select!` over all of
    /// it). Such a future need not be woken by what it does itself: a
    /// WebSocket connection hands a message to its handler, the handler
    /// answers, and no wake-up makes the task run once more for nothing.
    pub(crate) struct RepolledUntilIdle<F> {
        #[pin]
        future: F,
    }
}

impl<F> RepolledUntilIdle<F> {
    pub fn new(future: F) -> Self {
        RepolledUntilIdle { future }
    }
}

impl<F: Future> Future for RepolledUntilIdle<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Forgets the task when its poll ends, even by a panic.
        struct Polling;
        impl Drop for Polling {
            fn drop(&mut self) {
                BEING_POLLED.with_borrow_mut(|polled| *polled = None);
            }
        }
        BEING_POLLED.with_borrow_mut(|polled| *polled = Some(cx.waker().clone()));
        let _polling = Polling;
        self.project().future.poll(cx)
    }
}

/// A future run inside another task's poll (a WebSocket connection runs its
/// application's handler so) that is polled again only once something woke
/// it: the connection looks at everything it waits for on every pass, and
/// most passes have nothing for the handler.
pub(crate) struct PolledWhenWoken<F> {
    future: F,
    flag: Arc<WakeFlag>,
    waker: Waker,
}

struct WakeFlag {
    woken: AtomicBool,
    /// The task that runs the future: always the same one, as the future
    /// is part of that task's own.
    task: OnceLock<Waker>,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        // A task woken while it runs looks at the flag before it waits.
        if let Some(task) = self.task.get() {
            if !is_being_polled(task) {
                task.wake_by_ref();
            }
        }
    }
}

impl<F> PolledWhenWoken<F> {
    pub fn new(future: F) -> Self {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: OnceLock::new(),
        });
        PolledWhenWoken {
            future,
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future + Unpin> Future for PolledWhenWoken<F> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // A future that wakes itself as it runs gets one more turn here,
        // then waits for the task's next poll.
        for _ in 0..2 {
            if !this.flag.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            this.flag.task.get_or_init(|| cx.waker().clone());
            let poll =
                std::pin::Pin::new(&mut this.future).poll(&mut Context::from_waker(&this.waker));
            if poll.is_ready() {
                return poll;
            }
        }
        if this.flag.woken.load(Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// A waker that only raises a flag: a connection registers it with the
/// session for an event once, then looks at the flag, not the session, on
/// every pass. The wake reaches the task unless the task is running, and a
/// running task looks at the flag before it waits.
pub(crate) struct Signal {
    flag: Arc<WakeFlag>,
    waker: Waker,
}

impl Signal {
    pub fn new() -> Self {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(false),
            task: OnceLock::new(),
        });
        Signal {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// The waker to register with the session.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Completes once per wake of [`Signal::waker`] since it last completed.
    pub fn raised(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            // Most passes find it down: a load, not a write.
            if self.flag.woken.load(Ordering::SeqCst) {
                self.flag.woken.store(false, Ordering::SeqCst);
                return Poll::Ready(());
            }
            if self.flag.task.get().is_none() {
                self.flag.task.get_or_init(|| cx.waker().clone());
                // A wake from another thread before the task was known.
                if self.flag.woken.swap(false, Ordering::SeqCst) {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::atomic::AtomicUsize;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    fn wakes(counter: &CountingWaker) -> usize {
        counter.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_waiter_is_woken_once_by_its_event_and_not_by_others() {
        let mut waiters = Waiters::default();
        let (counter, w) = waker();
        waiters.register(Event::Inbound, &w);
        waiters.register(Event::Inbound, &w);
        waiters.happened(Event::Frames).wake();
        assert_eq!(wakes(&counter), 0);
        waiters.happened(Event::Inbound).wake();
        assert_eq!(wakes(&counter), 1);
        waiters.happened(Event::Inbound).wake();
        assert_eq!(wakes(&counter), 1, "a waker is taken when it is woken");
    }

    #[test]
    fn every_task_waiting_for_an_event_is_woken() {
        let mut waiters = Waiters::default();
        let (a, wa) = waker();
        let (b, wb) = waker();
        let (c, wc) = waker();
        waiters.register(Event::OutgoingRoom, &wa);
        waiters.register(Event::OutgoingRoom, &wb);
        waiters.register(Event::InboundRoom, &wc);
        waiters.happened(Event::OutgoingRoom).wake();
        assert_eq!((wakes(&a), wakes(&b), wakes(&c)), (1, 1, 0));
        waiters.all_happened().wake();
        assert_eq!((wakes(&a), wakes(&b), wakes(&c)), (1, 1, 1));
    }

    #[test]
    fn an_event_after_the_count_seen_is_never_missed() {
        let mut waiters = Waiters::default();
        let (_, w) = waker();
        let cx = Context::from_waker(&w);
        let seen = waiters.count(Event::Deadline);
        waiters.happened(Event::Deadline).wake();
        assert!(waiters.poll_changed(Event::Deadline, seen, &cx).is_ready());
        let seen = waiters.count(Event::Deadline);
        assert!(waiters
            .poll_changed(Event::Deadline, seen, &cx)
            .is_pending());
    }

    #[test]
    fn waiters_left_behind_are_bounded() {
        let mut waiters = Waiters::default();
        let counters: Vec<_> = (0..MAX_EXTRA_WAITERS + 2).map(|_| waker()).collect();
        for (_, w) in &counters {
            waiters.register(Event::Inbound, w);
        }
        assert!(waiters.more.as_ref().unwrap().len() <= MAX_EXTRA_WAITERS);
        let woken_early: usize = counters.iter().map(|(c, _)| wakes(c)).sum();
        assert_eq!(
            woken_early, MAX_EXTRA_WAITERS,
            "the overflow woke them to look again"
        );
    }

    /// A pending future that counts its polls, keeps the waker it was
    /// given, and wakes itself when `wake_itself` says so.
    fn counted_future(
        polls: Rc<Cell<usize>>,
        given: Rc<RefCell<Option<Waker>>>,
        wake_itself: bool,
    ) -> impl Future<Output = ()> + Unpin {
        std::future::poll_fn(move |cx| {
            polls.set(polls.get() + 1);
            *given.borrow_mut() = Some(cx.waker().clone());
            if wake_itself {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
    }

    #[test]
    fn a_future_is_polled_again_only_once_woken_and_its_wake_reaches_the_task() {
        let (counter, task) = waker();
        let mut cx = Context::from_waker(&task);
        let (polls, given) = (Rc::new(Cell::new(0)), Rc::new(RefCell::new(None)));
        let mut future = PolledWhenWoken::new(counted_future(polls.clone(), given.clone(), false));
        assert!(std::pin::Pin::new(&mut future).poll(&mut cx).is_pending());
        assert!(std::pin::Pin::new(&mut future).poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 1, "not woken: not polled");
        given.borrow().as_ref().unwrap().wake_by_ref();
        assert_eq!(wakes(&counter), 1, "the task is woken");
        assert!(std::pin::Pin::new(&mut future).poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 2);
    }

    #[test]
    fn a_future_that_wakes_itself_gets_one_more_turn_then_the_task_comes_back() {
        let (counter, task) = waker();
        let mut cx = Context::from_waker(&task);
        let (polls, given) = (Rc::new(Cell::new(0)), Rc::new(RefCell::new(None)));
        let mut future = PolledWhenWoken::new(counted_future(polls.clone(), given, true));
        // As inside a connection's poll: the wakes find the task running.
        BEING_POLLED.with_borrow_mut(|polled| *polled = Some(task.clone()));
        assert!(std::pin::Pin::new(&mut future).poll(&mut cx).is_pending());
        BEING_POLLED.with_borrow_mut(|polled| *polled = None);
        assert_eq!(polls.get(), 2);
        assert_eq!(wakes(&counter), 1, "still woken: the task must come back");
    }

    #[test]
    fn a_signal_completes_once_per_wake_and_a_wake_from_outside_reaches_the_task() {
        let (counter, task) = waker();
        let mut cx = Context::from_waker(&task);
        let signal = Signal::new();
        let poll = |cx: &mut Context<'_>| std::pin::pin!(signal.raised()).poll(cx);
        assert!(poll(&mut cx).is_pending(), "not raised yet");
        signal.waker().wake_by_ref();
        assert_eq!(wakes(&counter), 1, "the task is woken");
        assert!(poll(&mut cx).is_ready());
        assert!(poll(&mut cx).is_pending(), "once per wake");
        // Woken while the task runs: no wake, the flag is seen on this pass.
        BEING_POLLED.with_borrow_mut(|polled| *polled = Some(task.clone()));
        signal.waker().wake_by_ref();
        BEING_POLLED.with_borrow_mut(|polled| *polled = None);
        assert_eq!(wakes(&counter), 1);
        assert!(poll(&mut cx).is_ready());
    }
}
