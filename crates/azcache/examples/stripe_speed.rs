//! Encode and decode times of one 512 KiB chunk, per layout: all data
//! stripes present (no parity work) and one or two data stripes lost (the
//! parity rebuild), plus the SHA-256 a reader spends checking the result,
//! as the baseline. Run with
//! `cargo run --release -p kindling-azcache --example stripe_speed`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kindling_azcache::{decode, encode, Stripes};
use kindling_chunk::ChunkName;

const CHUNK: usize = 512 * 1024;
const ROUNDS: usize = 2000;

/// Median and 99th percentile of `ROUNDS` runs of `f`.
fn time(mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..ROUNDS / 10 {
        f();
    }
    let mut t: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort_unstable();
    (t[ROUNDS / 2], t[ROUNDS * 99 / 100])
}

fn show(what: &str, (p50, p99): (Duration, Duration)) {
    let gbps = CHUNK as f64 / p50.as_secs_f64() / 1e9;
    println!("{what:<34} p50 {p50:>9.1?}  p99 {p99:>9.1?}  {gbps:5.1} GB/s");
}

fn main() {
    let chunk: Vec<u8> = (0..CHUNK as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    show(
        "sha-256 of the chunk (baseline)",
        time(|| {
            black_box(ChunkName::of(black_box(&chunk)));
        }),
    );
    for layout in ["4+1", "4+2", "2+1", "4+0"] {
        let s: Stripes = layout.parse().expect("valid layout");
        show(
            &format!("{layout} encode"),
            time(|| {
                black_box(encode(black_box(&chunk), s));
            }),
        );
        let stripes = encode(&chunk, s);
        let all: Vec<(u8, Bytes)> = stripes
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u8, b.clone()))
            .collect();
        let k = usize::from(s.k());
        show(
            &format!("{layout} decode, data stripes"),
            time(|| {
                black_box(decode(black_box(&all[..k]), s).expect("decodes"));
            }),
        );
        if s.m() > 0 {
            // Lose the first m data stripes: the worst case, all parity used.
            let lossy = &all[usize::from(s.m())..];
            let lossy = &lossy[..k];
            show(
                &format!("{layout} decode, {} data lost", s.m()),
                time(|| {
                    black_box(decode(black_box(lossy), s).expect("decodes"));
                }),
            );
        }
    }
}
