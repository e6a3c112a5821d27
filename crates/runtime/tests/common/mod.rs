//! Shared by the integration tests: prerequisites, an image flattened from
//! the corpus, output capture and the leak checks.
//!
//! The tests use the real kernel (loop devices, ext4) and the real runc.
//! Without root, runc or the corpus they print a skip note, except under CI
//! (env `CI` set), where they fail.

#![allow(dead_code)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kindling_runtime::{
    mount_ext4, process_from_image, Container, ExitStatusInfo, LoopDevice, ProcessSpec, RunOptions,
    RuntimeError, StdinMode,
};

/// The debian-slim corpus image directory, if everything the tests need is
/// there. Missing: a failure under CI, a skip note otherwise.
pub fn prerequisites(test: &str) -> Option<PathBuf> {
    let corpus = std::env::var_os("KINDLING_CORPUS")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from("/var/cache/kindling-corpus"),
            PathBuf::from,
        );
    let image = corpus.join("images/debian-slim");
    let runc = Command::new("runc")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // SAFETY: geteuid has no preconditions.
    let missing = if unsafe { libc::geteuid() } != 0 {
        "root (loop devices, mounts and runc need it)".to_owned()
    } else if !runc {
        "runc (apt-get install runc)".to_owned()
    } else if !image.join("index.json").is_file() {
        format!(
            "the image corpus at {} (build it with shared/corpus/make-corpus.sh)",
            corpus.display()
        )
    } else {
        return Some(image);
    };
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(!ci, "{test}: CI is set but {missing} is missing");
    eprintln!("{test}: skipped, {missing} is missing");
    None
}

/// A flattened debian-slim image in a temporary directory, with a mount
/// point, a runc state directory and a bundle directory beside it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub mnt: PathBuf,
    pub state: PathBuf,
    pub bundles: PathBuf,
}

impl Fixture {
    /// A scratch directory with overlayfs's upper, work and root
    /// directories made in it: (scratch, upper, work, root).
    pub fn overlay_dirs(&self) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
        let scratch = self.dir.path().join("scratch");
        let dirs = ["upper", "work", "root"].map(|d| scratch.join(d));
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        let [upper, work, root] = dirs;
        (scratch, upper, work, root)
    }

    pub fn new(image_dir: &Path) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("kindling-runtime-")
            .tempdir()
            .unwrap();
        let image = dir.path().join("disk.img");
        let source = kindling_oci::Image::open(image_dir.to_str().unwrap()).unwrap();
        let out = std::fs::File::create_new(&image).unwrap();
        kindling_flatten::flatten(&source, &out, &Default::default()).unwrap();
        drop(out);
        let mnt = dir.path().join("root");
        std::fs::create_dir(&mnt).unwrap();
        Fixture {
            image,
            mnt,
            state: dir.path().join("state"),
            bundles: dir.path().join("bundles"),
            dir,
        }
    }

    /// Options for a test run: our directories, stdin /dev/null, stdout
    /// and stderr captured.
    pub fn opts(&self, out: &Capture, err: &Capture) -> RunOptions {
        RunOptions {
            state_dir: self.state.clone(),
            bundle_dir: self.bundles.clone(),
            ..test_opts(out, err)
        }
    }

    /// Runs `sh -c SCRIPT` as `user` in the mounted image; (status, stdout,
    /// stderr).
    pub fn sh(
        &self,
        id: &str,
        user: &str,
        script: &str,
        tweak: impl FnOnce(&mut RunOptions),
    ) -> (Result<ExitStatusInfo, RuntimeError>, String, String) {
        let spec = ProcessSpec {
            user: user.to_owned(),
            ..process_from_image(&[], &argv(&["sh", "-c", script]), &[], "", "", None)
        };
        self.run(id, &spec, tweak)
    }

    pub fn run(
        &self,
        id: &str,
        spec: &ProcessSpec,
        tweak: impl FnOnce(&mut RunOptions),
    ) -> (Result<ExitStatusInfo, RuntimeError>, String, String) {
        let (out, err) = (Capture::default(), Capture::default());
        let mut opts = self.opts(&out, &err);
        tweak(&mut opts);
        let r = Container::run(id, &self.mnt, spec, opts);
        (r, out.text(), err.text())
    }

    /// The image attached to a loop device and mounted on `mnt`.
    pub fn mount(&self, read_only: bool) -> Mounted {
        let dev = LoopDevice::attach(&self.image, read_only).unwrap();
        let root = mount_ext4(dev.path(), &self.mnt, read_only).unwrap();
        Mounted { root, dev }
    }

    /// Unmounts and detaches, then checks that nothing is left.
    pub fn release(&self, mounted: Mounted) {
        drop(mounted);
        self.assert_nothing_attached();
    }

    /// Nothing of container `id` is left: runc state, bundle, cgroups.
    pub fn assert_container_gone(&self, id: &str) {
        assert!(!self.state.join(id).exists(), "runc state of {id} left");
        assert!(!self.bundles.join(id).exists(), "bundle of {id} left");
        for dir in cgroup_dirs(id) {
            assert!(!dir.exists(), "cgroup {} left", dir.display());
        }
    }

    /// Nothing of the fixture is mounted or attached any more.
    pub fn assert_nothing_attached(&self) {
        let ours = self.dir.path().to_str().unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for line in mounts.lines() {
            let point = line.split(' ').nth(4).unwrap_or("");
            assert!(!point.starts_with(ours), "still mounted: {line}");
        }
        // A loop device is released when its last user goes; give the
        // kernel a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let attached = loops_backed_by(&self.image);
            if attached.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "still attached: {attached:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A mounted image; fields drop in order, so the mount goes before its
/// loop device.
pub struct Mounted {
    pub root: kindling_runtime::Mounted,
    pub dev: LoopDevice,
}

/// The loop devices whose backing file is `file`.
pub fn loops_backed_by(file: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(b.trim_end()) == file {
                out.push(name);
            }
        }
    }
    out
}

/// Where runc would put container `id`'s cgroups (`kindling/ID`, relative
/// to our own cgroup, in every hierarchy).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let own: Vec<String> = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.splitn(3, ':')
                .nth(2)
                .map(|p| p.trim_start_matches('/').to_owned())
        })
        .collect();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        out.push(e.path().join("kindling").join(id));
        for p in &own {
            out.push(e.path().join(p).join("kindling").join(id));
        }
    }
    out
}

/// Default options but stdin /dev/null and stdout and stderr captured.
pub fn test_opts(out: &Capture, err: &Capture) -> RunOptions {
    RunOptions {
        stdin: StdinMode::Null,
        stdout: Some(Box::new(out.clone())),
        stderr: Some(Box::new(err.clone())),
        ..RunOptions::default()
    }
}

pub fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A `Write` that keeps what it is given.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
