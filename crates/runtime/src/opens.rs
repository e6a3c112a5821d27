//! Which files of a mounted image a start opens, in the order it first
//! opens them (fanotify).
//!
//! Recording a file trace needs the files a start read; walking the whole
//! image after the start would read every directory and inode of it,
//! fetching metadata the start never touched. A filesystem-wide fanotify
//! mark sees every open of a file of the image, through whichever mount:
//! the container's root is an overlayfs whose reads go through a private
//! mount of the image, and those opens are reported too, with paths
//! relative to the image's root.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use kindling_chunk::{MAX_TRACE_FILES, MAX_TRACE_PATH};

/// Size of `struct fanotify_event_metadata`.
const EVENT_HEADER: usize = 24;
/// How often the watching thread looks at its stop flag.
const POLL_MS: i32 = 20;

/// Watches the opens of files on one filesystem until finished.
#[derive(Debug)]
pub struct OpenWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl OpenWatch {
    /// Starts watching opens of files on the filesystem mounted at
    /// `root`. Needs CAP_SYS_ADMIN.
    pub fn start(root: &Path) -> io::Result<OpenWatch> {
        // O_NONBLOCK: the descriptor each event carries must not wait for
        // a FIFO's writer.
        let event_flags = libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                event_flags as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        let fan = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = CString::new(root.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: fan is a fanotify fd and c a valid C string.
        let r = unsafe {
            libc::fanotify_mark(
                fan.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_OPEN,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        // Opens through this mount (ours) show its mount point first.
        let mut prefix = root.as_os_str().as_bytes().to_vec();
        if !prefix.ends_with(b"/") {
            prefix.push(b'/');
        }
        let thread = std::thread::Builder::new()
            .name("kindling-opens".into())
            .spawn(move || watch(&fan, &prefix, &stopped))?;
        Ok(OpenWatch {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops watching. The files opened, relative to the filesystem's
    /// root, in first-open order (at most [`MAX_TRACE_FILES`]).
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn watch(fan: &OwnedFd, prefix: &[u8], stop: &AtomicBool) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // Once stopped, drain what is queued and end.
        let last = stop.load(Relaxed);
        let mut pfd = libc::pollfd {
            fd: fan.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, if last { 0 } else { POLL_MS }) };
        loop {
            // SAFETY: reads into buf, which is buf.len() bytes long.
            let n = unsafe { libc::read(fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            for path in events(&buf[..n as usize], prefix) {
                if order.len() < MAX_TRACE_FILES && seen.insert(path.clone()) {
                    order.push(path);
                }
            }
        }
        if last {
            return order;
        }
    }
}

/// The paths of the files a buffer of events names, closing the
/// descriptors the events carry.
fn events(mut buf: &[u8], prefix: &[u8]) -> Vec<Vec<u8>> {
    let mut paths = Vec::new();
    while buf.len() >= EVENT_HEADER {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let version = buf[4];
        let fd = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if len < EVENT_HEADER || len > buf.len() || version != libc::FANOTIFY_METADATA_VERSION {
            // Not a layout we know: nothing after it can be parsed (and
            // descriptors in it leak until the watch ends; never seen).
            break;
        }
        if fd >= 0 {
            // SAFETY: the kernel opened this fd for us; we own it now.
            let file = unsafe { OwnedFd::from_raw_fd(fd) };
            if let Some(p) = path_of(&file, prefix) {
                paths.push(p);
            }
        }
        buf = &buf[len..];
    }
    paths
}

/// The path of an event's file relative to its filesystem's root: what
/// the kernel shows under /proc/self/fd, which for the private mounts an
/// overlayfs reads through (and a container's own root) is the path
/// inside the filesystem; through our mount it starts with `prefix`.
fn path_of(file: &OwnedFd, prefix: &[u8]) -> Option<Vec<u8>> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    let bytes = link.as_os_str().as_bytes();
    let rel = match bytes.strip_prefix(prefix) {
        Some(rel) => rel,
        None => bytes.strip_prefix(b"/")?,
    };
    (!rel.is_empty() && rel.len() <= MAX_TRACE_PATH && !rel.ends_with(b" (deleted)"))
        .then(|| rel.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_stop_at_what_they_do_not_know() {
        let mut buf = Vec::new();
        for (len, version) in [(24u32, libc::FANOTIFY_METADATA_VERSION), (24, 99)] {
            let mut e = [0u8; 24];
            e[..4].copy_from_slice(&len.to_ne_bytes());
            e[4] = version;
            e[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
            buf.extend_from_slice(&e);
        }
        // Descriptor-less events name no file; a short or foreign tail is
        // left alone, never read past.
        assert!(events(&buf, b"/m/").is_empty());
        assert!(events(&buf[..10], b"/m/").is_empty());
        let mut bad = buf.clone();
        bad[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(events(&bad, b"/m/").is_empty());
    }
}
