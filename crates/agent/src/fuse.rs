//! The FUSE adapter: a directory holding one file, `disk.img`.
//!
//! Callbacks only translate: each read or write is handed, with its reply,
//! to a task on the agent's tokio runtime, so slow chunk fetches never
//! block the FUSE loop and many run at once. Errors become errnos here and
//! nowhere else.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, SessionACL, WriteFlags,
};

use crate::disk::Disk;

/// The name of the one file.
pub const DISK_FILE: &str = "disk.img";
const ROOT: INodeNo = INodeNo(1);
const FILE: INodeNo = INodeNo(2);
/// Attributes never change while mounted (the size is fixed).
const TTL: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct DiskFs {
    disk: Arc<Disk>,
    rt: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
    /// Set once the kernel has looked `disk.img` up: before that, a store
    /// into its page cache is silently dropped (the inode is unknown).
    known: Arc<Known>,
}

#[derive(Debug, Default)]
struct Known {
    yes: std::sync::Mutex<bool>,
    cond: std::sync::Condvar,
}

impl Known {
    fn set(&self) {
        *self.yes.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }

    fn wait(&self, patience: Duration) -> bool {
        let yes = self.yes.lock().unwrap_or_else(|p| p.into_inner());
        let (yes, _) = self
            .cond
            .wait_timeout_while(yes, patience, |yes| !*yes)
            .unwrap_or_else(|p| p.into_inner());
        *yes
    }
}

/// Pushes bytes into the kernel's page cache of `disk.img`
/// (FUSE_NOTIFY_STORE).
struct PageCache {
    notifier: fuser::Notifier,
    known: Arc<Known>,
    /// Cleared when the unmount starts: later stores are pointless.
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache").finish_non_exhaustive()
    }
}

/// How long a store waits for the kernel to look `disk.img` up (whoever
/// mounted it opens it right away).
const LOOKUP_PATIENCE: Duration = Duration::from_secs(10);

impl crate::PageSink for PageCache {
    fn store(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if !self.known.wait(LOOKUP_PATIENCE) {
            return Err(std::io::Error::other("disk.img was never opened"));
        }
        if !self.open.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("unmounted"));
        }
        self.notifier.store(FILE, offset, data)
    }
}

impl DiskFs {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let (kind, perm, size, nlink) = if ino == ROOT {
            (FileType::Directory, 0o755, 0, 2)
        } else {
            let perm = if self.disk.read_only() { 0o444 } else { 0o644 };
            (FileType::RegularFile, perm, self.disk.size(), 1)
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

fn answer_read(reply: ReplyData, offset: u64, read: Result<Vec<u8>, crate::AgentError>) {
    match read {
        Ok(data) => reply.data(&data),
        Err(e) => {
            if first_report(&e) {
                eprintln!("kindling agent: read at {offset}: {}", chain(&e));
            }
            reply.error(errno(&e));
        }
    }
}

/// Whether `e` is worth a line: the kernel retries a failed read page by
/// page, so one bad chunk fails several reads; each chunk is reported
/// once (the stats count every failure).
fn first_report(e: &crate::AgentError) -> bool {
    static REPORTED: std::sync::Mutex<std::collections::BTreeSet<usize>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    match e {
        crate::AgentError::Chunk { index, .. } => REPORTED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*index),
        _ => true,
    }
}

fn errno(e: &crate::AgentError) -> Errno {
    Errno::from_i32(e.errno())
}

impl Filesystem for DiskFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == DISK_FILE {
            reply.entry(&TTL, &self.attr(FILE), Generation(0));
            self.known.set();
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == ROOT || ino == FILE {
            reply.attr(&TTL, &self.attr(ino));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The disk's size is the image's: it cannot grow or shrink. Other
        // changes (times, modes) are accepted and ignored, as a block
        // device would.
        if size.is_some_and(|s| s != self.disk.size()) {
            reply.error(Errno::EPERM);
        } else {
            reply.attr(&TTL, &self.attr(ino));
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino != FILE {
            reply.error(Errno::EISDIR);
        } else if self.disk.read_only() && flags.acc_mode() != OpenAccMode::O_RDONLY {
            reply.error(Errno::EROFS);
        } else {
            // The contents never change behind the kernel's back: keep its
            // page cache across opens.
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != FILE {
            reply.error(Errno::EISDIR);
            return;
        }
        if let Some(read) = self.disk.read_cached(offset, size as usize) {
            answer_read(reply, offset, read);
            return;
        }
        let disk = self.disk.clone();
        self.rt.spawn(async move {
            answer_read(reply, offset, disk.read(offset, size as usize).await);
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != FILE {
            reply.error(Errno::EISDIR);
            return;
        }
        let disk = self.disk.clone();
        let data = data.to_vec();
        self.rt.spawn(async move {
            match disk.write(offset, &data).await {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => {
                    eprintln!("kindling agent: write at {offset}: {}", chain(&e));
                    reply.error(errno(&e));
                }
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The overlay is private and dies with the agent: nothing to make
        // durable.
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, DISK_FILE),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// An error and its causes, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// A mounted disk; unmounted when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: std::path::PathBuf,
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// How long an unmount waits for the last user of `disk.img` (typically a
/// loop device the kernel is still releasing) before detaching lazily.
const UNMOUNT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

impl Mounted {
    /// Unmounts and waits for the FUSE threads to end.
    ///
    /// A busy mount is retried for a while and then detached lazily, so
    /// the mount never outlives this call in the mount table; the FUSE
    /// connection then ends when its last user lets go, and its threads
    /// are left to end with it instead of being waited for.
    pub fn unmount(mut self) -> std::io::Result<()> {
        self.teardown()
    }

    /// A busy mount's connection ends when its last user lets go; its
    /// threads are left to end with it (dropping the session) instead of
    /// being waited for.
    fn teardown(&mut self) -> std::io::Result<()> {
        self.detach().map(drop)
    }

    /// For a disk whose users outlive the unmount (a loop device, a VM):
    /// unmounts if nothing holds it; else detaches it and keeps serving
    /// those users, returning them as [`Detached`], until they let go or
    /// it is dropped (after which their reads fail with EIO).
    pub fn unmount_or_detach(mut self) -> std::io::Result<Option<Detached>> {
        self.detach()
    }

    fn detach(&mut self) -> std::io::Result<Option<Detached>> {
        let Some(session) = self.session.take() else {
            return Ok(None);
        };
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        match unmount_patiently(&self.mountpoint, UNMOUNT_PATIENCE)? {
            // Gone from the table, so the connection is closing: wait for
            // the FUSE thread to see it end (fuser's own unmount would
            // now fail with EINVAL). The kernel may tell it the end as
            // ECONNABORTED rather than ENODEV (fuser asks for abort
            // errors); after a clean unmount both mean the same.
            Unmounted::Cleanly => match session.join() {
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(None),
                r => r.map(|()| None),
            },
            Unmounted::Lazily => Ok(Some(Detached { session })),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// A disk out of the mount table whose users still read it: served on
/// until [`Detached::released`].
#[derive(Debug)]
pub struct Detached {
    session: fuser::BackgroundSession,
}

impl Detached {
    /// Whether the last user has let go (the kernel ended the connection).
    pub fn released(&self) -> bool {
        self.session.guard.is_finished()
    }
}

enum Unmounted {
    Cleanly,
    Lazily,
}

fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Takes away a mount on `path` whose FUSE server is gone (an agent that
/// was killed: every access fails with ENOTCONN), lazily.
pub fn clear_dead_mount(path: &Path) -> std::io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: c is a valid NUL-terminated path for the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn unmount_patiently(path: &Path, patience: std::time::Duration) -> std::io::Result<Unmounted> {
    let c = c_path(path)?;
    let deadline = std::time::Instant::now() + patience;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        // SAFETY: c is a valid NUL-terminated path for the call.
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            return Ok(Unmounted::Cleanly);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EBUSY) if std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Some(libc::EBUSY) => {
                // SAFETY: as above.
                if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                    return Ok(Unmounted::Lazily);
                }
                return Err(std::io::Error::last_os_error());
            }
            // Not mounted (any more): someone unmounted it for us.
            Some(libc::EINVAL) | Some(libc::ENOENT) => return Ok(Unmounted::Cleanly),
            _ => return Err(e),
        }
    }
}

/// Mounts `disk` at `mountpoint` as `mountpoint/disk.img`. Reads and writes
/// run on `rt`. Only root (and the owner) may access it: the kernel's loop
/// driver is what reads it.
pub fn mount(
    disk: Arc<Disk>,
    mountpoint: &Path,
    rt: tokio::runtime::Handle,
) -> std::io::Result<Mounted> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let read_only = disk.read_only();
    let known = Arc::new(Known::default());
    let fs = DiskFs {
        disk: disk.clone(),
        rt,
        uid,
        gid,
        known: known.clone(),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("kindling".into()),
        MountOption::Subtype("kindling".into()),
        MountOption::NoExec,
        MountOption::NoSuid,
        MountOption::NoDev,
        if read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = SessionACL::RootAndOwner;
    config.n_threads = Some(2);
    let session = fuser::spawn_mount(fs, mountpoint, &config)?;
    let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
    if read_only {
        // Nobody writes a read-only disk, so no store can race a write.
        disk.reader().attach_page_sink(Arc::new(PageCache {
            notifier: session.notifier(),
            known,
            open: open.clone(),
        }));
    }
    Ok(Mounted {
        session: Some(session),
        mountpoint: mountpoint.canonicalize()?,
        open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_chunk_is_reported_once() {
        let chunk = |index| crate::AgentError::Chunk {
            index,
            offset: 0,
            name: "n".into(),
            source: Box::new(crate::source::SourceError::Cache("gone".into())),
        };
        // Indices no other test uses: the record is process-wide.
        assert!(first_report(&chunk(1_000_001)));
        assert!(!first_report(&chunk(1_000_001)));
        assert!(first_report(&chunk(1_000_002)));
        assert!(first_report(&crate::AgentError::ReadOnly));
        assert!(first_report(&crate::AgentError::ReadOnly));
    }
}
