//! End to end on the real kernel and runc: a corpus image flattened, attached
//! to a loop device, mounted, and run in containers; after each test nothing
//! is left mounted, attached or registered with runc.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{argv, prerequisites, Capture, Fixture};
use kindling_runtime::{
    mount_ext4, mount_overlay, process_from_image, record_file_trace, warm, Container, LoopDevice,
    OpenWatch, ProcessSpec, RunOptions, RuntimeError,
};

fn sysfs(dev: &LoopDevice, attr: &str) -> String {
    let name = dev.path().file_name().unwrap().to_str().unwrap();
    std::fs::read_to_string(format!("/sys/block/{name}/{attr}"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn loop_devices_attach_read_only_and_read_write() {
    let Some(image) = prerequisites("loop_devices_attach_read_only_and_read_write") else {
        return;
    };
    let fx = Fixture::new(&image);
    let ro = LoopDevice::attach(&fx.image, true).unwrap();
    let rw = LoopDevice::attach(&fx.image, false).unwrap();
    assert_ne!(ro.path(), rw.path());
    for (dev, want_ro) in [(&ro, "1"), (&rw, "0")] {
        assert!(dev.path().to_str().unwrap().starts_with("/dev/loop"));
        assert_eq!(sysfs(dev, "loop/backing_file"), fx.image.to_str().unwrap());
        assert_eq!(sysfs(dev, "ro"), want_ro);
        assert_eq!(sysfs(dev, "loop/autoclear"), "1");
        assert_eq!(sysfs(dev, "loop/dio"), "0");
        assert_eq!(
            sysfs(dev, "queue/read_ahead_kb"),
            kindling_runtime::READ_AHEAD_KB.to_string()
        );
        let size = std::fs::metadata(&fx.image).unwrap().len();
        assert_eq!(sysfs(dev, "size").parse::<u64>().unwrap() * 512, size);
    }
    assert_eq!(common::loops_backed_by(&fx.image).len(), 2);
    ro.detach().unwrap();
    drop(rw);
    fx.assert_nothing_attached();
}

/// A read of the device reads that much of the file: the file's own
/// read-ahead would ask the agent for chunks no start reads.
#[test]
fn a_device_read_reads_no_more_of_the_file() {
    let Some(_) = prerequisites("a_device_read_reads_no_more_of_the_file") else {
        return;
    };
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut &file, &vec![7u8; 16 << 20]).unwrap();
    file.sync_all().unwrap();
    // SAFETY: fadvise on an open fd.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let resident = || -> Vec<usize> {
        let len = 16usize << 20;
        // SAFETY: a fresh read-only mapping, only passed to mincore and
        // unmapped.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let mut vec = vec![0u8; len / 4096];
        // SAFETY: the mapping above, one byte per page.
        assert_eq!(unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) }, 0);
        // SAFETY: the mapping above.
        unsafe { libc::munmap(addr, len) };
        vec.iter()
            .enumerate()
            .filter(|(_, p)| *p & 1 != 0)
            .map(|(i, _)| i)
            .collect()
    };
    if !resident().is_empty() {
        eprintln!("skipped: pages stay cached after DONTNEED here");
        return;
    }
    let dev = LoopDevice::attach(&path, true).unwrap();
    let block = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev.path())
        .unwrap();
    // O_DIRECT wants an aligned buffer.
    let mut buf = vec![0u8; 3 * 4096];
    let at = buf.as_ptr().align_offset(4096);
    // At the start of the file, where the kernel reads ahead most.
    std::os::unix::fs::FileExt::read_exact_at(&block, &mut buf[at..at + 4096], 0).unwrap();
    assert_eq!(buf[at], 7);
    assert_eq!(resident(), vec![0]);
    drop(block);
    drop(dev);
}

#[test]
fn concurrent_attaches_each_get_their_own_device() {
    let Some(image) = prerequisites("concurrent_attaches_each_get_their_own_device") else {
        return;
    };
    let fx = Fixture::new(&image);
    // Threads racing for the same free device: the losers see EBUSY and
    // ask again.
    let devices: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                s.spawn(|| {
                    (0..10)
                        .map(|i| {
                            let dev = LoopDevice::attach(&fx.image, i % 2 == 0).unwrap();
                            assert_eq!(
                                sysfs(&dev, "loop/backing_file"),
                                fx.image.to_str().unwrap()
                            );
                            dev.path().to_str().unwrap().to_owned()
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(devices.iter().map(Vec::len).sum::<usize>(), 120);
    fx.assert_nothing_attached();
}

/// A writable root over the read-only image: writes and deletes land in
/// the upper directory, the image's filesystem stays as it was, and the
/// upper layer is never synced (`volatile`).
#[test]
fn overlay_writes_land_in_the_upper_dir() {
    let Some(image) = prerequisites("overlay_writes_land_in_the_upper_dir") else {
        return;
    };
    let fx = Fixture::new(&image);
    let (scratch, upper, work, root) = fx.overlay_dirs();
    {
        let dev = LoopDevice::attach(&fx.image, true).unwrap();
        let lower = mount_ext4(dev.path(), &fx.mnt, true).unwrap();
        let ovl = mount_overlay(lower.target(), &upper, &work, &root).unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let line = mounts
            .lines()
            .find(|l| l.contains(root.to_str().unwrap()))
            .unwrap();
        assert!(line.contains("volatile"), "{line}");
        std::fs::write(root.join("etc/new"), "new").unwrap();
        std::fs::remove_file(root.join("etc/debian_version")).unwrap();
        assert_eq!(
            std::fs::read_to_string(upper.join("etc/new")).unwrap(),
            "new"
        );
        assert!(fx.mnt.join("etc/debian_version").exists());
        assert!(!fx.mnt.join("etc/new").exists());
        ovl.unmount().unwrap();
        lower.unmount().unwrap();
        drop(dev);
    }
    fx.assert_nothing_attached();
    // overlayfs options cannot carry a ',' in a path: refused up front.
    let err = mount_overlay(&fx.mnt, &scratch.join("up,per"), &work, &root).unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("upperdir"), "{text}");
}

/// The files a start opens through the overlayfs root (or the image's own
/// mount) are seen on the image's filesystem, named inside it, in the
/// order first opened; a file trace recorded from them warms a fresh mount.
#[test]
fn opens_are_watched_and_make_a_file_trace() {
    let Some(image) = prerequisites("opens_are_watched_and_make_a_file_trace") else {
        return;
    };
    let fx = Fixture::new(&image);
    let (_, upper, work, root) = fx.overlay_dirs();
    let trace = {
        let dev = LoopDevice::attach(&fx.image, true).unwrap();
        let lower = mount_ext4(dev.path(), &fx.mnt, true).unwrap();
        let ovl = mount_overlay(lower.target(), &upper, &work, &root).unwrap();
        let watch = OpenWatch::start(lower.target()).unwrap();
        std::fs::read(root.join("etc/debian_version")).unwrap();
        std::fs::read(root.join("etc/passwd")).unwrap();
        std::fs::read(root.join("etc/debian_version")).unwrap();
        std::fs::read(lower.target().join("etc/group")).unwrap();
        // Not the image's filesystem: not seen.
        drop(std::fs::File::open(&fx.image).unwrap());
        let opened = watch.finish();
        let names: Vec<&str> = opened
            .iter()
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect();
        assert_eq!(names, ["etc/debian_version", "etc/passwd", "etc/group"]);
        let trace = record_file_trace(lower.target(), &opened, &|offset| offset).unwrap();
        assert_eq!(trace.paths, opened);
        ovl.unmount().unwrap();
        lower.unmount().unwrap();
        drop(dev);
        trace
    };
    // A fresh mount has nothing cached; warming reads what was recorded.
    let dev = LoopDevice::attach(&fx.image, true).unwrap();
    let lower = mount_ext4(dev.path(), &fx.mnt, true).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let w = warm(lower.target(), &trace, 2, &stop).unwrap();
    let recorded: u64 = trace.ranges.iter().map(|r| u64::from(r.pages) * 4096).sum();
    assert!(w.bytes > 0 && w.bytes <= recorded, "{w:?} of {recorded}");
    assert_eq!(w.skipped, 0);
    lower.unmount().unwrap();
    drop(dev);
    fx.assert_nothing_attached();
}

#[test]
fn mounts_follow_the_device_mode() {
    let Some(image) = prerequisites("mounts_follow_the_device_mode") else {
        return;
    };
    let fx = Fixture::new(&image);
    {
        let dev = LoopDevice::attach(&fx.image, false).unwrap();
        let root = mount_ext4(dev.path(), &fx.mnt, false).unwrap();
        assert!(std::fs::read_to_string(fx.mnt.join("etc/debian_version"))
            .unwrap()
            .starts_with("12."));
        std::fs::write(fx.mnt.join("written"), "kept").unwrap();
        // Detaching while mounted only marks the device; it goes with the mount.
        dev.detach().unwrap();
        root.unmount().unwrap();
    }
    fx.assert_nothing_attached();
    {
        let dev = LoopDevice::attach(&fx.image, true).unwrap();
        // A read-write mount of a read-only device is refused.
        let err = mount_ext4(dev.path(), &fx.mnt, false).unwrap_err();
        assert!(matches!(err, RuntimeError::Mount { .. }), "{err}");
        assert!(
            err.to_string().contains(dev.path().to_str().unwrap()),
            "{err}"
        );
        let root = mount_ext4(dev.path(), &fx.mnt, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(fx.mnt.join("written")).unwrap(),
            "kept"
        );
        let e = std::fs::write(fx.mnt.join("again"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        drop(root);
        drop(dev);
    }
    fx.assert_nothing_attached();
    // A missing mount point names itself.
    let dev = LoopDevice::attach(&fx.image, true).unwrap();
    let err = mount_ext4(dev.path(), &fx.dir.path().join("nope"), true).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    drop(dev);
    fx.assert_nothing_attached();
}

#[test]
fn runs_the_image_and_streams_its_output() {
    let Some(image) = prerequisites("runs_the_image_and_streams_its_output") else {
        return;
    };
    let fx = Fixture::new(&image);
    let mounted = fx.mount(true);
    let spec = process_from_image(
        &[],
        &argv(&["cat", "/etc/debian_version"]),
        &[],
        "",
        "",
        None,
    );
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let (r, out, err) = fx.run("cat", &spec, |o| {
        o.on_first_output = Some(Box::new(move || tx.send(Instant::now()).unwrap()));
    });
    let status = r.unwrap();
    eprintln!("cat /etc/debian_version: {:?} end to end", start.elapsed());
    assert!(status.success());
    assert_eq!(status.signal(), None);
    assert!(out.starts_with("12.") && out.ends_with('\n'), "{out:?}");
    assert_eq!(err, "");
    let fired = rx.try_recv().expect("on_first_output not called");
    assert!(status.first_output().unwrap() <= fired);
    assert!(status.first_output().unwrap() >= start);
    fx.assert_container_gone("cat");

    let (r, out, _) = fx.sh("exit7", "", "echo before; exit 7", |_| {});
    let status = r.unwrap();
    assert_eq!(
        (status.code(), status.signal(), status.success()),
        (7, None, false)
    );
    assert_eq!(out, "before\n");
    fx.assert_container_gone("exit7");

    // No output: no first-output time, callback never called.
    let (tx, rx) = mpsc::channel::<()>();
    let (r, out, err) = fx.sh("quiet", "", "echo to-stderr >&2", |o| {
        o.on_first_output = Some(Box::new(move || tx.send(()).unwrap()));
    });
    let status = r.unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("", "to-stderr\n"));
    assert_eq!(status.first_output(), None);
    assert!(rx.try_recv().is_err());
    fx.assert_container_gone("quiet");

    fx.release(mounted);
}

#[test]
fn env_cwd_and_user_are_honoured() {
    let Some(image) = prerequisites("env_cwd_and_user_are_honoured") else {
        return;
    };
    let fx = Fixture::new(&image);
    let mounted = fx.mount(true);
    let script = "id -u; id -g; id -G; pwd; echo \"$VAR\"; echo \"$HOME\"; echo \"$PATH\"";
    let cases = [
        ("", "0\n0\n0\n/usr/share\nhello\n/root\n"),
        (
            "nobody",
            "65534\n65534\n65534\n/usr/share\nhello\n/nonexistent\n",
        ),
        ("1234", "1234\n0\n0\n/usr/share\nhello\n/\n"),
        ("1234:5678", "1234\n5678\n5678\n/usr/share\nhello\n/\n"),
        ("daemon:tty", "1\n5\n5\n/usr/share\nhello\n/usr/sbin\n"),
    ];
    for (i, (user, want)) in cases.iter().enumerate() {
        let spec = ProcessSpec {
            user: user.to_string(),
            ..process_from_image(
                &argv(&["sh", "-c"]),
                &argv(&["exit 99"]),
                &argv(&["VAR=hello"]),
                "/usr/share",
                "",
                Some(&argv(&[script])),
            )
        };
        let id = format!("user{i}");
        let (r, out, err) = fx.run(&id, &spec, |_| {});
        assert!(r.unwrap().success(), "{user}: {err}");
        let want = format!(
            "{want}{}\n",
            kindling_runtime::DEFAULT_PATH.trim_start_matches("PATH=")
        );
        assert_eq!(out, want, "user {user:?}");
        fx.assert_container_gone(&id);
    }
    // Unknown names fail before anything starts.
    for user in ["ghost", "nobody:ghosts"] {
        let (r, out, _) = fx.sh("ghost", user, "echo ran", |_| {});
        let err = r.unwrap_err();
        assert!(matches!(err, RuntimeError::User { .. }), "{err}");
        assert!(err.to_string().contains("ghost"), "{err}");
        assert_eq!(out, "");
        fx.assert_container_gone("ghost");
    }
    fx.release(mounted);
}

#[test]
fn writes_follow_the_root_mode() {
    let Some(image) = prerequisites("writes_follow_the_root_mode") else {
        return;
    };
    let fx = Fixture::new(&image);
    let write = "echo data > /written && cat /written";
    {
        let mounted = fx.mount(false);
        let (r, out, err) = fx.sh("rw", "", write, |_| {});
        assert!(r.unwrap().success(), "{err}");
        assert_eq!(out, "data\n");
        assert_eq!(
            std::fs::read_to_string(fx.mnt.join("written")).unwrap(),
            "data\n"
        );
        // root.readonly on a writable mount: the container cannot write.
        let (r, out, err) = fx.sh("rdonly", "", "echo x > /other", |o| o.read_only_root = true);
        assert_ne!(r.unwrap().code(), 0);
        assert_eq!(out, "");
        assert!(err.contains("Read-only file system"), "{err}");
        assert!(!fx.mnt.join("other").exists());
        // A user without rights cannot either.
        let (r, _, err) = fx.sh("nobody", "nobody", "echo x > /other", |_| {});
        assert_ne!(r.unwrap().code(), 0);
        assert!(err.contains("Permission denied"), "{err}");
        fx.assert_container_gone("rw");
        fx.assert_container_gone("rdonly");
        fx.release(mounted);
    }
    {
        let mounted = fx.mount(true);
        let (r, _, err) = fx.sh("ro", "", write, |_| {});
        assert_ne!(r.unwrap().code(), 0);
        assert!(err.contains("Read-only file system"), "{err}");
        // /tmp is a tmpfs, writable either way.
        let (r, out, err) = fx.sh("tmp", "nobody", "echo t > /tmp/t && cat /tmp/t", |_| {});
        assert!(r.unwrap().success(), "{err}");
        assert_eq!(out, "t\n");
        fx.assert_container_gone("ro");
        fx.release(mounted);
    }
}

/// The lines of /proc/self/mountinfo-style `mount` output inside the
/// container, as (mount point, fs type, options).
fn mounts_of(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 4).then(|| (f[1].to_owned(), f[2].to_owned(), f[3].to_owned()))
        })
        .collect()
}

#[test]
fn containers_get_the_usual_environment() {
    let Some(image) = prerequisites("containers_get_the_usual_environment") else {
        return;
    };
    let fx = Fixture::new(&image);
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_pid = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let probe = "test -r /proc/self/status && echo proc; \
                 echo x > /dev/null && echo null; \
                 test -c /dev/urandom && test -c /dev/zero && test -c /dev/tty && echo devices; \
                 echo $$; hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/pid; \
                 ulimit -n; grep CapEff /proc/self/status; \
                 for f in /etc/resolv.conf /etc/hosts /etc/hostname; do test -f $f && echo has $f; done; \
                 echo MOUNTS; cat /proc/self/mounts";
    // Writable root: the /etc mount points are created and bound.
    {
        let mounted = fx.mount(false);
        let (r, out, err) = fx.sh("env-rw", "", probe, |o| o.hostname = "fn-1".into());
        assert!(r.unwrap().success(), "{err}");
        let (head, mounts) = out.split_once("MOUNTS\n").unwrap();
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(&lines[..3], ["proc", "null", "devices"]);
        assert_eq!(lines[3], "1", "pid namespace");
        assert_eq!(lines[4], "fn-1");
        assert_eq!(
            lines[5],
            host_net.to_str().unwrap(),
            "host network namespace"
        );
        assert_ne!(lines[6], host_pid.to_str().unwrap());
        assert_eq!(lines[7], "1024");
        // Docker's default capabilities.
        assert_eq!(lines[8], "CapEff:\t00000000a80425fb");
        assert_eq!(
            &lines[9..],
            [
                "has /etc/resolv.conf",
                "has /etc/hosts",
                "has /etc/hostname"
            ]
        );
        let mounts = mounts_of(mounts);
        let find = |p: &str| mounts.iter().find(|m| m.0 == p).cloned();
        for (point, kind) in [
            ("/proc", "proc"),
            ("/dev", "tmpfs"),
            ("/dev/pts", "devpts"),
            ("/dev/shm", "tmpfs"),
            ("/dev/mqueue", "mqueue"),
            ("/sys", "sysfs"),
            ("/tmp", "tmpfs"),
        ] {
            let m = find(point).unwrap_or_else(|| panic!("no {point} in {mounts:?}"));
            assert_eq!(m.1, kind, "{point}");
        }
        assert!(find("/sys").unwrap().2.starts_with("ro,"));
        for f in ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"] {
            let m = find(f).unwrap_or_else(|| panic!("{f} not mounted"));
            assert!(m.2.starts_with("ro,"), "{f}: {}", m.2);
        }
        let (r, out, _) = fx.sh(
            "etc",
            "nobody",
            "cat /etc/hostname; grep fn-1 /etc/hosts; cat /etc/resolv.conf; grep CapEff /proc/self/status",
            |o| o.hostname = "fn-1".into(),
        );
        assert!(r.unwrap().success());
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
        assert_eq!(
            out,
            format!("fn-1\n127.0.1.1\tfn-1\n{resolv}CapEff:\t0000000000000000\n")
        );
        fx.assert_container_gone("env-rw");
        fx.assert_container_gone("etc");
        fx.release(mounted);
    }
    // Read-only root: the mount points created by the runs above are in
    // the image now, so the binds work read-only too.
    {
        let mounted = fx.mount(true);
        let (r, out, err) = fx.sh("env-ro", "", "cat /etc/hostname; hostname", |o| {
            o.hostname = "fn-2".into()
        });
        assert!(r.unwrap().success(), "{err}");
        assert_eq!(out, "fn-2\nfn-2\n");
        fx.assert_container_gone("env-ro");
        // No hostname: the host's name and files.
        let (r, out, err) = fx.sh(
            "host-name",
            "",
            "hostname; cat /etc/hostname /etc/hosts",
            |o| o.hostname = String::new(),
        );
        assert!(r.unwrap().success(), "{err}");
        let host = |p: &str| std::fs::read_to_string(p).unwrap();
        let name = host("/proc/sys/kernel/hostname");
        assert_eq!(
            out,
            format!("{name}{}{}", host("/etc/hostname"), host("/etc/hosts"))
        );
        fx.assert_container_gone("host-name");
        fx.release(mounted);
    }
}

#[test]
fn read_only_images_without_etc_files_still_run() {
    let Some(image) = prerequisites("read_only_images_without_etc_files_still_run") else {
        return;
    };
    let fx = Fixture::new(&image);
    let mounted = fx.mount(true);
    assert!(!fx.mnt.join("etc/resolv.conf").exists());
    let (r, out, err) = fx.sh(
        "noetc",
        "",
        "ls /etc/resolv.conf /etc/hosts /etc/hostname 2>&1 | grep -c 'No such'; hostname",
        |_| {},
    );
    assert!(r.unwrap().success(), "{err}");
    assert_eq!(out, format!("3\n{}\n", kindling_runtime::DEFAULT_HOSTNAME));
    fx.assert_container_gone("noetc");
    fx.release(mounted);
}

#[test]
fn killed_containers_are_cleaned_up() {
    let Some(image) = prerequisites("killed_containers_are_cleaned_up") else {
        return;
    };
    let fx = Fixture::new(&image);
    let mounted = fx.mount(true);
    let (tx, rx) = mpsc::channel();
    let state = fx.state.clone();
    let killer = std::thread::spawn(move || {
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Container::kill(Path::new("runc"), &state, "sleeper", libc::SIGKILL).unwrap();
    });
    let start = Instant::now();
    let (r, out, _) = fx.sh("sleeper", "", "echo started; exec sleep 60", |o| {
        o.on_first_output = Some(Box::new(move || tx.send(()).unwrap()));
    });
    killer.join().unwrap();
    let status = r.unwrap();
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!((status.code(), status.signal()), (137, Some(libc::SIGKILL)));
    assert_eq!(out, "started\n");
    fx.assert_container_gone("sleeper");
    // Killing or cleaning up what is not there.
    let err = Container::kill(Path::new("runc"), &fx.state, "sleeper", libc::SIGKILL).unwrap_err();
    assert!(matches!(err, RuntimeError::RuncCommand { .. }), "{err}");
    Container::cleanup(Path::new("runc"), &fx.state, &fx.bundles, "sleeper").unwrap();
    fx.release(mounted);
}

#[test]
fn start_failures_are_errors_and_clean_up() {
    let Some(image) = prerequisites("start_failures_are_errors_and_clean_up") else {
        return;
    };
    let fx = Fixture::new(&image);
    let mounted = fx.mount(true);
    let spec = process_from_image(&argv(&["/no/such/binary"]), &[], &[], "", "", None);
    let (r, out, _) = fx.run("nobin", &spec, |_| {});
    let err = r.unwrap_err();
    assert!(matches!(err, RuntimeError::Start { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    assert_eq!(out, "");
    fx.assert_container_gone("nobin");
    // A working directory that does not exist on a read-only root.
    let spec = process_from_image(&[], &argv(&["true"]), &[], "/no/dir", "", None);
    let (r, _, _) = fx.run("nodir", &spec, |_| {});
    assert!(matches!(r, Err(RuntimeError::Start { .. })), "{r:?}");
    fx.assert_container_gone("nodir");
    // Nothing to run.
    let (r, _, _) = fx.run("noargs", &ProcessSpec::default(), |_| {});
    assert!(matches!(r, Err(RuntimeError::NoCommand { .. })), "{r:?}");
    // Bad and busy ids.
    let (r, _, _) = fx.sh("a/b", "", "true", |_| {});
    assert!(matches!(r, Err(RuntimeError::InvalidId { .. })), "{r:?}");
    std::fs::create_dir_all(fx.bundles.join("busy")).unwrap();
    let (r, _, _) = fx.sh("busy", "", "true", |_| {});
    assert!(
        matches!(r, Err(RuntimeError::AlreadyExists { .. })),
        "{r:?}"
    );
    assert!(
        fx.bundles.join("busy").exists(),
        "someone else's bundle removed"
    );
    std::fs::remove_dir(fx.bundles.join("busy")).unwrap();
    // A signal the caller recorded before the run was registered for
    // forwarding: the container is not started.
    static SIGNALLED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(15);
    let (r, out, _) = fx.sh("late", "", "echo ran", |o| o.interrupted = Some(&SIGNALLED));
    assert!(
        matches!(r, Err(RuntimeError::Interrupted { signal: 15, .. })),
        "{r:?}"
    );
    assert_eq!(out, "");
    fx.assert_container_gone("late");
    fx.release(mounted);
}

#[test]
fn a_missing_runc_says_how_to_install_it() {
    // Needs neither root nor the corpus: the run stops at spawning runc.
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("root");
    std::fs::create_dir(&rootfs).unwrap();
    let (out, err) = (Capture::default(), Capture::default());
    let opts = RunOptions {
        runc: dir.path().join("no-runc"),
        state_dir: dir.path().join("state"),
        bundle_dir: dir.path().join("bundles"),
        ..common::test_opts(&out, &err)
    };
    let spec = process_from_image(&[], &argv(&["true"]), &[], "", "", None);
    let e = Container::run("c", &rootfs, &spec, opts).unwrap_err();
    assert!(matches!(e, RuntimeError::RuncMissing { .. }), "{e}");
    assert!(e.to_string().contains("apt install runc"), "{e}");
    assert!(!dir.path().join("bundles/c").exists());
}
