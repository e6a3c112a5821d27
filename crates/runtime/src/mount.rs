//! Mounting the image's ext4 filesystem from its loop device.

use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};

use crate::RuntimeError;

/// A mounted filesystem, unmounted on drop (plainly, or detached lazily if
/// something still uses it).
#[derive(Debug)]
pub struct Mounted {
    target: PathBuf,
    mounted: bool,
}

/// Mounts the ext4 filesystem on `dev` at `target` (an existing directory).
///
/// Mounted `noatime`: on an image served on demand, an atime update turns
/// every first read of a file into an inode write to the agent's overlay.
pub fn mount_ext4(dev: &Path, target: &Path, read_only: bool) -> Result<Mounted, RuntimeError> {
    let mut flags = libc::MS_NOATIME;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    mount(dev, target, c"ext4", flags, None)
}

/// Mounts an overlayfs at `target`: `lower` (read-only, typically the
/// image's ext4 mount) under `upper`, where every write lands; `work` is
/// overlayfs's scratch directory, on the same filesystem as `upper`.
///
/// The upper layer is scratch: mounted `volatile`, never synced.
///
/// This is how a container writes while the image's disk stays read-only:
/// nothing it writes can reach the disk, and the agent may fill the
/// kernel's page cache of the disk ahead of reads without racing a write.
pub fn mount_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<Mounted, RuntimeError> {
    // volatile: no sync of the upper filesystem, ever. Without it the
    // unmount syncs that whole filesystem - everything anyone wrote there,
    // the worker cache's fresh chunks included - for writes that are
    // thrown away right after.
    let mut data = String::from("volatile");
    for (key, dir) in [("lowerdir", lower), ("upperdir", upper), ("workdir", work)] {
        let Some(text) = dir.to_str().filter(|d| !d.contains([',', ':', '\\'])) else {
            return Err(RuntimeError::Mount {
                dev: PathBuf::from("overlay"),
                target: target.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "overlayfs cannot take {key} {}: not UTF-8, or has ',', ':' or '\\'",
                        dir.display()
                    ),
                ),
            });
        };
        data.push_str(&format!(",{key}={text}"));
    }
    mount(
        Path::new("overlay"),
        target,
        c"overlay",
        libc::MS_NOATIME,
        Some(&data),
    )
}

/// mount(2) of `source` on `target`, errors naming both.
fn mount(
    source: &Path,
    target: &Path,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<Mounted, RuntimeError> {
    let err = |source_err| RuntimeError::Mount {
        dev: source.to_owned(),
        target: target.to_owned(),
        source: source_err,
    };
    let c_source = c_path(source).map_err(err)?;
    let c_target = c_path(target).map_err(err)?;
    let c_data = data
        .map(CString::new)
        .transpose()
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: all pointers are valid NUL-terminated strings (or null for
    // data) for the duration of the call.
    let r = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            fstype.as_ptr(),
            flags,
            c_data
                .as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(Mounted {
        target: target.to_owned(),
        mounted: true,
    })
}

impl Mounted {
    /// Where the filesystem is mounted.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now; falls back to a lazy (MNT_DETACH) unmount if the
    /// filesystem is busy.
    pub fn unmount(mut self) -> Result<(), RuntimeError> {
        self.umount().map_err(|source| RuntimeError::Unmount {
            target: self.target.clone(),
            source,
        })
    }

    fn umount(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.mounted) {
            return Ok(());
        }
        let c_target = c_path(&self.target)?;
        // SAFETY: c_target is a valid NUL-terminated string.
        if unsafe { libc::umount2(c_target.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let first = io::Error::last_os_error();
        if first.raw_os_error() != Some(libc::EBUSY) {
            return Err(first);
        }
        // SAFETY: as above.
        if unsafe { libc::umount2(c_target.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
        Err(io::Error::last_os_error())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.umount();
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}
