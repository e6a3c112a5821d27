//! Removing a half-written output when the user presses Ctrl-C, the
//! process is sent SIGTERM or its terminal goes away (SIGHUP): `tempfile`
//! deletes on drop, but a signal ends the process without running
//! destructors.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The temporary file to unlink, as a leaked C string (null: none).
static DOOMED: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_signal(sig: libc::c_int) {
    let p = DOOMED.load(Ordering::SeqCst);
    // SAFETY: unlink and _exit are async-signal-safe; `p` is null or a
    // leaked, NUL-terminated string that is never freed.
    unsafe {
        if !p.is_null() {
            libc::unlink(p);
        }
        libc::_exit(128 + sig);
    }
}

/// While the guard lives, SIGINT, SIGTERM and SIGHUP unlink `path` and exit.
#[derive(Debug)]
pub struct RemoveOnSignal;

impl RemoveOnSignal {
    pub fn new(path: &Path) -> RemoveOnSignal {
        if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
            DOOMED.store(c.into_raw(), Ordering::SeqCst);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                // SAFETY: installs a handler that only calls async-signal-safe functions.
                unsafe {
                    libc::signal(sig, on_signal as *const () as libc::sighandler_t);
                }
            }
        }
        RemoveOnSignal
    }
}

impl Drop for RemoveOnSignal {
    fn drop(&mut self) {
        // The path string is leaked on purpose: a signal may arrive while
        // this runs, and the handler must never see freed memory.
        DOOMED.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}
