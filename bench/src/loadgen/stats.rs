//! Latency percentiles.

use std::time::Duration;

use serde_json::{Value, json};

/// p50, p99 and max of `samples` (nanoseconds), in milliseconds, as JSON; nearest rank.
pub(crate) fn latency(samples: &mut [u64]) -> Value {
    samples.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len().max(1));
        samples.get(rank - 1).copied().unwrap_or(0)
    };
    let ms = |ns: u64| (Duration::from_nanos(ns).as_secs_f64() * 1e6).round() / 1e3;
    json!({
        "samples": samples.len(),
        "p50_ms": ms(at(0.50)),
        "p99_ms": ms(at(0.99)),
        "max_ms": ms(samples.last().copied().unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::latency;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<u64> = (1..=100).rev().map(|ms| ms * 1_000_000).collect();
        let report = latency(&mut samples);
        assert_eq!(report["p50_ms"], 50.0);
        assert_eq!(report["p99_ms"], 99.0);
        assert_eq!(report["max_ms"], 100.0);
        assert_eq!(latency(&mut [])["samples"], 0);
    }
}
