//! Forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT to running containers, so that
//! a signal to `kindling run` stops the container and teardown still runs.
//!
//! `runc run` forwards the signals it receives to the container's process.
//! A terminal's Ctrl-C, Ctrl-\ or hang-up reaches runc by itself (it is in
//! our foreground process group); a `kill` aimed at our process does not,
//! so the forwarder passes on only signals sent by a process (`si_code` not
//! `SI_KERNEL`), and the container sees each signal once.
//!
//! A process that runs as the container's PID 1 without a handler for
//! SIGTERM or SIGINT ignores them (the kernel's rule for init; `sleep` in
//! Docker without `--init` is the classic case). So, as `docker stop`
//! does, a container still running its stop grace period
//! ([`RunOptions::stop_grace`](crate::RunOptions), 10 s by default) after
//! the first signal is killed (`runc kill ID KILL`): a supervisor's one
//! SIGTERM ends the run. The [`FORCE_KILL_AFTER`]th signal kills it at
//! once: press Ctrl-C three times.
//!
//! Installing the forwarder ([`forward_signals`]) replaces the default
//! action of those signals for the whole process, for good: our process no
//! longer dies of them, [`Container::run`](crate::Container::run) returns
//! once the container reacted, and the caller tears down and exits. A
//! signal that arrives while no container runs goes to the caller's
//! `when_idle` callback; one that arrives while a container is being set
//! up is delivered as soon as runc runs, or stops the start
//! ([`RuntimeError::Interrupted`]).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use signal_hook::low_level::siginfo::Cause;

use crate::RuntimeError;

/// The signals forwarded.
pub const FORWARDED_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// The signal count at which a container is killed outright.
pub const FORCE_KILL_AFTER: u32 = 3;

/// How to `runc kill` a container.
#[derive(Debug, Clone)]
pub(crate) struct KillWith {
    pub runc: PathBuf,
    pub state_dir: PathBuf,
    pub id: String,
}

impl KillWith {
    fn kill(&self) {
        let _ = Command::new(&self.runc)
            .arg("--root")
            .arg(&self.state_dir)
            .args(["kill", &self.id, "KILL"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A container this process is running.
#[derive(Debug)]
struct Running {
    /// Distinguishes two runs of the same id (one tearing down).
    token: u64,
    target: KillWith,
    /// Signals received during this run.
    signals: u32,
    /// runc's pid, once spawned.
    pid: Option<i32>,
    /// A signal that arrived before runc was spawned.
    pending: Option<i32>,
    /// How long after the first signal the container is killed.
    grace: std::time::Duration,
    /// Whether that kill is scheduled.
    grace_started: bool,
    /// The first signal received during this run.
    first: Option<i32>,
}

static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn running() -> MutexGuard<'static, Vec<Running>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts forwarding [`FORWARDED_SIGNALS`] received by this process to the
/// containers it runs; `when_idle(signal)` is called (on the forwarding
/// thread) for a signal that arrives while none runs - the caller's cue to
/// stop what it is doing and exit.
///
/// Call it once, early in `main`. Errors if called a second time.
pub fn forward_signals(when_idle: impl Fn(i32) + Send + 'static) -> Result<(), RuntimeError> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Err(RuntimeError::Signals {
            reason: "already installed".to_owned(),
        });
    }
    let fail = |e: std::io::Error| {
        INSTALLED.store(false, Ordering::SeqCst);
        RuntimeError::Signals {
            reason: e.to_string(),
        }
    };
    let mut signals = SignalsInfo::<WithOrigin>::new(FORWARDED_SIGNALS).map_err(fail)?;
    std::thread::Builder::new()
        .name("kindling-signals".to_owned())
        .spawn(move || {
            for info in signals.forever() {
                let from_terminal = info.cause == Cause::Kernel;
                if !deliver(info.signal, from_terminal) {
                    when_idle(info.signal);
                }
            }
        })
        .map_err(fail)?;
    Ok(())
}

/// Passes `signal` to every running container (or kills it, at the
/// [`FORCE_KILL_AFTER`]th); false if there is none.
fn deliver(signal: i32, from_terminal: bool) -> bool {
    let mut force = Vec::new();
    let any = {
        let mut running = running();
        for r in running.iter_mut() {
            r.signals += 1;
            r.first.get_or_insert(signal);
            match r.pid {
                Some(_) if r.signals >= FORCE_KILL_AFTER => force.push(r.target.clone()),
                Some(pid) if !from_terminal => kill(pid, signal),
                Some(_) => {}
                None => r.pending = Some(signal),
            }
            if r.pid.is_some() {
                start_grace(r);
            }
        }
        !running.is_empty()
    };
    // runc kill takes a while: not under the lock.
    for target in force {
        target.kill();
    }
    any
}

/// Kills `r`'s container once its grace period is over, if the same run
/// still has it then (a run unregisters before it reaps runc).
fn start_grace(r: &mut Running) {
    if r.grace_started {
        return;
    }
    r.grace_started = true;
    let (token, target, grace) = (r.token, r.target.clone(), r.grace);
    let _ = std::thread::Builder::new()
        .name("kindling-stop-grace".to_owned())
        .spawn(move || {
            std::thread::sleep(grace);
            if running().iter().any(|r| r.token == token) {
                target.kill();
            }
        });
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions. The pid is a
    // child not reaped yet (the run unregisters before it reaps runc), so
    // it cannot have been reused.
    unsafe { libc::kill(pid, signal) };
}

/// A container's entry in the registry; removed on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    token: u64,
}

impl Registration {
    /// Registers a container being set up, killed `grace` after the
    /// first signal if still running.
    pub(crate) fn new(target: KillWith, grace: std::time::Duration) -> Registration {
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        running().push(Running {
            token,
            target,
            signals: 0,
            pid: None,
            pending: None,
            grace,
            grace_started: false,
            first: None,
        });
        Registration { token }
    }

    /// A signal received since registering, before runc was spawned.
    pub(crate) fn pending(&self) -> Option<i32> {
        running()
            .iter()
            .find(|r| r.token == self.token)
            .and_then(|r| r.pending)
    }

    /// The first signal received since registering, if any.
    pub(crate) fn first_signal(&self) -> Option<i32> {
        running()
            .iter()
            .find(|r| r.token == self.token)
            .and_then(|r| r.first)
    }

    /// Records runc's pid and forwards a signal that arrived meanwhile.
    pub(crate) fn spawned(&self, pid: i32) {
        let mut running = running();
        if let Some(r) = running.iter_mut().find(|r| r.token == self.token) {
            r.pid = Some(pid);
            if let Some(signal) = r.pending.take() {
                kill(pid, signal);
                start_grace(r);
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        running().retain(|r| r.token != self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_before_spawn_are_kept_for_it() {
        let reg = Registration::new(
            KillWith {
                runc: "runc".into(),
                state_dir: "/nonexistent".into(),
                id: "x".into(),
            },
            std::time::Duration::from_secs(3600),
        );
        assert_eq!(reg.pending(), None);
        assert_eq!(reg.first_signal(), None);
        assert!(deliver(SIGTERM, true));
        assert_eq!(reg.pending(), Some(SIGTERM));
        assert_eq!(reg.first_signal(), Some(SIGTERM));
        // Spawned: the pending signal goes to the pid. Use a child that
        // dies of it to see it delivered.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        reg.spawned(child.id() as i32);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(SIGTERM));
        assert_eq!(reg.pending(), None);
        drop(reg);
        assert!(running().is_empty());
    }
}
