use super::*;
use proptest::prelude::*;

fn key(b: u8) -> TenantKey {
    TenantKey::from_bytes([b; 32])
}

fn arb_manifest() -> impl Strategy<Value = Manifest> {
    (
        16u32..=22,
        0u64..(40 << 20),
        any::<[u8; 16]>(),
        any::<u64>(),
    )
        .prop_flat_map(|(shift, bytes, salt_id, seed)| {
            let cs = 1u64 << shift;
            let n = bytes.div_ceil(cs) as usize;
            (
                Just((cs, bytes, salt_id, seed)),
                proptest::collection::vec(any::<Option<([u8; 32], [u8; 32])>>(), n),
                any::<(Vec<String>, Vec<String>, Vec<String>, String, String)>(),
            )
        })
        .prop_map(
            |((cs, bytes, salt_id, _), table, (entrypoint, cmd, env, wd, user))| Manifest {
                image_bytes: bytes,
                chunk_size: cs,
                salt_id,
                chunks: table
                    .into_iter()
                    .map(|c| match c {
                        None => ChunkEntry::Zero,
                        Some((n, k)) => ChunkEntry::Stored {
                            name: ChunkName(n),
                            key: ChunkKey(k),
                        },
                    })
                    .collect(),
                config: RunConfig {
                    entrypoint,
                    cmd,
                    env,
                    working_dir: wd,
                    user,
                    architecture: "amd64".into(),
                    os: "linux".into(),
                    source: "sha256:00".into(),
                    hot_ranges: vec![[0, 4096], [1 << 20, 1 << 16]],
                },
            },
        )
}

proptest! {
    #[test]
    fn round_trip(m in arb_manifest(), k in any::<u8>()) {
        let bytes = m.seal(&key(k));
        prop_assert_eq!(Manifest::open(&bytes, &key(k)).unwrap(), m.clone());
        // Deterministic: sealing again gives the same bytes.
        prop_assert_eq!(&m.seal(&key(k)), &bytes);
        let public = Manifest::public(&bytes).unwrap();
        prop_assert_eq!(public.names.len(), m.chunks.len());
        for (p, c) in public.names.iter().zip(&m.chunks) {
            match c {
                ChunkEntry::Zero => prop_assert!(p.is_none()),
                ChunkEntry::Stored { name, .. } => prop_assert_eq!(p.as_ref(), Some(name)),
            }
        }
    }

    #[test]
    fn any_changed_byte_is_detected(m in arb_manifest(), at in any::<usize>(), x in 1u8..) {
        let mut bytes = m.seal(&key(1));
        let at = at % bytes.len();
        bytes[at] ^= x;
        prop_assert!(Manifest::open(&bytes, &key(1)).is_err());
    }

    #[test]
    fn truncation_is_an_error(m in arb_manifest(), cut in any::<usize>()) {
        let bytes = m.seal(&key(1));
        let cut = cut % bytes.len();
        prop_assert!(Manifest::open(&bytes[..cut], &key(1)).is_err());
        prop_assert!(Manifest::public(&bytes[..cut]).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = Manifest::public(&bytes);
        let _ = Manifest::open(&bytes, &key(1));
        let mut with_magic = MANIFEST_MAGIC.to_vec();
        with_magic.extend_from_slice(&1u16.to_le_bytes());
        with_magic.extend_from_slice(&bytes);
        let _ = Manifest::open(&with_magic, &key(1));
    }
}

fn sample() -> Manifest {
    Manifest {
        image_bytes: 3 * 524288 + 4096,
        chunk_size: 524288,
        salt_id: [3; 16],
        chunks: vec![
            ChunkEntry::Stored {
                name: ChunkName([1; 32]),
                key: ChunkKey([2; 32]),
            },
            ChunkEntry::Zero,
            ChunkEntry::Zero,
            ChunkEntry::Stored {
                name: ChunkName([4; 32]),
                key: ChunkKey([5; 32]),
            },
        ],
        config: RunConfig {
            cmd: vec!["/bin/sh".into()],
            ..RunConfig::default()
        },
    }
}

#[test]
fn wrong_key_is_reported_as_such() {
    let bytes = sample().seal(&key(1));
    let e = Manifest::open(&bytes, &key(2)).unwrap_err();
    assert!(matches!(e, ManifestError::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("wrong tenant key"), "{e}");
}

#[test]
fn keys_and_config_are_not_in_the_clear() {
    let mut m = sample();
    m.config.env = vec!["SECRET=hunter2hunter2".into()];
    let bytes = m.seal(&key(1));
    let hay = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!hay(&[2; 32]) && !hay(&[5; 32]));
    assert!(!hay(b"hunter2hunter2"));
    // Names are public on purpose.
    assert!(hay(&[1; 32]) && hay(&[4; 32]));
}

#[test]
fn size_is_at_most_0_02_percent_of_a_10_gib_image() {
    let cs = 512u64 << 10;
    let image = 10u64 << 30;
    let m = Manifest {
        image_bytes: image,
        chunk_size: cs,
        salt_id: [0; 16],
        chunks: (0..image / cs)
            .map(|i| ChunkEntry::Stored {
                name: ChunkName([i as u8; 32]),
                key: ChunkKey([0; 32]),
            })
            .collect(),
        config: RunConfig::default(),
    };
    let len = m.seal(&key(1)).len() as f64;
    assert!(len / image as f64 <= 0.0002, "{len} bytes");
}

#[test]
fn hostile_sizes_are_refused_before_allocating() {
    let mut b = MANIFEST_MAGIC.to_vec();
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&[16, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&[0; 40]);
    let e = Manifest::public(&b).unwrap_err();
    assert!(e.to_string().contains("64 GiB"), "{e}");
    let mut b = MANIFEST_MAGIC.to_vec();
    b.extend_from_slice(&7u16.to_le_bytes());
    assert!(matches!(
        Manifest::public(&b),
        Err(ManifestError::Version(7))
    ));
    assert!(matches!(
        Manifest::public(b"GARBAGE!"),
        Err(ManifestError::Magic)
    ));
}
