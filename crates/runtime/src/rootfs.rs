//! File operations inside a container's rootfs, with paths resolved as the
//! container would resolve them.
//!
//! The image is untrusted: its `/etc/passwd` may be a symlink to
//! `/etc/shadow` or `../../../`. `openat2(RESOLVE_IN_ROOT)` (Linux 5.6)
//! resolves every symlink and `..` inside the rootfs, so nothing here ever
//! touches a host file through an image's link. On kernels without openat2
//! the fallback joins the path and refuses a symlink as the last component.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The kind of mount point to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

fn c_string(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?;
    Ok(f.into())
}

/// `openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
fn open_in_root(root: RawFd, path: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    openat2(
        root,
        path.as_bytes(),
        flags,
        mode,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// `openat2(root, path, flags | O_CLOEXEC, mode, resolve)`.
pub(crate) fn openat2(
    root: RawFd,
    path: &[u8],
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = c_string(path)?;
    // SAFETY: open_how is plain old data (libc marks it non-exhaustive);
    // all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    // SAFETY: c and how are valid for the duration of the call and the size
    // passed is how's size; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// True if openat2 is unavailable (old kernel, or a seccomp filter that
/// predates it and answers EPERM).
pub(crate) fn no_openat2(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
}

/// `root` joined with the in-container absolute `path` (fallback only).
fn joined(root: &Path, path: &str) -> PathBuf {
    let mut p = root.to_owned();
    for c in Path::new(path).components() {
        if let Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

/// Reads the in-container file `path` (at most `limit` bytes); `None` if
/// it does not exist.
pub(crate) fn read_file(root: &Path, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let rootfd = open_root(root)?;
    let file = match open_in_root(rootfd.as_raw_fd(), path, libc::O_RDONLY, 0) {
        Ok(fd) => File::from(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if no_openat2(&e) => {
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(joined(root, path))
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    file.take(limit).read_to_end(&mut out)?;
    Ok(Some(out))
}

/// True if the filesystem holding `root` is mounted read-only.
pub(crate) fn is_read_only(root: &Path) -> io::Result<bool> {
    let c = c_string(root.as_os_str().as_bytes())?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_flag & libc::ST_RDONLY != 0)
}

/// Makes sure the in-container `path` can be a mount point of `kind`.
///
/// Returns true if it exists (possibly through a symlink inside the rootfs)
/// or was created, false if it is missing and `writable` is false (the
/// caller skips the mount). Missing parent directories are created too.
/// A dangling symlink counts as present when writable: runc creates its
/// target, resolving it inside the rootfs.
pub(crate) fn ensure_mount_point(
    root: &Path,
    path: &str,
    kind: Kind,
    writable: bool,
) -> io::Result<bool> {
    let rootfd = open_root(root)?;
    match open_in_root(rootfd.as_raw_fd(), path, libc::O_PATH, 0) {
        Ok(_) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if no_openat2(&e) => return ensure_by_path(&joined(root, path), kind, writable),
        Err(e) => return Err(e),
    }
    if !writable {
        return Ok(false);
    }
    let p = Path::new(path);
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return Ok(true); // "/" always exists
    };
    let dir = mkdir_in_root(rootfd.as_raw_fd(), parent)?;
    let c_name = c_string(name.as_bytes())?;
    let r = match kind {
        // SAFETY: dir is an open directory fd and c_name a valid C string.
        Kind::Dir => unsafe { libc::mkdirat(dir.as_raw_fd(), c_name.as_ptr(), 0o755) },
        Kind::File => {
            // SAFETY: as above; the returned fd is closed at once below.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    c_name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_WRONLY
                        | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd >= 0 {
                // SAFETY: fd is ours and open.
                unsafe { libc::close(fd) };
            }
            fd.min(0)
        }
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(true)
}

/// `mkdir -p` of the in-container directory `dir`, every step resolved
/// inside the rootfs; returns an O_PATH fd of it.
fn mkdir_in_root(root: RawFd, dir: &Path) -> io::Result<OwnedFd> {
    let mut prefix = PathBuf::from("/");
    let mut fd = open_in_root(root, "/", libc::O_PATH | libc::O_DIRECTORY, 0)?;
    for c in dir.components() {
        let Component::Normal(name) = c else {
            continue;
        };
        prefix.push(name);
        let text = prefix.to_string_lossy().into_owned();
        fd = match open_in_root(root, &text, libc::O_PATH | libc::O_DIRECTORY, 0) {
            Ok(next) => next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let c_name = c_string(name.as_bytes())?;
                // SAFETY: fd is an open directory fd and c_name a valid C string.
                if unsafe { libc::mkdirat(fd.as_raw_fd(), c_name.as_ptr(), 0o755) } < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(e);
                    }
                }
                open_in_root(root, &text, libc::O_PATH | libc::O_DIRECTORY, 0)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(fd)
}

/// [`ensure_mount_point`] without openat2: plain paths, no symlink followed
/// at the last component.
fn ensure_by_path(path: &Path, kind: Kind, writable: bool) -> io::Result<bool> {
    if path.symlink_metadata().is_ok() {
        return Ok(true);
    }
    if !writable {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let r = match kind {
        Kind::Dir => std::fs::create_dir(path),
        Kind::File => File::create_new(path).map(drop),
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stay_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "host").unwrap();
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(etc.join("group"), "g").unwrap();
        // An absolute link and a ../ link that would escape on the host.
        std::os::unix::fs::symlink(host.path().join("secret"), etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/group", etc.join("shadow")).unwrap();
        let r = root.path();
        assert_eq!(read_file(r, "/etc/group", 10).unwrap().unwrap(), b"g");
        assert_eq!(read_file(r, "/etc/passwd", 10).unwrap(), None);
        assert_eq!(read_file(r, "/etc/shadow", 10).unwrap().unwrap(), b"g");
        assert_eq!(read_file(r, "/nope", 10).unwrap(), None);
        assert_eq!(read_file(r, "/etc/group", 0).unwrap().unwrap(), b"");
    }

    #[test]
    fn mount_points_are_created_only_when_writable() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert!(!ensure_mount_point(r, "/etc/hosts", Kind::File, false).unwrap());
        assert!(!r.join("etc").exists());
        assert!(ensure_mount_point(r, "/etc/hosts", Kind::File, true).unwrap());
        assert!(r.join("etc/hosts").is_file());
        assert!(ensure_mount_point(r, "/etc/hosts", Kind::File, false).unwrap());
        assert!(ensure_mount_point(r, "/tmp", Kind::Dir, true).unwrap());
        assert!(r.join("tmp").is_dir());
        assert!(ensure_mount_point(r, "/", Kind::Dir, false).unwrap());
        // A dangling link (its target resolved inside the root) counts as
        // present only when writable, and nothing is created on the host
        // side or here: runc creates the target itself.
        std::os::unix::fs::symlink("/run/resolv.conf", r.join("etc/resolv.conf")).unwrap();
        assert!(!ensure_mount_point(r, "/etc/resolv.conf", Kind::File, false).unwrap());
        assert!(ensure_mount_point(r, "/etc/resolv.conf", Kind::File, true).unwrap());
        assert!(!r.join("run").exists());
        // A link to an existing file inside the root is present even read-only.
        std::os::unix::fs::symlink("/etc/hosts", r.join("etc/hosts2")).unwrap();
        assert!(ensure_mount_point(r, "/etc/hosts2", Kind::File, false).unwrap());
    }

    #[test]
    fn temp_dirs_are_writable() {
        let root = tempfile::tempdir().unwrap();
        assert!(!is_read_only(root.path()).unwrap());
    }
}
