//! Who owns a run's leftovers: a bundle or a run directory names the
//! process that made it, so what a killed run left behind can be told
//! from what a live run is using.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The file in a bundle naming the process that runs it: a bundle whose
/// owner is gone was left by a run that was killed (SIGKILL, OOM, power
/// loss of a VM), and its container may still be running.
pub(crate) const OWNER_FILE: &str = "owner";

/// A process, told apart from a later one with the same pid by its start
/// time (clock ticks since boot, /proc/PID/stat field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pid: u32,
    start: u64,
}

impl Owner {
    pub(crate) fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Owner> {
        let (pid, start) = s.trim().split_once(' ')?;
        Some(Owner {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    pub(crate) fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pid, self.start)
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the
    // fields after its closing parenthesis start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Marks `dir` (a run's scratch directory) as this process's: see
/// [`sweep_dirs`].
pub fn claim_dir(dir: &Path) -> io::Result<()> {
    fs::write(dir.join(OWNER_FILE), Owner::me().to_string())
}

/// Removes the directories in `parent` named `prefix*` that a killed run
/// claimed with [`claim_dir`]: their owner is gone and nothing is mounted
/// inside them (with a mount namespace per run, a killed run's mounts die
/// with it; one that survived is left alone rather than emptied through).
/// Returns the directories removed.
pub fn sweep_dirs(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let named = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix));
        if !named || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if !left_by_dead_owner(&path) || mounted_under(&mounts, &path) {
            continue;
        }
        if fs::remove_dir_all(&path).is_ok() {
            swept.push(path);
        }
    }
    swept
}

/// Whether `dir` names its owner (a claimed directory with no owner file
/// is still being set up) and that owner is gone.
pub(crate) fn left_by_dead_owner(dir: &Path) -> bool {
    fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|s| Owner::parse(&s))
        .is_some_and(|owner| !owner.alive())
}

/// Whether mountinfo lists a mount point at or below `dir`.
fn mounted_under(mountinfo: &str, dir: &Path) -> bool {
    let Some(dir) = dir.to_str() else {
        return true;
    };
    mountinfo.lines().any(|line| {
        // Field 5 is the mount point, with spaces and the like escaped as
        // octal; our directories' names have none.
        line.split(' ').nth(4).is_some_and(|m| {
            m == dir
                || m.strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn owners_are_told_apart_from_dead_processes() {
        let me = Owner::me();
        assert!(me.start > 0);
        assert_eq!(Owner::parse(&me.to_string()), Some(me));
        assert!(me.alive());
        // Same pid, another start time: a reused pid is not the owner.
        assert!(!Owner {
            start: me.start + 1,
            ..me
        }
        .alive());
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let owner = Owner {
            pid,
            start: start_time(pid).unwrap_or(1),
        };
        child.wait().unwrap();
        assert!(!owner.alive());
        for bad in ["", "12", "x 1", "1 y", "1 2 3"] {
            assert_eq!(Owner::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_dead_owners_unmounted_dirs_are_swept() {
        let parent = tempfile::tempdir().unwrap();
        let mine = parent.path().join("run-mine");
        let dead = parent.path().join("run-dead");
        let unclaimed = parent.path().join("run-new");
        let other = parent.path().join("other-dead");
        for d in [&mine, &dead, &unclaimed, &other] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("data"), b"x").unwrap();
        }
        claim_dir(&mine).unwrap();
        let mut child = Command::new("true").spawn().unwrap();
        let gone = Owner {
            pid: child.id(),
            start: start_time(child.id()).unwrap_or(1),
        };
        child.wait().unwrap();
        for d in [&dead, &other] {
            fs::write(d.join(OWNER_FILE), gone.to_string()).unwrap();
        }
        assert_eq!(sweep_dirs(parent.path(), "run-"), vec![dead.clone()]);
        assert!(mine.exists() && unclaimed.exists() && other.exists() && !dead.exists());
    }

    #[test]
    fn mounts_below_a_dir_are_seen() {
        let info = "36 35 98:0 / /tmp/run-a/root rw - ext4 /dev/loop0 ro\n\
                    37 35 98:0 / /tmp/run-ab rw - ext4 /dev/loop1 ro\n";
        assert!(mounted_under(info, Path::new("/tmp/run-a")));
        assert!(mounted_under(info, Path::new("/tmp/run-ab")));
        assert!(!mounted_under(info, Path::new("/tmp/run-b")));
        assert!(!mounted_under(info, Path::new("/tmp/run")));
    }
}
