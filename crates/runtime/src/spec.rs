//! The OCI runtime `config.json` we hand runc: the subset of the runtime
//! spec (v1.0.2) that Kindling sets, with Docker's defaults.
//!
//! * Namespaces: pid, ipc, uts, mount. The network namespace is the
//!   host's, so DNS, proxies and outbound connections behave exactly as on
//!   the host (Lambda-style functions need no port mapping); the container
//!   can bind host ports (it has CAP_NET_BIND_SERVICE) but not reconfigure
//!   the network (no CAP_NET_ADMIN).
//! * Mounts: runc's `runc spec` set (proc, a tmpfs /dev that runc fills with
//!   the standard devices, devpts, shm, mqueue, read-only sysfs and cgroup)
//!   plus a tmpfs `/tmp` and the read-only binds the caller adds
//!   (`/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname`).
//! * Capabilities: Docker's default set in the bounding, effective and
//!   permitted sets (not inheritable or ambient, as Docker since 20.10), so
//!   a non-root user execs with none.
//! * RLIMIT_NOFILE 1024:1024 (runc's spec), `noNewPrivileges` off (Docker:
//!   setuid binaries such as `su` and `ping` work).
//! * Devices cgroup: deny all; runc adds the standard devices' allow rules.
//! * Masked and read-only /proc and /sys paths: Docker's lists.
//! * cgroupsPath `kindling/ID`, relative: runc nests it under its own
//!   cgroup in each v1 hierarchy (and in v2), so the container stays inside
//!   whatever limits the caller runs under; `kindling` itself is left in
//!   place as the shared parent.
//! * No seccomp profile and no AppArmor/SELinux label (Docker has both).

use serde::Serialize;

/// OCI runtime spec version written (runc 1.1 reads 1.0.x).
pub(crate) const OCI_VERSION: &str = "1.0.2";

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The open-files limit, as in `runc spec` (Docker passes its daemon's).
pub(crate) const NOFILE_LIMIT: u64 = 1024;

const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Spec {
    pub oci_version: String,
    pub process: Process,
    pub root: Root,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub mounts: Vec<Mount>,
    pub linux: Linux,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Process {
    pub terminal: bool,
    pub user: User,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub capabilities: Capabilities,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Capabilities {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Root {
    pub path: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Mount {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Linux {
    pub resources: Resources,
    pub cgroups_path: String,
    pub namespaces: Vec<Namespace>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Resources {
    pub devices: Vec<DeviceRule>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeviceRule {
    pub allow: bool,
    pub access: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl Mount {
    fn new(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            destination: destination.to_owned(),
            kind: kind.to_owned(),
            source: source.to_owned(),
            options: strings(options),
        }
    }

    /// A read-only bind of the host file `source` at `destination`.
    pub(crate) fn bind_ro(destination: &str, source: &str) -> Mount {
        Mount::new(
            destination,
            "bind",
            source,
            &["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"],
        )
    }

    /// A tmpfs `/tmp` like a host's: world-writable and sticky; exec
    /// allowed (JVMs and Python wheels load native code from /tmp); no size
    /// limit beyond tmpfs's default half of RAM.
    pub(crate) fn tmp() -> Mount {
        Mount::new("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"])
    }
}

/// The mounts every container gets (those of `runc spec`).
pub(crate) fn base_mounts() -> Vec<Mount> {
    vec![
        Mount::new("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        Mount::new(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        Mount::new(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        Mount::new(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        Mount::new(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        Mount::new(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        Mount::new(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

/// Everything [`build`] needs.
#[derive(Debug)]
pub(crate) struct SpecInput<'a> {
    pub id: &'a str,
    pub rootfs: &'a str,
    pub read_only_root: bool,
    pub hostname: Option<&'a str>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub terminal: bool,
    pub user: User,
    /// Mounts after the base ones (`/tmp`, the /etc binds).
    pub extra_mounts: Vec<Mount>,
}

/// The config for one container.
pub(crate) fn build(input: SpecInput<'_>) -> Spec {
    let caps = strings(&DEFAULT_CAPABILITIES);
    let mut mounts = base_mounts();
    mounts.extend(input.extra_mounts);
    Spec {
        oci_version: OCI_VERSION.to_owned(),
        process: Process {
            terminal: input.terminal,
            user: input.user,
            args: input.args,
            env: input.env,
            cwd: input.cwd,
            capabilities: Capabilities {
                bounding: caps.clone(),
                effective: caps.clone(),
                permitted: caps,
            },
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".to_owned(),
                hard: NOFILE_LIMIT,
                soft: NOFILE_LIMIT,
            }],
            no_new_privileges: false,
        },
        root: Root {
            path: input.rootfs.to_owned(),
            readonly: input.read_only_root,
        },
        hostname: input.hostname.map(str::to_owned),
        mounts,
        linux: Linux {
            resources: Resources {
                devices: vec![DeviceRule {
                    allow: false,
                    access: "rwm".to_owned(),
                }],
            },
            cgroups_path: format!("kindling/{}", input.id),
            namespaces: ["pid", "ipc", "uts", "mount"]
                .iter()
                .map(|k| Namespace {
                    kind: (*k).to_owned(),
                })
                .collect(),
            masked_paths: strings(&MASKED_PATHS),
            readonly_paths: strings(&READONLY_PATHS),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SpecInput<'static> {
        SpecInput {
            id: "c1",
            rootfs: "/mnt/root",
            read_only_root: false,
            hostname: Some("kindling"),
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            terminal: false,
            user: User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
            },
            extra_mounts: vec![Mount::tmp(), Mount::bind_ro("/etc/hosts", "/b/hosts")],
        }
    }

    #[test]
    fn config_json_has_the_documented_shape() {
        let json = serde_json::to_value(build(input())).unwrap();
        assert_eq!(json["ociVersion"], OCI_VERSION);
        assert_eq!(json["root"]["path"], "/mnt/root");
        assert_eq!(json["root"]["readonly"], false);
        assert_eq!(json["hostname"], "kindling");
        assert_eq!(json["process"]["user"]["additionalGids"][0], 10);
        assert_eq!(json["process"]["noNewPrivileges"], false);
        assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert!(json["process"]["capabilities"].get("ambient").is_none());
        assert_eq!(json["linux"]["cgroupsPath"], "kindling/c1");
        let ns: Vec<_> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount"]);
        let dests: Vec<_> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/tmp",
                "/etc/hosts"
            ]
        );
        assert_eq!(json["mounts"][8]["type"], "bind");
        assert!(json["mounts"][8]["options"]
            .as_array()
            .unwrap()
            .contains(&"ro".into()));
    }

    #[test]
    fn no_hostname_and_no_groups_are_omitted() {
        let mut i = input();
        i.hostname = None;
        i.user.additional_gids.clear();
        i.read_only_root = true;
        let json = serde_json::to_value(build(i)).unwrap();
        assert!(json.get("hostname").is_none());
        assert!(json["process"]["user"].get("additionalGids").is_none());
        assert_eq!(json["root"]["readonly"], true);
    }
}
