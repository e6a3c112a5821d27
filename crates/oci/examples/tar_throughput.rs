//! Measures TarReader throughput, alone and behind the verifying layer
//! pipeline: `cargo run --release -p kindling-oci --example tar_throughput [MiB]`.

use std::io::Read;
use std::time::Instant;

use kindling_oci::{Digest, TarReader, VerifyingReader};

/// Reads every entry's data in 1 MiB calls; returns (entries, data bytes).
fn read_all<R: Read>(inner: R) -> (u64, u64) {
    let mut tar = TarReader::new(inner);
    let mut buf = vec![0u8; 1 << 20];
    let (mut entries, mut total) = (0, 0u64);
    while tar.next_entry().expect("entry").is_some() {
        entries += 1;
        loop {
            let n = tar.read_data(&mut buf).expect("data");
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    tar.drain().expect("drain");
    (entries, total)
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    // Half the bytes in 4 MiB files, half in 2 KiB files.
    let mut builder = tar::Builder::new(Vec::with_capacity((mib + 16) << 20));
    let big = vec![0xabu8; 4 << 20];
    let small = vec![0xcdu8; 2048];
    let mut append = |name: String, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        builder.append_data(&mut h, name, data).expect("append");
    };
    let mut written = 0usize;
    let mut i = 0;
    while written < mib << 20 {
        append(format!("dir/big{i}"), &big);
        for j in 0..big.len() / small.len() {
            append(format!("dir/small{i}-{j}"), &small);
        }
        written += 2 * big.len();
        i += 1;
    }
    let archive = builder.into_inner().expect("finish");
    let mb = archive.len() as f64 / (1 << 20) as f64;

    let start = Instant::now();
    let (entries, total) = read_all(&archive[..]);
    let secs = start.elapsed().as_secs_f64();
    println!("tar only:     {entries} entries, {mb:.0} MiB archive ({} MiB data) in {secs:.3}s = {:.0} MiB/s", total >> 20, mb / secs);

    let digest = Digest::of(&archive);
    let start = Instant::now();
    read_all(VerifyingReader::new(
        &archive[..],
        digest,
        Some(archive.len() as u64),
        "bench",
    ));
    let secs = start.elapsed().as_secs_f64();
    println!(
        "with sha256:  {mb:.0} MiB in {secs:.3}s = {:.0} MiB/s",
        mb / secs
    );
}
