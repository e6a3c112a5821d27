//! A mount namespace of our own for everything a run mounts.
//!
//! Mounts made in the host's namespace are copied into every mount
//! namespace created while they exist: each container that runc starts
//! meanwhile (ours or anyone's) briefly holds a copy of our FUSE and ext4
//! mounts, which keeps the loop device, and so `disk.img`, busy at
//! teardown. Mounting in a namespace of our own keeps them out of other
//! namespaces, and the kernel unmounts them all when the namespace's last
//! process exits - even if we are SIGKILLed.

use std::io;

use crate::RuntimeError;

/// Moves the calling thread into a new mount namespace whose mounts are
/// slaves of the current ones: unmounts on the host still reach us (a
/// host `umount` is not held up by our copy), our mounts never reach the
/// host.
///
/// Namespaces belong to threads: call this before starting threads (or
/// do every mount, unmount, path lookup under a mount and runc spawn on
/// the calling thread).
pub fn private_mount_namespace() -> Result<(), RuntimeError> {
    let err = |what, source| RuntimeError::Namespace { what, source };
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(err("unshare", io::Error::last_os_error()));
    }
    // SAFETY: valid NUL-terminated strings; null fstype and data are
    // allowed for a propagation change.
    let r = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(err("make / rslave in", io::Error::last_os_error()));
    }
    Ok(())
}
