//! When to try a failing endpoint again: 1 s after the first failure,
//! doubling per failure up to 5 minutes, each wait shortened by up to a
//! fifth at random so endpoints that failed together do not retry in step.

use std::time::Duration;

const FIRST: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(300);

/// The wait after `attempts` failures in a row (1 or more), before jitter.
pub fn delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST.saturating_mul(1 << doublings).min(CAP)
}

/// [`delay`] less up to 20 % of it; `random` is any 32 random bits.
pub fn jittered(attempts: u32, random: u32) -> Duration {
    let base = delay(attempts);
    let cut = base.mul_f64(0.2 * f64::from(random) / f64::from(u32::MAX));
    base.saturating_sub(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_caps_at_five_minutes() {
        let secs: Vec<u64> = (1..=12).map(|a| delay(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(delay(0), FIRST);
        assert_eq!(delay(u32::MAX), CAP);
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_a_fifth() {
        for attempts in [1, 4, 20] {
            let base = delay(attempts);
            assert_eq!(jittered(attempts, 0), base);
            let shortest = jittered(attempts, u32::MAX);
            assert!(shortest < base && shortest >= base.mul_f64(0.8) - Duration::from_millis(1));
        }
    }
}
