//! Which files a container start is unlikely to read.
//!
//! The placer puts these after the rest of their layer, so the files a start
//! does read sit closer together and fewer chunks carry them. A wrong guess
//! costs only locality, never correctness, so the rules are few and generic:
//! test suites, documentation, C headers and sources, type stubs, static
//! libraries, licence files. On python-ds they take 25 of the 480 chunks its
//! start touches (a simulation over the pages the start reads; see
//! docs/BENCHMARKS.md).
//!
//! The test is a function of the path alone, so a layer's region stays
//! identical in every image that contains it.

/// Directories whose whole content is cold, wherever they are.
const COLD_DIRS: &[&[u8]] = &[b"tests", b"test", b"testing", b"__tests__"];

/// Directories under `usr/share` read by people and tools, not programs.
const COLD_SHARE: &[&[u8]] = &[b"doc", b"man", b"info", b"locale", b"lintian", b"bug"];

/// Extensions of sources, headers, stubs and static libraries: build
/// inputs that ship in images but are not read at run time.
const COLD_EXTENSIONS: &[&[u8]] = &[
    b"h", b"hh", b"hpp", b"hxx", b"c", b"cc", b"cpp", b"cxx", b"pyx", b"pxd", b"pxi", b"pyi", b"a",
    b"la", b"o", b"md", b"rst", b"map", b"java",
];

/// Name prefixes (upper-case) of licence and project files.
const COLD_NAMES: &[&[u8]] = &[
    b"LICENSE",
    b"LICENCE",
    b"COPYING",
    b"AUTHORS",
    b"NOTICE",
    b"CHANGELOG",
    b"CHANGES",
    b"README",
    b"HISTORY",
];

/// True if the directory at `dirs` (root first) is, or is inside, a
/// directory whose whole content is cold.
fn in_cold_dir<C: AsRef<[u8]>>(dirs: &[C]) -> bool {
    if dirs.iter().any(|d| COLD_DIRS.contains(&d.as_ref())) {
        return true;
    }
    matches!(dirs, [usr, share, what, ..]
        if usr.as_ref() == b"usr" && share.as_ref() == b"share"
            && COLD_SHARE.contains(&what.as_ref()))
}

/// True if the inode at `components` is unlikely to be looked at when the
/// image's program starts: a cold directory (listing it, or anything in
/// it, is rare), or a cold file or link by [`likely_cold`]. The ext4
/// writer numbers and places these after the rest.
pub(crate) fn cold_inode(components: &[&[u8]], is_dir: bool) -> bool {
    if is_dir {
        // usr/share/locale itself is listed by gettext and the like at
        // start; what is below it is not.
        let share_top =
            matches!(components, [usr, share, _] if *usr == b"usr" && *share == b"share");
        in_cold_dir(components) && !share_top
    } else {
        likely_cold(components)
    }
}

/// True if the regular file at `components` (the normalized path, root
/// first) is unlikely to be read when the image's program starts.
pub(crate) fn likely_cold<C: AsRef<[u8]>>(components: &[C]) -> bool {
    let Some((name, dirs)) = components.split_last() else {
        return false;
    };
    let name = name.as_ref();
    if in_cold_dir(dirs) {
        return true;
    }
    if dirs
        .last()
        .is_some_and(|d| d.as_ref().ends_with(b".dist-info"))
        && name == b"RECORD"
    {
        return true;
    }
    if name.ends_with(b".d.ts") {
        return true;
    }
    if let Some(dot) = name.iter().rposition(|&b| b == b'.') {
        if dot > 0 && COLD_EXTENSIONS.contains(&&name[dot + 1..]) {
            return true;
        }
    }
    COLD_NAMES.iter().any(|p| {
        name.get(..p.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cold(path: &str) -> bool {
        let comps: Vec<Vec<u8>> = path.split('/').map(|c| c.as_bytes().to_vec()).collect();
        likely_cold(&comps)
    }

    #[test]
    fn build_inputs_tests_and_docs_are_cold() {
        for p in [
            "usr/lib/python3/dist-packages/numpy/core/tests/test_api.py",
            "usr/lib/python3.11/test/support/__init__.py",
            "app/node_modules/x/__tests__/a.js",
            "usr/share/doc/bash/copyright",
            "usr/share/man/man1/ls.1.gz",
            "usr/share/locale/de/LC_MESSAGES/coreutils.mo",
            "usr/include/python3.11/Python.h",
            "usr/local/lib/python3.11/site-packages/numpy/random/_bounded_integers.pxd",
            "usr/local/lib/python3.11/site-packages/pandas/_libs/lib.pyi",
            "usr/local/lib/python3.11/site-packages/numpy-1.26.4.dist-info/RECORD",
            "usr/local/lib/python3.11/site-packages/numpy-1.26.4.dist-info/LICENSE.txt",
            "app/node_modules/typescript/lib/lib.d.ts",
            "app/node_modules/x/dist/index.js.map",
            "usr/lib/x86_64-linux-gnu/libfoo.a",
            "app/README.md",
        ] {
            assert!(cold(p), "{p} should be cold");
        }
    }

    #[test]
    fn cold_directories_and_what_is_in_them() {
        let inode = |path: &str, is_dir: bool| {
            let comps: Vec<&[u8]> = path.split('/').map(str::as_bytes).collect();
            cold_inode(&comps, is_dir)
        };
        for d in [
            "usr/lib/python3/numpy/tests",
            "usr/share/doc/bash",
            "usr/share/locale/de",
            "a/test/b",
        ] {
            assert!(inode(d, true), "{d} should be cold");
        }
        for d in [
            "usr/share",
            "usr/share/locale",
            "usr/lib/python3/numpy",
            "usr/share/zoneinfo",
            "app/contest",
        ] {
            assert!(!inode(d, true), "{d} should not be cold");
        }
        assert!(inode("usr/include/python3.11/Python.h", false));
        assert!(inode("usr/share/doc/bash", false));
        // A source's inode is looked at (its pyc is checked against it)
        // even when its data is not read.
        assert!(!inode("usr/lib/python3.11/json/__init__.py", false));
    }

    #[test]
    fn what_programs_load_is_not_cold() {
        for p in [
            "usr/lib/python3.11/json/__init__.py",
            "usr/lib/python3.11/json/__pycache__/decoder.cpython-311.pyc",
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            "usr/local/lib/python3.11/site-packages/numpy-1.26.4.dist-info/METADATA",
            "usr/local/lib/python3.11/site-packages/x-1.0.dist-info/entry_points.txt",
            "usr/lib/locale/C.utf8/LC_CTYPE",
            "usr/share/zoneinfo/UTC",
            "app/server.js",
            "app/testdata.json",
            "app/contest/main.py",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/bin/python3.11",
            ".h",
            "tests",
        ] {
            assert!(!cold(p), "{p} should not be cold");
        }
    }
}
