//! Property test: random entries written with the `tar` crate (GNU and
//! PAX/ustar flavours) read back with TarReader field for field.

use std::collections::BTreeMap;
use std::io::{self, Read};

use kindling_oci::{Entry, EntryKind, TarReader, Timestamp};
use proptest::prelude::*;
use tar::{Builder, EntryType, Header};

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
struct Spec {
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timestamp,
    xattrs: Vec<(String, Vec<u8>)>,
    /// PAX flavour: write path/ids/mtime as PAX records even when the
    /// header could hold them.
    force_pax: bool,
    /// Read the entry's data back (else leave it for the reader to skip).
    read: bool,
}

#[derive(Debug, Clone, Copy)]
enum Flavour {
    Gnu,
    Pax,
}

/// Path components: mostly portable names, some arbitrary non-UTF-8 bytes.
fn component() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z0-9._-]{1,40}".prop_map(String::into_bytes),
        1 => prop::collection::vec(
            prop_oneof![0x80u8..=0xff, 1u8..=0x7f].prop_filter("no slash", |b| *b != b'/'),
            1..30
        ),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // short (fits the 100-byte name field)
        3 => prop::collection::vec(component(), 1..3),
        // long: > 100 and often > 255 bytes
        2 => prop::collection::vec(component(), 4..12),
    ]
    .prop_map(|parts| parts.join(&b'/'))
    .prop_filter("reasonable length", |p| !p.is_empty() && p.len() < 600)
}

fn link_target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z/.]{1,50}".prop_map(String::into_bytes),
        // long targets, > 100 bytes
        prop::collection::vec(1u8..=255, 101..300),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(any::<u8>(), 0..3000),
            prop::collection::vec(any::<u8>(), 60_000..70_000),
        ]
        .prop_map(Kind::File),
        1 => Just(Kind::Dir),
        1 => link_target().prop_map(Kind::Symlink),
        1 => link_target().prop_map(Kind::HardLink),
        1 => (0u32..2_097_152, 0u32..2_097_152).prop_map(|(a, b)| Kind::Char(a, b)),
        1 => (0u32..4096, 0u32..1_048_576).prop_map(|(a, b)| Kind::Block(a, b)),
        1 => Just(Kind::Fifo),
    ]
}

fn ids() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..70_000,
        2_097_152u64..=u64::from(u32::MAX),
        // beyond 8^11: needs PAX or base-256 in 8 bytes
        (1u64 << 33)..(1u64 << 62),
    ]
}

fn mtime() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (0i64..(1 << 33)).prop_map(|secs| Timestamp { secs, nanos: 0 }),
        (-(1i64 << 40)..(1i64 << 40)).prop_map(|secs| Timestamp { secs, nanos: 0 }),
        (-(1i64 << 40)..(1i64 << 40), 0u32..1_000_000_000)
            .prop_map(|(secs, nanos)| Timestamp { secs, nanos }),
    ]
}

fn xattrs() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        "user\\.[a-z0-9_.]{1,20}",
        Just("security.capability".to_owned()),
        Just("trusted.overlay.opaque".to_owned()),
        Just("system.posix_acl_access".to_owned()),
    ];
    let value = prop_oneof![Just(Vec::new()), prop::collection::vec(any::<u8>(), 0..64)];
    prop::collection::btree_map(name, value, 0..4)
        .prop_map(|m: BTreeMap<_, _>| m.into_iter().collect())
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        path(),
        kind(),
        0u32..=0o7777,
        ids(),
        ids(),
        mtime(),
        xattrs(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(path, kind, mode, uid, gid, mtime, xattrs, force_pax, read)| Spec {
                path,
                kind,
                mode,
                uid,
                gid,
                mtime,
                xattrs,
                force_pax,
                read,
            },
        )
}

fn entry_type(kind: &Kind) -> EntryType {
    match kind {
        Kind::File(_) => EntryType::Regular,
        Kind::Dir => EntryType::Directory,
        Kind::Symlink(_) => EntryType::Symlink,
        Kind::HardLink(_) => EntryType::Link,
        Kind::Char(..) => EntryType::Char,
        Kind::Block(..) => EntryType::Block,
        Kind::Fifo => EntryType::Fifo,
    }
}

fn link_of(kind: &Kind) -> &[u8] {
    match kind {
        Kind::Symlink(t) | Kind::HardLink(t) => t,
        _ => &[],
    }
}

fn data_of(kind: &Kind) -> &[u8] {
    match kind {
        Kind::File(d) => d,
        _ => &[],
    }
}

/// Writes `v` as a 12-byte GNU base-256 number (two's complement).
fn base256_i64(field: &mut [u8], v: i64) {
    let wide = i128::from(v).to_be_bytes();
    field.copy_from_slice(&wide[16 - field.len()..]);
    field[0] |= 0x80;
}

/// Emits a GNU 'L' or 'K' entry for a long name.
fn gnu_long(builder: &mut Builder<Vec<u8>>, ty: EntryType, name: &[u8]) -> io::Result<()> {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(ty);
    h.set_size(name.len() as u64 + 1);
    h.set_mode(0o644);
    h.set_cksum();
    let mut data = name.to_vec();
    data.push(0);
    builder.append(&h, &data[..])
}

fn set_name(field: &mut [u8], name: &[u8]) {
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
}

/// Splits a path into ustar prefix (<= 155) and name (<= 100) at a '/'.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    path.iter()
        .enumerate()
        .filter(|&(i, &b)| {
            b == b'/' && i <= 155 && path.len() - i - 1 <= 100 && i > 0 && i + 1 < path.len()
        })
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .next()
}

fn write_archive(specs: &[Spec], flavour: Flavour) -> io::Result<Vec<u8>> {
    let mut builder = Builder::new(Vec::new());
    for s in specs {
        let data = data_of(&s.kind);
        let link = link_of(&s.kind);
        let mut h = match flavour {
            Flavour::Gnu => Header::new_gnu(),
            Flavour::Pax => Header::new_ustar(),
        };
        h.set_entry_type(entry_type(&s.kind));
        h.set_mode(s.mode);
        h.set_size(data.len() as u64);
        if let Kind::Char(major, minor) | Kind::Block(major, minor) = s.kind {
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
        }
        match flavour {
            Flavour::Gnu => {
                if s.path.len() > 100 {
                    gnu_long(&mut builder, EntryType::GNULongName, &s.path)?;
                }
                if link.len() > 100 {
                    gnu_long(&mut builder, EntryType::GNULongLink, link)?;
                }
                set_name(&mut h.as_old_mut().name, &s.path);
                set_name(&mut h.as_old_mut().linkname, link);
                h.set_uid(s.uid); // base-256 when large
                h.set_gid(s.gid);
                base256_or_octal_mtime(&mut h, s.mtime.secs);
            }
            Flavour::Pax => {
                let mut records: Vec<(String, Vec<u8>)> = Vec::new();
                match ustar_split(&s.path).filter(|_| !s.force_pax) {
                    Some((prefix, name)) => {
                        let ustar = h.as_ustar_mut().expect("ustar header");
                        set_name(&mut ustar.prefix, prefix);
                        set_name(&mut ustar.name, name);
                    }
                    None => {
                        records.push(("path".into(), s.path.clone()));
                        set_name(&mut h.as_old_mut().name, b"placeholder");
                    }
                }
                if link.len() > 100 || s.force_pax && !link.is_empty() {
                    records.push(("linkpath".into(), link.to_vec()));
                    set_name(&mut h.as_old_mut().linkname, b"placeholder");
                } else {
                    set_name(&mut h.as_old_mut().linkname, link);
                }
                for (value, is_uid) in [(s.uid, true), (s.gid, false)] {
                    let header_value = if value > 2_097_151 || s.force_pax {
                        records.push((
                            if is_uid { "uid" } else { "gid" }.into(),
                            value.to_string().into_bytes(),
                        ));
                        0
                    } else {
                        value
                    };
                    if is_uid {
                        h.set_uid(header_value);
                    } else {
                        h.set_gid(header_value);
                    }
                }
                let t = s.mtime;
                if t.nanos != 0 || t.secs < 0 || t.secs >= 1 << 33 || s.force_pax {
                    records.push(("mtime".into(), pax_time(t).into_bytes()));
                    h.set_mtime(0);
                } else {
                    h.set_mtime(t.secs as u64);
                }
                for (name, value) in &s.xattrs {
                    records.push((format!("SCHILY.xattr.{name}"), value.clone()));
                }
                if !records.is_empty() {
                    builder
                        .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), &v[..])))?;
                }
            }
        }
        h.set_cksum();
        builder.append(&h, data)?;
    }
    builder.into_inner()
}

fn base256_or_octal_mtime(h: &mut Header, secs: i64) {
    if (0..1 << 33).contains(&secs) {
        h.set_mtime(secs as u64);
    } else {
        base256_i64(&mut h.as_old_mut().mtime, secs);
    }
}

fn pax_time(t: Timestamp) -> String {
    if t.nanos == 0 {
        return t.secs.to_string();
    }
    // secs + nanos/1e9 as a decimal, e.g. -2 + 0.5 = "-1.5"
    let total = i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
    let sign = if total < 0 { "-" } else { "" };
    let abs = total.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

fn expected(s: &Spec, flavour: Flavour) -> Entry {
    let kind = match s.kind {
        Kind::File(_) => EntryKind::Regular,
        Kind::Dir => EntryKind::Directory,
        Kind::Symlink(_) => EntryKind::Symlink,
        Kind::HardLink(_) => EntryKind::HardLink,
        Kind::Char(..) => EntryKind::CharDevice,
        Kind::Block(..) => EntryKind::BlockDevice,
        Kind::Fifo => EntryKind::Fifo,
    };
    let (dev_major, dev_minor) = match s.kind {
        Kind::Char(a, b) | Kind::Block(a, b) => (a, b),
        _ => (0, 0),
    };
    let size = data_of(&s.kind).len() as u64;
    let (mtime, xattrs) = match flavour {
        Flavour::Gnu => (
            Timestamp {
                secs: s.mtime.secs,
                nanos: 0,
            },
            Vec::new(),
        ),
        Flavour::Pax => (
            s.mtime,
            s.xattrs
                .iter()
                .map(|(n, v)| (n.clone().into_bytes(), v.clone()))
                .collect(),
        ),
    };
    Entry {
        path: s.path.clone(),
        link_target: link_of(&s.kind).to_vec(),
        kind,
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        mtime,
        dev_major,
        dev_minor,
        xattrs,
        size,
        stored_size: size,
        sparse: None,
    }
}

/// Hands out at most `chunk` bytes per read.
struct Chunky<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn check(specs: &[Spec], flavour: Flavour, chunk: usize) -> Result<(), TestCaseError> {
    let bytes =
        write_archive(specs, flavour).map_err(|e| TestCaseError::fail(format!("writing: {e}")))?;
    let mut tar = TarReader::new(Chunky {
        data: &bytes,
        chunk,
    });
    for s in specs {
        let entry = tar
            .next_entry()
            .map_err(|e| TestCaseError::fail(format!("reading: {e}")))?
            .ok_or_else(|| TestCaseError::fail("archive ended early"))?;
        prop_assert_eq!(&entry, &expected(s, flavour));
        if s.read {
            let mut data = Vec::new();
            tar.data()
                .read_to_end(&mut data)
                .map_err(|e| TestCaseError::fail(format!("data: {e}")))?;
            prop_assert_eq!(&data[..], data_of(&s.kind));
        }
    }
    prop_assert!(tar
        .next_entry()
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .is_none());
    let drained = tar
        .drain()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(tar.position(), bytes.len() as u64);
    prop_assert!(
        drained <= 1024,
        "only end-marker padding is left after the marker"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn gnu_archives_round_trip(specs in prop::collection::vec(spec(), 0..10), chunk in prop_oneof![1usize..64, 512usize..100_000]) {
        check(&specs, Flavour::Gnu, chunk)?;
    }

    #[test]
    fn pax_archives_round_trip(specs in prop::collection::vec(spec(), 0..10), chunk in prop_oneof![1usize..64, 512usize..100_000]) {
        check(&specs, Flavour::Pax, chunk)?;
    }
}

#[test]
fn pax_time_formatting() {
    assert_eq!(
        pax_time(Timestamp {
            secs: -2,
            nanos: 500_000_000
        }),
        "-1.500000000"
    );
    assert_eq!(pax_time(Timestamp { secs: 5, nanos: 1 }), "5.000000001");
    assert_eq!(pax_time(Timestamp { secs: -1, nanos: 0 }), "-1");
}
