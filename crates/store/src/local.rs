//! A directory as an object store: the embedded default origin.
//!
//! Key `a/b/c` is the file `<root>/a/b/c`. Readers must never see part of an
//! object, so writes go to a temporary file in the target's own directory
//! (same file system, so the final step is atomic) and are then renamed over
//! the target; `put_if_absent` hard-links the temporary file instead, and
//! link(2) fails with EEXIST rather than replacing, which makes it atomic
//! too. Temporary files are named `.tmp.<pid>.<counter>`; keys cannot use
//! that prefix ([`crate::validate_key`]), so listings skip them safely.
//!
//! File work runs on tokio's blocking pool. A write, once started, finishes
//! even if its future is dropped, so cancelling a call never leaves a
//! temporary file behind (a crash can; they are skipped and harmless).
//!
//! Unlike S3, a directory cannot hold both `a` and `a/b`: writing one when
//! the other exists fails with a permanent I/O error.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::list_key;
use crate::key::TEMP_PREFIX;
use crate::{validate_key, validate_prefix, Bytes, Op, Store, StoreError};

/// Source of unique temporary file names within this process; the pid in the
/// name separates processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// An object store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    url: String,
    fsync: bool,
}

impl LocalStore {
    /// A store rooted at `root`, which is created on the first write.
    pub fn new(root: PathBuf) -> Self {
        let root = std::path::absolute(&root).unwrap_or(root);
        let url = format!("file://{}", root.display());
        LocalStore {
            root,
            url,
            fsync: false,
        }
    }

    /// Whether writes are flushed to disk (file and directory fsync) before
    /// they return. Default: off. Atomic visibility does not need it; it only
    /// matters for surviving a machine crash, and it costs a disk flush per
    /// object, which dominates when uploading thousands of small chunks.
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io_error(&self, op: Op, key: &str, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            key: key.to_owned(),
            store: self.url.clone(),
            source,
        }
    }

    /// Runs file work on the blocking pool and maps its errors.
    async fn blocking<T, F>(&self, op: Op, key: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        match tokio::task::spawn_blocking(f).await {
            Ok(result) => result.map_err(|e| self.io_error(op, key, e)),
            Err(join) => Err(self.io_error(op, key, io::Error::other(join))),
        }
    }
}

/// Errors that mean "no object there": the file, or a parent, is missing,
/// or a parent is a file, or the path is a directory (which is no object).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

#[async_trait::async_trait]
impl Store for LocalStore {
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        match tokio::fs::read(self.path(key)).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if is_missing(&e) => Err(StoreError::NotFound {
                key: key.to_owned(),
            }),
            Err(e) => Err(self.io_error(Op::Get, key, e)),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        let target = self.path(key);
        let fsync = self.fsync;
        self.blocking(Op::Put, key, move || {
            let temp = TempFile::write(&target, &data, fsync)?;
            fs::rename(&temp.path, &target)?;
            temp.keep();
            if fsync {
                sync_parent(&target)?;
            }
            Ok(())
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        validate_key(key)?;
        let target = self.path(key);
        let fsync = self.fsync;
        self.blocking(Op::PutIfAbsent, key, move || {
            // Content-addressed uploads mostly find the object already there:
            // answer those without writing anything. The link below is what
            // makes the call atomic; this check only saves work.
            if fs::symlink_metadata(&target).is_ok() {
                return Ok(false);
            }
            let temp = TempFile::write(&target, &data, fsync)?;
            match fs::hard_link(&temp.path, &target) {
                Ok(()) => {
                    if fsync {
                        sync_parent(&target)?;
                    }
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
            // `temp` is removed here in both cases.
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        validate_key(key)?;
        match tokio::fs::metadata(self.path(key)).await {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(self.io_error(Op::Exists, key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let owned = prefix.to_owned();
        self.blocking(Op::List, &list_key(prefix), move || {
            list_blocking(&root, &owned)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.io_error(Op::Delete, key, e)),
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }
}

/// A temporary file beside a target, removed on drop unless kept.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Writes `data` to a new temporary file in `target`'s directory,
    /// creating that directory (and the store root) as needed.
    fn write(target: &Path, data: &[u8], fsync: bool) -> io::Result<TempFile> {
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other("target has no parent directory"))?;
        fs::create_dir_all(dir)?;
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{TEMP_PREFIX}{}.{n}", std::process::id()));
            // create_new: a stale file of a crashed process with our pid is
            // skipped, never overwritten while someone may link it.
            let mut file = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            let temp = TempFile { path, keep: false };
            file.write_all(data)?;
            if fsync {
                file.sync_all()?;
            }
            return Ok(temp);
        }
    }

    /// The file was renamed into place: nothing to remove.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Makes a rename or link in `target`'s directory durable.
fn sync_parent(target: &Path) -> io::Result<()> {
    match target.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Walks the directory holding `prefix`'s last '/' and returns the keys that
/// start with `prefix`, sorted. Names that are not valid keys (temporary
/// files, non-UTF-8 names, stray files) are skipped.
fn list_blocking(root: &Path, prefix: &str) -> io::Result<Vec<String>> {
    let start = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    let mut keys = Vec::new();
    let mut stack = vec![start.to_owned()];
    while let Some(rel) = stack.pop() {
        let entries = match fs::read_dir(root.join(&rel)) {
            Ok(entries) => entries,
            // A missing start directory (or root) is an empty listing; so is
            // one that vanished since its parent was read.
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let key = format!("{rel}{name}");
            let mut file_type = entry.file_type()?;
            if file_type.is_symlink() {
                // Follow links to files; links to directories are not
                // followed, which rules out cycles.
                match fs::metadata(entry.path()) {
                    Ok(meta) if meta.is_file() => file_type = meta.file_type(),
                    _ => continue,
                }
            }
            if file_type.is_dir() {
                let dir = format!("{key}/");
                if dir.starts_with(prefix) || prefix.starts_with(&dir) {
                    stack.push(dir);
                }
            } else if file_type.is_file() && key.starts_with(prefix) && validate_key(&key).is_ok() {
                keys.push(key);
            }
        }
    }
    keys.sort_unstable();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_if_absent_is_atomic_under_contention() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(dir.path().to_path_buf()));
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .put_if_absent("chunks/aa/x", Bytes::from(vec![i; 4096]))
                    .await
                    .unwrap()
            }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap());
        }
        assert_eq!(winners, 1);
        let data = store.get("chunks/aa/x").await.unwrap();
        assert_eq!(data.len(), 4096);
        assert!(data.iter().all(|&b| b == data[0]));
        // No temporary files left.
        let names: Vec<_> = fs::read_dir(dir.path().join("chunks/aa"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x")]);
    }

    #[tokio::test]
    async fn list_skips_temp_and_stray_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        store.put("a/b", Bytes::from_static(b"1")).await.unwrap();
        fs::write(dir.path().join("a/.tmp.1.2"), b"partial").unwrap();
        fs::write(dir.path().join("a/with space"), b"stray").unwrap();
        assert_eq!(store.list("").await.unwrap(), vec!["a/b".to_owned()]);
    }

    #[tokio::test]
    async fn fsync_writes_work_and_url_is_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("root")).with_fsync(true);
        assert_eq!(
            store.url(),
            format!("file://{}", dir.path().join("root").display())
        );
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        assert!(store.put_if_absent("k2", Bytes::new()).await.unwrap());
        assert_eq!(store.get("k").await.unwrap(), Bytes::from_static(b"v"));
    }

    #[tokio::test]
    async fn io_errors_name_key_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        store.put("a", Bytes::from_static(b"1")).await.unwrap();
        // "a" is a file, so "a/b" cannot be created in a directory store.
        let err = store
            .put("a/b", Bytes::from_static(b"2"))
            .await
            .unwrap_err();
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            format!("cannot put a/b in {}", store.url())
        );
    }
}
