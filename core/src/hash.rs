//! The two small, stable hashes veer uses wherever it needs one: for seeds,
//! request ids, the canary split and sticky keys; and FNV-1a as a map hasher
//! for short keys that come from the config (host names, backend addresses),
//! where SipHash's protection against chosen collisions buys nothing. Stable
//! means the same value in every process and release, which `std`'s
//! `DefaultHasher` is not.

/// SplitMix64's output function: a 64-bit finaliser that sends nearby inputs
/// far apart.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01B3))
}

/// FNV-1a as a [`std::hash::Hasher`], for `HashMap`s keyed by short strings
/// an attacker does not choose: `HashMap<K, V, FnvBuild>`.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

/// Builds [`Fnv`] hashers.
pub type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xCBF2_9CE4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // FNV-1a's published test vectors, and SplitMix64's first output for seed 0.
        assert_eq!(fnv1a(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xAF63_DC4C_8601_EC8C);
        assert_eq!(mix(0x9E37_79B9_7F4A_7C15), 0xE220_A839_7B1D_CDAF);
        let mut hasher = Fnv::default();
        std::hash::Hasher::write(&mut hasher, b"a");
        assert_eq!(std::hash::Hasher::finish(&hasher), fnv1a(b"a"));
    }
}
