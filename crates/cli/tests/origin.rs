//! `kindling push`, `fetch`, `inspect` and `ls` end to end, through the
//! binary: the corpus images round trip byte for byte through a local
//! store and an S3 server (s3s-fs, in process on loopback), python-app v2
//! uploads only what its layout changed, and damaged stores fail cleanly.
//!
//! Corpus tests need KINDLING_CORPUS (a skip note without it, a failure
//! under CI).

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = run_ok(cmd);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("no JSON ({e}): {out}"))
}

fn push_json(data: &Path, source: &Path, name: &str, store: &str) -> serde_json::Value {
    json(
        kindling_in(data)
            .arg("push")
            .arg(source)
            .args(["--name", name, "--store", store, "--json"]),
    )
}

fn fetch_file(data: &Path, name: &str, store: &str, out: &Path) {
    run_ok(
        kindling_in(data)
            .args(["fetch", name, "--store", store, "-o"])
            .arg(out),
    );
}

#[test]
fn corpus_images_round_trip_through_the_local_store() {
    let Some(corpus) = corpus_dir("corpus_images_round_trip_through_the_local_store") else {
        return;
    };
    let dir = scratch("origin", "corpus-local");
    let store = dir.join("store");
    let store = store.to_str().unwrap();
    let mut total_chunks = 0;
    for name in [
        "debian-slim",
        "python3",
        "python3-zstd",
        "python-app-v1",
        "node-app",
        "torture",
        "java-app",
        "python-ds",
    ] {
        let source = corpus.join("images").join(name);
        let flat = dir.join("flat.img");
        let _ = fs::remove_file(&flat);
        flatten_json(source.as_os_str(), &flat, &[]);
        let s = push_json(&dir, &source, name, store);
        for k in [
            "name",
            "manifest",
            "image_bytes",
            "chunks",
            "zero_chunks",
            "present_chunks",
            "uploaded_chunks",
            "uploaded_bytes",
            "seconds",
        ] {
            assert!(s.get(k).is_some(), "push --json lacks {k}: {s}");
        }
        let chunks = s["chunks"].as_u64().unwrap();
        assert_eq!(
            chunks,
            s["zero_chunks"].as_u64().unwrap()
                + s["present_chunks"].as_u64().unwrap()
                + s["uploaded_chunks"].as_u64().unwrap()
        );
        assert_eq!(
            s["image_bytes"].as_u64().unwrap(),
            fs::metadata(&flat).unwrap().len()
        );
        total_chunks += chunks;
        let fetched = dir.join("fetched.img");
        let _ = fs::remove_file(&fetched);
        fetch_file(&dir, name, store, &fetched);
        assert_eq!(
            sha256_file(&fetched),
            sha256_file(&flat),
            "{name}: fetch differs from flatten"
        );
        // The manifest stays small: at most 0.02 % of the image.
        let m = s["manifest_bytes"].as_u64().unwrap() as f64;
        assert!(
            m / s["image_bytes"].as_u64().unwrap() as f64 <= 0.0002,
            "{name}: {s}"
        );
        eprintln!("{name}: {s}");
    }
    assert!(total_chunks > 1000);
    // The default tenant key was created once, private.
    let key = dir.join("kindling/tenant.key");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // ls lists them all; inspect shows the run config.
    let ls = run_ok(kindling_in(&dir).args(["ls", "--store", store]));
    assert_eq!(ls.lines().count(), 8, "{ls}");
    let inspect =
        json(kindling_in(&dir).args(["inspect", "python-app-v1", "--store", store, "--json"]));
    assert_eq!(inspect["config"]["cmd"][0], "python3", "{inspect}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn python_app_v2_after_v1_uploads_only_changed_chunks() {
    let Some(corpus) = corpus_dir("python_app_v2_after_v1_uploads_only_changed_chunks") else {
        return;
    };
    let dir = scratch("origin", "v1-v2");
    let store = dir.join("store");
    let store = store.to_str().unwrap();
    let images = corpus.join("images");
    let v1 = push_json(&dir, &images.join("python-app-v1"), "python-app:v1", store);
    let v2 = push_json(&dir, &images.join("python-app-v2"), "python-app:v2", store);
    let uploaded = v2["uploaded_chunks"].as_u64().unwrap();
    eprintln!("v1: {v1}\nv2: {v2}");
    // Issue 3 item 7: at most 48 chunks.
    assert!(uploaded <= 48, "v2 uploaded {uploaded} chunks");
    assert!(uploaded >= 1);
    // Pushing v2 again uploads nothing and keeps the manifest.
    let again = push_json(&dir, &images.join("python-app-v2"), "python-app:v2", store);
    assert_eq!(again["uploaded_chunks"], 0);
    assert_eq!(again["manifest"], v2["manifest"]);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn push_and_fetch_through_s3() {
    let Some(corpus) = corpus_dir("push_and_fetch_through_s3") else {
        return;
    };
    let dir = scratch("origin", "s3");
    let server = kindling_store::S3Server::start(&dir.join("s3")).unwrap();
    let s3 = |c: &mut Command| {
        with_s3(c, &server);
    };
    let url = server.url("origin");
    let source = corpus.join("images/python-app-v1");
    let mut push = kindling_in(&dir);
    s3(&mut push);
    let s = json(
        push.arg("push")
            .arg(&source)
            .args(["--name", "app:v1", "--store", &url, "--json"]),
    );
    assert!(s["uploaded_chunks"].as_u64().unwrap() > 100, "{s}");
    // The objects really are in the server's bucket directory.
    let chunk_dir = server.root().join("kindling/origin/chunks");
    assert!(
        chunk_dir.is_dir(),
        "no chunks under {}",
        chunk_dir.display()
    );
    let fetched = dir.join("fetched.img");
    let mut fetch = kindling_in(&dir);
    s3(&mut fetch);
    run_ok(
        fetch
            .args(["fetch", "app:v1", "--store", &url, "-o"])
            .arg(&fetched),
    );
    let flat = dir.join("flat.img");
    flatten_json(source.as_os_str(), &flat, &[]);
    assert_eq!(sha256_file(&fetched), sha256_file(&flat));
    // Wrong credentials: a clear error, no output.
    let out_dir = dir.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let mut bad = kindling_in(&dir);
    s3(&mut bad);
    let o = output(
        bad.env("AWS_SECRET_ACCESS_KEY", "wrong")
            .args(["fetch", "app:v1", "--store", &url, "-o"])
            .arg(out_dir.join("x.img")),
    );
    assert_clean_failure("s3 wrong secret", &o, &["s3://kindling/origin"], &out_dir);
    drop(server);
    let _ = fs::remove_dir_all(&dir);
}

/// A small image from the synthetic builders, pushed to a fresh local store.
fn small_pushed(dir: &Path) -> (String, PathBuf) {
    let layout = dir.join("layout");
    write_layout(
        &layout,
        &[Layer::gzip(vec![
            Entry::dir("etc"),
            Entry::file("etc/big", kindling_testkit::prng("big", 2 << 20)),
            Entry::file("etc/small", b"hello\n"),
        ])],
    );
    let store = dir.join("store").to_str().unwrap().to_owned();
    push_json(dir, &layout, "small:1", &store);
    (store, layout)
}

#[test]
fn damaged_stores_and_wrong_keys_fail_cleanly() {
    let dir = scratch("origin", "damaged");
    let (store, _) = small_pushed(&dir);
    let out_dir = dir.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let fetch = |extra: &[&str]| {
        output(
            kindling_in(&dir)
                .args(["fetch", "small:1", "--store", &store, "-o"])
                .arg(out_dir.join("x.img"))
                .args(extra),
        )
    };
    // A wrong key file.
    let other = dir.join("other.key");
    fs::write(&other, [9u8; 32]).unwrap();
    let o = fetch(&["--key-file", other.to_str().unwrap()]);
    assert_clean_failure("wrong key", &o, &["wrong tenant key"], &out_dir);
    // A missing key file is not created behind the user's back.
    let o = fetch(&["--key-file", dir.join("nope.key").to_str().unwrap()]);
    assert_clean_failure("missing key file", &o, &["nope.key"], &out_dir);
    assert!(!dir.join("nope.key").exists());
    // No such image.
    let o = output(
        kindling_in(&dir)
            .args(["fetch", "other:1", "--store", &store, "-o"])
            .arg(out_dir.join("x.img")),
    );
    assert_clean_failure(
        "no such image",
        &o,
        &["no image named \"other:1\""],
        &out_dir,
    );
    // A flipped byte in a chunk: the error names the chunk and its offset.
    let inspect = json(kindling_in(&dir).args(["inspect", "small:1", "--store", &store, "--json"]));
    assert!(inspect["chunks"].as_u64().unwrap() > 4);
    let mut chunk_files: Vec<_> = walk(&Path::new(&store).join("chunks"));
    chunk_files.sort();
    let victim = &chunk_files[0];
    let mut bytes = fs::read(victim).unwrap();
    bytes[100] ^= 1;
    fs::write(victim, &bytes).unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap().to_owned();
    let o = fetch(&[]);
    assert_clean_failure("corrupt chunk", &o, &[&name], &out_dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(" at offset ") && err.contains("verification"),
        "{err}"
    );
    // A missing chunk.
    fs::remove_file(victim).unwrap();
    let o = fetch(&[]);
    assert_clean_failure("missing chunk", &o, &[&name], &out_dir);
    // A damaged manifest.
    for m in walk(&Path::new(&store).join("manifests")) {
        let mut b = fs::read(&m).unwrap();
        let at = b.len() / 2;
        b[at] ^= 1;
        fs::write(&m, &b).unwrap();
    }
    let o = fetch(&[]);
    assert_clean_failure("corrupt manifest", &o, &["manifest"], &out_dir);
    // `ls` reports the unreadable image and goes on to the next one, and
    // its exit status says something was wrong.
    let other = dir.join("other-layout");
    write_layout(&other, &[Layer::gzip(vec![Entry::file("x", b"x\n")])]);
    push_json(&dir, &other, "zz:1", &store);
    let o = output(kindling_in(&dir).args(["ls", "--store", &store]));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("small:1") && err.contains("1 image(s)"),
        "{err}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("small:1") && lines[0].contains("unreadable"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("zz:1") && lines[1].contains("stored chunks"),
        "{out}"
    );
    // A store path that is not there lists nothing, and says so; reading
    // an image from it says the store is missing, not the image.
    let missing = dir.join("no-such-store");
    let o = output(kindling_in(&dir).args(["ls", "--store"]).arg(&missing));
    assert_status(&o, 0, "does not exist");
    assert!(o.stdout.is_empty(), "{}", show(&o));
    let o = output(
        kindling_in(&dir)
            .args(["inspect", "small:1", "--store"])
            .arg(&missing),
    );
    assert_status(&o, 1, "no-such-store does not exist");
    let _ = fs::remove_dir_all(&dir);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn bad_names_and_sources_are_refused_before_any_upload() {
    let dir = scratch("origin", "bad-input");
    let store = dir.join("store");
    let o = output(
        kindling_in(&dir)
            .args(["push", "/nonexistent/layout", "--name", "x:1", "--store"])
            .arg(&store),
    );
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("/nonexistent/layout"),
        "{}",
        show(&o)
    );
    let layout = dir.join("layout");
    write_layout(&layout, &[Layer::gzip(vec![Entry::file("a", b"a")])]);
    for bad in ["../x", "a b", ""] {
        let o = output(
            kindling_in(&dir)
                .arg("push")
                .arg(&layout)
                .args(["--name", bad, "--store"])
                .arg(&store),
        );
        assert!(!o.status.success(), "{bad:?} accepted\n{}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("invalid image name"),
            "{}",
            show(&o)
        );
    }
    // Nothing was uploaded for the refused names.
    assert!(!store.join("chunks").exists());
    let o =
        output(kindling_in(&dir).args(["push", "x", "--name", "a:1", "--store", "ftp://host/x"]));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ftp://host/x"),
        "{}",
        show(&o)
    );
}

/// The README's quick start: `kindling demo` on a fresh data directory,
/// twice; the second run finds every chunk already in the store.
#[test]
fn the_demo_pushes_and_fetches_the_sample() {
    let dir = scratch("origin", "demo");
    let first = run_ok(kindling_in(&dir).arg("demo"));
    assert!(
        first.contains("e2fsck -fn: clean") || first.contains("e2fsck not found"),
        "{first}"
    );
    assert!(first.contains(" 0 already present,"), "{first}");
    assert!(
        first.contains("identical to the flattened image"),
        "{first}"
    );
    assert!(dir
        .join("kindling/store/images/kindling-demo:latest")
        .is_file());
    assert!(dir.join("kindling/tenant.key").is_file());
    if is_root() {
        assert!(
            first.contains("hello from a lazily loaded container"),
            "{first}"
        );
        assert!(first.contains("container exited 0"), "{first}");
    }
    let second = run_ok(kindling_in(&dir).arg("demo"));
    assert!(second.contains(" 0 uploaded (0 B)"), "{second}");
    let _ = fs::remove_dir_all(&dir);
}

/// Ctrl-C in the middle of a push leaves the name unset; in the middle of
/// a fetch, no output and no temporary file.
#[test]
fn interrupted_push_and_fetch_leave_nothing_visible() {
    let Some(corpus) = corpus_dir("interrupted_push_and_fetch_leave_nothing_visible") else {
        return;
    };
    let dir = scratch("origin", "interrupt");
    let store = dir.join("store");
    let source = corpus.join("images/python-ds");
    let interrupt_after = |cmd: &mut Command, ms: u64| {
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        child.wait().unwrap()
    };
    let status = interrupt_after(
        kindling_in(&dir)
            .arg("push")
            .arg(&source)
            .args(["--name", "ds:1", "--store"])
            .arg(&store),
        700,
    );
    assert!(
        !status.success(),
        "push finished before the interrupt; the test needs a bigger image"
    );
    assert!(!store.join("images/ds:1").exists());
    assert!(
        !store.join("manifests").exists()
            || fs::read_dir(store.join("manifests")).unwrap().count() == 0
    );
    // Now push it for real and interrupt the fetch.
    run_ok(
        kindling_in(&dir)
            .arg("push")
            .arg(&source)
            .args(["--name", "ds:1", "--store"])
            .arg(&store),
    );
    let out_dir = dir.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let status = interrupt_after(
        kindling_in(&dir)
            .args(["fetch", "ds:1", "--store"])
            .arg(&store)
            .arg("-o")
            .arg(out_dir.join("ds.img")),
        150,
    );
    if !status.success() {
        let left: Vec<_> = fs::read_dir(&out_dir).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    let _ = fs::remove_dir_all(&dir);
}
