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

fn scratch(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("agent")
        .join(test);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn kindling_in(data: &Path) -> Command {
    let mut c = kindling();
    c.env("XDG_DATA_HOME", data)
        .env_remove("KINDLING_STORE")
        .env_remove("KINDLING_KEY_FILE");
    c
}

fn mounted(dir: &Path) -> bool {
    let m = fs::read_to_string("/proc/mounts").unwrap();
    let d = dir.canonicalize().unwrap_or(dir.to_path_buf());
    m.lines()
        .any(|l| l.split(' ').nth(1) == Some(d.to_str().unwrap()))
}

/// Starts `kindling mount` and waits for disk.img.
fn start_mount(data: &Path, name: &str, store: &Path, mnt: &Path, extra: &[&str]) -> Child {
    fs::create_dir_all(mnt).unwrap();
    let child = kindling_in(data)
        .args(["mount", name])
        .arg(mnt)
        .arg("--store")
        .arg(store)
        .args(extra)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !mnt.join("disk.img").exists() {
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
    let dir = scratch("serve");
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
    run_ok(
        kindling_in(&dir)
            .arg("push")
            .arg(&layout)
            .args(["--name", "t:1", "--store"])
            .arg(&store),
    );
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
    let st = Command::new("umount").arg(&root).status().unwrap();
    assert!(st.success());
    assert_eq!(hello.unwrap(), "hello from the image\n");
    stop(child, &mnt);

    // A new agent starts from the image again: the write is gone.
    let child = start_mount(&dir, "t:1", &store, &mnt, &["--read-only"]);
    assert_eq!(sha256_file(&mnt.join("disk.img")), before);
    assert!(fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("disk.img"))
        .is_err());
    stop(child, &mnt);
    let _ = fs::remove_dir_all(&dir);
}
