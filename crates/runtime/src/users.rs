//! Resolving an image's `User` against its own `/etc/passwd` and
//! `/etc/group`, with Docker's (moby/sys/user `GetExecUser`) rules:
//!
//! * `""` is root; a numeric user is used as is, and if passwd has that uid
//!   its entry supplies the primary group and home;
//! * a user name must exist in passwd;
//! * an explicit group (name or number) sets the primary gid and no
//!   supplementary groups; without one, every group in `/etc/group` that
//!   lists the user's name becomes a supplementary group.
//!
//! Parsing is lenient like libc's: comments, blank lines, NIS `+`/`-` lines
//! and lines with unparsable ids are skipped, never fatal.

/// Largest uid/gid accepted, as Docker (2^31 - 1).
const MAX_ID: u32 = i32::MAX as u32;

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The ids the container's process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// From passwd; `/` when the user has no entry (Docker's default).
    pub home: String,
}

fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
        .map(|l| l.split(':').collect())
}

fn id(field: Option<&&str>) -> Option<u32> {
    numeric(field?.trim())
}

/// A decimal id in range, or None.
fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n <= MAX_ID)
}

/// `name:password:uid:gid:gecos:home:shell` lines.
pub(crate) fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: id(f.get(2))?,
                gid: id(f.get(3))?,
                home: f.get(5).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// `name:password:gid:member,member` lines.
pub(crate) fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: id(f.get(2))?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `spec` (`user[:group]`, names or numbers) against the image's
/// passwd and group files (`None`: the file does not exist). The error is
/// the reason, for [`RuntimeError::User`](crate::RuntimeError::User).
pub(crate) fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, String> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((_, g)) if g.contains(':') => return Err("expected user[:group]".to_owned()),
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let uid_arg = numeric(user_arg);
    if uid_arg.is_none() && user_arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("uid {user_arg} is out of range (0 to {MAX_ID})"));
    }
    let matched = users.iter().find(|u| match uid_arg {
        Some(n) => u.uid == n,
        None => u.name == user_arg,
    });
    let mut out = ExecUser {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".to_owned(),
    };
    match (matched, uid_arg) {
        (Some(u), _) => {
            out.uid = u.uid;
            out.gid = u.gid;
            if !u.home.is_empty() {
                out.home = u.home.clone();
            }
        }
        (None, Some(n)) => out.uid = n,
        (None, None) if passwd.is_none() => {
            return Err("the image has no /etc/passwd to look the name up in".to_owned())
        }
        (None, None) => return Err(format!("no user {user_arg} in /etc/passwd")),
    }
    if group_arg.is_empty() && matched.is_none() {
        return Ok(out);
    }
    let groups = group.map(parse_group).unwrap_or_default();
    if group_arg.is_empty() {
        // Implicit form: supplementary groups are those listing the name.
        if let Some(u) = matched {
            out.additional_gids = groups
                .iter()
                .filter(|g| g.members.contains(&u.name))
                .map(|g| g.gid)
                .collect();
        }
        return Ok(out);
    }
    let gid_arg = numeric(group_arg);
    if gid_arg.is_none() && group_arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("gid {group_arg} is out of range (0 to {MAX_ID})"));
    }
    let found = groups.iter().find(|g| match gid_arg {
        Some(n) => g.gid == n,
        None => g.name == group_arg,
    });
    out.gid = match (found, gid_arg) {
        (Some(g), _) => g.gid,
        (None, Some(n)) => n,
        (None, None) if group.is_none() => {
            return Err("the image has no /etc/group to look the group up in".to_owned())
        }
        (None, None) => return Err(format!("no group {group_arg} in /etc/group")),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken:x:notanumber:1::/:
+nis::::::
app:x:1000:1000:App,,,:/home/app:/bin/sh
short:x:1001:1001
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
wheel:x:10:app, root
docker:x:999:app
app:x:1000:
nogroup:x:65534:
bad:x::app
";

    fn resolve(spec: &str) -> Result<ExecUser, String> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    fn user(uid: u32, gid: u32, extra: &[u32], home: &str) -> ExecUser {
        ExecUser {
            uid,
            gid,
            additional_gids: extra.to_vec(),
            home: home.to_owned(),
        }
    }

    #[test]
    fn parses_leniently() {
        let users = parse_passwd(PASSWD);
        let names: Vec<_> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["root", "daemon", "app", "short", "nobody"]);
        assert_eq!(users[3].home, "");
        let groups = parse_group(GROUP);
        assert_eq!(groups.len(), 6);
        assert_eq!(groups[2].members, ["app", "root"]);
        assert!(groups[0].members.is_empty());
    }

    #[test]
    fn root_by_default() {
        assert_eq!(resolve("").unwrap(), user(0, 0, &[10], "/root"));
        assert_eq!(resolve("0").unwrap(), user(0, 0, &[10], "/root"));
        assert_eq!(resolve_user("", None, None).unwrap(), user(0, 0, &[], "/"));
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            resolve("app").unwrap(),
            user(1000, 1000, &[10, 999], "/home/app")
        );
        assert_eq!(
            resolve("1000").unwrap(),
            user(1000, 1000, &[10, 999], "/home/app")
        );
        assert_eq!(
            resolve("nobody").unwrap(),
            user(65534, 65534, &[], "/nonexistent")
        );
        assert_eq!(resolve("4242").unwrap(), user(4242, 0, &[], "/"));
        assert_eq!(resolve("short").unwrap(), user(1001, 1001, &[], "/"));
    }

    #[test]
    fn explicit_groups_replace_supplementary_ones() {
        assert_eq!(
            resolve("app:docker").unwrap(),
            user(1000, 999, &[], "/home/app")
        );
        assert_eq!(resolve("app:5").unwrap(), user(1000, 5, &[], "/home/app"));
        assert_eq!(resolve("4242:4343").unwrap(), user(4242, 4343, &[], "/"));
        assert_eq!(resolve("4242:wheel").unwrap(), user(4242, 10, &[], "/"));
        assert_eq!(resolve(":wheel").unwrap(), user(0, 10, &[], "/root"));
        assert_eq!(resolve("1234:5678").unwrap(), user(1234, 5678, &[], "/"));
    }

    #[test]
    fn errors_say_what_is_missing() {
        assert_eq!(
            resolve("ghost").unwrap_err(),
            "no user ghost in /etc/passwd"
        );
        assert_eq!(
            resolve("app:ghosts").unwrap_err(),
            "no group ghosts in /etc/group"
        );
        assert!(resolve("99999999999").unwrap_err().contains("out of range"));
        assert!(resolve("1:99999999999")
            .unwrap_err()
            .contains("out of range"));
        assert!(resolve("2147483648").is_err());
        assert!(resolve("2147483647").is_ok());
        assert_eq!(resolve("a:b:c").unwrap_err(), "expected user[:group]");
        assert!(resolve_user("app", None, None)
            .unwrap_err()
            .contains("no /etc/passwd"));
        assert!(resolve_user("1:staff", None, None)
            .unwrap_err()
            .contains("no /etc/group"));
        assert_eq!(
            resolve_user("1:2", None, None).unwrap(),
            user(1, 2, &[], "/")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_files_and_specs_never_panic(
            passwd in "(?s).{0,300}",
            group in "(?s).{0,300}",
            spec in "[a-z0-9:]{0,12}",
            lines in proptest::collection::vec("[a-z0-9:,+#-]{0,30}", 0..8),
        ) {
            let joined = lines.join("\n");
            for (p, g) in [(&passwd, &group), (&joined, &joined)] {
                let _ = parse_passwd(p);
                let _ = parse_group(g);
                let _ = resolve_user(&spec, Some(p), Some(g));
                let _ = resolve_user(&spec, None, Some(g));
            }
        }

        #[test]
        fn numeric_users_resolve_to_themselves(uid in 0u32..=MAX_ID, gid in 0u32..=MAX_ID) {
            let u = resolve_user(&format!("{uid}:{gid}"), None, None).unwrap();
            prop_assert_eq!((u.uid, u.gid), (uid, gid));
        }
    }
}
