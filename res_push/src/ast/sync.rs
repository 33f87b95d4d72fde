//! A one-shot reply slot an Asterisk thread can wait on.
//!
//! Mutex + Condvar rather than a channel: blocking receives in crossbeam and std's mpsc park
//! the thread through a thread-local context with a destructor, which on an Asterisk thread
//! would pin this library in memory (see `thread.rs`). Futex-based waiting keeps no such state.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The receiving side.
#[derive(Debug)]
pub struct Slot<T> {
    inner: Arc<(Mutex<Option<T>>, Condvar)>,
}

/// The sending side; can be moved to another thread.
#[derive(Debug)]
pub struct Filler<T> {
    inner: Arc<(Mutex<Option<T>>, Condvar)>,
}

/// A connected slot/filler pair.
pub fn slot<T>() -> (Filler<T>, Slot<T>) {
    let inner = Arc::new((Mutex::new(None), Condvar::new()));
    (
        Filler {
            inner: inner.clone(),
        },
        Slot { inner },
    )
}

impl<T> Filler<T> {
    /// Stores the value and wakes the waiter.
    pub fn fill(self, value: T) {
        let (m, c) = &*self.inner;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
        c.notify_all();
    }
}

impl<T> Slot<T> {
    /// Waits up to `timeout` for the value.
    pub fn wait(self, timeout: Duration) -> Option<T> {
        let (m, c) = &*self.inner;
        let guard = m.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = c
            .wait_timeout_while(guard, timeout, |v| v.is_none())
            .unwrap_or_else(|p| p.into_inner());
        guard.take()
    }
}
