//! `run`'s use of the file trace: warm the mounted image's page cache
//! while the container starts, or record a trace after it exits.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kindling_runtime::{OpenWatch, Warmed};

use crate::agent::{FileTraceLookup, Opened};

/// Threads that read ahead: python-ds warm starts, six interleaved
/// rounds, took a median 1010 ms with one, 965 with two, 998 with three
/// (1177 without warming); node-app 327, 309, 302 (371).
const WARM_THREADS: usize = 2;

/// The warming threads of one run; stopped and joined on drop, which must
/// come before the image is unmounted (they hold its files open).
#[derive(Debug)]
pub struct Warming {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<Warmed>>>,
}

impl Warming {
    /// Starts warming `root` (the mounted image) once the lookup of
    /// `opened`'s file trace finds one; does nothing if it finds none.
    pub fn start(opened: &Opened, root: &Path, rt: tokio::runtime::Handle) -> Warming {
        let stop = Arc::new(AtomicBool::new(false));
        let mut lookup = opened.file_trace.clone();
        let (root, stopped) = (root.to_owned(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("kindling-warm".into())
            .spawn(move || {
                let trace = loop {
                    if stopped.load(Ordering::Relaxed) {
                        return None;
                    }
                    // The lookup is one GET; polled so a stop is never
                    // stuck behind a slow store.
                    let state = rt.block_on(async {
                        let _ = tokio::time::timeout(
                            Duration::from_millis(20),
                            lookup.wait_for(|l| !matches!(l, FileTraceLookup::Pending)),
                        )
                        .await;
                        lookup.borrow().clone()
                    });
                    match state {
                        FileTraceLookup::Pending => continue,
                        FileTraceLookup::Found(t) => break t,
                        FileTraceLookup::Off | FileTraceLookup::Absent => return None,
                    }
                };
                match kindling_runtime::warm(&root, &trace, WARM_THREADS, &stopped) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        eprintln!("kindling: warning: warming the page cache: {e}");
                        None
                    }
                }
            })
            .ok();
        Warming { stop, thread }
    }

    /// Stops warming; what it did, if it warmed.
    pub fn finish(mut self) -> Option<Warmed> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Option<Warmed> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for Warming {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Watches which files the start opens if it may have to record a file
/// trace (the image has none, or the lookup has not said yet).
pub fn watch_if_recording(opened: &Opened, root: &Path) -> Option<OpenWatch> {
    if !matches!(
        *opened.file_trace.borrow(),
        FileTraceLookup::Pending | FileTraceLookup::Absent
    ) {
        return None;
    }
    match OpenWatch::start(root) {
        Ok(w) => Some(w),
        Err(e) => {
            eprintln!(
                "kindling: warning: cannot watch the start's opens (fanotify: {e}); \
                 no file trace will be recorded"
            );
            None
        }
    }
}

/// Records a file trace of `root` (the mounted image, after the container
/// exited) from the files `watch` saw opened, if `opened` has none
/// stored; it is saved with the chunk trace when the start ends. Returns
/// the number of ranges recorded and how long recording took.
pub fn record_if_absent(
    opened: &Opened,
    root: &Path,
    watch: Option<OpenWatch>,
) -> Option<(usize, Duration)> {
    let began = std::time::Instant::now();
    let files = watch?.finish();
    if !matches!(*opened.file_trace.borrow(), FileTraceLookup::Absent) {
        return None;
    }
    let rank = chunk_ranks(opened);
    let chunk_size = opened.reader.manifest().chunk_size;
    let trace = match kindling_runtime::record_file_trace(root, &files, &|offset| {
        rank.get((offset / chunk_size) as usize)
            .copied()
            .unwrap_or(u64::MAX)
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kindling: warning: recording the file trace: {e}");
            return None;
        }
    };
    let n = trace.ranges.len();
    *opened
        .recorded_files
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(trace);
    Some((n, began.elapsed()))
}

/// Each chunk's place in the order a start first read it: the stored
/// chunk trace's order, then this start's reads of chunks it lacks;
/// `u64::MAX` for chunks never read.
fn chunk_ranks(opened: &Opened) -> Vec<u64> {
    let mut rank = vec![u64::MAX; opened.reader.manifest().chunks.len()];
    let stored = opened.chunk_trace.get().map(Vec::as_slice).unwrap_or(&[]);
    let mut next = 0u64;
    for &i in stored.iter().chain(opened.reader.trace().iter()) {
        if let Some(r) = rank.get_mut(i as usize) {
            if *r == u64::MAX {
                *r = next;
                next += 1;
            }
        }
    }
    rank
}
