//! Seeded randomness: SplitMix64, no dependencies. For simulated backends,
//! health-check jitter, and wherever else the host needs a cheap stream of
//! numbers it can reproduce from a seed.

use crate::hash::mix;

/// A small, fast, seedable pseudo-random generator (Steele, Lea and Flood's
/// SplitMix64, the generator Java's `SplittableRandom` uses).
///
/// Not cryptographic. Its point is reproducibility: the same seed always gives
/// the same sequence, on every platform.
///
/// ```
/// use veer_core::rng::SplitMix64;
///
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.next_f64();
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator for the `index`-th item of a stream seeded with `seed`.
    ///
    /// Each item gets its own independent generator, so what item `n` draws does
    /// not depend on how many numbers the items before it drew, nor on the order in
    /// which concurrent items were served.
    pub fn for_item(seed: u64, index: u64) -> Self {
        Self::new(mix(seed ^ mix(index.wrapping_add(1).wrapping_mul(GAMMA))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A uniform number in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }

    /// `true` with probability `p` (`p <= 0` never, `p >= 1` always).
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// A standard normal number (mean 0, standard deviation 1), by Box–Muller.
    pub fn standard_normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - self.next_f64()).ln()).sqrt();
        let angle = std::f64::consts::TAU * self.next_f64();
        radius * angle.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // First outputs of the reference implementation seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn uniform_floats_stay_in_the_unit_interval_and_average_a_half() {
        let mut rng = SplitMix64::new(1);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        assert!((sum / f64::from(n) - 0.5).abs() < 0.01, "mean {}", sum / f64::from(n));
    }

    #[test]
    fn standard_normal_has_mean_zero_and_unit_variance() {
        let mut rng = SplitMix64::new(2);
        let n = 100_000;
        let samples: Vec<f64> = (0..n).map(|_| rng.standard_normal()).collect();
        let mean = samples.iter().sum::<f64>() / f64::from(n);
        let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.03, "variance {variance}");
    }

    #[test]
    fn item_streams_are_reproducible_and_distinct() {
        let first: Vec<u64> = (0..4).map(|i| SplitMix64::for_item(9, i).next_u64()).collect();
        let again: Vec<u64> = (0..4).map(|i| SplitMix64::for_item(9, i).next_u64()).collect();
        assert_eq!(first, again);
        let mut unique = first.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), first.len());
        assert_ne!(SplitMix64::for_item(9, 0).next_u64(), SplitMix64::for_item(10, 0).next_u64());
    }
}
