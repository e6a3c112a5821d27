//! Writes seed manifests for the `manifest` fuzz target, sealed with the
//! target's fixed key: `cargo run -p kindling-chunk --example
//! manifest_seeds -- fuzz/seeds/manifest`.

use kindling_chunk::{ChunkEntry, ChunkKey, ChunkName, Manifest, RunConfig, TenantKey};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds/manifest".into());
    std::fs::create_dir_all(&dir)?;
    let key = TenantKey::from_bytes([0x4b; 32]);
    for (i, (shift, chunks)) in [(16u32, 0u64), (19, 1), (19, 9), (22, 3), (16, 70)]
        .into_iter()
        .enumerate()
    {
        let cs = 1u64 << shift;
        let m = Manifest {
            image_bytes: chunks * cs - u64::from(i as u32 % 2) * 512 * u64::from(chunks > 0),
            chunk_size: cs,
            salt_id: [i as u8; 16],
            chunks: (0..chunks)
                .map(|c| {
                    if c % 3 == 1 {
                        ChunkEntry::Zero
                    } else {
                        ChunkEntry::Stored {
                            name: ChunkName([c as u8; 32]),
                            key: ChunkKey([!(c as u8); 32]),
                        }
                    }
                })
                .collect(),
            config: RunConfig {
                cmd: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["PATH=/usr/bin".into()],
                working_dir: "/".into(),
                ..RunConfig::default()
            },
        };
        std::fs::write(format!("{dir}/seed-{i}"), m.seal(&key))?;
    }
    Ok(())
}
