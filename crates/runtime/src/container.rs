//! Running one process in a container with runc, from a mounted rootfs.
//!
//! [`Container::run`] writes an OCI bundle (`BUNDLE_DIR/ID/config.json`,
//! see the `spec` module for what is in it), runs `runc --root STATE run
//! --bundle BUNDLE ID` in the foreground and waits. The container's stdout
//! comes through a pipe that we copy, unbuffered, to our stdout (or a
//! writer), so that the first byte can be timed; its stderr and stdin are
//! ours unless asked otherwise. Whatever happens - exit, error, panic, a
//! signal (with [`forward_signals`](crate::forward_signals) installed) -
//! `runc delete --force ID` runs and the bundle directory is removed before
//! `run` returns.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::process::has_env;
use crate::rootfs::{self, Kind};
use crate::signals::{KillWith, Registration};
use crate::spec::{self, Mount, SpecInput};
use crate::users::resolve_user;
use crate::{ProcessSpec, RuntimeError};

/// Default runc state directory (`runc --root`). Under /run: container
/// state must not outlive a reboot.
pub const DEFAULT_STATE_DIR: &str = "/run/kindling/runc";
/// Default parent of the bundle directories.
pub const DEFAULT_BUNDLE_DIR: &str = "/run/kindling/bundles";
/// Default container hostname.
pub const DEFAULT_HOSTNAME: &str = "kindling";
/// Longest container id: a directory name (NAME_MAX) in the bundle, state
/// and cgroup trees.
const MAX_ID_LEN: usize = 255;
/// Largest /etc/passwd or /etc/group read from an image.
const MAX_USER_FILE: u64 = 4 << 20;
/// Stdout copy buffer: the pipe's default capacity (64 KiB).
const COPY_BUFFER: usize = 64 << 10;

/// What the container's stdin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdinMode {
    /// Our stdin, passed to the container.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
}

/// How to run a container. `Default` gives the documented defaults.
pub struct RunOptions {
    /// Make the rootfs read-only inside the container (OCI `root.readonly`).
    /// Default false: the rootfs is as writable as its mount.
    pub read_only_root: bool,
    /// The runc binary (looked up in `PATH` if bare). Default `runc`.
    pub runc: PathBuf,
    /// runc's state directory (`--root`). Default [`DEFAULT_STATE_DIR`].
    pub state_dir: PathBuf,
    /// Where bundles are written, one directory per container id. Default
    /// [`DEFAULT_BUNDLE_DIR`].
    pub bundle_dir: PathBuf,
    /// Called (on the copying thread) the moment the container's first
    /// stdout byte arrives, before it is written on. Default none.
    pub on_first_output: Option<Box<dyn FnOnce() + Send>>,
    /// The container's hostname, also in its `/etc/hostname` and
    /// `/etc/hosts`. Empty: the host's name and the host's two files.
    /// Default [`DEFAULT_HOSTNAME`].
    pub hostname: String,
    /// The container's stdin. Default [`StdinMode::Inherit`].
    pub stdin: StdinMode,
    /// Where the container's stdout goes. Default `None`: our stdout.
    pub stdout: Option<Box<dyn Write + Send>>,
    /// Where the container's stderr goes. Default `None`: our stderr,
    /// passed to the container as is (runc's own errors appear there too).
    pub stderr: Option<Box<dyn Write + Send>>,
    /// How long a container has to stop after the first forwarded signal
    /// before it is killed (`runc kill KILL`), as `docker stop` gives it:
    /// a PID 1 without handlers ignores SIGTERM, and a supervisor's one
    /// SIGTERM must still end the run. Default [`DEFAULT_STOP_GRACE`].
    pub stop_grace: std::time::Duration,
    /// Where the caller's `when_idle` signal handler (see
    /// [`forward_signals`](crate::forward_signals)) records a signal
    /// (non-zero: its number). Checked once this run is registered for
    /// forwarding, so that a signal that came between the caller's last
    /// look and the registration stops the start instead of being lost.
    /// Default none.
    pub interrupted: Option<&'static std::sync::atomic::AtomicI32>,
}

/// Default [`RunOptions::stop_grace`]: docker's 10 s.
pub const DEFAULT_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            read_only_root: false,
            runc: PathBuf::from("runc"),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            bundle_dir: PathBuf::from(DEFAULT_BUNDLE_DIR),
            on_first_output: None,
            hostname: DEFAULT_HOSTNAME.to_owned(),
            stdin: StdinMode::Inherit,
            stdout: None,
            stderr: None,
            stop_grace: DEFAULT_STOP_GRACE,
            interrupted: None,
        }
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("read_only_root", &self.read_only_root)
            .field("runc", &self.runc)
            .field("state_dir", &self.state_dir)
            .field("bundle_dir", &self.bundle_dir)
            .field("on_first_output", &self.on_first_output.is_some())
            .field("hostname", &self.hostname)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .finish()
    }
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatusInfo {
    code: i32,
    first_output: Option<Instant>,
}

impl ExitStatusInfo {
    /// The exit code; 128 + N if the process was killed by signal N (the
    /// shell's convention, which runc follows).
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The signal that killed the process, read from the 128 + N
    /// convention: a process that itself exits with 130 reads as SIGINT.
    pub fn signal(&self) -> Option<i32> {
        (129..=128 + 64)
            .contains(&self.code)
            .then(|| self.code - 128)
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// When the first stdout byte arrived, if any did.
    pub fn first_output(&self) -> Option<Instant> {
        self.first_output
    }
}

/// Containers run by runc. All functions block.
#[derive(Debug)]
pub struct Container;

impl Container {
    /// Runs `spec` in a container named `id` with root filesystem `rootfs`
    /// (a mounted image) and waits for it to exit.
    ///
    /// Errors before the process starts (bad id, unknown user, runc
    /// missing, runc's own failures such as "executable file not found")
    /// are `Err`; the process's own exit, whatever its code, is `Ok`.
    pub fn run(
        id: &str,
        rootfs: &Path,
        spec: &ProcessSpec,
        opts: RunOptions,
    ) -> Result<ExitStatusInfo, RuntimeError> {
        validate_id(id)?;
        if spec.args.is_empty() {
            return Err(RuntimeError::NoCommand { id: id.to_owned() });
        }
        let rootfs = fs::canonicalize(rootfs).map_err(|e| RuntimeError::io("open", rootfs, e))?;
        let (user, home) = resolve(&rootfs, &spec.user)?;
        let mut env = spec.env.clone();
        if !has_env(&env, "HOME") {
            env.push(format!("HOME={home}"));
        }
        if spec.terminal && !has_env(&env, "TERM") {
            env.push("TERM=xterm".to_owned());
        }

        let bundle = claim_bundle(&opts, id)?;
        // From here on the bundle (and whatever runc creates) is ours to
        // remove, on every path out.
        let mut teardown = Teardown {
            deleted: false,
            runc: opts.runc.clone(),
            state_dir: opts.state_dir.clone(),
            bundle_dir: opts.bundle_dir.clone(),
            id: id.to_owned(),
        };
        let hostname = (!opts.hostname.is_empty()).then_some(opts.hostname.as_str());
        let extra_mounts = extra_mounts(&rootfs, &bundle, hostname)?;
        let config = spec::build(SpecInput {
            id,
            rootfs: &rootfs.to_string_lossy(),
            read_only_root: opts.read_only_root,
            hostname,
            args: spec.args.clone(),
            env,
            cwd: spec.cwd.clone(),
            terminal: spec.terminal,
            user,
            extra_mounts,
        });
        let config_path = bundle.join("config.json");
        let json = serde_json::to_vec_pretty(&config).map_err(io::Error::from);
        json.and_then(|j| fs::write(&config_path, j))
            .map_err(|e| RuntimeError::io("write", &config_path, e))?;

        let registration = Registration::new(
            KillWith {
                runc: opts.runc.clone(),
                state_dir: opts.state_dir.clone(),
                id: id.to_owned(),
            },
            opts.stop_grace,
        );
        let before = opts
            .interrupted
            .map(|f| f.load(std::sync::atomic::Ordering::SeqCst))
            .filter(|&s| s != 0);
        if let Some(signal) = registration.pending().or(before) {
            return Err(RuntimeError::Interrupted {
                id: id.to_owned(),
                signal,
            });
        }
        let log = bundle.join("runc.log");
        let mut cmd = Command::new(&opts.runc);
        cmd.arg("--root")
            .arg(&opts.state_dir)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "run", "--bundle"])
            .arg(&bundle)
            .arg(id)
            .stdin(match opts.stdin {
                StdinMode::Inherit => Stdio::inherit(),
                StdinMode::Null => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(match opts.stderr {
                Some(_) => Stdio::piped(),
                None => Stdio::inherit(),
            });
        let mut child = cmd.spawn().map_err(|e| spawn_error(&opts.runc, "run", e))?;
        registration.spawned(child.id() as i32);
        let out = child.stdout.take().map(|pipe| {
            let to = opts.stdout.unwrap_or_else(|| Box::new(io::stdout()));
            copy_thread(pipe, to, opts.on_first_output)
        });
        let err = match (child.stderr.take(), opts.stderr) {
            (Some(pipe), Some(to)) => Some(copy_thread(pipe, to, None)),
            _ => None,
        };
        let (status, signalled) = wait(&mut child, registration, &opts.runc)?;
        // runc run has exited, so the container has; delete --force makes
        // sure of it (and that the pipes reach EOF) before joining.
        teardown.delete();
        let first_output = out.and_then(|t| t.join().ok().flatten());
        if let Some(t) = err {
            let _ = t.join();
        }
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        if code != 0 {
            if let Some(message) = runc_error(&log) {
                // A signal that reached runc while it was starting the
                // container is why the start failed ("can't get final
                // child's PID from pipe"): report the signal.
                if let Some(signal) = signalled {
                    return Err(RuntimeError::Interrupted {
                        id: id.to_owned(),
                        signal,
                    });
                }
                return Err(RuntimeError::Start {
                    id: id.to_owned(),
                    message,
                });
            }
        }
        drop(teardown);
        Ok(ExitStatusInfo { code, first_output })
    }

    /// Removes what runs that were killed before they could clean up left
    /// behind: their containers (killed and deleted) and bundles. Returns
    /// the ids removed. Safe to call while other runs are going on: only
    /// bundles whose owning process is gone are touched.
    pub fn sweep_orphans(opts: &RunOptions) -> Vec<String> {
        let Ok(dir) = fs::read_dir(&opts.bundle_dir) else {
            return Vec::new();
        };
        let mut swept = Vec::new();
        for entry in dir.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // No owner file yet: a run is creating it right now.
            if !crate::owner::left_by_dead_owner(&entry.path()) || validate_id(&id).is_err() {
                continue;
            }
            let _ = runc_command(&opts.runc, &opts.state_dir, &["delete", "--force", &id]);
            if fs::remove_dir_all(entry.path()).is_ok() {
                swept.push(id);
            }
        }
        swept
    }

    /// Sends `signal` to container `id`'s process (`runc kill`). Usable from
    /// any thread, e.g. a signal-handling one, while `run` waits.
    pub fn kill(runc: &Path, state_dir: &Path, id: &str, signal: i32) -> Result<(), RuntimeError> {
        validate_id(id)?;
        runc_command(runc, state_dir, &["kill", id, &signal.to_string()])
    }

    /// Removes every trace of container `id`: `runc delete --force` (kills
    /// it if it still runs) and its bundle directory under `bundle_dir`.
    /// Succeeds if there is nothing to remove.
    pub fn cleanup(
        runc: &Path,
        state_dir: &Path,
        bundle_dir: &Path,
        id: &str,
    ) -> Result<(), RuntimeError> {
        validate_id(id)?;
        runc_command(runc, state_dir, &["delete", "--force", id])?;
        let bundle = bundle_dir.join(id);
        match fs::remove_dir_all(&bundle) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(RuntimeError::io("remove", bundle, e))
            }
            _ => Ok(()),
        }
    }
}

/// Runs `runc delete --force` and removes the bundle when dropped; errors
/// are ignored there (use [`Container::cleanup`] to see them).
#[derive(Debug)]
struct Teardown {
    deleted: bool,
    runc: PathBuf,
    state_dir: PathBuf,
    bundle_dir: PathBuf,
    id: String,
}

impl Teardown {
    fn delete(&mut self) {
        if !std::mem::replace(&mut self.deleted, true) {
            let _ = runc_command(
                &self.runc,
                &self.state_dir,
                &["delete", "--force", &self.id],
            );
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.delete();
        let _ = fs::remove_dir_all(self.bundle_dir.join(&self.id));
    }
}

/// Creates `BUNDLE_DIR/ID` (and the state directory); the bundle
/// directory's creation is what reserves the id among concurrent runs.
fn claim_bundle(opts: &RunOptions, id: &str) -> Result<PathBuf, RuntimeError> {
    let state = opts.state_dir.join(id);
    if state.exists() {
        return Err(RuntimeError::AlreadyExists {
            id: id.to_owned(),
            path: state,
        });
    }
    for dir in [&opts.state_dir, &opts.bundle_dir] {
        fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
    }
    let bundle = opts.bundle_dir.join(id);
    match fs::create_dir(&bundle) {
        Ok(()) => {
            crate::owner::claim_dir(&bundle)
                .map_err(|e| RuntimeError::io("write", bundle.join(crate::owner::OWNER_FILE), e))?;
            Ok(bundle)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(RuntimeError::AlreadyExists {
            id: id.to_owned(),
            path: bundle,
        }),
        Err(e) => Err(RuntimeError::io("create", &bundle, e)),
    }
}

/// The mounts after runc's standard ones: a tmpfs `/tmp` and the read-only
/// `/etc` binds, each only where its mount point exists or can be created
/// (a read-only rootfs without `/etc/hosts` goes without).
fn extra_mounts(
    rootfs: &Path,
    bundle: &Path,
    hostname: Option<&str>,
) -> Result<Vec<Mount>, RuntimeError> {
    let writable =
        !rootfs::is_read_only(rootfs).map_err(|e| RuntimeError::io("statvfs", rootfs, e))?;
    let point = |dest: &str, kind| {
        rootfs::ensure_mount_point(rootfs, dest, kind, writable)
            .map_err(|e| RuntimeError::io("create mount point", rootfs.join(&dest[1..]), e))
    };
    let mut out = Vec::new();
    if point("/tmp", Kind::Dir)? {
        out.push(Mount::tmp());
    }
    for (dest, source) in etc_files(bundle, hostname)? {
        if point(dest, Kind::File)? {
            out.push(Mount::bind_ro(dest, &source.to_string_lossy()));
        }
    }
    Ok(out)
}

/// runc's rule for ids (`[A-Za-z0-9_+.-]+`, not `.` or `..`), with a
/// length cap.
fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId { id: id.to_owned() })
    }
}

/// The OCI user and home directory for the `user` string.
fn resolve(rootfs: &Path, user: &str) -> Result<(spec::User, String), RuntimeError> {
    let read = |path: &str| {
        rootfs::read_file(rootfs, path, MAX_USER_FILE)
            .map(|bytes| bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
            .map_err(|e| RuntimeError::io("read", rootfs.join(&path[1..]), e))
    };
    let passwd = read("/etc/passwd")?;
    let group = read("/etc/group")?;
    let u = resolve_user(user, passwd.as_deref(), group.as_deref()).map_err(|reason| {
        RuntimeError::User {
            user: user.to_owned(),
            reason,
        }
    })?;
    Ok((
        spec::User {
            uid: u.uid,
            gid: u.gid,
            additional_gids: u.additional_gids,
        },
        u.home,
    ))
}

/// The read-only binds for `/etc/resolv.conf`, `/etc/hosts` and
/// `/etc/hostname`: (destination, host source).
///
/// resolv.conf is the host's (the container shares the host's network),
/// if the host has one. With a hostname, hostname and hosts are written
/// into the bundle: the name, and the host's hosts plus a line mapping the
/// name to 127.0.1.1 (as Debian does) so that programs resolving their own
/// hostname (Java's `getLocalHost`) work. Without one they are the host's.
fn etc_files(
    bundle: &Path,
    hostname: Option<&str>,
) -> Result<Vec<(&'static str, PathBuf)>, RuntimeError> {
    let host = |p: &str| Some(PathBuf::from(p)).filter(|p| p.is_file());
    let mut out = Vec::new();
    if let Some(p) = host("/etc/resolv.conf") {
        out.push(("/etc/resolv.conf", p));
    }
    let Some(name) = hostname else {
        out.extend(host("/etc/hosts").map(|p| ("/etc/hosts", p)));
        out.extend(host("/etc/hostname").map(|p| ("/etc/hostname", p)));
        return Ok(out);
    };
    let write = |file: &str, text: String| {
        let p = bundle.join(file);
        fs::write(&p, text).map_err(|e| RuntimeError::io("write", &p, e))?;
        Ok::<_, RuntimeError>(p)
    };
    let host_hosts = fs::read_to_string("/etc/hosts").unwrap_or_else(|_| {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_owned()
    });
    out.push(("/etc/hosts", write("hosts", hosts_with(&host_hosts, name))?));
    out.push(("/etc/hostname", write("hostname", format!("{name}\n"))?));
    Ok(out)
}

/// `hosts` plus `127.0.1.1 name` unless some line names it already.
fn hosts_with(hosts: &str, name: &str) -> String {
    let named = hosts.lines().any(|l| {
        let l = l.split('#').next().unwrap_or("");
        l.split_whitespace().skip(1).any(|n| n == name)
    });
    let mut out = hosts.to_owned();
    if !named {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("127.0.1.1\t{name}\n"));
    }
    out
}

/// Copies `from` to `to` as bytes arrive, flushing each time; calls
/// `first` on the first byte and returns when that was. When `to` fails
/// (a reader that went away: `kindling run ... | head -1`) the copy ends
/// and `from`, the container's pipe, is closed: its writer gets EPIPE or
/// SIGPIPE as it would writing to `to` itself, instead of writing on into
/// a pipe that is drained for nobody (`yes` would never stop).
fn copy_thread(
    mut from: impl Read + Send + 'static,
    mut to: Box<dyn Write + Send>,
    mut first: Option<Box<dyn FnOnce() + Send>>,
) -> JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut first_at = None;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if first_at.is_none() {
                first_at = Some(Instant::now());
                if let Some(f) = first.take() {
                    f();
                }
            }
            if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                break;
            }
        }
        first_at
    })
}

/// Waits for runc to exit without reaping it, unregisters it from signal
/// forwarding (so no signal can reach a recycled pid), then reaps it.
/// Also returns the first signal forwarded to the run, if any.
fn wait(
    child: &mut Child,
    registration: Registration,
    runc: &Path,
) -> Result<(std::process::ExitStatus, Option<i32>), RuntimeError> {
    loop {
        // SAFETY: siginfo_t is plain old data; all-zero is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a valid out-pointer; WNOWAIT leaves the child
        // for the wait() below.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id(),
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(spawn_error(runc, "run", e));
        }
    }
    let signalled = registration.first_signal();
    drop(registration);
    let status = child.wait().map_err(|e| spawn_error(runc, "run", e))?;
    Ok((status, signalled))
}

fn spawn_error(runc: &Path, what: &str, e: io::Error) -> RuntimeError {
    if e.kind() == io::ErrorKind::NotFound {
        RuntimeError::RuncMissing {
            runc: runc.to_owned(),
        }
    } else {
        RuntimeError::Spawn {
            command: format!("{} {what}", runc.display()),
            source: e,
        }
    }
}

/// Runs `runc --root STATE ARGS...`, capturing its output.
fn runc_command(runc: &Path, state_dir: &Path, args: &[&str]) -> Result<(), RuntimeError> {
    let out = Command::new(runc)
        .arg("--root")
        .arg(state_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(runc, args[0], e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(RuntimeError::RuncCommand {
        command: format!("{} {}", runc.display(), args.join(" ")),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// The last error runc logged (JSON lines, `"level":"error"`), if any.
fn runc_error(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .find_map(|v| v["msg"].as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc() {
        for ok in ["a", "kindling-1", "A_b+c.d", &"x".repeat(255)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(256)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals_follow_the_128_convention() {
        let s = |code| ExitStatusInfo {
            code,
            first_output: None,
        };
        assert_eq!(s(0).signal(), None);
        assert!(s(0).success());
        assert_eq!(s(7).signal(), None);
        assert_eq!(s(128).signal(), None);
        assert_eq!(s(137).signal(), Some(9));
        assert_eq!(s(143).signal(), Some(15));
        assert_eq!(s(255).signal(), None);
    }

    #[test]
    fn hosts_gain_the_hostname_once() {
        assert_eq!(
            hosts_with("127.0.0.1 localhost\n", "box"),
            "127.0.0.1 localhost\n127.0.1.1\tbox\n"
        );
        assert_eq!(
            hosts_with("127.0.0.1 localhost", "box"),
            "127.0.0.1 localhost\n127.0.1.1\tbox\n"
        );
        let named = "127.0.0.1 localhost box\n";
        assert_eq!(hosts_with(named, "box"), named);
        let commented = "127.0.0.1 localhost # box\n";
        assert!(hosts_with(commented, "box").ends_with("127.0.1.1\tbox\n"));
    }

    #[test]
    fn runc_errors_come_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runc.log");
        assert_eq!(runc_error(&log), None);
        fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\"}\nnot json\n{\"level\":\"error\",\"msg\":\"exec: \\\"x\\\": not found\"}\n",
        )
        .unwrap();
        assert_eq!(runc_error(&log).unwrap(), "exec: \"x\": not found");
    }

    /// A writer whose reader went away.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A reader that went away closes the container's pipe: its writer
    /// gets EPIPE, as it would writing to that reader itself.
    #[test]
    fn a_dead_reader_closes_the_containers_pipe() {
        let (reader, mut writer) = io::pipe().unwrap();
        let t = copy_thread(reader, Box::new(Broken), None);
        // The test harness ignores SIGPIPE, so the failure is an error.
        let chunk = [7u8; 4096];
        let mut failed = None;
        for _ in 0..100_000 {
            if let Err(e) = writer.write_all(&chunk) {
                failed = Some(e.kind());
                break;
            }
        }
        assert_eq!(failed, Some(io::ErrorKind::BrokenPipe));
        assert!(t.join().unwrap().is_some());
    }

    #[test]
    fn copying_reports_the_first_byte_and_survives_a_dead_writer() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = copy_thread(
            io::Cursor::new(vec![1u8; 200_000]),
            Box::new(Broken),
            Some(Box::new(move || tx.send(()).unwrap())),
        );
        assert!(t.join().unwrap().is_some());
        assert!(rx.try_recv().is_ok());
        let t = copy_thread(io::empty(), Box::new(io::sink()), None);
        assert_eq!(t.join().unwrap(), None);
    }
}
