//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while attaching, mounting or running.
///
/// Messages are short, lowercase and name the device, path or command; the
/// underlying `io::Error` (if any) is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A loop device operation (`what`: "open", "attach", "detach", ...) on
    /// `path` failed.
    #[error("loop device: {what} {path}")]
    Loop {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Every free loop device was taken by another attacher, again and again.
    #[error("no free loop device for {file} after {attempts} attempts")]
    NoFreeLoop { file: PathBuf, attempts: u32 },
    /// mount(2) of `dev` on `target` failed.
    #[error("mount {dev} on {target}")]
    Mount {
        dev: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// umount2(2) of `target` failed, even with MNT_DETACH.
    #[error("unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Setting up a private mount namespace failed (`what`: the step).
    #[error("{what} a private mount namespace (needs root)")]
    Namespace {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The runc binary could not be found.
    #[error("{runc} not found: install runc (apt install runc)")]
    RuncMissing { runc: PathBuf },
    /// A runc command could not be started or waited for.
    #[error("run {command}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// A runc command (`kill`, `delete`, ...) exited unsuccessfully.
    #[error("{command} failed ({status}): {stderr}")]
    RuncCommand {
        command: String,
        status: String,
        stderr: String,
    },
    /// runc reported an error for container `id`, typically before its
    /// process started ("executable file not found", a bad mount, ...).
    #[error("container {id}: {message}")]
    Start { id: String, message: String },
    /// The container id is not one runc accepts.
    #[error("invalid container id {id:?}: use 1 to 1024 of letters, digits, '_', '+', '-', '.'")]
    InvalidId { id: String },
    /// A container (or its bundle) with this id already exists.
    #[error("container {id} already exists ({path})")]
    AlreadyExists { id: String, path: PathBuf },
    /// The process to run has no arguments (image without entrypoint and cmd).
    #[error("container {id}: no command to run (the image has no entrypoint or cmd)")]
    NoCommand { id: String },
    /// The `user` of the process could not be resolved in the rootfs.
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    /// Reading or writing a file of the bundle or the rootfs failed.
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A signal arrived before the container started; it was not started.
    #[error("interrupted by signal {signal} before container {id} started")]
    Interrupted { id: String, signal: i32 },
    /// Installing the signal forwarder failed, or it is installed already.
    #[error("signal forwarding: {reason}")]
    Signals { reason: String },
}

impl RuntimeError {
    /// The exit status a container runner gives for this failure, as
    /// docker does: 127 when the command does not exist, 126 when it
    /// cannot be executed, 128 + n when signal n stopped the start, else
    /// `None` (a failure of the runner itself, which callers report as
    /// they report their own).
    pub fn exit_code(&self) -> Option<i32> {
        let message = match self {
            RuntimeError::Start { message, .. } => message,
            RuntimeError::Interrupted { signal, .. } => return Some(128 + signal),
            _ => return None,
        };
        // runc: `exec: "CMD": executable file not found in $PATH`,
        // `exec: "/x": stat /x: no such file or directory`,
        // `exec: "/etc/passwd": permission denied`.
        let exec = message.find("exec: \"").map(|at| &message[at..])?;
        if exec.contains("executable file not found") || exec.contains("no such file or directory")
        {
            Some(127)
        } else if exec.contains("permission denied") || exec.contains("exec format error") {
            Some(126)
        } else {
            None
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_failures_exit_as_docker_does() {
        let start = |m: &str| RuntimeError::Start {
            id: "k".into(),
            message: format!("runc run failed: unable to start container process: {m}"),
        };
        for (m, code) in [
            (
                r#"exec: "nope": executable file not found in $PATH"#,
                Some(127),
            ),
            (
                r#"exec: "/x/y": stat /x/y: no such file or directory"#,
                Some(127),
            ),
            (r#"exec: "/etc/passwd": permission denied"#, Some(126)),
            (r#"exec: "/bin/arm": exec format error"#, Some(126)),
            ("error mounting \"proc\": permission denied", None),
        ] {
            assert_eq!(start(m).exit_code(), code, "{m}");
        }
        assert_eq!(RuntimeError::InvalidId { id: "x".into() }.exit_code(), None);
        let stopped = RuntimeError::Interrupted {
            id: "k".into(),
            signal: 15,
        };
        assert_eq!(stopped.exit_code(), Some(143));
    }
}
