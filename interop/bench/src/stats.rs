//! Latency samples, percentiles, and the one-line `metric=... key=value`
//! output format that `run.sh` parses.

use std::fmt::Write as _;
use std::time::Duration;

/// Latency samples in microseconds, in the order they were taken.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    micros: Vec<u64>,
}

/// p50/p90/p99 and friends of a set of samples (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub n: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: u64,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples { micros: Vec::with_capacity(n) }
    }

    pub fn push(&mut self, d: Duration) {
        self.micros.push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Appends all of `other`'s samples.
    pub fn extend(&mut self, other: &Samples) {
        self.micros.extend_from_slice(&other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// `None` when there are no samples.
    pub fn summary(&self) -> Option<Summary> {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let n = u64::try_from(sorted.len()).ok()?;
        let max = *sorted.last()?;
        let sum: u128 = sorted.iter().map(|&v| u128::from(v)).sum();
        let mean = u64::try_from(sum / u128::from(n)).unwrap_or(u64::MAX);
        Some(Summary {
            n,
            p50: percentile(&sorted, 50)?,
            p90: percentile(&sorted, 90)?,
            p99: percentile(&sorted, 99)?,
            max,
            mean,
        })
    }
}

/// Nearest-rank percentile of an ascending slice: the smallest value with at
/// least `pct` percent of the samples at or below it. `None` if empty or
/// `pct` is not in 1..=100.
pub fn percentile(sorted: &[u64], pct: u32) -> Option<u64> {
    if sorted.is_empty() || pct == 0 || pct > 100 {
        return None;
    }
    let n = sorted.len() as u128;
    // rank = ceil(pct/100 * n), 1-based
    let rank = (u128::from(pct) * n).div_ceil(100);
    let index = usize::try_from(rank.saturating_sub(1)).ok()?;
    sorted.get(index).copied()
}

/// One output line: `metric=NAME k1=v1 k2=v2 ...`. Keys and values must not
/// contain spaces or `=`; values are numbers or short tokens.
#[derive(Debug, Clone)]
pub struct MetricLine {
    name: String,
    fields: Vec<(String, String)>,
}

impl MetricLine {
    pub fn new(name: &str) -> MetricLine {
        MetricLine { name: name.to_string(), fields: Vec::new() }
    }

    pub fn field(mut self, key: &str, value: impl ToString) -> MetricLine {
        self.fields.push((key.to_string(), sanitize(&value.to_string())));
        self
    }

    /// Adds n, p50, p90, p99, max and mean.
    pub fn summary(self, s: &Summary) -> MetricLine {
        self.field("n", s.n)
            .field("p50", s.p50)
            .field("p90", s.p90)
            .field("p99", s.p99)
            .field("max", s.max)
            .field("mean", s.mean)
    }

    /// True when the line carries an `error` field (its workload failed).
    pub fn failed(&self) -> bool {
        self.fields.iter().any(|(k, _)| k == "error")
    }

    pub fn render(&self) -> String {
        let mut out = format!("metric={}", sanitize(&self.name));
        for (k, v) in &self.fields {
            let _ = write!(out, " {}={}", sanitize(k), v);
        }
        out
    }
}

/// Replace characters that would break the `key=value` split.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_whitespace() || c == '=' { '_' } else { c }).collect()
}

/// Rate in units per second with two decimals; 0 when no time elapsed.
pub fn per_second(units: f64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "0.00".to_string();
    }
    format!("{:.2}", units / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 90), Some(90));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&v, 100), Some(100));
        assert_eq!(percentile(&[7], 1), Some(7));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[1], 0), None);
        assert_eq!(percentile(&[1], 101), None);
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let mut s = Samples::default();
        for us in [300u64, 100, 200, 1000] {
            s.push(Duration::from_micros(us));
        }
        let sum = s.summary().expect("four samples");
        assert_eq!(sum, Summary { n: 4, p50: 200, p90: 1000, p99: 1000, max: 1000, mean: 400 });
        assert!(Samples::default().summary().is_none());
    }

    #[test]
    fn line_format_is_stable() {
        let line = MetricLine::new("create_latency_us")
            .summary(&Summary { n: 3, p50: 10, p90: 20, p99: 30, max: 40, mean: 15 })
            .field("complete", 1)
            .field("note", "a b=c");
        assert_eq!(
            line.render(),
            "metric=create_latency_us n=3 p50=10 p90=20 p99=30 max=40 mean=15 complete=1 note=a_b_c"
        );
        assert!(!line.failed());
        assert!(MetricLine::new("x").field("error", "NLM4_DENIED").failed());
    }

    #[test]
    fn rates() {
        assert_eq!(per_second(100.0, Duration::from_millis(500)), "200.00");
        assert_eq!(per_second(5.0, Duration::ZERO), "0.00");
    }
}
