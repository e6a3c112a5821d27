//! `kindling push docker://...` end to end, through the binary, against a
//! real registry (Debian's `docker-registry`, started by
//! `kindling_testkit::registry`, filled by skopeo): a pulled image fetches
//! back byte for byte as `kindling flatten` of the same layout, credentials
//! come from `--creds`, KINDLING_REGISTRY_AUTH or a docker config file, and
//! a refused or missing image fails cleanly and names nothing in the store.
//!
//! Needs the image corpus, docker-registry and skopeo (a skip note without
//! them, a failure under CI).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use kindling_testkit::registry::{prerequisites, Registry};

/// The corpus image every test pushes.
const IMAGE: &str = "python-app-v1";
/// The one user of the htpasswd registry.
const USER: &str = "kindling";
const PASSWORD: &str = "s3cret";
/// `USER:PASSWORD` in base64, as a docker config's `auth` holds it
/// (`printf kindling:s3cret | base64`).
const AUTH: &str = "a2luZGxpbmc6czNjcmV0";

fn scratch(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("registry")
        .join(test);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("creating the scratch directory");
    d
}

/// `kindling` with a private data directory (default key), temporary
/// directory (where a pull lands) and docker config directory (empty unless
/// a test writes `config.json` there), and no store, key or registry
/// credentials from the caller's environment.
fn kindling_in(dir: &Path) -> Command {
    let tmp = dir.join("tmp");
    let docker = dir.join("docker");
    fs::create_dir_all(&tmp).expect("creating TMPDIR");
    fs::create_dir_all(&docker).expect("creating DOCKER_CONFIG");
    let mut c = kindling();
    c.env("XDG_DATA_HOME", dir)
        .env("TMPDIR", tmp)
        .env("DOCKER_CONFIG", docker)
        .env_remove("KINDLING_STORE")
        .env_remove("KINDLING_KEY_FILE")
        .env_remove("KINDLING_REGISTRY_AUTH");
    c
}

/// `kindling push docker://HOST/NAME --insecure --store STORE --name TO
/// --json`, not yet run.
fn push(dir: &Path, registry: &Registry, name: &str, store: &str, to: &str) -> Command {
    let mut c = kindling_in(dir);
    c.arg("push")
        .arg(format!("docker://{}/{name}", registry.host()))
        .args(["--insecure", "--store", store, "--name", to, "--json"]);
    c
}

/// Runs a push that must succeed; returns its JSON summary.
fn push_ok(cmd: &mut Command) -> serde_json::Value {
    let out = run_ok(cmd);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("push printed no JSON ({e}): {out}"))
}

/// Runs a push that must fail cleanly, naming one of `names`, and leave no
/// pulled image in the temporary directory.
fn push_fails(case: &str, dir: &Path, cmd: &mut Command, names: &[&str]) -> Output {
    let o = output(cmd);
    assert_clean_failure(case, &o, names, &dir.join("tmp"));
    o
}

/// The image names `kindling ls` lists (its first column), sorted.
fn names(dir: &Path, store: &str) -> Vec<String> {
    let out = run_ok(kindling_in(dir).args(["ls", "--store", store]));
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort_unstable();
    names
}

#[test]
fn a_registry_image_fetches_back_as_flatten_of_its_layout() {
    let test = "a_registry_image_fetches_back_as_flatten_of_its_layout";
    let Some(images) = prerequisites(test) else {
        return;
    };
    let dir = scratch("round-trip");
    let store = dir.join("store");
    let store = store.to_str().unwrap();
    let layout = images.join(IMAGE);
    let registry = Registry::start();
    registry.push(&layout, "python-app:v1", &[]);

    let s = push_ok(&mut push(&dir, &registry, "python-app:v1", store, "app:v1"));
    assert_eq!(s["name"], "app:v1", "{s}");
    assert!(s["uploaded_chunks"].as_u64().unwrap() > 0, "{s}");
    let fetched = dir.join("fetched.img");
    run_ok(
        kindling_in(&dir)
            .args(["fetch", "app:v1", "--store", store, "-o"])
            .arg(&fetched),
    );
    let flat = dir.join("flat.img");
    flatten_json(layout.as_os_str(), &flat, &[]);
    assert_eq!(
        s["image_bytes"].as_u64().unwrap(),
        fs::metadata(&flat).unwrap().len(),
        "{s}"
    );
    // Byte for byte: the registry serves the layout's own manifest, and the
    // flattener derives the filesystem UUID from its digest.
    assert_eq!(
        sha256_file(&fetched),
        sha256_file(&flat),
        "the image pushed from the registry differs from flatten of its layout"
    );
    assert_eq!(names(&dir, store), ["app:v1"]);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn credentials_come_from_the_flag_the_environment_or_docker_config() {
    let test = "credentials_come_from_the_flag_the_environment_or_docker_config";
    let Some(images) = prerequisites(test) else {
        return;
    };
    let dir = scratch("credentials");
    let store = dir.join("store");
    let store = store.to_str().unwrap();
    let registry = Registry::start_with_htpasswd(USER, PASSWORD);
    registry.push(&images.join(IMAGE), "python-app:v1", &[]);
    let host = registry.host();

    // No credentials anywhere (DOCKER_CONFIG is an empty directory).
    let o = push_fails(
        "no credentials",
        &dir,
        &mut push(&dir, &registry, "python-app:v1", store, "none"),
        &["requires authentication"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&host),
        "the error names no registry\n{stderr}"
    );
    // The wrong password.
    let wrong = format!("{USER}:not-{PASSWORD}");
    push_fails(
        "wrong password",
        &dir,
        push(&dir, &registry, "python-app:v1", store, "wrong").args(["--creds", &wrong]),
        &["rejected the credentials"],
    );
    let listed = run_ok(kindling_in(&dir).args(["ls", "--store", store]));
    assert_eq!(listed, "", "a failed push named an image");

    let creds = format!("{USER}:{PASSWORD}");
    let s =
        push_ok(push(&dir, &registry, "python-app:v1", store, "flag").args(["--creds", &creds]));
    assert!(s["uploaded_chunks"].as_u64().unwrap() > 0, "{s}");
    let s = push_ok(
        push(&dir, &registry, "python-app:v1", store, "env").env("KINDLING_REGISTRY_AUTH", &creds),
    );
    // The same image again: every chunk is already there.
    assert_eq!(s["uploaded_chunks"], 0, "{s}");
    fs::write(
        dir.join("docker/config.json"),
        serde_json::json!({ "auths": { host.as_str(): { "auth": AUTH } } }).to_string(),
    )
    .unwrap();
    push_ok(&mut push(
        &dir,
        &registry,
        "python-app:v1",
        store,
        "docker-config",
    ));
    assert_eq!(names(&dir, store), ["docker-config", "env", "flag"]);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_image_fails_cleanly_and_names_nothing() {
    let test = "a_missing_image_fails_cleanly_and_names_nothing";
    let Some(images) = prerequisites(test) else {
        return;
    };
    let dir = scratch("missing");
    let store = dir.join("store");
    let store = store.to_str().unwrap();
    let registry = Registry::start();
    registry.push(&images.join(IMAGE), "python-app:v1", &[]);

    for (case, name) in [
        ("a missing tag", "python-app:v2"),
        ("a missing repository", "no-such-app:v1"),
    ] {
        push_fails(
            case,
            &dir,
            &mut push(&dir, &registry, name, store, "app:v1"),
            &["not found"],
        );
    }
    let listed = run_ok(kindling_in(&dir).args(["ls", "--store", store]));
    assert_eq!(listed, "", "a failed push named an image");
    let _ = fs::remove_dir_all(&dir);
}
