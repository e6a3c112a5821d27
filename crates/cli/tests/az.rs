//! The full tier chain end to end: `kindling run` of a corpus image with
//! five `kindling cache-node` processes as the AZ cache cluster. Needs
//! root (FUSE, loop, runc) and the corpus: a skip note outside CI.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use common::*;

/// A `kindling cache-node` process on an ephemeral loopback port.
struct Node {
    child: Child,
    addr: String,
    /// Kept open: a node writing to a closed pipe would fail.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Node {
    fn start(data: &Path, disk: &Path) -> Node {
        let mut child = kindling_in(data)
            .args([
                "cache-node",
                "--listen",
                "127.0.0.1:0",
                "--disk-size",
                "256MiB",
                "--disk",
            ])
            .arg(disk)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // "cache node on 127.0.0.1:PORT (memory ..."
        let addr = line
            .strip_prefix("cache node on ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Node {
            child,
            addr,
            _stdout: stdout,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Start {
    out: String,
    stats: serde_json::Value,
}

fn start(dir: &Path, store: &Path, nodes: &str, cache: &Path, startup: &[String]) -> Start {
    let stats = dir.join("stats.json");
    let o = output(
        kindling_in(dir)
            .args(["run", "app", "--no-trace", "--store"])
            .arg(store)
            .arg("--cache-dir")
            .arg(cache)
            // The default 30 ms per stripe request is for a real AZ; a
            // loaded 2-core CI machine stalls threads for longer than that.
            .args(["--az-timeout", "1s"])
            .args(["--cache-nodes", nodes, "--stats-json"])
            .arg(&stats)
            .arg("--")
            .args(startup),
    );
    assert!(o.status.success(), "{}", show(&o));
    Start {
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        stats: serde_json::from_str(&fs::read_to_string(&stats).unwrap()).unwrap(),
    }
}

/// A cold cluster fills from the first start; a worker with an empty cache
/// then gets every chunk from the cluster, also with one node down; with
/// two of five down (more than the one parity stripe covers) it falls
/// back to the origin and still starts.
#[test]
fn corpus_image_runs_through_the_az_cache() {
    if !can_mount("corpus_image_runs_through_the_az_cache") {
        return;
    }
    let Some(corpus) = corpus_dir("corpus_image_runs_through_the_az_cache") else {
        return;
    };
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(corpus.join("corpus.json")).unwrap()).unwrap();
    let image = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "python-app-v1")
        .unwrap();
    let startup: Vec<String> = image["startup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let expected = fs::read_to_string(corpus.join("startup/python-app-v1.out")).unwrap();
    let dir = scratch("az", "run");
    let store = dir.join("store");
    push_to(&dir, &corpus.join("images/python-app-v1"), "app", &store);
    let mut nodes: Vec<Node> = (0..5)
        .map(|i| Node::start(&dir, &dir.join(format!("node{i}"))))
        .collect();
    let list = |nodes: &[Node]| {
        nodes
            .iter()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let all = list(&nodes);
    let cache = |i: usize| -> PathBuf { dir.join(format!("cache{i}")) };
    let n = |s: &Start, k: &str| s.stats[k].as_u64().unwrap();

    let cold = start(&dir, &store, &all, &cache(0), &startup);
    assert_eq!(cold.out, expected);
    assert_eq!(n(&cold, "chunks_az"), 0, "{}", cold.stats);
    let stored = n(&cold, "chunks_origin");
    assert!(stored > 0);

    // Fills are best effort: under load a few may be dropped (bounded
    // memory) or not land before the run ends. Every other chunk must
    // come from the cluster.
    let az = |s: &Start, k: &str| s.stats["az"][k].as_u64().unwrap();
    let unfilled =
        az(&cold, "fills_dropped") + az(&cold, "fills_started") - az(&cold, "fills_done");
    assert!(unfilled * 20 <= stored, "fills lost: {}", cold.stats);

    let warm = start(&dir, &store, &all, &cache(1), &startup);
    assert_eq!(warm.out, expected);
    assert_eq!(n(&warm, "chunks_origin"), unfilled, "{}", warm.stats);
    assert_eq!(n(&warm, "chunks_az"), stored - unfilled, "{}", warm.stats);

    // One node down: every chunk in the cluster still rebuilds from the
    // other four.
    drop(nodes.remove(0));
    let one_down = start(&dir, &store, &all, &cache(2), &startup);
    assert_eq!(one_down.out, expected);
    assert!(
        n(&one_down, "chunks_origin") <= unfilled,
        "{}",
        one_down.stats
    );
    assert_eq!(
        n(&one_down, "chunks_origin") + n(&one_down, "chunks_az"),
        stored,
        "{}",
        one_down.stats
    );

    // Two down: with five nodes every chunk had a stripe on both, so all
    // come from the origin.
    drop(nodes.remove(0));
    let two_down = start(&dir, &store, &all, &cache(3), &startup);
    assert_eq!(two_down.out, expected);
    assert!(n(&two_down, "chunks_origin") > 0, "{}", two_down.stats);
    assert_eq!(
        n(&two_down, "chunks_origin") + n(&two_down, "chunks_az"),
        stored,
        "{}",
        two_down.stats
    );
    eprintln!(
        "cold {} | warm {} | one down {} | two down {}",
        cold.stats, warm.stats, one_down.stats, two_down.stats
    );
    drop(nodes);
    let _ = fs::remove_dir_all(&dir);
}
