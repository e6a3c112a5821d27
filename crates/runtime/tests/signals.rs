//! Signal forwarding, in a test binary of its own: the forwarder is
//! process-wide and the test sends signals to its own process.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{prerequisites, Fixture};
use kindling_runtime::{forward_signals, RuntimeError, FORCE_KILL_AFTER};

fn raise(signal: i32) {
    // SAFETY: kill(2) on our own pid; the forwarder handles the signal.
    unsafe { libc::kill(libc::getpid(), signal) };
}

#[test]
fn signals_to_our_process_reach_the_container_and_teardown_runs() {
    let Some(image) = prerequisites("signals_to_our_process_reach_the_container") else {
        return;
    };
    let (idle_tx, idle_rx) = mpsc::channel();
    forward_signals(move |sig| idle_tx.send(sig).unwrap()).unwrap();
    let again = forward_signals(|_| {}).unwrap_err();
    assert!(matches!(again, RuntimeError::Signals { .. }), "{again}");

    // No container: the caller's callback gets it, and we live on.
    raise(libc::SIGINT);
    assert_eq!(
        idle_rx.recv_timeout(Duration::from_secs(10)),
        Ok(libc::SIGINT)
    );

    let fx = Fixture::new(&image);
    let mounted = fx.mount(true);
    // SIGTERM to us while a container runs: forwarded through runc to the
    // container, whose handler answers; run returns its exit code.
    let script = "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done";
    let start = Instant::now();
    let (r, out, err) = fx.sh("trapper", "", script, |o| {
        o.on_first_output = Some(Box::new(|| raise(libc::SIGTERM)));
    });
    let status = r.unwrap();
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(status.code(), 42, "{err}");
    assert_eq!(out, "ready\ngot-term\n");
    assert!(
        idle_rx.try_recv().is_err(),
        "forwarded signal also went to the idle callback"
    );
    fx.assert_container_gone("trapper");

    // PID 1 without handlers ignores SIGTERM; the third signal kills it.
    let start = Instant::now();
    let (r, out, _) = fx.sh("stubborn", "", "echo ready; exec sleep 60", |o| {
        o.on_first_output = Some(Box::new(|| {
            std::thread::spawn(|| {
                for _ in 0..FORCE_KILL_AFTER {
                    raise(libc::SIGTERM);
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }));
    });
    let status = r.unwrap();
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(out, "ready\n");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(idle_rx.try_recv().is_err());
    fx.assert_container_gone("stubborn");

    // One SIGTERM (a supervisor's) to such a PID 1: killed when the stop
    // grace period is over, as `docker stop` does.
    let start = Instant::now();
    let (r, out, _) = fx.sh("graced", "", "echo ready; exec sleep 60", |o| {
        o.stop_grace = Duration::from_secs(2);
        o.on_first_output = Some(Box::new(|| raise(libc::SIGTERM)));
    });
    let status = r.unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert_eq!(out, "ready\n");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    fx.assert_container_gone("graced");

    fx.release(mounted);
}
