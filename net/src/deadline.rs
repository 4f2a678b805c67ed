//! Coarse deadlines without a timer per call: one sweeper thread per process wakes the calls
//! whose deadline has passed, looking every [`GRANULARITY`].
//!
//! A tokio timer per request (a body deadline, an upstream's answer deadline, an enclave
//! call's timeout) is cheap to arm, but arming one that is earlier than the runtime's next
//! planned wake-up wakes the runtime's I/O driver (an `eventfd` write, and on a multi-thread
//! runtime often a second worker thread that then finds nothing to do). On the MCP path that
//! happened several times per call in every process. The deadlines here only take a lock to
//! enter and leave a table that the sweeper thread reads; the sweeper ticks only while
//! deadlines are pending (and a while after), so an idle process is not woken.
//!
//! What a caller gets: a deadline is enforced at most [`GRANULARITY`] late (plus scheduling
//! delay), never early; a future that is ready first is never cut off.
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the sweeper looks: the most a deadline is enforced late.
pub const GRANULARITY: Duration = Duration::from_millis(100);

/// Ticks without any pending deadline before the sweeper sleeps until the next one (10 s):
/// under steady traffic entering a deadline never has to wake it.
const IDLE_TICKS: u32 = 100;

/// The error of a future whose deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

#[derive(Default)]
struct Table {
    entries: HashMap<u64, (Instant, Waker)>,
    next: u64,
    /// The sweeper waits on the condition variable without a timeout.
    parked: bool,
}

struct Sweeper {
    table: Mutex<Table>,
    wake: Condvar,
}

fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sweeper {
    fn run(&self) {
        let mut idle = 0u32;
        let mut t = lock(&self.table);
        loop {
            if t.entries.is_empty() {
                idle = idle.saturating_add(1);
                if idle > IDLE_TICKS {
                    t.parked = true;
                    t = self.wake.wait(t).unwrap_or_else(PoisonError::into_inner);
                    t.parked = false;
                    idle = 0;
                    continue;
                }
            } else {
                idle = 0;
            }
            t = self
                .wake
                .wait_timeout(t, GRANULARITY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            let now = Instant::now();
            let due: Vec<u64> = t
                .entries
                .iter()
                .filter(|(_, (at, _))| *at <= now)
                .map(|(k, _)| *k)
                .collect();
            if due.is_empty() {
                continue;
            }
            let wakers: Vec<Waker> = due
                .iter()
                .filter_map(|k| t.entries.remove(k).map(|(_, w)| w))
                .collect();
            drop(t);
            for w in wakers {
                w.wake();
            }
            t = lock(&self.table);
        }
    }

    fn enter(&self, at: Instant, waker: Waker) -> u64 {
        let mut t = lock(&self.table);
        let key = t.next;
        t.next = t.next.wrapping_add(1);
        t.entries.insert(key, (at, waker));
        if t.parked {
            drop(t);
            self.wake.notify_one();
        }
        key
    }

    fn leave(&self, key: u64) {
        lock(&self.table).entries.remove(&key);
    }
}

/// The process's sweeper (its thread started on first use); `None` if no thread could be
/// started, and then [`Deadline`] falls back to a tokio timer.
fn sweeper() -> Option<&'static Arc<Sweeper>> {
    static SWEEPER: OnceLock<Option<Arc<Sweeper>>> = OnceLock::new();
    SWEEPER
        .get_or_init(|| {
            let s = Arc::new(Sweeper {
                table: Mutex::new(Table::default()),
                wake: Condvar::new(),
            });
            let run = s.clone();
            match std::thread::Builder::new()
                .name("deadline-sweeper".into())
                .spawn(move || run.run())
            {
                Ok(_) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "no deadline sweeper thread: tokio timers instead");
                    None
                }
            }
        })
        .as_ref()
}

/// Registration of one waiting call with the sweeper; polled where the call would poll a
/// timer. Leaves the table when dropped.
#[derive(Debug)]
pub struct Deadline {
    at: Instant,
    /// Key in the sweeper's table and the waker entered with it.
    entered: Option<(u64, Waker)>,
    /// Used when the sweeper thread could not be started.
    fallback: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    /// A deadline at `at`.
    pub fn at(at: Instant) -> Self {
        Deadline {
            at,
            entered: None,
            fallback: None,
        }
    }

    /// When it passes.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// Ready once the deadline has passed; otherwise makes sure the sweeper wakes `cx` when
    /// it does (at most [`GRANULARITY`] late).
    pub fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            self.leave();
            return Poll::Ready(());
        }
        let Some(s) = sweeper() else {
            let at = tokio::time::Instant::from_std(self.at);
            let sleep = self
                .fallback
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            return sleep.as_mut().poll(cx);
        };
        match &self.entered {
            Some((_, w)) if w.will_wake(cx.waker()) => {}
            _ => {
                self.leave();
                let key = s.enter(self.at, cx.waker().clone());
                self.entered = Some((key, cx.waker().clone()));
            }
        }
        Poll::Pending
    }

    fn leave(&mut self) {
        if let Some((key, _)) = self.entered.take() {
            if let Some(s) = sweeper() {
                s.leave(key);
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A future bounded by a [`Deadline`]: its output, or [`Elapsed`] once the deadline has
/// passed first.
pub struct Timeout<F> {
    fut: Pin<Box<F>>,
    deadline: Deadline,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(v) = this.fut.as_mut().poll(cx) {
            this.deadline.leave();
            return Poll::Ready(Ok(v));
        }
        match this.deadline.poll_elapsed(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `fut`, cut off at `at` (at most [`GRANULARITY`] late).
pub fn timeout_at<F: Future>(at: Instant, fut: F) -> Timeout<F> {
    Timeout {
        fut: Box::pin(fut),
        deadline: Deadline::at(at),
    }
}

/// `fut`, cut off `after` from now (at most [`GRANULARITY`] late).
pub fn timeout<F: Future>(after: Duration, fut: F) -> Timeout<F> {
    timeout_at(Instant::now() + after, fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ready_future_wins_and_a_pending_one_is_cut_off() {
        assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
        let r = timeout(Duration::from_millis(150), std::future::pending::<()>()).await;
        assert_eq!(r, Err(Elapsed));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn many_waiters_each_end_by_their_own_deadline_and_leave_the_table() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let answered = tokio::spawn(timeout(Duration::from_secs(30), rx));
        let cut: Vec<_> = (0..20)
            .map(|_| {
                tokio::spawn(timeout(
                    Duration::from_millis(50),
                    std::future::pending::<()>(),
                ))
            })
            .collect();
        for c in cut {
            assert_eq!(c.await.unwrap(), Err(Elapsed));
        }
        tx.send(3).unwrap();
        assert_eq!(answered.await.unwrap(), Ok(Ok(3)));
        // Every waiter left the table (the ones cut off, and the one answered).
        let s = sweeper().unwrap();
        let mine = lock(&s.table)
            .entries
            .values()
            .filter(|(at, _)| *at > Instant::now() + Duration::from_secs(20))
            .count();
        assert_eq!(mine, 0);
    }
}
