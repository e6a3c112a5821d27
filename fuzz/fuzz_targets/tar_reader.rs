//! Arbitrary bytes through TarReader: iterate entries, read all data,
//! drain. Must never panic, and every entry that reads without error must
//! return exactly `stored_size` bytes with a consistent sparse map.

#![no_main]

use kindling_oci::TarReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tar = TarReader::new(data);
    let mut buf = vec![0u8; 4096];
    loop {
        let entry = match tar.next_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(_) => return,
        };
        let mut total = 0u64;
        loop {
            match tar.read_data(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(_) => return,
            }
        }
        assert_eq!(total, entry.stored_size);
        if let Some(segments) = &entry.sparse {
            let mut end = 0u64;
            let mut sum = 0u64;
            for s in segments {
                assert!(s.offset >= end && s.length > 0);
                end = s.offset + s.length;
                assert!(end <= entry.size);
                sum += s.length;
            }
            assert_eq!(sum, entry.stored_size);
        }
    }
    let _ = tar.drain();
});
