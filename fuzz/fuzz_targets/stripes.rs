//! Arbitrary bytes as the stripes a cache node returned: checking and
//! rebuilding them must never panic, and a rebuild from stripes that all
//! pass their checks must be the chunk they were made from. The first
//! byte picks the layout and how the rest is cut.

#![no_main]

use bytes::Bytes;
use kindling_azcache::{decode, encode, stripe::check, Stripes};
use libfuzzer_sys::fuzz_target;

const LAYOUTS: [(u8, u8); 6] = [(4, 1), (4, 2), (2, 1), (1, 0), (4, 0), (3, 3)];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (k, m) = LAYOUTS[usize::from(pick) % LAYOUTS.len()];
    let s = Stripes::new(k, m).expect("a valid layout");
    // Foreign bytes as stripes: any index, any cut.
    let n = s.total();
    let cut = rest.len() / n.max(1);
    let foreign: Vec<(u8, Bytes)> = (0..n)
        .map(|i| {
            let part = &rest[i * cut..(i + 1) * cut];
            let _ = check(i as u8, part, s);
            (i as u8, Bytes::copy_from_slice(part))
        })
        .collect();
    let _ = decode(&foreign, s);
    // Real stripes of these bytes, any k of them, one maybe damaged.
    let stripes = encode(rest, s);
    let skip = usize::from(pick >> 4) % n;
    let mut chosen: Vec<(u8, Bytes)> = stripes
        .iter()
        .enumerate()
        .filter(|(i, _)| m == 0 || *i != skip)
        .map(|(i, b)| (i as u8, b.clone()))
        .take(usize::from(k))
        .collect();
    if pick & 8 != 0 {
        if let Some((_, b)) = chosen.first_mut() {
            let mut v = b.to_vec();
            if let Some(x) = v.last_mut() {
                *x ^= 1;
            }
            *b = Bytes::from(v);
        }
    }
    let all_pass = chosen.iter().all(|(i, b)| check(*i, b, s).is_ok());
    match decode(&chosen, s) {
        Ok(chunk) => assert!(all_pass && chunk[..] == rest[..], "a rebuild that is not the chunk"),
        Err(_) => assert!(!all_pass, "good stripes did not rebuild"),
    }
});
