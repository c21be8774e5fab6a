//! A single-threaded notification primitive for tasks on one executor.
//!
//! Waiters re-check their own condition after every notify, so a notify
//! never carries data and can never be lost: `wait_until` checks the
//! condition before parking.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

#[derive(Default)]
pub struct Signal {
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wake every waiter; each re-checks its condition.
    pub fn notify(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Resolve once `cond` returns `Some`.
    pub fn wait_for<'a, T, F: FnMut() -> Option<T> + Unpin + 'a>(&'a self, cond: F) -> WaitFor<'a, F> {
        WaitFor { signal: self, cond }
    }

    /// Like [`Signal::wait_for`] but gives up after `timeout` (returns None).
    pub async fn wait_for_timeout<T, F: FnMut() -> Option<T> + Unpin>(&self, cond: F, timeout: Duration) -> Option<T> {
        let wait = async { Some(self.wait_for(cond).await) };
        let sleep = async {
            glommio::timer::sleep(timeout).await;
            None
        };
        futures_lite::future::or(wait, sleep).await
    }
}

pub struct WaitFor<'a, F> {
    signal: &'a Signal,
    cond: F,
}

impl<T, F: FnMut() -> Option<T> + Unpin> Future for WaitFor<'_, F> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(v) = (self.cond)() {
            return Poll::Ready(v);
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
