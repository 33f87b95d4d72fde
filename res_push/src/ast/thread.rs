//! Threads of res_push, created through Asterisk and always joined.
//!
//! Not `std::thread::spawn`: spawning runs std's spawn hooks, which touch a thread-local with a
//! destructor on the *calling* thread. The caller is an Asterisk thread (the one loading the
//! module, at startup the main thread, which never exits), and a destructor registered there
//! keeps this library mapped after `dlclose`: Asterisk then reports that the module "could not be
//! completely unloaded". Created through `ast_pthread_create_stack`, our threads also show in
//! `core show threads`.

use std::ffi::{CStr, c_void};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::ffi;

type Body = Box<dyn FnOnce() + Send + 'static>;

/// A running thread; joined by [`Thread::join`] or on drop, so none outlives its owner.
#[derive(Debug)]
pub struct Thread {
    id: ffi::pthread_t,
    name: &'static CStr,
    joined: bool,
}

extern "C" fn trampoline(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the Box<Body> leaked by `spawn`, handed to exactly this thread.
    let body: Box<Body> = unsafe { Box::from_raw(data.cast()) };
    // A panic must not unwind into Asterisk's thread wrapper; the panic hook has logged it.
    let _ = catch_unwind(AssertUnwindSafe(body));
    std::ptr::null_mut()
}

/// Starts `body` on a new thread named `name` (at most 15 bytes, the kernel's limit).
pub fn spawn(name: &'static CStr, body: impl FnOnce() + Send + 'static) -> io::Result<Thread> {
    let data = Box::into_raw(Box::new(Box::new(move || {
        // SAFETY: naming the calling thread with a NUL-terminated static string.
        unsafe { ffi::pthread_setname_np(ffi::pthread_self(), name.as_ptr()) };
        body()
    }) as Body));
    let mut id: ffi::pthread_t = 0;
    // SAFETY: `trampoline` takes ownership of `data`; on failure no thread ran, so we reclaim it.
    let rc = unsafe {
        ffi::rp_shim_thread_create(&mut id, Some(trampoline), data.cast(), name.as_ptr())
    };
    if rc != 0 {
        // SAFETY: the thread was not created, so `data` is still ours.
        drop(unsafe { Box::from_raw(data) });
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(Thread {
        id,
        name,
        joined: false,
    })
}

impl Thread {
    /// Waits for the thread to end.
    pub fn join(mut self) {
        self.join_inner();
    }

    fn join_inner(&mut self) {
        if self.joined {
            return;
        }
        self.joined = true;
        // SAFETY: `id` is a joinable thread created by `spawn` and joined only once.
        let rc = unsafe { ffi::pthread_join(self.id, std::ptr::null_mut()) };
        if rc != 0 {
            tracing::error!(
                "joining thread {:?} failed: {}",
                self.name,
                io::Error::from_raw_os_error(rc)
            );
        }
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        self.join_inner();
    }
}
