//! Percentiles and per-mode totals of the samples a bench collected.

use std::time::Duration;

use super::load::{RoundResult, Sample};

/// The `p`-th percentile (0–100) of `sorted` by the nearest-rank method; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Everything one mode did over all its rounds in one phase.
#[derive(Debug, Default)]
pub struct ModeTotals {
    pub samples: Vec<Sample>,
    pub errors: Vec<String>,
    /// Summed over rounds; only time with this mode's streams in flight.
    pub wall: Duration,
    /// Each round's streams per second, in order.
    pub round_throughputs: Vec<f64>,
}

impl ModeTotals {
    pub fn add(&mut self, round: RoundResult) {
        self.round_throughputs.push(throughput(round.samples.len(), round.wall));
        self.samples.extend(round.samples);
        self.errors.extend(round.errors);
        self.wall += round.wall;
    }

    pub fn summary(&self) -> Summary {
        let mut ttfts: Vec<Duration> = self.samples.iter().map(|sample| sample.ttft).collect();
        let mut totals: Vec<Duration> = self.samples.iter().map(|sample| sample.total).collect();
        ttfts.sort_unstable();
        totals.sort_unstable();
        Summary {
            runs: self.samples.len() + self.errors.len(),
            errors: self.errors.len(),
            ttft_p50: percentile(&ttfts, 50.0),
            ttft_p90: percentile(&ttfts, 90.0),
            ttft_p99: percentile(&ttfts, 99.0),
            total_p50: percentile(&totals, 50.0),
            throughput: throughput(self.samples.len(), self.wall),
        }
    }
}

/// Completed streams per second.
pub fn throughput(n_completed: usize, wall: Duration) -> f64 {
    if wall.is_zero() { 0.0 } else { n_completed as f64 / wall.as_secs_f64() }
}

/// One mode's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Attempted runs, errors included.
    pub runs: usize,
    pub errors: usize,
    pub ttft_p50: Duration,
    pub ttft_p90: Duration,
    pub ttft_p99: Duration,
    /// Median time from request to the end of the stream.
    pub total_p50: Duration,
    /// Completed streams per second of wall time.
    pub throughput: f64,
}

/// `a - b` in milliseconds, negative when `b` is larger.
pub fn added_ms(a: Duration, b: Duration) -> f64 {
    (a.as_secs_f64() - b.as_secs_f64()) * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 50.0), ms(50));
        assert_eq!(percentile(&sorted, 99.0), ms(99));
        assert_eq!(percentile(&sorted, 100.0), ms(100));
        assert_eq!(percentile(&sorted, 0.0), ms(1));
        assert_eq!(percentile(&[ms(7)], 99.0), ms(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn totals_sum_rounds() {
        let mut totals = ModeTotals::default();
        let sample = |n| Sample { ttft: ms(n), total: ms(10 * n) };
        totals.add(RoundResult { samples: vec![sample(1), sample(3)], errors: vec![], wall: ms(500) });
        totals.add(RoundResult { samples: vec![sample(2)], errors: vec!["x".into()], wall: ms(500) });
        let summary = totals.summary();
        assert_eq!((summary.runs, summary.errors), (4, 1));
        assert_eq!(summary.ttft_p50, ms(2));
        assert_eq!(summary.total_p50, ms(20));
        assert!((summary.throughput - 3.0).abs() < 1e-9);
        assert_eq!(totals.round_throughputs, [4.0, 2.0]);
        assert!((added_ms(ms(3), ms(5)) + 2.0).abs() < 1e-9);
    }
}
