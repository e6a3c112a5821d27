//! `kindling mount` end to end, through the kernel: FUSE serves disk.img,
//! byte-identical to `flatten` output; writes stay in the overlay; SIGINT
//! unmounts cleanly. Needs root (FUSE mount): a skip note outside CI.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

fn mounted(dir: &Path) -> bool {
    let m = fs::read_to_string("/proc/mounts").unwrap();
    let d = dir.canonicalize().unwrap_or(dir.to_path_buf());
    m.lines()
        .any(|l| l.split(' ').nth(1) == Some(d.to_str().unwrap()))
}

/// Starts `kindling mount` and waits for disk.img.
fn start_mount(data: &Path, name: &str, store: &Path, mnt: &Path, extra: &[&str]) -> Child {
    // Fails on a dead FUSE mount (EEXIST), which kindling itself clears.
    let _ = fs::create_dir_all(mnt);
    let child = kindling_in(data)
        .args(["mount", name])
        .arg(mnt)
        .arg("--store")
        .arg(store)
        .args(extra)
        .spawn()
        .unwrap();
    let t = Instant::now();
    // Opened, not just seen: a dead mount's cached entry can still be seen.
    while fs::File::open(mnt.join("disk.img")).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "disk.img never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(mut child: Child, mnt: &Path) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "mount exited with {status}");
    assert!(!mounted(mnt), "{} still mounted", mnt.display());
}

#[test]
fn mount_serves_the_image_and_keeps_writes_private() {
    if !can_mount("mount_serves_the_image_and_keeps_writes_private") {
        return;
    }
    let _turn = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch("agent", "serve");
    let layout = dir.join("layout");
    write_layout(
        &layout,
        &[Layer::gzip(vec![
            Entry::dir("etc"),
            Entry::file("etc/big", kindling_testkit::prng("big", 3 << 20)),
            Entry::file("etc/hello", b"hello from the image\n"),
        ])],
    );
    let store = dir.join("store");
    push_to(&dir, &layout, "t:1", &store);
    let flat = dir.join("flat.img");
    flatten_json(layout.as_os_str(), &flat, &[]);
    let before = sha256_file(&flat);

    let mnt = dir.join("mnt");
    let child = start_mount(&dir, "t:1", &store, &mnt, &[]);
    let disk = mnt.join("disk.img");
    assert_eq!(
        sha256_file(&disk),
        before,
        "disk.img differs from flatten output"
    );
    // Writes land in the overlay and read back.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    f.write_all_at(b"overwritten", 5000).unwrap();
    let mut back = [0u8; 11];
    f.read_exact_at(&mut back, 5000).unwrap();
    assert_eq!(&back, b"overwritten");
    // The size cannot change.
    assert!(f.set_len(4096).is_err());
    drop(f);
    // The image mounts as ext4 through a loop device.
    let root = dir.join("root");
    fs::create_dir_all(&root).unwrap();
    let st = Command::new("mount")
        .args(["-o", "loop,ro", "-t", "ext4"])
        .arg(&disk)
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let hello = fs::read_to_string(root.join("etc/hello"));
    assert_eq!(hello.unwrap(), "hello from the image\n");
    // Stopped while the loop-mounted image is in use, the agent keeps
    // serving it until it is released, then exits cleanly.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(4));
    let mut child = child;
    assert!(child.try_wait().unwrap().is_none(), "stopped while in use");
    assert!(!mounted(&mnt), "{} still in the mount table", mnt.display());
    assert!(fs::read(root.join("etc/big")).unwrap() == kindling_testkit::prng("big", 3 << 20));
    let st = Command::new("umount").arg(&root).status().unwrap();
    assert!(st.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "never exited");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "mount exited with {status}");
    // MOUNTPOINT must be an empty directory.
    fs::write(mnt.join("keep"), b"x").unwrap();
    let o = output(
        kindling_in(&dir)
            .args(["mount", "t:1"])
            .arg(&mnt)
            .arg("--store")
            .arg(&store),
    );
    assert_status(&o, 1, "not empty");
    let o = output(
        kindling_in(&dir)
            .args(["mount", "t:1"])
            .arg(mnt.join("keep"))
            .arg("--store")
            .arg(&store),
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(!mounted(&mnt.join("keep")));
    fs::remove_file(mnt.join("keep")).unwrap();

    // A new agent starts from the image again: the write is gone.
    let child = start_mount(&dir, "t:1", &store, &mnt, &["--read-only"]);
    assert_eq!(sha256_file(&mnt.join("disk.img")), before);
    assert!(fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("disk.img"))
        .is_err());
    stop(child, &mnt);

    // An agent killed outright leaves a dead FUSE mount; the next mount
    // on that directory takes it away and serves.
    let mut child = start_mount(&dir, "t:1", &store, &mnt, &[]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(mounted(&mnt));
    let child = start_mount(&dir, "t:1", &store, &mnt, &[]);
    assert_eq!(sha256_file(&mnt.join("disk.img")), before);
    stop(child, &mnt);
    let _ = fs::remove_dir_all(&dir);
}

/// `disk.img` as a QEMU drive: QEMU's own block layer (qemu-img,
/// qemu-io, the code a VM's virtio-blk drive runs on) reads it equal to
/// `flatten` output, with the page cache and with O_DIRECT (cache=none),
/// and writes through it into the overlay, which a later QEMU session on
/// the same agent still sees. (Booting a guest needs a kernel with
/// virtio-blk and ext4 built in; the machines have none.)
#[test]
fn disk_img_works_as_a_qemu_drive() {
    if !can_mount("disk_img_works_as_a_qemu_drive") {
        return;
    }
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("qemu-io") || !have("qemu-img") {
        assert!(!in_ci(), "qemu-io and qemu-img are needed (apt qemu-utils)");
        eprintln!("disk_img_works_as_a_qemu_drive: skipped, no qemu-utils");
        return;
    }
    let _turn = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch("agent", "qemu");
    let layout = dir.join("layout");
    write_layout(
        &layout,
        &[Layer::gzip(vec![
            Entry::dir("data"),
            Entry::file("data/big", kindling_testkit::prng("qemu", 5 << 20)),
        ])],
    );
    let store = dir.join("store");
    push_to(&dir, &layout, "q:1", &store);
    let flat = dir.join("flat.img");
    flatten_json(layout.as_os_str(), &flat, &[]);
    let mnt = dir.join("mnt");
    let child = start_mount(&dir, "q:1", &store, &mnt, &[]);
    let disk = mnt.join("disk.img");
    for cache in ["writeback", "none"] {
        let o = output(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "raw", "-T", cache])
                .arg(&disk)
                .arg(&flat),
        );
        assert!(o.status.success(), "cache={cache}: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Images are identical"));
    }
    let qemu_io = |cache: &str, cmds: &[&str]| {
        let mut c = Command::new("qemu-io");
        c.args(["-f", "raw", "-t", cache]);
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        let o = output(c.arg(&disk));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "qemu-io {cmds:?}: {text}");
        assert!(
            !text.contains("failed") && !text.contains("error"),
            "qemu-io {cmds:?}: {text}"
        );
        text
    };
    // Unaligned and direct writes, as a guest's drive makes them; each
    // reads back at once and in a later session.
    qemu_io(
        "none",
        &[
            "write -P 0xab 1M 64k",
            "aio_write -P 0xcd 2M 4k",
            "aio_flush",
            "read -P 0xab 1M 64k",
            "read -P 0xcd 2M 4k",
        ],
    );
    qemu_io("writeback", &["write -P 0x5a 3000 1000", "flush"]);
    qemu_io(
        "none",
        &[
            "read -P 0xab 1M 64k",
            "read -P 0xcd 2M 4k",
            "read -P 0x5a 3000 1000",
        ],
    );
    // Bytes around the writes are still the image's.
    let after = fs::read(&disk).unwrap();
    let image = fs::read(&flat).unwrap();
    assert_eq!(after.len(), image.len());
    let written = [
        (3000..4000),
        (1 << 20..(1 << 20) + (64 << 10)),
        (2 << 20..(2 << 20) + 4096),
    ];
    for (i, (a, b)) in after.iter().zip(&image).enumerate() {
        if !written.iter().any(|r| r.contains(&i)) {
            assert_eq!(a, b, "byte {i} changed");
        }
    }
    stop(child, &mnt);
    let _ = fs::remove_dir_all(&dir);
}

/// Run tests check for leaks machine-wide, so they take turns.
static RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a test that runs corpus images needs: root (loop mounts), its
/// turn (runs go one at a time) and the corpus. None: skipped, outside CI.
fn corpus_turn(test: &str) -> Option<(std::sync::MutexGuard<'static, ()>, PathBuf)> {
    if !can_mount(test) {
        return None;
    }
    let turn = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    corpus_dir(test).map(|corpus| (turn, corpus))
}

/// Nothing of a run may outlive it: no FUSE or ext4 mount from a run
/// directory, no loop device backed by one, no runc state.
fn assert_no_leaks() {
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains("kindling-run-") || l.starts_with("kindling ")),
        "mounts left: {:?}",
        mounts
            .lines()
            .filter(|l| l.contains("kindling"))
            .collect::<Vec<_>>()
    );
    for e in fs::read_dir("/sys/block").unwrap() {
        let p = e.unwrap().path().join("loop/backing_file");
        if let Ok(b) = fs::read_to_string(&p) {
            assert!(
                !b.contains("kindling-run-"),
                "loop device left: {}",
                b.trim()
            );
        }
    }
    if let Ok(d) = fs::read_dir("/run/kindling/runc") {
        let left: Vec<_> = d.map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "runc state left: {left:?}");
    }
}

/// Every corpus image runs lazily and prints what it printed when it was
/// built, fetching only part of the image.
#[test]
fn corpus_images_run_lazily() {
    let Some((_turn, corpus)) = corpus_turn("corpus_images_run_lazily") else {
        return;
    };
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(corpus.join("corpus.json")).unwrap()).unwrap();
    let dir = scratch("agent", "run-corpus");
    let store = dir.join("store");
    for image in json["images"].as_array().unwrap() {
        let name = image["name"].as_str().unwrap();
        push_to(&dir, &corpus.join("images").join(name), name, &store);
        let startup: Vec<String> = image["startup"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let stats = dir.join(format!("{name}.json"));
        let out = output(
            kindling_in(&dir)
                .args(["run", name, "--store"])
                .arg(&store)
                .arg("--stats-json")
                .arg(&stats)
                .arg("--")
                .args(&startup),
        );
        assert!(out.status.success(), "{name}: run failed\n{}", show(&out));
        let expected =
            fs::read_to_string(corpus.join("startup").join(format!("{name}.out"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "{name}: output differs"
        );
        let s: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&stats).unwrap()).unwrap();
        for k in [
            "cold_start_ms",
            "first_output_ms",
            "image_bytes",
            "bytes_read",
            "bytes_fetched",
            "chunks_origin",
            "chunks_worker_cache",
            "chunks_zero",
        ] {
            assert!(s.get(k).is_some(), "{name}: stats lack {k}: {s}");
        }
        let fetched = s["bytes_fetched"].as_f64().unwrap();
        let size = s["image_bytes"].as_f64().unwrap();
        assert!(fetched > 0.0 && fetched < size, "{name}: {s}");
        // A first start records which file pages it read.
        assert_eq!(s["file_trace"], "recorded", "{name}: {s}");
        assert!(s["file_trace_ranges"].as_u64().unwrap() > 0, "{name}: {s}");
        // The setup's steps, in the order they happen, within the start.
        let steps = [
            "opened",
            "fuse_mounted",
            "loop_attached",
            "ext4_mounted",
            "root_ready",
            "exited",
        ];
        let at: Vec<f64> = steps
            .iter()
            .map(|k| {
                s["phases_ms"][k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name}: no phases_ms.{k}: {s}"))
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] <= w[1]),
            "{name}: phases out of order: {s}"
        );
        assert!(
            at[0] >= 0.0 && at[5] <= s["cold_start_ms"].as_f64().unwrap(),
            "{name}: {s}"
        );
        eprintln!("{name}: {s}");
        assert_no_leaks();
    }
    let _ = fs::remove_dir_all(&dir);
}

/// Exit codes pass through; a failing command and a missing image unwind
/// everything.
#[test]
fn run_passes_exit_codes_and_cleans_up_on_errors() {
    let Some((_turn, corpus)) = corpus_turn("run_passes_exit_codes_and_cleans_up_on_errors") else {
        return;
    };
    let dir = scratch("agent", "run-exit");
    let store = dir.join("store");
    push_to(&dir, &corpus.join("images/debian-slim"), "deb", &store);
    let run = |args: &[&str]| {
        output(
            kindling_in(&dir)
                .args(["run", "deb", "--store"])
                .arg(&store)
                .args(args),
        )
    };
    let o = run(&["--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("err\n"));
    assert_no_leaks();
    // The first start recorded its (sealed) traces for later starts: the
    // chunks it read and the file pages it read.
    let mut traces: Vec<String> = fs::read_dir(store.join("traces"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    traces.sort();
    assert_eq!(traces.len(), 2, "{traces:?}");
    assert_eq!(format!("{}.files", traces[0]), traces[1]);
    // Later starts read the recorded file pages ahead of the program;
    // --no-warm does not. A file trace that does not open (here: garbage)
    // is ignored with a warning and the start goes on.
    let file_trace = store.join("traces").join(&traces[1]);
    let sealed = fs::read(&file_trace).unwrap();
    for (flags, bytes, warmed) in [
        (&[][..], &sealed[..], true),
        (&["--no-warm"][..], &sealed[..], false),
        (&[][..], &b"KINDLFT\0garbage"[..], false),
    ] {
        fs::write(&file_trace, bytes).unwrap();
        let stats = dir.join("warm.json");
        let mut args = flags.to_vec();
        args.extend([
            "--stats-json",
            stats.to_str().unwrap(),
            "--",
            "cat",
            "/etc/os-release",
        ]);
        let o = run(&args);
        assert!(o.status.success(), "{flags:?}: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Debian"));
        let s: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&stats).unwrap()).unwrap();
        assert_eq!(s["file_trace"] == "warmed", warmed, "{flags:?}: {s}");
        assert_eq!(s["warmed_bytes"].as_u64().unwrap() > 0, warmed, "{s}");
        if bytes != sealed {
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("ignoring the file trace"),
                "{}",
                show(&o)
            );
        }
    }
    fs::write(&file_trace, &sealed).unwrap();
    // Writes work, in either copy-on-write layer, and are gone in the
    // next run.
    for cow in ["files", "blocks"] {
        let o = run(&[
            "--cow",
            cow,
            "--",
            "sh",
            "-c",
            "echo data > /etc/new && rm /etc/os-release && cat /etc/new",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "data\n",
            "{cow}: {}",
            show(&o)
        );
        let o = run(&["--", "cat", "/etc/new", "/etc/os-release"]);
        assert_eq!(o.status.code(), Some(1), "{cow}: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Debian"));
    }
    // With a trace, the default run fills the kernel's page cache ahead
    // of reads; the block overlay (a writable disk) cannot.
    for (cow, preloads) in [("files", true), ("blocks", false)] {
        let stats = dir.join(format!("{cow}.json"));
        let stats_arg = stats.to_str().unwrap();
        let o = run(&["--cow", cow, "--stats-json", stats_arg, "--", "true"]);
        assert!(o.status.success(), "{}", show(&o));
        let s: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&stats).unwrap()).unwrap();
        let preloaded = s["bytes_preloaded"].as_u64().unwrap();
        assert_eq!(preloaded > 0, preloads, "{cow}: {s}");
    }
    // --read-only refuses writes.
    let o = run(&["--read-only", "--", "sh", "-c", "echo x > /etc/new"]);
    assert!(!o.status.success(), "{}", show(&o));
    // A command that does not exist or cannot be executed: docker's 127
    // and 126, nothing left behind; kindling's own failures: 125.
    let o = run(&["--", "/no/such/binary"]);
    assert_eq!(o.status.code(), Some(127), "{}", show(&o));
    let o = run(&["--", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", show(&o));
    let o = run(&["--", "/etc/os-release"]);
    assert_eq!(o.status.code(), Some(126), "{}", show(&o));
    assert_no_leaks();
    let o = output(
        kindling_in(&dir)
            .args(["run", "nope", "--store"])
            .arg(&store),
    );
    assert_status(&o, 125, "no image named");
    assert_no_leaks();
    // A reader that goes away (`| head -c 10`) stops the container's
    // writer as on the host, instead of letting it run on: `yes` gets
    // EPIPE (as the container's init, the kernel spares it the SIGPIPE,
    // as in `docker run`) and exits.
    let mut child = kindling_in(&dir)
        .args(["run", "deb", "--store"])
        .arg(&store)
        .args(["--", "yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
    assert_eq!(&head, b"y\ny\ny\ny\ny\n");
    drop(child.stdout.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("`yes` ran on for 30 s after its reader went away");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert_no_leaks();
    // --stats-json into a directory that does not exist is refused before
    // the container runs.
    let o = run(&[
        "--stats-json",
        dir.join("no/such/dir/s.json").to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo ran",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("ran"),
        "{}",
        show(&o)
    );
    assert_no_leaks();
    let _ = fs::remove_dir_all(&dir);
}

/// A run killed with SIGKILL cannot clean up: the kernel drops its mounts
/// with its mount namespace once its container is gone, and the next run
/// removes the container and the bundle.
#[test]
fn a_killed_run_is_cleaned_up() {
    let Some((_turn, corpus)) = corpus_turn("a_killed_run_is_cleaned_up") else {
        return;
    };
    let dir = scratch("agent", "run-killed");
    let store = dir.join("store");
    push_to(&dir, &corpus.join("images/debian-slim"), "deb", &store);
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let run_dirs = || {
        fs::read_dir(&tmp)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("kindling-run-")
            })
            .count()
    };
    let mut child = kindling_in(&dir)
        .env("TMPDIR", &tmp)
        .args(["run", "deb", "--store"])
        .arg(&store)
        .args(["--", "sh", "-c", "sleep 0; echo up; exec sleep 600"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "up\n");
    // `exec sleep 600` comes after the "up": let it page in while the
    // agent still serves (a page it needs after the kill is an EIO, and
    // the container dies of it).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let prefix = format!("kindling-{}-", child.id());
    let ours = |what: &str| -> usize {
        fs::read_dir(what)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(ours("/run/kindling/bundles"), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    // Its container is still running (sleep is in the page cache, so it
    // does not notice the agent is gone): nothing could stop it.
    assert_eq!(ours("/run/kindling/runc"), 1);
    assert_eq!(run_dirs(), 1);
    let o = output(
        kindling_in(&dir)
            .env("TMPDIR", &tmp)
            .args(["run", "deb", "--store"])
            .arg(&store)
            .args(["--", "true"]),
    );
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("container(s) left by killed runs")
            && err.contains("run director(ies) left by killed runs"),
        "{}",
        show(&o)
    );
    assert_eq!(ours("/run/kindling/bundles"), 0);
    assert_eq!(
        run_dirs(),
        0,
        "the killed run's directory (and upper layer) is left"
    );
    // The loop device goes when the kernel tears the mounts down, which
    // follows the container's death by a moment.
    let t = Instant::now();
    loop {
        let r = std::panic::catch_unwind(assert_no_leaks);
        if r.is_ok() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "still leaking");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = fs::remove_dir_all(&dir);
}

/// The origin goes away while the container runs: reads of chunks not yet
/// fetched fail with EIO after bounded retries (no hang), the container
/// sees the error, and `run` names the chunk that failed. Nothing leaks.
#[test]
fn origin_lost_mid_run_names_the_chunk() {
    let Some((_turn, corpus)) = corpus_turn("origin_lost_mid_run_names_the_chunk") else {
        return;
    };
    let dir = scratch("agent", "run-origin-lost");
    let server = kindling_store::S3Server::start(&dir.join("s3")).unwrap();
    let s3 = |c: &mut Command| {
        with_s3(c, &server);
    };
    let url = server.url("origin");
    let mut push = kindling_in(&dir);
    s3(&mut push);
    run_ok(
        push.arg("push")
            .arg(corpus.join("images/debian-slim"))
            .args(["--name", "deb", "--store", &url]),
    );
    let mut run = kindling_in(&dir);
    s3(&mut run);
    let stats = dir.join("stats.json");
    // perl is big and not read by anything before the origin is gone.
    let mut child = run
        .args(["run", "deb", "--no-trace", "--no-cache", "--store", &url])
        .arg("--stats-json")
        .arg(&stats)
        .args([
            "--",
            "sh",
            "-c",
            "echo up; read x; cat /usr/bin/perl > /dev/null",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "up\n");
    drop(server);
    let t = Instant::now();
    // The container goes on.
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(
        err.contains("chunk read(s) failed") && err.contains(" at offset "),
        "{err}"
    );
    let s: serde_json::Value = serde_json::from_str(&fs::read_to_string(&stats).unwrap()).unwrap();
    assert!(s["chunk_errors"].as_u64().unwrap() > 0, "{s}");
    assert!(
        s["first_chunk_error"]
            .as_str()
            .unwrap()
            .starts_with("chunk "),
        "{s}"
    );
    eprintln!(
        "origin lost: failed after {took:?}: {}",
        s["first_chunk_error"]
    );
    assert_no_leaks();
    let _ = fs::remove_dir_all(&dir);
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().contains("/locks/") {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// 16 runs at once share one worker cache: all succeed and every chunk
/// comes from the origin once. Then a container that writes leaves the
/// store and the cache as they were.
#[test]
fn concurrent_runs_share_the_worker_cache() {
    let Some((_turn, corpus)) = corpus_turn("concurrent_runs_share_the_worker_cache") else {
        return;
    };
    let dir = scratch("agent", "run-16");
    let store = dir.join("store");
    let cache = dir.join("cache");
    push_to(&dir, &corpus.join("images/debian-slim"), "deb", &store);
    let children: Vec<_> = (0..16)
        .map(|i| {
            kindling_in(&dir)
                .args(["run", "deb", "--store"])
                .arg(&store)
                .arg("--cache-dir")
                .arg(&cache)
                .arg("--stats-json")
                .arg(dir.join(format!("s{i}.json")))
                .args(["--", "sh", "-c", "ls /usr/bin | wc -l"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut origin = 0;
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "run {i}\n{}", show(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "275\n");
        let s: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join(format!("s{i}.json"))).unwrap())
                .unwrap();
        origin += s["chunks_origin"].as_u64().unwrap();
    }
    let cached = files(&cache)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("/chunks/"))
        .count();
    eprintln!("16 runs: {origin} chunks from the origin, {cached} chunks in the cache");
    assert!(cached > 0);
    assert_eq!(
        origin as usize, cached,
        "a chunk was fetched from the origin more than once"
    );
    assert_no_leaks();

    let before = (files(&store), files(&cache));
    for cow in ["files", "blocks"] {
        let o = output(
            kindling_in(&dir)
                .args(["run", "deb", "--cow", cow, "--store"])
                .arg(&store)
                .arg("--cache-dir")
                .arg(&cache)
                .args(["--", "sh", "-c", "dd if=/dev/urandom of=/var/big bs=1M count=8 2>/dev/null && rm -rf /usr/share/doc && echo x >> /usr/bin/dpkg && echo done"]),
        );
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "done\n",
            "{cow}: {}",
            show(&o)
        );
    }
    let (store_after, cache_after) = (files(&store), files(&cache));
    assert!(
        before.0 == store_after,
        "a container's writes changed the store"
    );
    // The run may have read (and so cached) chunks it had not read before;
    // what was cached stays byte for byte, and every cached file is a
    // chunk of the store, named by its content.
    for entry in before
        .1
        .iter()
        .filter(|(p, _)| p.to_string_lossy().contains("/chunks/"))
    {
        assert!(cache_after.contains(entry), "{} changed", entry.0.display());
    }
    for (path, bytes) in &cache_after {
        let name = path.file_name().unwrap().to_str().unwrap();
        if path.to_string_lossy().contains("/chunks/") {
            assert_eq!(
                sha256_hex(bytes),
                name,
                "{} is not the chunk it is named after",
                path.display()
            );
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

/// `kindling bench coldstart` end to end, one round on the smallest image:
/// every variant (a)-(e) runs the command and succeeds, the lazy ones
/// fetch something, and the benchmark leaves nothing behind in its work
/// directory or the system.
#[test]
fn bench_coldstart_runs_every_variant() {
    let Some((_turn, corpus)) = corpus_turn("bench_coldstart_runs_every_variant") else {
        return;
    };
    let dir = scratch("agent", "bench-coldstart");
    let (store, work) = (dir.join("store"), dir.join("work"));
    fs::create_dir_all(&work).unwrap();
    let out = run_ok(
        kindling_in(&dir)
            .args(["bench", "coldstart", "--source"])
            .arg(corpus.join("images/debian-slim"))
            .args(["--name", "deb", "--runs", "1", "--latency", "1ms"])
            .args(["--bandwidth", "0", "--store"])
            .arg(&store)
            .arg("--work-dir")
            .arg(&work)
            .args(["--", "/bin/sh", "-c", "cat /etc/os-release >/dev/null"]),
    );
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    for k in [
        "a_pull_unpack",
        "b_lazy_cold",
        "b0_lazy_cold_no_trace",
        "c_lazy_warm",
        "d_local_rootfs",
        "e_lazy_az_warm",
    ] {
        let runs = v[k]["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{k}: {v}");
        assert!(runs[0].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    assert_eq!(v["a_exit_codes"], serde_json::json!([0]), "{v}");
    assert_eq!(v["e_chunks_from_origin"].as_array().unwrap().len(), 1);
    let image = v["image_bytes"].as_u64().unwrap();
    for k in ["bytes_fetched_b", "bytes_fetched_b0"] {
        let fetched = v[k].as_u64().unwrap();
        assert!(fetched > 0 && fetched < image, "{k}: {v}");
    }
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        0,
        "work dir not emptied"
    );
    assert_no_leaks();
}
