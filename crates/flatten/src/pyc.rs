//! Python sources and their bytecode caches.
//!
//! Importing module `M` from directory `D` reads `D/__pycache__/M.TAG.pyc`
//! and, depending on how the cache was written, also `D/M.py`:
//!
//! * hash-based, checked (flags 3; what `py_compile` writes when
//!   SOURCE_DATE_EPOCH is set, so common in reproducible images): the
//!   source is read and hashed at every import;
//! * timestamp-based (flags 0) whose recorded mtime and size match the
//!   source: only the source's metadata is read;
//! * timestamp-based that does not match: the source is read and compiled;
//! * hash-based, unchecked (flags 1): the source is not read.
//!
//! The placer uses this to put a source read at import right before its
//! cache (one place to fetch instead of two) and a source that is not read
//! with the layer's cold files. Sorted tars list `D/__pycache__/` before
//! `D`'s lower-case files, so the cache is seen first and held back until
//! its source turns up.

/// Where a bytecode cache belongs: its source's directory and module name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    pub dir: Vec<Vec<u8>>,
    pub name: Vec<u8>,
}

/// `D/__pycache__/M.TAG.pyc` (no optimization level) -> (D, M).
pub(crate) fn cache_of(components: &[Vec<u8>]) -> Option<Module> {
    let [dir @ .., cache, file] = components else {
        return None;
    };
    if cache != b"__pycache__" {
        return None;
    }
    let mut parts = file.split(|&b| b == b'.');
    let (Some(name), Some(tag), Some(b"pyc"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (!name.is_empty() && !tag.is_empty()).then(|| Module {
        dir: dir.to_vec(),
        name: name.to_vec(),
    })
}

/// `D/M.py` -> (D, M).
pub(crate) fn source_of(components: &[Vec<u8>]) -> Option<Module> {
    let (file, dir) = components.split_last()?;
    let name = file.strip_suffix(b".py")?;
    (!name.is_empty() && !name.contains(&b'.')).then(|| Module {
        dir: dir.to_vec(),
        name: name.to_vec(),
    })
}

/// Whether importing reads the source, given the first bytes of its cache
/// and the source's mtime (seconds) and size. Unknown headers count as
/// read: pairing a source that is not read costs less than deferring one
/// that is.
pub(crate) fn source_read_at_import(cache: &[u8], source_mtime: i64, source_size: u64) -> bool {
    let Some(header) = cache.get(..16) else {
        return true;
    };
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    match word(4) {
        0 => word(8) != source_mtime as u32 || word(12) != source_size as u32,
        1 => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(p: &str) -> Vec<Vec<u8>> {
        p.split('/').map(|c| c.as_bytes().to_vec()).collect()
    }

    #[test]
    fn caches_and_sources_name_the_same_module() {
        let m = cache_of(&comps(
            "usr/lib/python3.11/json/__pycache__/decoder.cpython-311.pyc",
        ));
        assert_eq!(m, source_of(&comps("usr/lib/python3.11/json/decoder.py")));
        assert_eq!(m.unwrap().name, b"decoder");
        assert!(cache_of(&comps("a/__pycache__/x.cpython-311.opt-1.pyc")).is_none());
        assert!(cache_of(&comps("a/cache/x.cpython-311.pyc")).is_none());
        assert!(cache_of(&comps("__pycache__/x.pyc")).is_none());
        assert!(source_of(&comps("a/x.pyi")).is_none());
        assert!(source_of(&comps("a/.py")).is_none());
        assert_eq!(
            cache_of(&comps("__pycache__/x.cpython-311.pyc"))
                .unwrap()
                .dir,
            Vec::<Vec<u8>>::new()
        );
    }

    #[test]
    fn the_header_says_whether_the_source_is_read() {
        let header = |flags: u32, mtime: u32, size: u32| {
            let mut h = b"\xa7\x0d\x0d\x0a".to_vec();
            for w in [flags, mtime, size] {
                h.extend_from_slice(&w.to_le_bytes());
            }
            h
        };
        assert!(!source_read_at_import(&header(0, 1000, 50), 1000, 50));
        assert!(source_read_at_import(&header(0, 1000, 50), 1001, 50));
        assert!(source_read_at_import(&header(0, 1000, 50), 1000, 51));
        assert!(!source_read_at_import(
            &header(0, 1000, 50),
            1000 + (1 << 32),
            50 + (1 << 32)
        ));
        assert!(!source_read_at_import(&header(1, 0, 0), 1000, 50));
        assert!(source_read_at_import(&header(3, 0, 0), 1000, 50));
        assert!(source_read_at_import(b"short", 1000, 50));
    }
}
