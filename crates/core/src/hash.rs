//! Small deterministic hashing helpers: the stable FNV-1a hash and a hasher for maps keyed by it.

use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a over the bytes of `s`: stable across runs and processes, so offline and online runs
/// of the same code see the same values (std's `RandomState` is seeded per process). The one
/// implementation: the detector, the windower and the sequence models' hashed embeddings (whose
/// buckets must mean the same in training and serving) all use it.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Hasher for keys that are already well-mixed `u64` hashes: one multiply instead of SipHash.
#[derive(Default, Clone, Copy)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys, which this hasher is not used with; stay correct anyway.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci mixing spreads the already-hashed value over the high bits hashbrown uses.
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Build-hasher for `HashMap<u64, _>` keyed by [`fnv1a`] values.
pub(crate) type U64Build = BuildHasherDefault<U64Hasher>;
