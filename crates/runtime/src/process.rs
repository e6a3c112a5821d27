//! What to run in the container, derived from the image config the way
//! Docker derives it.

/// Docker's default `PATH`, added when the image's environment has none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container's process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the container's `PATH`.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Absolute working directory in the container.
    pub cwd: String,
    /// The image config's `User`: `""` (root), `"uid"`, `"uid:gid"`,
    /// `"name"`, `"name:group"` (names and ids mix freely), resolved
    /// against the rootfs's `/etc/passwd` and `/etc/group` at run time.
    pub user: String,
    /// Give the process a pseudo-terminal (runc then needs a terminal on
    /// our stdin).
    pub terminal: bool,
}

/// The process Docker would start for an image config and the arguments
/// given on the command line.
///
/// * args: `entrypoint + cmd`; with `override_args`, `entrypoint +
///   override_args` (the override replaces `cmd` only, as `docker run IMAGE
///   ARGS...` does). An empty override counts as none, as with `docker run
///   IMAGE`.
/// * env: the image's, plus [`DEFAULT_PATH`] if it sets no `PATH`.
/// * cwd: `working_dir`, made absolute; `/` if empty.
pub fn process_from_image(
    entrypoint: &[String],
    cmd: &[String],
    env: &[String],
    working_dir: &str,
    user: &str,
    override_args: Option<&[String]>,
) -> ProcessSpec {
    let tail = match override_args {
        Some(args) if !args.is_empty() => args,
        _ => cmd,
    };
    let args = entrypoint.iter().chain(tail).cloned().collect();
    // Entries that are not NAME=VALUE: runc refuses the whole container
    // for one, Docker passes them over; so do we.
    let mut env: Vec<String> = env
        .iter()
        .filter(|e| e.split_once('=').is_some_and(|(name, _)| !name.is_empty()))
        .cloned()
        .collect();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_owned());
    }
    let cwd = if working_dir.is_empty() {
        "/".to_owned()
    } else if working_dir.starts_with('/') {
        working_dir.to_owned()
    } else {
        format!("/{working_dir}")
    };
    ProcessSpec {
        args,
        env,
        cwd,
        user: user.to_owned(),
        terminal: false,
    }
}

/// True if `env` has an entry for `key`.
pub(crate) fn has_env(env: &[String], key: &str) -> bool {
    env.iter().any(|e| {
        e.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_entries_that_are_not_name_value_are_left_out() {
        let env = v(&["FOO", "=bar", "A=b=c", "EMPTY=", "PATH=/bin"]);
        let p = process_from_image(&v(&["/bin/app"]), &[], &env, "", "", None);
        assert_eq!(p.env, v(&["A=b=c", "EMPTY=", "PATH=/bin"]));
    }

    #[test]
    fn entrypoint_and_cmd_are_joined() {
        let p = process_from_image(&v(&["/bin/app"]), &v(&["--serve"]), &[], "", "", None);
        assert_eq!(p.args, v(&["/bin/app", "--serve"]));
        assert_eq!(p.cwd, "/");
        assert_eq!(p.env, v(&[DEFAULT_PATH]));
        assert_eq!(p.user, "");
        assert!(!p.terminal);
    }

    #[test]
    fn override_replaces_cmd_only() {
        let over = v(&["--version"]);
        let p = process_from_image(
            &v(&["/bin/app"]),
            &v(&["--serve"]),
            &[],
            "",
            "",
            Some(&over),
        );
        assert_eq!(p.args, v(&["/bin/app", "--version"]));
        let p = process_from_image(&[], &v(&["bash"]), &[], "", "", Some(&v(&["ls", "-l"])));
        assert_eq!(p.args, v(&["ls", "-l"]));
        let p = process_from_image(&[], &v(&["bash"]), &[], "", "", Some(&[]));
        assert_eq!(p.args, v(&["bash"]));
        let p = process_from_image(&[], &[], &[], "", "", None);
        assert!(p.args.is_empty());
    }

    #[test]
    fn path_is_added_only_when_missing() {
        let env = v(&["PATH=/opt/bin", "LANG=C.UTF-8"]);
        let p = process_from_image(&[], &v(&["sh"]), &env, "/srv", "app", None);
        assert_eq!(p.env, env);
        assert_eq!(p.cwd, "/srv");
        assert_eq!(p.user, "app");
        let p = process_from_image(&[], &v(&["sh"]), &v(&["PATHX=1"]), "srv", "", None);
        assert_eq!(p.env, v(&["PATHX=1", DEFAULT_PATH]));
        assert_eq!(p.cwd, "/srv");
    }

    #[test]
    fn has_env_matches_whole_keys() {
        let env = v(&["HOME=/root", "HOMEX=1", "TERM"]);
        assert!(has_env(&env, "HOME"));
        assert!(!has_env(&env, "HOM"));
        assert!(!has_env(&env, "TERM"));
    }
}
