//! Helpers shared by the CLI's integration tests: running the binary, root
//! and corpus checks, a loop mount that always unmounts, listings made by the
//! corpus' reference tool (`corpus.py listing`), and a small builder of OCI
//! image layouts whose tar entries may be as malformed as a test needs.
//!
//! The tests drive the real thing (the built `kindling` binary, `e2fsck`, the
//! kernel's ext4 through a loop device) so that they check what a user gets.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// The `kindling` binary under test.
pub fn kindling() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kindling"))
}

/// Both output streams, for assertion messages.
/// `o` exited with `code` and said `says` on stderr.
pub fn assert_status(o: &Output, code: i32, says: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", show(o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(says),
        "expected {says:?} on stderr\n{}",
        show(o)
    );
}

pub fn show(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh scratch directory `target/tmp/GROUP/TEST`.
pub fn scratch(group: &str, test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(group)
        .join(test);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("creating a scratch directory");
    d
}

/// `kindling` with private data and cache directories (default store, key
/// and worker cache) and no store, key or cache from the caller's
/// environment.
pub fn kindling_in(data: &Path) -> Command {
    let mut c = kindling();
    c.env("XDG_DATA_HOME", data)
        .env("XDG_CACHE_HOME", data.join("xdg-cache"))
        .env_remove("KINDLING_CACHE_DIR")
        .env_remove("KINDLING_STORE")
        .env_remove("KINDLING_KEY_FILE");
    c
}

/// Runs a command and returns its output; panics if it cannot be started.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// Runs a command that must succeed and returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(out.status.success(), "{cmd:?} failed\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when the tests run as root (needed for loop mounts and chroot).
pub fn is_root() -> bool {
    // /proc/self belongs to the effective uid of the process that reads it.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// True under CI, where every precondition is a hard requirement.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Whether tests that mount images can run. Outside CI a non-root run skips
/// them with a note; under CI not being root is a failure.
pub fn can_mount(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: needs root (loop mounts) and CI is set; run the tests as root"
    );
    eprintln!("{test}: skipped, needs root for loop mounts");
    false
}

/// The corpus directory from KINDLING_CORPUS. Unset: a failure under CI, a
/// skip note otherwise.
pub fn corpus_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("KINDLING_CORPUS") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            assert!(
                d.join("corpus.json").is_file(),
                "KINDLING_CORPUS={} has no corpus.json (build it with make-corpus.sh)",
                d.display()
            );
            Some(d)
        }
        _ => {
            assert!(
                !in_ci(),
                "{test}: KINDLING_CORPUS is not set and CI is: point it at a corpus built by \
                 shared/corpus/make-corpus.sh (scripts/test does this)"
            );
            eprintln!("{test}: skipped, KINDLING_CORPUS is not set");
            None
        }
    }
}

/// `corpus.py`, the corpus' reference unpacker and lister: KINDLING_CORPUS_PY,
/// else `shared/corpus/corpus.py` beside the repository.
pub fn corpus_py() -> PathBuf {
    if let Some(p) = std::env::var_os("KINDLING_CORPUS_PY") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/corpus.py");
    assert!(
        p.is_file(),
        "corpus.py not found at {} (set KINDLING_CORPUS_PY)",
        p.display()
    );
    p
}

/// A python3 with only the standard library is all corpus.py needs; prefer
/// the system one.
pub fn python() -> Command {
    if Path::new("/usr/bin/python3").exists() {
        Command::new("/usr/bin/python3")
    } else {
        Command::new("python3")
    }
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `kindling flatten SOURCE -o OUT --json ARGS...`; returns the parsed JSON
/// summary and panics with both streams on failure.
pub fn flatten_json(source: &OsStr, out: &Path, args: &[&str]) -> serde_json::Value {
    let o = output(
        kindling()
            .arg("flatten")
            .arg(source)
            .arg("-o")
            .arg(out)
            .arg("--json")
            .args(args),
    );
    assert!(
        o.status.success(),
        "kindling flatten {} failed\n{}",
        source.to_string_lossy(),
        show(&o)
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "flatten panicked\n{}",
        show(&o)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("flatten --json printed no JSON object ({e})\n{}", show(&o)))
}

/// `e2fsck -fn IMG` must report a clean filesystem.
pub fn fsck_clean(img: &Path) {
    let o = output(Command::new("e2fsck").arg("-fn").arg(img));
    assert!(
        o.status.success(),
        "e2fsck -fn {} is not clean\n{}",
        img.display(),
        show(&o)
    );
}

/// Chunk hashes from `kindling chunks IMG`: `None` for a zero chunk.
pub fn chunks(img: &Path) -> Vec<Option<String>> {
    let text = run_ok(kindling().arg("chunks").arg(img));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let (idx, h) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("chunks: bad line {line:?}"));
            assert_eq!(idx, i.to_string(), "chunks: lines out of order at {line:?}");
            (h != "zero").then(|| h.to_string())
        })
        .collect()
}

/// A read-only loop mount, unmounted when dropped (also while unwinding from
/// a failed assertion, so a failing test leaves no mount behind).
#[derive(Debug)]
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(img: &Path, dir: &Path) -> Mount {
        fs::create_dir_all(dir).expect("creating the mount point");
        run_ok(
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop,ro"])
                .arg(img)
                .arg(dir),
        );
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a reader still running): detach lazily rather than leak it.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// The listing of a tree by `corpus.py listing`, with `lost+found` removed
/// (an ext4 image has it, the reference unpack does not) and the header's
/// entry count adjusted to match.
pub fn listing(root: &Path, out: &Path) -> String {
    run_ok(
        python()
            .arg(corpus_py())
            .arg("listing")
            .arg(root)
            .arg("--out")
            .arg(out),
    );
    let text = fs::read_to_string(out).expect("reading the listing");
    without_lost_found(&text)
}

/// Drops `lost+found` (and anything below it) from a listing and fixes the
/// `# entries=N` count in its header.
pub fn without_lost_found(text: &str) -> String {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let mut removed = 0usize;
    let mut body = String::new();
    for line in lines {
        let path = line.split(' ').next().unwrap_or_default();
        if path == "lost+found" || path.starts_with("lost+found/") {
            removed += 1;
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    let header = match header.strip_prefix("# entries=") {
        Some(rest) => {
            let (n, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let n: usize = n
                .parse()
                .unwrap_or_else(|_| panic!("bad listing header {header:?}"));
            format!("# entries={} {tail}", n - removed)
        }
        None => panic!("bad listing header {header:?}"),
    };
    format!("{}\n{body}", header.trim_end())
}

/// Panics with the first lines of a unified diff when two listings differ.
pub fn assert_same_listing(what: &str, expected: &str, actual: &str, scratch: &Path) {
    if expected == actual {
        return;
    }
    let e = scratch.join("expected.txt");
    let a = scratch.join("actual.txt");
    fs::write(&e, expected).expect("writing the expected listing");
    fs::write(&a, actual).expect("writing the actual listing");
    let d = output(Command::new("diff").arg("-u").arg(&e).arg(&a));
    let diff = String::from_utf8_lossy(&d.stdout);
    let total = diff.lines().count();
    let head: Vec<&str> = diff.lines().take(50).collect();
    panic!(
        "{what}: listing differs from the reference ({total} diff lines, first 50):\n{}",
        head.join("\n")
    );
}

/// Asserts a failed run: exit status 1, a `kindling: error:` message that
/// mentions one of `names`, no panic, and nothing left in `out_dir`.
pub fn assert_clean_failure(case: &str, o: &Output, names: &[&str], out_dir: &Path) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("{case}: {}", stderr.trim_end());
    assert!(
        !o.status.success(),
        "{case}: flatten succeeded but must fail\n{}",
        show(o)
    );
    assert!(
        !stderr.contains("panicked"),
        "{case}: panicked\n{}",
        show(o)
    );
    assert_eq!(o.status.code(), Some(1), "{case}: exit code\n{}", show(o));
    assert!(
        stderr.contains("kindling: error:"),
        "{case}: no `kindling: error:` line\n{}",
        show(o)
    );
    assert!(
        names.iter().any(|n| stderr.contains(n)),
        "{case}: the error does not name the problem (expected one of {names:?})\n{}",
        show(o)
    );
    let left: Vec<_> = fs::read_dir(out_dir)
        .expect("listing the output directory")
        .map(|e| e.expect("directory entry").file_name())
        .collect();
    assert!(
        left.is_empty(),
        "{case}: files left in the output directory after a failure: {left:?}"
    );
}

// ---------------------------------------------------------------------------
// Synthetic OCI image layouts
// ---------------------------------------------------------------------------

/// Fixed mtime of synthetic entries (2023-11-14).
pub const MTIME: u64 = 1_700_000_000;

/// One tar entry, written byte for byte as given (no path cleaning), so that
/// tests can produce the malformed archives a hostile image would contain.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Extra PAX records, e.g. `SCHILY.xattr.user.k`.
    pub pax: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Fifo,
    Char(u32, u32),
}

impl Entry {
    fn new(name: impl AsRef<[u8]>, kind: Kind, mode: u32) -> Entry {
        Entry {
            name: name.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            pax: vec![],
        }
    }
    pub fn dir(name: impl AsRef<[u8]>) -> Entry {
        Entry::new(name, Kind::Dir, 0o755)
    }
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Entry {
        Entry::new(name, Kind::File(data.as_ref().to_vec()), 0o644)
    }
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(name, Kind::Symlink(target.as_ref().to_vec()), 0o777)
    }
    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(name, Kind::Hardlink(target.as_ref().to_vec()), 0o644)
    }
    pub fn fifo(name: impl AsRef<[u8]>) -> Entry {
        Entry::new(name, Kind::Fifo, 0o644)
    }
    pub fn char_dev(name: impl AsRef<[u8]>, major: u32, minor: u32) -> Entry {
        Entry::new(name, Kind::Char(major, minor), 0o666)
    }
    /// An OCI whiteout for `path` (`dir/.wh.name`).
    pub fn whiteout(path: &str) -> Entry {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        Entry::file(wh, b"")
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }
    pub fn xattr(mut self, key: &str, value: &[u8]) -> Entry {
        self.pax
            .push((format!("SCHILY.xattr.{key}"), value.to_vec()));
        self
    }
}

/// One PAX record: `LEN key=value\n`, where LEN counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// A tar stream of `entries`, names taken literally; names and link targets
/// longer than the ustar fields go into PAX records.
pub fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone()));
        }
        let link = match &e.kind {
            Kind::Symlink(t) | Kind::Hardlink(t) => Some(t.clone()),
            _ => None,
        };
        if let Some(t) = &link {
            if t.len() > 100 {
                pax.push(("linkpath".into(), t.clone()));
            }
        }
        if !pax.is_empty() {
            let data: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let mut h = tar::Header::new_ustar();
            put(&mut h.as_old_mut().name, b"PaxHeaders/entry");
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_mode(0o644);
            h.set_mtime(MTIME);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, &data[..]).expect("appending a PAX header");
        }
        let mut h = tar::Header::new_ustar();
        put(&mut h.as_old_mut().name, &e.name);
        if let Some(t) = &link {
            put(&mut h.as_old_mut().linkname, t);
        }
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(MTIME);
        let data: &[u8] = match &e.kind {
            Kind::File(d) => d,
            _ => &[],
        };
        h.set_size(data.len() as u64);
        h.set_entry_type(match &e.kind {
            Kind::Dir => tar::EntryType::Directory,
            Kind::File(_) => tar::EntryType::Regular,
            Kind::Symlink(_) => tar::EntryType::Symlink,
            Kind::Hardlink(_) => tar::EntryType::Link,
            Kind::Fifo => tar::EntryType::Fifo,
            Kind::Char(..) => tar::EntryType::Char,
        });
        if let Kind::Char(major, minor) = e.kind {
            h.set_device_major(major).expect("device major");
            h.set_device_minor(minor).expect("device minor");
        }
        h.set_cksum();
        b.append(&h, data).expect("appending an entry");
    }
    b.into_inner().expect("finishing the tar")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// How a layer blob is stored.
#[derive(Debug, Clone)]
pub enum Blob {
    /// gzip of the tar.
    Gzip,
    /// The tar itself.
    Plain,
    /// These exact bytes under the given media type; the diff_id is still the
    /// tar's, so only reading the blob can tell that it is bad.
    Raw { media_type: String, bytes: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub blob: Blob,
}

impl Layer {
    pub fn gzip(entries: Vec<Entry>) -> Layer {
        Layer {
            entries,
            blob: Blob::Gzip,
        }
    }
    pub fn plain(entries: Vec<Entry>) -> Layer {
        Layer {
            entries,
            blob: Blob::Plain,
        }
    }
}

/// What [`write_layout`] wrote: digests (with `sha256:`) of every blob.
#[derive(Debug, Clone)]
pub struct Written {
    pub dir: PathBuf,
    pub manifest: String,
    pub config: String,
    pub layers: Vec<String>,
}

impl Written {
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }
}

fn write_blob(dir: &Path, data: &[u8]) -> String {
    let hex = sha256_hex(data);
    fs::write(dir.join("blobs/sha256").join(&hex), data).expect("writing a blob");
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// Writes an OCI image layout with one image, ref `latest`.
pub fn write_layout(dir: &Path, layers: &[Layer]) -> Written {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("creating the layout");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("writing oci-layout");
    let mut diff_ids = vec![];
    let mut descs = vec![];
    let mut digests = vec![];
    for l in layers {
        let tar = tar_bytes(&l.entries);
        diff_ids.push(format!("sha256:{}", sha256_hex(&tar)));
        let (mt, bytes) = match &l.blob {
            Blob::Gzip => (
                "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
                gzip(&tar),
            ),
            Blob::Plain => ("application/vnd.oci.image.layer.v1.tar".to_string(), tar),
            Blob::Raw { media_type, bytes } => (media_type.clone(), bytes.clone()),
        };
        let d = write_blob(dir, &bytes);
        descs.push(descriptor(&mt, &d, bytes.len()));
        digests.push(d);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = serde_json::to_vec(&config).expect("config JSON");
    let config_digest = write_blob(dir, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config_digest, config.len()),
        "layers": descs,
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest JSON");
    let manifest_digest = write_blob(dir, &manifest);
    point_index_at(dir, &manifest_digest, manifest.len());
    Written {
        dir: dir.to_path_buf(),
        manifest: manifest_digest,
        config: config_digest,
        layers: digests,
    }
}

/// Writes `index.json` with one manifest, ref `latest`.
pub fn point_index_at(dir: &Path, manifest_digest: &str, size: usize) {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": size,
            "annotations": { "org.opencontainers.image.ref.name": "latest" },
        }],
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index JSON"),
    )
    .expect("writing index.json");
}

/// Adds a blob with these bytes to a layout; returns its digest.
pub fn add_blob(dir: &Path, data: &[u8]) -> String {
    write_blob(dir, data)
}

/// Bytes that do not compress: a simple xorshift stream, so file data is not
/// all alike and chunk hashes differ.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `kindling push SOURCE --name NAME --store STORE`, which must succeed.
pub fn push_to(data: &Path, source: &Path, name: &str, store: &Path) -> String {
    run_ok(
        kindling_in(data)
            .arg("push")
            .arg(source)
            .args(["--name", name, "--store"])
            .arg(store),
    )
}

/// Points `cmd` at `server` with its credentials, as a user would: the
/// standard AWS environment.
pub fn with_s3<'a>(cmd: &'a mut Command, server: &kindling_store::S3Server) -> &'a mut Command {
    cmd.env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", kindling_store::S3Server::ACCESS_KEY_ID)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            kindling_store::S3Server::SECRET_ACCESS_KEY,
        )
}
