//! Arbitrary bytes as an image archive file: Image::open on it, then open
//! and read every layer. Must never panic.

#![no_main]

use std::io::Read;

use kindling_oci::Image;
use libfuzzer_sys::fuzz_target;

/// Bound on bytes read per layer, so a tiny zstd bomb cannot stall a run.
const MAX_LAYER_READ: u64 = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if std::fs::write(file.path(), data).is_err() {
        return;
    }
    let Some(path) = file.path().to_str() else {
        return;
    };
    let Ok(image) = Image::open(path) else {
        return;
    };
    for index in 0..image.layers.len() {
        if let Ok(layer) = image.open_layer(index) {
            let _ = std::io::copy(&mut layer.take(MAX_LAYER_READ), &mut std::io::sink());
        }
    }
});
