//! The runner's pieces: from an image file to a process running in a
//! container (DESIGN.md, section 6).
//!
//! `kindling run` gets the image as one file (the agent's `disk.img`) and
//! then, with this crate:
//!
//! * [`LoopDevice::attach`] makes the file a block device (`/dev/loopN`,
//!   detached on drop);
//! * [`mount_ext4`] mounts its ext4 filesystem ([`Mounted`], unmounted on
//!   drop);
//! * [`process_from_image`] turns the image config into a [`ProcessSpec`]
//!   the way Docker does;
//! * [`Container::run`] writes an OCI bundle and runs the process with runc,
//!   streaming its output and returning its exit code ([`ExitStatusInfo`]),
//!   and removes every trace of the container whatever happens;
//! * [`private_mount_namespace`] keeps every mount of a run out of other
//!   namespaces and lets the kernel remove them if we die;
//! * [`forward_signals`] makes SIGINT/SIGTERM to our process reach the
//!   container instead of killing us before teardown.
//!
//! Drop order is teardown order: declare the loop device first, the mount
//! second.
//!
//! ```no_run
//! use kindling_runtime::*;
//! use std::path::Path;
//!
//! forward_signals(|sig| std::process::exit(128 + sig)).unwrap();
//! let dev = LoopDevice::attach(Path::new("/mnt/agent/disk.img"), false).unwrap();
//! let root = mount_ext4(dev.path(), Path::new("/run/kindling/root/c1"), false).unwrap();
//! let spec = process_from_image(&[], &["sh".into(), "-c".into(), "echo hi".into()], &[], "", "", None);
//! let status = Container::run("c1", root.target(), &spec, RunOptions::default()).unwrap();
//! std::process::exit(status.code());
//! ```

mod container;
mod error;
mod loopdev;
mod mount;
mod namespace;
mod opens;
mod owner;
mod process;
mod rootfs;
mod signals;
mod spec;
mod users;
mod warm;

pub use container::{
    Container, ExitStatusInfo, RunOptions, StdinMode, DEFAULT_BUNDLE_DIR, DEFAULT_HOSTNAME,
    DEFAULT_STATE_DIR,
};
pub use error::RuntimeError;
pub use loopdev::{LoopDevice, READ_AHEAD_KB};
pub use mount::{mount_ext4, mount_overlay, Mounted};
pub use namespace::private_mount_namespace;
pub use opens::OpenWatch;
pub use owner::{claim_dir, sweep_dirs};
pub use process::{process_from_image, ProcessSpec, DEFAULT_PATH};
pub use signals::{forward_signals, FORCE_KILL_AFTER, FORWARDED_SIGNALS};
pub use spec::DEFAULT_CAPABILITIES;
pub use warm::{record as record_file_trace, warm, Warmed};
