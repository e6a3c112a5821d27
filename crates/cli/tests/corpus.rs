//! `kindling flatten` on the realistic image corpus (`shared/corpus/make-corpus.sh`)
//! named by KINDLING_CORPUS: every image's merged tree against the reference
//! listing, byte determinism across thread counts and environments, and
//! layer stability measured with `kindling chunks`.
//!
//! Without KINDLING_CORPUS the tests print a skip note, except under CI
//! (env CI set) where they fail: CI must test the real thing. The listing
//! checks loop-mount images and need root.
//!
//! Each image is flattened once per run ([`flat`]); the listing test of an
//! image and the layer-stability test share that result, and the image file
//! is deleted once its listing test has passed (a failing test leaves it
//! under target/tmp for a look).

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;

/// The corpus images, in corpus.json's order.
const IMAGES: [&str; 9] = [
    "debian-slim",
    "python3",
    "python3-zstd",
    "python-app-v1",
    "python-app-v2",
    "node-app",
    "torture",
    "python-ds",
    "java-app",
];

/// Images built on debian-slim's layer, checked for layer stability.
const DERIVED: [&str; 7] = [
    "python3",
    "python-app-v1",
    "python-app-v2",
    "node-app",
    "java-app",
    "python-ds",
    "torture",
];

/// Least fraction of debian-slim's distinct non-zero chunks that a derived
/// image must contain (DESIGN.md section 1: ">= 95 %").
const MIN_BASE_SHARE: f64 = 0.95;

/// Most distinct non-zero chunks python-app-v2 may add over v1. DESIGN.md's
/// model of the app layer says ~3 chunks per changed spot; 40 leaves room for
/// metadata (inode tables, directories) that changes with the top layer.
const MAX_V2_NEW_CHUNKS: usize = 40;

const CHUNK_SIZE: u64 = 512 << 10;

/// One flattened corpus image.
#[derive(Debug)]
struct Flat {
    img: PathBuf,
    sha256: String,
    chunks: Vec<Option<String>>,
    /// The `--json` summary.
    summary: serde_json::Value,
}

static FLATS: [OnceLock<Flat>; IMAGES.len()] = [const { OnceLock::new() }; IMAGES.len()];
static WORK: OnceLock<PathBuf> = OnceLock::new();

/// Scratch space for flattened images, emptied once per run.
fn work_dir() -> &'static Path {
    WORK.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corpus-images");
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("creating the scratch directory");
        d
    })
}

fn corpus_json(corpus: &Path) -> serde_json::Value {
    let text = fs::read(corpus.join("corpus.json")).expect("reading corpus.json");
    serde_json::from_slice(&text).expect("parsing corpus.json")
}

/// The image's entry in corpus.json, if the corpus has it (python-ds and
/// java-app are optional there).
fn image_info(corpus: &Path, name: &str) -> Option<serde_json::Value> {
    corpus_json(corpus)["images"]
        .as_array()
        .expect("corpus.json: images")
        .iter()
        .find(|i| i["name"] == name)
        .cloned()
}

/// Flattens a corpus image once per run (concurrent callers wait for the
/// first), checks the `--json` summary against corpus.json and `e2fsck -fn`,
/// and hashes the image and its chunks.
fn flat(corpus: &Path, name: &str) -> &'static Flat {
    let i = IMAGES
        .iter()
        .position(|n| *n == name)
        .expect("a corpus image");
    FLATS[i].get_or_init(|| {
        let info = image_info(corpus, name).expect("image in corpus.json");
        let img = work_dir().join(format!("{name}.img"));
        let layout = corpus.join("images").join(name);
        let s = flatten_json(layout.as_os_str(), &img, &[]);
        eprintln!(
            "flattened {name}: {} bytes in {:.2}s",
            s["image_bytes"], s["seconds"]
        );
        check_summary(name, &s, &info, &img);
        fsck_clean(&img);
        Flat {
            sha256: sha256_file(&img),
            chunks: chunks(&img),
            summary: s,
            img,
        }
    })
}

/// The `--json` summary agrees with the file and with corpus.json.
fn check_summary(name: &str, s: &serde_json::Value, info: &serde_json::Value, img: &Path) {
    let size = fs::metadata(img).expect("image metadata").len();
    assert_eq!(s["image_bytes"], size, "{name}: image_bytes vs file size");
    assert_eq!(s["chunk_size"], CHUNK_SIZE, "{name}: chunk_size");
    for key in [
        "output",
        "inodes_used",
        "metadata_offset",
        "metadata_bytes",
        "tar_bytes",
        "seconds",
        "warnings",
    ] {
        assert!(s.get(key).is_some(), "{name}: --json lacks {key}: {s}");
    }
    let n = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("{name}: {k} missing: {s}"))
    };
    let (meta, hot) = (n("metadata_offset"), n("hot_metadata_offset"));
    assert!(
        meta <= hot
            && n("hot_metadata_bytes") > 0
            && hot + n("hot_metadata_bytes") <= meta + n("metadata_bytes"),
        "{name}: the hot metadata is not inside the metadata region: {s}"
    );
    let want = info["layers"].as_array().expect("corpus.json layers");
    let got = s["layers"].as_array().expect("--json layers");
    assert_eq!(got.len(), want.len(), "{name}: number of layers");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["digest"], w["digest"], "{name}: layer digest");
        assert_eq!(
            g["tar_bytes"], w["uncompressed_size"],
            "{name}: layer {} tar_bytes",
            w["digest"]
        );
        let off = g["region_offset"].as_u64().expect("region_offset");
        assert_eq!(off % CHUNK_SIZE, 0, "{name}: region not chunk aligned");
    }
}

/// Flattens `name`, mounts it and compares the tree with expected/NAME.txt;
/// the torture image also runs its own check script in a chroot.
fn check_image(name: &str) {
    let test = format!("corpus image {name}");
    let Some(corpus) = corpus_dir(&test) else {
        return;
    };
    if image_info(&corpus, name).is_none() {
        eprintln!("{test}: skipped, not in this corpus");
        return;
    }
    let f = flat(&corpus, name);
    if !can_mount(&test) {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    {
        let mnt = Mount::new(&f.img, &scratch.path().join("mnt"));
        let actual = listing(&mnt.dir, &scratch.path().join("actual.raw"));
        let expected = fs::read_to_string(corpus.join("expected").join(format!("{name}.txt")))
            .expect("reading the expected listing");
        assert_same_listing(
            name,
            &without_lost_found(&expected),
            &actual,
            scratch.path(),
        );
        if name == "torture" {
            // As make-corpus.sh runs it: /dev and /proc bound in a private
            // mount namespace (they vanish with it), then chroot.
            let o = output(
                Command::new("unshare")
                    .args(["--mount", "--propagation", "private", "/bin/sh", "-ec"])
                    .arg(
                        r#"mount --rbind /dev "$1/dev"; mount -t proc proc "$1/proc"
                           exec chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                               /bin/sh /torture/check.sh"#,
                    )
                    .arg("sh")
                    .arg(&mnt.dir),
            );
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success() && stdout.contains("torture-ok"),
                "torture/check.sh in the flattened image\n{}",
                show(&o)
            );
        }
    }
    // Passed: the chunk list is kept in memory, the file is not needed.
    let _ = fs::remove_file(&f.img);
}

#[test]
fn image_debian_slim() {
    check_image("debian-slim");
}
#[test]
fn image_python3() {
    check_image("python3");
}
#[test]
fn image_python3_zstd() {
    check_image("python3-zstd");
}
#[test]
fn image_python_app_v1() {
    check_image("python-app-v1");
}
#[test]
fn image_python_app_v2() {
    check_image("python-app-v2");
}
#[test]
fn image_node_app() {
    check_image("node-app");
}
#[test]
fn image_torture() {
    check_image("torture");
}
#[test]
fn image_python_ds() {
    check_image("python-ds");
}
#[test]
fn image_java_app() {
    check_image("java-app");
}

/// The same image gives the same bytes with 1 and 3 threads, from different
/// working directories, output directories, TMPDIR, time zones and source
/// date epochs, and with a relative output path.
#[test]
fn determinism_across_threads_and_environment() {
    let Some(corpus) = corpus_dir("determinism") else {
        return;
    };
    let name = "torture";
    let layout = corpus.join("images").join(name);
    let t = tempfile::tempdir().expect("tempdir");
    let runs = [
        ("1", "a", "out-a", "UTC", "1"),
        ("3", "b/deeper", "../out-b", "Asia/Kolkata", "1999999999"),
    ];
    let mut hashes = vec![];
    for (threads, cwd, out_dir, tz, epoch) in runs {
        let cwd = t.path().join(cwd);
        let tmp = cwd.join("tmp");
        fs::create_dir_all(&tmp).expect("mkdir");
        fs::create_dir_all(cwd.join(out_dir)).expect("mkdir");
        // Relative to cwd on purpose.
        let out = Path::new(out_dir).join(format!("{name}.img"));
        let o = output(
            kindling()
                .current_dir(&cwd)
                .env("TMPDIR", &tmp)
                .env("TZ", tz)
                .env("SOURCE_DATE_EPOCH", epoch)
                .arg("flatten")
                .arg(&layout)
                .arg("-o")
                .arg(&out)
                .args(["--threads", threads]),
        );
        assert!(o.status.success(), "flatten failed\n{}", show(&o));
        let img = cwd.join(&out);
        hashes.push((format!("--threads {threads}"), sha256_file(&img)));
        fs::remove_file(&img).expect("removing the image");
    }
    hashes.push((
        "--threads 2 (default)".into(),
        flat(&corpus, name).sha256.clone(),
    ));
    for (what, h) in &hashes {
        println!("determinism {name} {what}: sha256 {h}");
    }
    assert!(
        hashes.iter().all(|(_, h)| *h == hashes[0].1),
        "{name}: outputs differ: {hashes:?}"
    );
}

/// The other source forms give the same image: `DIR:REF` from the layout
/// holding every image gives the same bytes as the image's own layout, and a
/// docker-archive made by skopeo gives the same tree.
#[test]
fn source_forms() {
    let Some(corpus) = corpus_dir("source_forms") else {
        return;
    };
    let name = "python3";
    let t = tempfile::tempdir().expect("tempdir");
    let img = t.path().join("all.img");
    let src = format!("{}:{name}", corpus.join("all").display());
    flatten_json(src.as_ref(), &img, &[]);
    assert_eq!(
        sha256_file(&img),
        flat(&corpus, name).sha256,
        "{src} and images/{name} give different bytes"
    );
    fs::remove_file(&img).expect("removing the image");

    let have_skopeo = Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_skopeo {
        assert!(!in_ci(), "source_forms: skopeo is needed under CI");
        eprintln!("source_forms: docker-archive part skipped, no skopeo");
        return;
    }
    let archive = t.path().join("docker.tar");
    run_ok(
        Command::new("skopeo")
            .arg("copy")
            .arg("--quiet")
            .arg(format!(
                "oci:{}:latest",
                corpus.join("images").join(name).display()
            ))
            .arg(format!(
                "docker-archive:{}:kindling/{name}:latest",
                archive.display()
            )),
    );
    let img = t.path().join("docker.img");
    flatten_json(archive.as_os_str(), &img, &[]);
    fsck_clean(&img);
    if !can_mount("source_forms") {
        return;
    }
    let mnt = Mount::new(&img, &t.path().join("mnt"));
    let actual = listing(&mnt.dir, &t.path().join("actual.raw"));
    let expected = fs::read_to_string(corpus.join("expected").join(format!("{name}.txt")))
        .expect("reading the expected listing");
    assert_same_listing(
        "docker-archive",
        &without_lost_found(&expected),
        &actual,
        t.path(),
    );
}

fn nonzero_set(chunks: &[Option<String>]) -> HashSet<&str> {
    chunks.iter().flatten().map(String::as_str).collect()
}

/// Distinct non-zero chunks of `f`'s data region of layer `layer`.
fn region_set(f: &Flat, layer: usize) -> HashSet<&str> {
    let l = &f.summary["layers"][layer];
    let off = l["region_offset"].as_u64().expect("region_offset") / CHUNK_SIZE;
    let len = l["region_bytes"]
        .as_u64()
        .expect("region_bytes")
        .div_ceil(CHUNK_SIZE);
    let range = off as usize..(off + len) as usize;
    nonzero_set(&f.chunks[range])
}

/// Layer stability, the property dedup rests on: images built on
/// debian-slim contain (nearly) all of its chunks, and rebuilding the app
/// layer (python-app v1 -> v2) adds few new chunks.
///
/// Shares are over SETS of distinct non-zero chunk hashes: the fraction of
/// debian-slim's distinct chunks that appear anywhere in the other image (a
/// chunk repeated inside one image is stored once, so sets are what dedup
/// sees). `base-share` counts all of debian-slim's chunks, including its
/// superblock and metadata chunks, which necessarily differ in a larger
/// image; `region-share` counts only the chunks of its layer's data region,
/// which DESIGN.md requires to be identical (asserted: 100 %).
#[test]
fn layer_stability() {
    let Some(corpus) = corpus_dir("layer_stability") else {
        return;
    };
    let base = flat(&corpus, "debian-slim");
    let base_set = nonzero_set(&base.chunks);
    let base_region = region_set(base, 0);
    println!(
        "{:<14} {:>7} {:>6} {:>8} {:>9} {:>10} {:>12}",
        "image", "chunks", "zero", "nonzero", "distinct", "base-share", "region-share"
    );
    let row = |name: &str, f: &Flat| {
        let set = nonzero_set(&f.chunks);
        let zero = f.chunks.iter().filter(|c| c.is_none()).count();
        let share = base_set.intersection(&set).count() as f64 / base_set.len() as f64;
        let region = base_region.intersection(&set).count() as f64 / base_region.len() as f64;
        println!(
            "{name:<14} {:>7} {zero:>6} {:>8} {:>9} {:>9.2}% {:>11.2}%",
            f.chunks.len(),
            f.chunks.len() - zero,
            set.len(),
            share * 100.0,
            region * 100.0
        );
        (share, region)
    };
    row("debian-slim", base);
    println!(
        "  debian-slim: {} distinct non-zero chunks, {} of them in its layer's data region",
        base_set.len(),
        base_region.len()
    );
    let mut low = vec![];
    for name in DERIVED {
        if image_info(&corpus, name).is_none() {
            println!("{name:<14} (not in this corpus)");
            continue;
        }
        let (share, region) = row(name, flat(&corpus, name));
        if share < MIN_BASE_SHARE || region < 1.0 {
            low.push(format!(
                "{name}: {:.2}% of all, {:.2}% of the region",
                share * 100.0,
                region * 100.0
            ));
        }
    }
    // Same diff_id as debian-slim's layer, compressed with zstd instead of
    // gzip: reported, not asserted (the layer digest differs).
    row("python3-zstd*", flat(&corpus, "python3-zstd"));
    println!("  (* python3-zstd: base layer compressed with zstd, same diff_id; not asserted)");
    let v1 = nonzero_set(&flat(&corpus, "python-app-v1").chunks);
    let v2 = nonzero_set(&flat(&corpus, "python-app-v2").chunks);
    let new = v2.difference(&v1).count();
    println!(
        "python-app-v2 over v1: {new} new distinct non-zero chunks of {} ({:.1} MiB)",
        v2.len(),
        new as f64 * CHUNK_SIZE as f64 / (1 << 20) as f64
    );
    assert!(
        low.is_empty(),
        "images keeping less than {:.0}% of debian-slim's chunks or not all of its layer \
         region's: {low:?}",
        MIN_BASE_SHARE * 100.0
    );
    assert!(
        new <= MAX_V2_NEW_CHUNKS,
        "python-app-v2 adds {new} chunks over v1 (limit {MAX_V2_NEW_CHUNKS})"
    );
}

/// Ctrl-C (or a hang-up: the terminal closed) in the middle of a flatten
/// leaves nothing behind: no output and no temporary file.
#[test]
fn interrupt_leaves_nothing() {
    let Some(corpus) = corpus_dir("interrupt_leaves_nothing") else {
        return;
    };
    for signal in [libc::SIGINT, libc::SIGHUP] {
        let out = tempfile::tempdir().expect("tempdir");
        let mut child = kindling()
            .arg("flatten")
            .arg(corpus.join("images/python-ds"))
            .arg("-o")
            .arg(out.path().join("out.img"))
            .spawn()
            .expect("spawn kindling");
        // Wait until the temporary file exists, i.e. flattening has begun.
        let start = std::time::Instant::now();
        while fs::read_dir(out.path()).expect("read_dir").next().is_none() {
            assert!(start.elapsed().as_secs() < 20, "no temporary file appeared");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The handler is installed just after the file is created.
        std::thread::sleep(std::time::Duration::from_millis(200));
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "flatten finished before signal {signal}: make the image larger"
        );
        let left: Vec<_> = fs::read_dir(out.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "signal {signal} left behind: {left:?}");
    }
}
