//! TarReader against hand-built archives (each format feature and each
//! error, with the exact outcome) and against archives made by GNU tar
//! (tests/data, see its README).

use std::io::{self, Cursor, Read};

use kindling_oci::tar::{MAX_EXTENSION_SIZE, MAX_SPARSE_SEGMENTS};
use kindling_oci::{Entry, EntryKind, SparseSegment, TarError, TarReader, Timestamp};

const BLOCK: usize = 512;

/// A header block under construction.
struct H([u8; BLOCK]);

impl H {
    /// A ustar header ("ustar\0" "00") for a 0644 file of size 0.
    fn ustar(name: &[u8], typeflag: u8) -> H {
        let mut h = H([0; BLOCK]);
        h.put(0, name);
        h.octal(100, 8, 0o644);
        h.octal(108, 8, 0);
        h.octal(116, 8, 0);
        h.octal(124, 12, 0);
        h.octal(136, 12, 1_700_000_000);
        h.0[156] = typeflag;
        h.put(257, b"ustar\0");
        h.put(263, b"00");
        h
    }

    /// An old GNU header ("ustar  \0").
    fn gnu(name: &[u8], typeflag: u8) -> H {
        let mut h = H::ustar(name, typeflag);
        h.put(257, b"ustar  \0");
        h
    }

    fn put(&mut self, at: usize, bytes: &[u8]) -> &mut H {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
        self
    }

    fn octal(&mut self, at: usize, len: usize, v: u64) -> &mut H {
        let s = format!("{:0width$o}\0", v, width = len - 1);
        self.put(at, s.as_bytes())
    }

    fn size(&mut self, n: u64) -> &mut H {
        self.octal(124, 12, n)
    }

    fn link(&mut self, target: &[u8]) -> &mut H {
        self.put(157, target)
    }

    /// Computes the checksum ("%06o\0 ") and returns the block.
    fn done(&mut self) -> Vec<u8> {
        self.0[148..156].copy_from_slice(b"        ");
        let sum: u32 = self.0.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        self.0[148..156].copy_from_slice(s.as_bytes());
        self.0.to_vec()
    }
}

/// `data` padded to whole blocks.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
    v
}

fn record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A PAX 'x' header plus payload.
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let payload: Vec<u8> = records.iter().flat_map(|(k, v)| record(k, v)).collect();
    let mut out = H::ustar(b"./PaxHeaders/x", b'x')
        .size(payload.len() as u64)
        .done();
    out.extend(padded(&payload));
    out
}

fn end() -> Vec<u8> {
    vec![0; 2 * BLOCK]
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Reads every entry and its data.
fn read_all(bytes: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>, TarError> {
    let mut tar = TarReader::new(bytes);
    let mut out = Vec::new();
    while let Some(entry) = tar.next_entry()? {
        let mut data = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = tar.read_data(&mut buf)?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            data.len() as u64,
            entry.stored_size,
            "stored_size of {:?}",
            entry.path
        );
        out.push((entry, data));
    }
    Ok(out)
}

fn file(name: &[u8], contents: &[u8]) -> Vec<u8> {
    let mut v = H::ustar(name, b'0').size(contents.len() as u64).done();
    v.extend(padded(contents));
    v
}

fn seg(offset: u64, length: u64) -> SparseSegment {
    SparseSegment { offset, length }
}

#[test]
fn plain_entries_and_end_marker_forms() {
    let body = cat(&[file(b"a.txt", b"hello"), file(b"b", b"")]);
    for tail in [end(), vec![0; BLOCK], Vec::new(), vec![0; BLOCK + 100]] {
        let entries = read_all(&cat(&[body.clone(), tail])).expect("reads");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0.path, b"a.txt");
        assert_eq!(entries[0].0.kind, EntryKind::Regular);
        assert_eq!(entries[0].0.mode, 0o644);
        assert_eq!(
            entries[0].0.mtime,
            Timestamp {
                secs: 1_700_000_000,
                nanos: 0
            }
        );
        assert_eq!(entries[0].1, b"hello");
        assert_eq!(entries[1].0.size, 0);
    }
    assert!(read_all(&[]).expect("empty stream").is_empty());
}

#[test]
fn zero_block_then_header_is_an_error() {
    let bytes = cat(&[vec![0; BLOCK], file(b"a", b"x"), end()]);
    let err = read_all(&bytes).expect_err("lone zero block");
    assert!(
        matches!(err, TarError::InvalidHeader { offset: 512, .. }),
        "{err}"
    );
}

#[test]
fn drain_reads_past_the_end_marker() {
    let bytes = cat(&[file(b"a", b"x"), end(), vec![0; 7 * BLOCK], vec![1, 2, 3]]);
    let mut tar = TarReader::new(&bytes[..]);
    assert!(tar.next_entry().expect("entry").is_some());
    assert!(tar.next_entry().expect("end").is_none());
    assert_eq!(tar.drain().expect("drain"), 7 * BLOCK as u64 + 3);
    assert_eq!(tar.position(), bytes.len() as u64);
    assert!(tar.next_entry().expect("still end").is_none());
}

#[test]
fn unread_data_is_skipped_on_a_trickling_reader() {
    /// Returns at most 7 bytes per read.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let bytes = cat(&[file(b"big", &big), file(b"small", b"abc"), end()]);
    let mut tar = TarReader::new(Trickle(&bytes));
    let first = tar.next_entry().expect("first").expect("some");
    assert_eq!(first.size, 100_000);
    let mut part = [0u8; 3];
    assert_eq!(tar.read_data(&mut part).expect("partial read"), 3);
    let second = tar.next_entry().expect("second").expect("some");
    assert_eq!(second.path, b"small");
    let mut data = Vec::new();
    tar.data().read_to_end(&mut data).expect("data");
    assert_eq!(data, b"abc");
    assert!(tar.next_entry().expect("end").is_none());
}

#[test]
fn read_data_stops_at_stored_size() {
    let bytes = cat(&[file(b"a", b"12345"), end()]);
    let mut tar = TarReader::new(&bytes[..]);
    tar.next_entry().expect("entry");
    let mut buf = vec![0u8; 4096];
    assert_eq!(tar.read_data(&mut buf).expect("read"), 5);
    assert_eq!(tar.read_data(&mut buf).expect("eof"), 0);
}

#[test]
fn hard_link_size_without_pax_is_ignored() {
    // Old writers put the target's size in a hard link header with no data.
    let link = H::ustar(b"link", b'1').size(5000).link(b"a").done();
    let entries =
        read_all(&cat(&[file(b"a", b"x"), link, file(b"after", b"y"), end()])).expect("reads");
    assert_eq!(entries[1].0.kind, EntryKind::HardLink);
    assert_eq!((entries[1].0.size, entries[1].0.stored_size), (0, 0));
    assert_eq!(entries[2].0.path, b"after");
}

#[test]
fn ustar_prefix_is_joined() {
    let mut h = H::ustar(b"name.txt", b'0');
    h.put(345, b"some/prefix");
    let entries = read_all(&cat(&[h.done(), end()])).expect("reads");
    assert_eq!(entries[0].0.path, b"some/prefix/name.txt");
}

#[test]
fn old_gnu_header_has_no_prefix() {
    // The prefix area of an old GNU header holds atime/ctime.
    let mut h = H::gnu(b"name.txt", b'0');
    h.octal(345, 12, 1_600_000_000)
        .octal(357, 12, 1_600_000_001);
    let entries = read_all(&cat(&[h.done(), end()])).expect("reads");
    assert_eq!(entries[0].0.path, b"name.txt");
}

#[test]
fn base256_numbers() {
    let mut h = H::gnu(b"big-ids", b'0');
    let mut uid = [0u8; 8];
    uid[0] = 0x80;
    uid[3..8].copy_from_slice(&[0x01, 0, 0, 0, 0]); // 2^32
    h.put(108, &uid);
    let mut gid = [0u8; 8];
    gid[0] = 0x80;
    gid[5..8].copy_from_slice(&[0x20, 0x00, 0x00]); // 2097152
    h.put(116, &gid);
    let mut size = [0u8; 12];
    size[0] = 0x80;
    size[11] = 3;
    h.put(124, &size);
    // -1000 in 12 bytes, two's complement.
    let mut mtime = [0xffu8; 12];
    mtime[10..12].copy_from_slice(&(-1000i16).to_be_bytes());
    h.put(136, &mtime);
    let entries = read_all(&cat(&[h.done(), padded(b"abc"), end()])).expect("reads");
    let e = &entries[0].0;
    assert_eq!((e.uid, e.gid, e.size), (1 << 32, 2_097_152, 3));
    assert_eq!(
        e.mtime,
        Timestamp {
            secs: -1000,
            nanos: 0
        }
    );
    assert_eq!(entries[0].1, b"abc");
}

#[test]
fn base256_overflow_is_rejected() {
    let mut h = H::gnu(b"x", b'0');
    let mut size = [0xffu8; 12];
    size[0] = 0x80 | 0x3f; // positive, 94 bits set
    h.put(124, &size);
    let err = read_all(&cat(&[h.done(), end()])).expect_err("overflow");
    assert!(
        matches!(err, TarError::InvalidHeader { offset: 0, ref reason } if reason.contains("size")),
        "{err}"
    );
}

#[test]
fn bad_checksums() {
    let mut good = H::ustar(b"a", b'0').done();
    good[0] = b'b';
    let err = read_all(&cat(&[good, end()])).expect_err("bad checksum");
    assert!(matches!(err, TarError::BadChecksum { offset: 0 }), "{err}");

    let mut blank = H::ustar(b"a", b'0').done();
    blank[148..156].copy_from_slice(b"        ");
    let err = read_all(&cat(&[file(b"ok", b""), blank, end()])).expect_err("empty checksum");
    assert!(
        matches!(err, TarError::BadChecksum { offset: 512 }),
        "{err}"
    );
}

#[test]
fn signed_checksum_is_accepted() {
    let mut h = H::ustar(b"caf\xe9\xff", b'0');
    let mut block = h.done();
    block[148..156].copy_from_slice(b"        ");
    let sum: i64 = block.iter().map(|&b| i64::from(b as i8)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let entries = read_all(&cat(&[block, end()])).expect("signed sum");
    assert_eq!(entries[0].0.path, b"caf\xe9\xff");
}

#[test]
fn truncated_header() {
    let mut bytes = file(b"a", b"x");
    bytes.extend(&H::ustar(b"b", b'0').done()[..300]);
    let mut tar = TarReader::new(&bytes[..]);
    tar.next_entry().expect("first entry");
    let err = tar.next_entry().expect_err("truncated");
    assert!(
        matches!(
            err,
            TarError::Truncated {
                context: "header",
                offset: 1324
            }
        ),
        "{err}"
    );
    // Poisoned afterwards.
    assert!(matches!(tar.next_entry(), Err(TarError::Poisoned)));
}

#[test]
fn truncated_data() {
    let mut bytes = H::ustar(b"a", b'0').size(1000).done();
    bytes.extend(vec![7u8; 600]);
    // Reading the data...
    let mut tar = TarReader::new(&bytes[..]);
    assert_eq!(tar.next_entry().expect("header").expect("entry").size, 1000);
    let mut data = Vec::new();
    let err = io::copy(&mut tar.data(), &mut data).expect_err("truncated");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(data.len(), 600);
    // ...or skipping it.
    let mut tar = TarReader::new(&bytes[..]);
    tar.next_entry().expect("header");
    let err = tar.next_entry().expect_err("truncated");
    assert!(
        matches!(
            err,
            TarError::Truncated {
                context: "entry data",
                offset: 1112
            }
        ),
        "{err}"
    );
    // Missing padding after complete data is truncation too.
    let mut bytes = H::ustar(b"a", b'0').size(3).done();
    bytes.extend(b"abc");
    let err = read_all(&bytes).expect_err("no padding");
    assert!(matches!(err, TarError::Truncated { .. }), "{err}");
}

#[test]
fn gnu_long_name_and_link() {
    let name = [b'n'; 300];
    let target = [b't'; 200];
    let mut long_name = H::gnu(b"././@LongLink", b'L').size(301).done();
    long_name.extend(padded(&cat(&[name.to_vec(), vec![0]])));
    let mut long_link = H::gnu(b"././@LongLink", b'K').size(201).done();
    long_link.extend(padded(&cat(&[target.to_vec(), vec![0]])));
    let symlink = H::gnu(&[b'n'; 100], b'2').link(&[b't'; 100]).done();
    let entries = read_all(&cat(&[
        long_name,
        long_link,
        symlink,
        file(b"next", b""),
        end(),
    ]))
    .expect("reads");
    assert_eq!(entries[0].0.kind, EntryKind::Symlink);
    assert_eq!(entries[0].0.path, name);
    assert_eq!(entries[0].0.link_target, target);
    // Extensions apply to one entry only.
    assert_eq!(entries[1].0.path, b"next");
    assert_eq!(entries[1].0.link_target, b"");
}

#[test]
fn long_name_followed_by_eof_or_end_marker() {
    let mut long_name = H::gnu(b"././@LongLink", b'L').size(4).done();
    long_name.extend(padded(b"abc\0"));
    for tail in [Vec::new(), end()] {
        let err = read_all(&cat(&[long_name.clone(), tail])).expect_err("dangling");
        assert!(
            matches!(
                err,
                TarError::DanglingExtension {
                    what: "gnu long name",
                    offset: 0
                }
            ),
            "{err}"
        );
    }
    let err = read_all(&cat(&[pax(&[("path", b"x")]), end()])).expect_err("dangling pax");
    assert!(
        matches!(
            err,
            TarError::DanglingExtension {
                what: "pax",
                offset: 0
            }
        ),
        "{err}"
    );
}

#[test]
fn pax_overrides_header_fields() {
    let bytes = cat(&[
        pax(&[
            ("path", b"very/long/\xffname"),
            ("linkpath", b"target"),
            ("uid", b"3000000000"),
            ("gid", b"4294967296"),
            ("mtime", b"1700000000.123456789"),
            ("size", b"5"),
            ("uname", b"ignored"),
            ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
            ("SCHILY.xattr.user.empty", b""),
            ("LIBARCHIVE.xattr.user.%3Dodd", b"AAEC"),
        ]),
        H::ustar(b"short", b'1').size(5).done(),
        padded(b"hello"),
        end(),
    ]);
    let entries = read_all(&bytes).expect("reads");
    let e = &entries[0].0;
    assert_eq!(e.path, b"very/long/\xffname");
    assert_eq!(e.kind, EntryKind::HardLink);
    assert_eq!(e.link_target, b"target");
    assert_eq!((e.uid, e.gid), (3_000_000_000, 1 << 32));
    assert_eq!(
        e.mtime,
        Timestamp {
            secs: 1_700_000_000,
            nanos: 123_456_789
        }
    );
    assert_eq!(e.stored_size, 5, "hard links may carry data");
    assert_eq!(entries[0].1, b"hello");
    assert_eq!(
        e.xattrs,
        vec![
            (
                b"security.capability".to_vec(),
                b"\x01\x00\x00\x02".to_vec()
            ),
            (b"user.empty".to_vec(), Vec::new()),
            (b"user.=odd".to_vec(), vec![0, 1, 2]),
        ]
    );
}

#[test]
fn pax_path_wins_over_gnu_long_name() {
    let mut long_name = H::gnu(b"././@LongLink", b'L').size(5).done();
    long_name.extend(padded(b"gnu\0\0"));
    let bytes = cat(&[
        long_name,
        pax(&[("path", b"pax")]),
        file(b"hdr", b""),
        end(),
    ]);
    assert_eq!(read_all(&bytes).expect("reads")[0].0.path, b"pax");
}

#[test]
fn negative_fractional_pax_mtime() {
    let bytes = cat(&[pax(&[("mtime", b"-1.5")]), file(b"a", b""), end()]);
    let e = &read_all(&bytes).expect("reads")[0].0;
    assert_eq!(
        e.mtime,
        Timestamp {
            secs: -2,
            nanos: 500_000_000
        }
    );
}

#[test]
fn global_header_is_ignored() {
    let payload = record("comment", b"made by git");
    let payload = cat(&[payload, record("path", b"should/not/apply")]);
    let mut g = H::ustar(b"pax_global_header", b'g')
        .size(payload.len() as u64)
        .done();
    g.extend(padded(&payload));
    let entries = read_all(&cat(&[g, file(b"a", b"1"), end()])).expect("reads");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0.path, b"a");

    // ... but must be well-formed.
    let mut bad = H::ustar(b"pax_global_header", b'g').size(6).done();
    bad.extend(padded(b"9 a=b\n"));
    let err = read_all(&cat(&[bad, file(b"a", b"1"), end()])).expect_err("bad global");
    assert!(
        matches!(err, TarError::InvalidPax { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn oversized_pax_header() {
    let h = H::ustar(b"./PaxHeaders/x", b'x')
        .size(MAX_EXTENSION_SIZE + 1)
        .done();
    let err = read_all(&cat(&[h, end()])).expect_err("too large");
    assert!(
        matches!(err, TarError::TooLarge { what: "pax header", size, offset: 0, .. } if size == MAX_EXTENSION_SIZE + 1),
        "{err}"
    );
    let h = H::gnu(b"././@LongLink", b'L')
        .size(MAX_EXTENSION_SIZE + 1)
        .done();
    assert!(matches!(
        read_all(&h),
        Err(TarError::TooLarge {
            what: "gnu long name",
            ..
        })
    ));
}

#[test]
fn bad_pax_lengths() {
    for payload in [
        &b"12 path=ab\n"[..],
        b"10 path=ab\n",
        b"11 path=ab\n5 x",
        b"path=ab\n",
        b"0 a=b\n",
    ] {
        let mut h = H::ustar(b"./PaxHeaders/x", b'x')
            .size(payload.len() as u64)
            .done();
        h.extend(padded(payload));
        let err = read_all(&cat(&[h, file(b"a", b""), end()])).expect_err("bad length");
        assert!(
            matches!(err, TarError::InvalidPax { offset: 0, .. }),
            "{payload:?}: {err}"
        );
    }
}

#[test]
fn pax_sparse_1_0() {
    let map = padded(b"3\n0\n3\n5000\n4\n9999\n0\n");
    let stored = b"abcdefg";
    let data = cat(&[map, stored.to_vec()]);
    let bytes = cat(&[
        pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"real/name"),
            ("GNU.sparse.realsize", b"9999"),
        ]),
        H::ustar(b"real/GNUSparseFile.0/name", b'0')
            .size(data.len() as u64)
            .done(),
        padded(&data),
        file(b"after", b"z"),
        end(),
    ]);
    let entries = read_all(&bytes).expect("reads");
    let e = &entries[0].0;
    assert_eq!(e.path, b"real/name");
    assert_eq!((e.size, e.stored_size), (9999, 7));
    assert_eq!(e.sparse, Some(vec![seg(0, 3), seg(5000, 4)]));
    assert_eq!(entries[0].1, stored);
    assert_eq!(entries[1].0.path, b"after");
}

#[test]
fn pax_sparse_1_0_map_past_data_is_an_error() {
    let data = b"1\n0\n"; // promises a length line that never comes
    let bytes = cat(&[
        pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.realsize", b"10"),
        ]),
        H::ustar(b"x", b'0').size(data.len() as u64).done(),
        padded(data),
        end(),
    ]);
    let err = read_all(&bytes).expect_err("bad map");
    assert!(matches!(err, TarError::InvalidSparse { .. }), "{err}");
}

#[test]
fn pax_sparse_0_1() {
    let bytes = cat(&[
        pax(&[
            ("GNU.sparse.size", b"10000"),
            ("GNU.sparse.numblocks", b"2"),
            ("GNU.sparse.name", b"real"),
            ("GNU.sparse.map", b"0,3,5000,4"),
        ]),
        H::ustar(b"GNUSparseFile.1/real", b'0').size(7).done(),
        padded(b"abcdefg"),
        end(),
    ]);
    let entries = read_all(&bytes).expect("reads");
    let e = &entries[0].0;
    assert_eq!(e.path, b"real");
    assert_eq!((e.size, e.stored_size), (10000, 7));
    assert_eq!(e.sparse, Some(vec![seg(0, 3), seg(5000, 4)]));
    assert_eq!(entries[0].1, b"abcdefg");
}

#[test]
fn pax_sparse_0_0() {
    let bytes = cat(&[
        pax(&[
            ("GNU.sparse.size", b"10000"),
            ("GNU.sparse.numblocks", b"2"),
            ("GNU.sparse.offset", b"0"),
            ("GNU.sparse.numbytes", b"3"),
            ("GNU.sparse.offset", b"5000"),
            ("GNU.sparse.numbytes", b"4"),
        ]),
        H::ustar(b"plain-name", b'0').size(7).done(),
        padded(b"abcdefg"),
        end(),
    ]);
    let entries = read_all(&bytes).expect("reads");
    let e = &entries[0].0;
    assert_eq!(e.path, b"plain-name");
    assert_eq!((e.size, e.stored_size), (10000, 7));
    assert_eq!(e.sparse, Some(vec![seg(0, 3), seg(5000, 4)]));

    // Out-of-order records are rejected.
    let bad = cat(&[
        pax(&[("GNU.sparse.size", b"10"), ("GNU.sparse.numbytes", b"3")]),
        H::ustar(b"x", b'0').size(3).done(),
        padded(b"abc"),
        end(),
    ]);
    assert!(matches!(read_all(&bad), Err(TarError::InvalidPax { .. })));
}

#[test]
fn sparse_maps_are_validated() {
    let cases: [(&[u8], u64); 4] = [
        (b"5000,4,0,3", 7), // out of order
        (b"0,5,3,2", 7),    // overlap
        (b"0,3,9998,4", 7), // beyond realsize 10000
        (b"0,3,5000,4", 8), // stored size does not add up
    ];
    for (map, stored) in cases {
        let bytes = cat(&[
            pax(&[("GNU.sparse.size", b"10000"), ("GNU.sparse.map", map)]),
            H::ustar(b"x", b'0').size(stored).done(),
            padded(&vec![b'x'; stored as usize]),
            end(),
        ]);
        let err = read_all(&bytes).expect_err("invalid map");
        assert!(
            matches!(err, TarError::InvalidSparse { offset: 1024, .. }),
            "{map:?}: {err}"
        );
    }
    let too_many = format!("{}\n", MAX_SPARSE_SEGMENTS + 1);
    let bytes = cat(&[
        pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.realsize", b"10"),
        ]),
        H::ustar(b"x", b'0').size(512).done(),
        padded(too_many.as_bytes()),
        end(),
    ]);
    assert!(matches!(
        read_all(&bytes),
        Err(TarError::InvalidSparse { .. })
    ));
    let bytes = cat(&[
        pax(&[
            ("GNU.sparse.major", b"2"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.realsize", b"10"),
        ]),
        file(b"x", b""),
        end(),
    ]);
    assert!(matches!(
        read_all(&bytes),
        Err(TarError::InvalidSparse { .. })
    ));
}

/// An old GNU 'S' header with four map slots and `extra` more pairs in
/// one extension block.
fn old_gnu_sparse(pairs: &[(u64, u64)], realsize: u64) -> Vec<u8> {
    let stored: u64 = pairs.iter().map(|p| p.1).sum();
    let mut h = H::gnu(b"sparse", b'S');
    h.size(stored);
    for (i, &(o, l)) in pairs.iter().take(4).enumerate() {
        h.octal(386 + 24 * i, 12, o).octal(386 + 24 * i + 12, 12, l);
    }
    h.octal(483, 12, realsize);
    let extended = pairs.len() > 4;
    if extended {
        h.put(482, &[1]);
    }
    let mut out = h.done();
    if extended {
        let mut ext = [0u8; BLOCK];
        for (i, &(o, l)) in pairs[4..].iter().enumerate() {
            let mut f = H([0; BLOCK]);
            f.octal(0, 12, o).octal(12, 12, l);
            ext[24 * i..24 * i + 24].copy_from_slice(&f.0[..24]);
        }
        out.extend(ext);
    }
    out
}

#[test]
fn old_gnu_sparse_with_extension_header() {
    let pairs = [
        (0, 2),
        (100, 2),
        (200, 2),
        (300, 2),
        (400, 2),
        (500, 2),
        (1000, 0),
    ];
    let stored = b"aabbccddeeff";
    let bytes = cat(&[
        old_gnu_sparse(&pairs, 1000),
        padded(stored),
        file(b"after", b"!"),
        end(),
    ]);
    let entries = read_all(&bytes).expect("reads");
    let e = &entries[0].0;
    assert_eq!(e.kind, EntryKind::Regular);
    assert_eq!((e.size, e.stored_size), (1000, 12));
    assert_eq!(
        e.sparse,
        Some(vec![
            seg(0, 2),
            seg(100, 2),
            seg(200, 2),
            seg(300, 2),
            seg(400, 2),
            seg(500, 2)
        ])
    );
    assert_eq!(entries[0].1, stored);
    assert_eq!(entries[1].0.path, b"after");
    assert_eq!(entries[1].1, b"!");
}

#[test]
fn special_typeflags() {
    let mut dumpdir = H::gnu(b"dir/", b'D').size(10).done();
    dumpdir.extend(padded(b"Yfile\0Nx\0\0"));
    let mut volume = H::gnu(b"VOLUME", b'V').size(0).done();
    volume.extend(Vec::<u8>::new());
    let mut unknown = H::ustar(b"odd", b'Z').size(2).done();
    unknown.extend(padded(b"zz"));
    let old_dir = H::ustar(b"legacy-dir/", b'\0').size(0).done();
    let contiguous = {
        let mut v = H::ustar(b"contig", b'7').size(1).done();
        v.extend(padded(b"c"));
        v
    };
    let dir_with_size = H::ustar(b"d", b'5').size(1024).done(); // no data follows
    let mut char_dev = H::ustar(b"dev/null", b'3');
    char_dev.octal(329, 8, 1).octal(337, 8, 3);
    let fifo = H::ustar(b"fifo", b'6').done();
    let mut mode = H::ustar(b"setuid", b'0');
    mode.octal(100, 8, 0o104755);
    let bytes = cat(&[
        volume,
        dumpdir,
        unknown,
        old_dir,
        contiguous,
        dir_with_size,
        char_dev.done(),
        fifo,
        mode.done(),
        end(),
    ]);
    let entries = read_all(&bytes).expect("reads");
    let summary: Vec<(&[u8], EntryKind, u64, &[u8])> = entries
        .iter()
        .map(|(e, d)| (&e.path[..], e.kind, e.stored_size, &d[..]))
        .collect();
    assert_eq!(
        summary,
        vec![
            (&b"dir/"[..], EntryKind::Directory, 0, &b""[..]),
            (b"odd", EntryKind::Regular, 2, b"zz"),
            (b"legacy-dir/", EntryKind::Directory, 0, b""),
            (b"contig", EntryKind::Regular, 1, b"c"),
            (b"d", EntryKind::Directory, 0, b""),
            (b"dev/null", EntryKind::CharDevice, 0, b""),
            (b"fifo", EntryKind::Fifo, 0, b""),
            (b"setuid", EntryKind::Regular, 0, b""),
        ]
    );
    assert_eq!((entries[5].0.dev_major, entries[5].0.dev_minor), (1, 3));
    assert_eq!(entries[7].0.mode, 0o4755);
}

#[test]
fn multi_volume_is_unsupported() {
    let bytes = cat(&[H::gnu(b"x", b'M').done(), end()]);
    let err = read_all(&bytes).expect_err("unsupported");
    assert!(
        matches!(
            err,
            TarError::Unsupported {
                typeflag: b'M',
                offset: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("'M'"));
}

#[test]
fn seeking_skip_matches_reading_skip() {
    // Large regions are seeked over, small ones read through.
    for size in [5000usize, 100_000] {
        let big = vec![9u8; size];
        let bytes = cat(&[file(b"a", &big), file(b"b", b"bb"), end()]);
        let mut tar = TarReader::new(Cursor::new(&bytes));
        tar.next_entry().expect("a");
        assert_eq!(tar.position(), 512);
        tar.skip_data_seeking().expect("skip");
        let b = tar.next_entry().expect("b").expect("some");
        assert_eq!(b.path, b"b");
        assert_eq!(
            tar.position() as usize,
            512 + size.div_ceil(512) * 512 + 512
        );
        let mut data = Vec::new();
        tar.data().read_to_end(&mut data).expect("data");
        assert_eq!(data, b"bb");
    }
    // A region past the end of the stream is truncation, both ways.
    for size in [10_000u64, 1_000_000] {
        let mut short = H::ustar(b"a", b'0').size(size).done();
        short.extend(vec![0u8; 100]);
        let mut tar = TarReader::new(Cursor::new(short));
        tar.next_entry().expect("a");
        let err = tar.skip_data_seeking().expect_err("truncated");
        assert!(
            matches!(
                err,
                TarError::Truncated {
                    context: "entry data",
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(tar.next_entry(), Err(TarError::Poisoned)));
    }
}

// ---- archives made by GNU tar ----

fn fixture(name: &str) -> Vec<(Entry, Vec<u8>)> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).expect("fixture exists");
    let mut tar = TarReader::new(&bytes[..]);
    let mut out = Vec::new();
    while let Some(entry) = tar.next_entry().expect("fixture parses") {
        let mut data = Vec::new();
        tar.data().read_to_end(&mut data).expect("fixture data");
        out.push((entry, data));
    }
    tar.drain().expect("drain");
    out
}

/// The logical contents of the sparse fixture file.
fn sparse_bin() -> Vec<u8> {
    let mut v = vec![0u8; 65536];
    for k in 0..6u8 {
        v[usize::from(k) * 8192] = b'A' + k;
    }
    v
}

fn expand(e: &Entry, stored: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; e.size as usize];
    let mut at = 0;
    for s in e.sparse.as_ref().expect("sparse entry") {
        let len = s.length as usize;
        out[s.offset as usize..s.offset as usize + len].copy_from_slice(&stored[at..at + len]);
        at += len;
    }
    assert_eq!(at, stored.len());
    out
}

#[test]
fn gnu_tar_sparse_fixtures() {
    let want_segments: Vec<SparseSegment> = (0..6).map(|k| seg(k * 8192, 512)).collect();
    for name in [
        "sparse-pax-0.0.tar",
        "sparse-pax-0.1.tar",
        "sparse-pax-1.0.tar",
        "sparse-gnu.tar",
    ] {
        let entries = fixture(name);
        assert_eq!(entries.len(), 1, "{name}");
        let (e, stored) = &entries[0];
        assert_eq!(e.path, b"sparse.bin", "{name}");
        assert_eq!(e.kind, EntryKind::Regular);
        assert_eq!((e.size, e.stored_size), (65536, 3072), "{name}");
        assert_eq!(e.sparse.as_ref(), Some(&want_segments), "{name}");
        assert_eq!(
            e.mtime,
            Timestamp {
                secs: 1_700_000_000,
                nanos: 0
            },
            "{name}"
        );
        assert_eq!(expand(e, stored), sparse_bin(), "{name}");
    }
}

#[test]
fn gnu_tar_long_names_fixture() {
    let entries = fixture("gnu-long.tar");
    let long = [vec![b'd'; 60], b"/".to_vec(), vec![b'n'; 90]].concat();
    let target = [b"/target/".to_vec(), vec![b't'; 140]].concat();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].0.path, long);
    assert_eq!(entries[0].1, b"long file\n");
    assert_eq!(entries[1].0.kind, EntryKind::Symlink);
    assert_eq!(entries[1].0.path, b"link-long");
    assert_eq!(entries[1].0.link_target, target);
    assert_eq!(entries[2].0.kind, EntryKind::HardLink);
    assert_eq!(entries[2].0.path, b"hard-long");
    assert_eq!(entries[2].0.link_target, long);
}

#[test]
fn gnu_tar_xattrs_fixture() {
    let entries = fixture("pax-xattrs.tar");
    assert_eq!(entries.len(), 1);
    let e = &entries[0].0;
    assert_eq!(e.path, b"xattr-file");
    assert_eq!(entries[0].1, b"x");
    assert_eq!(
        e.mtime,
        Timestamp {
            secs: 1_700_000_000,
            nanos: 250_000_000
        }
    );
    let mut xattrs = e.xattrs.clone();
    xattrs.sort();
    assert_eq!(
        xattrs,
        vec![
            (b"user.bin".to_vec(), vec![0x00, 0xff, 0x01]),
            (b"user.kindling".to_vec(), b"hello".to_vec()),
        ]
    );
}
