//! Loop devices: a file (the agent's `disk.img` on FUSE) made a block device
//! so the kernel's ext4 can mount it.
//!
//! The ioctls are issued directly (no `losetup`): `LOOP_CTL_GET_FREE` on
//! `/dev/loop-control` picks a device, `LOOP_CONFIGURE` (Linux 5.8) binds the
//! file and sets the flags in one step, and older kernels fall back to
//! `LOOP_SET_FD` + `LOOP_SET_STATUS64`. Another process may grab the same
//! free device between the two calls; the loser sees `EBUSY` (or `ENXIO`
//! from a device still being torn down) and asks again.
//!
//! Flags: `LO_FLAGS_AUTOCLEAR` so that the device detaches itself when its
//! last user (our fd, the mount) goes away, even if we die;
//! `LO_FLAGS_READ_ONLY` for read-only attachments. Direct I/O stays off: the
//! backing file is served over FUSE, which does not support `O_DIRECT` on
//! every path, and the page cache is what makes repeated reads cheap.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::RuntimeError;

// From <linux/loop.h>.
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
/// The loop driver's block major number (Documentation/admin-guide/devices.txt).
const LOOP_MAJOR: u32 = 7;

/// How often to ask for a free device again after losing a race for one.
/// With the backoff (50 us doubling to 3.2 ms) 64 rounds wait up to ~0.2 s,
/// far more than any burst of concurrent attachers needs.
const MAX_ATTEMPTS: u32 = 64;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. Dropping it detaches the device (at once if
/// nothing uses it, else when the last user - a mount - goes away).
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    /// Open for as long as we own the device: with AUTOCLEAR, closing the
    /// last fd before anything mounted it would detach it.
    dev: Option<File>,
}

/// Read-ahead of an attached device. A page fault in a mapped library
/// reads this much around the page: a lazily loaded image pays for it in
/// chunks fetched, and a smaller window pays in round trips through the
/// loop device. 64 KiB against the disk default of 128 KiB: python-ds
/// fetches 455 chunks (21.81 % of its image) instead of 459, with warm
/// starts as fast (medians 1102 and 1119 ms over five; 32 KiB fetched 454
/// but took 1156 ms); see docs/BENCHMARKS.md.
pub const READ_AHEAD_KB: u32 = 64;

/// Best effort: a device that keeps the kernel's read-ahead still works.
fn set_read_ahead(n: u32, kb: u32) {
    let _ = std::fs::write(
        format!("/sys/block/loop{n}/queue/read_ahead_kb"),
        kb.to_string(),
    );
}

impl LoopDevice {
    /// Attaches `file` to a free loop device, read-only if `read_only`.
    ///
    /// The device reads ahead [`READ_AHEAD_KB`]: the kernel sizes a loop
    /// device's read-ahead from its backing file (2.5 MiB over the agent's
    /// FUSE file), which on a lazily loaded image reads - and fetches -
    /// far past what a start needs (python-ds fetched 27.1 % of its image
    /// instead of 23.8 %).
    pub fn attach(file: &Path, read_only: bool) -> Result<LoopDevice, RuntimeError> {
        let backing = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(file)
            .map_err(|e| loop_err("open", file, e))?;
        // The loop driver reads through this very open file. Its own
        // read-ahead (READ_AHEAD_KB, on the block device) decides how much
        // a read asks for; the file's read-ahead on top would ask the
        // agent for more, including chunks no start reads.
        // SAFETY: fadvise on an fd we own; it only sets a flag on the file.
        unsafe { libc::posix_fadvise(backing.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        let ctl_path = Path::new("/dev/loop-control");
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(ctl_path)
            .map_err(|e| loop_err("open", ctl_path, e))?;
        let flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        let info = loop_info(file, flags);
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                // Back off a little: the winner, or a detach, is finishing.
                std::thread::sleep(std::time::Duration::from_micros(50 << attempt.min(6)));
            }
            // SAFETY: LOOP_CTL_GET_FREE takes no argument; ctl is an open fd.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                return Err(loop_err(
                    "find a free device",
                    ctl_path,
                    io::Error::last_os_error(),
                ));
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = match open_device(&path, n as u32, read_only) {
                Ok(dev) => dev,
                // A device being torn down (another attacher's, detaching)
                // refuses opens for a moment.
                Err(RuntimeError::Loop { source, .. })
                    if source.raw_os_error() == Some(libc::ENXIO) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            match configure(&dev, &backing, &info) {
                Ok(()) => {
                    set_read_ahead(n as u32, READ_AHEAD_KB);
                    return Ok(LoopDevice {
                        path,
                        dev: Some(dev),
                    });
                }
                // Another attacher took the device between GET_FREE and now.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                Err(e) => return Err(loop_err("attach", &path, e)),
            }
        }
        Err(RuntimeError::NoFreeLoop {
            file: file.to_owned(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The device node, `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Detaches the device now. If it is still mounted, the kernel detaches
    /// it when the mount goes away (the AUTOCLEAR flag).
    pub fn detach(mut self) -> Result<(), RuntimeError> {
        self.clear().map_err(|e| loop_err("detach", &self.path, e))
    }

    fn clear(&mut self) -> io::Result<()> {
        let Some(dev) = self.dev.take() else {
            return Ok(());
        };
        // SAFETY: LOOP_CLR_FD takes no argument; dev is an open fd.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD) };
        let err = io::Error::last_os_error();
        drop(dev);
        // ENXIO: nothing attached any more (already cleared).
        if r < 0 && err.raw_os_error() != Some(libc::ENXIO) {
            return Err(err);
        }
        Ok(())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // Errors here are harmless: AUTOCLEAR detaches on the last close.
        let _ = self.clear();
    }
}

fn loop_err(what: &'static str, path: &Path, source: io::Error) -> RuntimeError {
    RuntimeError::Loop {
        what,
        path: path.to_owned(),
        source,
    }
}

fn loop_info(file: &Path, flags: u32) -> LoopInfo64 {
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = file.as_os_str().as_encoded_bytes();
    let n = bytes.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&bytes[..n]);
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: flags,
        lo_file_name: name,
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; LO_KEY_SIZE],
        lo_init: [0; 2],
    }
}

/// Opens `/dev/loopN`, creating the node first where no devtmpfs or udev
/// did (some container hosts).
fn open_device(path: &Path, n: u32, read_only: bool) -> Result<File, RuntimeError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(loop_err("open", path, e)),
        Err(_) => {}
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| {
        loop_err(
            "create",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    // SAFETY: c_path is a valid NUL-terminated string for the call's duration.
    let r = unsafe {
        libc::mknod(
            c_path.as_ptr(),
            libc::S_IFBLK | 0o660,
            libc::makedev(LOOP_MAJOR, n),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        // Someone else created it meanwhile: fine.
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(loop_err("create", path, e));
        }
    }
    let f = open().map_err(|e| loop_err("open", path, e))?;
    match f.metadata() {
        Ok(m) if m.file_type().is_block_device() => Ok(f),
        Ok(_) => Err(loop_err(
            "open",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a block device"),
        )),
        Err(e) => Err(loop_err("stat", path, e)),
    }
}

/// Binds `backing` to `dev` with `info`'s flags: LOOP_CONFIGURE, or
/// LOOP_SET_FD + LOOP_SET_STATUS64 on kernels without it.
fn configure(dev: &File, backing: &File, info: &LoopInfo64) -> io::Result<()> {
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: *info,
        reserved: [0; 8],
    };
    // SAFETY: config is a valid struct loop_config that outlives the call;
    // the kernel only reads it.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // Kernels before 5.8 do not know LOOP_CONFIGURE.
    if !matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY)) {
        return Err(err);
    }
    // Read-only comes from the fds' modes here (LOOP_SET_STATUS64 cannot
    // set it): backing was opened read-only for a read-only attachment.
    // SAFETY: LOOP_SET_FD takes the backing fd as its argument.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: info is a valid struct loop_info64 that outlives the call.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_STATUS64,
            info as *const LoopInfo64,
        )
    };
    if r < 0 {
        let err = io::Error::last_os_error();
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD) };
        return Err(err);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        // sizeof(struct loop_info64) and sizeof(struct loop_config) on Linux.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn long_names_are_truncated_and_terminated() {
        let long = "/x".repeat(100);
        let info = loop_info(Path::new(&long), LO_FLAGS_AUTOCLEAR);
        assert_eq!(info.lo_file_name[LO_NAME_SIZE - 1], 0);
        assert_eq!(&info.lo_file_name[..2], b"/x");
        assert_eq!(info.lo_flags, LO_FLAGS_AUTOCLEAR);
    }
}
