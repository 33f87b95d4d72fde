//! Synchronisation that is safe on Asterisk's threads: a one-shot reply slot an Asterisk
//! thread can wait on, and a lock-free configuration snapshot.
//!
//! Mutex + Condvar rather than a channel: blocking receives in crossbeam and std's mpsc park
//! the thread through a thread-local context with a destructor, which on an Asterisk thread
//! would pin this library in memory (see `thread.rs`). Futex-based waiting keeps no such state.

use std::sync::atomic::{AtomicPtr, Ordering};
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

/// A value read lock-free by any thread and replaced whole (configuration on reload).
///
/// Not `arc-swap`: its readers register thread-local state with a destructor, which on a
/// PJSIP thread pins this library in memory after unload (see `thread.rs`). Replaced values are
/// kept until the snapshot itself is dropped, so a reference from [`Snapshot::get`] stays valid
/// as long as the snapshot: reloads are rare and a configuration is small.
#[derive(Debug)]
pub struct Snapshot<T> {
    current: AtomicPtr<T>,
    retired: Mutex<Vec<Box<T>>>,
}

impl<T> Snapshot<T> {
    /// A snapshot holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            current: AtomicPtr::new(Box::into_raw(Box::new(value))),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The current value: one atomic load.
    pub fn get(&self) -> &T {
        // SAFETY: `current` always holds a pointer from `Box::into_raw`; values are freed only
        // in `drop`, which `&self` outlives.
        unsafe { &*self.current.load(Ordering::Acquire) }
    }

    /// Makes `value` the current one; readers of the previous one keep a valid reference.
    pub fn replace(&self, value: T) {
        let old = self
            .current
            .swap(Box::into_raw(Box::new(value)), Ordering::AcqRel);
        // SAFETY: `old` came from `Box::into_raw` and is no longer reachable through `current`.
        let old = unsafe { Box::from_raw(old) };
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(old);
    }
}

impl<T> Drop for Snapshot<T> {
    fn drop(&mut self) {
        // SAFETY: as in `get`; nobody can read through `&self` any more.
        drop(unsafe { Box::from_raw(*self.current.get_mut()) });
    }
}

// SAFETY: readers only get `&T`, and values move between threads on replace and drop.
unsafe impl<T: Send + Sync> Send for Snapshot<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Snapshot<T> {}
