//! Per-round samples and their summary: median and min–max of each side and
//! of the per-round ratio. Rounds alternate engine and peers, so a ratio
//! pairs two samples taken seconds apart under the same machine load.

use std::collections::BTreeMap;

/// One quantity's samples, tagged with the round that took them.
#[derive(Clone, Default)]
pub struct Samples(Vec<(usize, f64)>);

impl Samples {
    pub fn median(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.0.iter().map(|s| s.1).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        })
    }

    pub fn min(&self) -> Option<f64> {
        self.0.iter().map(|s| s.1).min_by(f64::total_cmp)
    }

    pub fn max(&self) -> Option<f64> {
        self.0.iter().map(|s| s.1).max_by(f64::total_cmp)
    }

    pub fn last(&self) -> Option<f64> {
        self.0.last().map(|s| s.1)
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Samples {
        Samples(self.0.iter().map(|&(r, v)| (r, f(v))).collect())
    }

    /// `self / other`, round by round (rounds where both have a sample).
    pub fn ratio(&self, other: &Samples) -> Samples {
        Samples(
            self.0
                .iter()
                .filter_map(|&(r, a)| {
                    let b = other.0.iter().find(|s| s.0 == r)?.1;
                    (b > 0.0).then_some((r, a / b))
                })
                .collect(),
        )
    }

    /// `median (min–max)` with `prec` decimals, `scale` applied first.
    pub fn cell(&self, prec: usize, scale: f64, suffix: &str) -> String {
        match (self.median(), self.min(), self.max()) {
            (Some(m), Some(lo), Some(hi)) => format!(
                "{:.p$}{suffix} ({:.p$}–{:.p$})",
                m * scale,
                lo * scale,
                hi * scale,
                p = prec
            ),
            _ => "-".into(),
        }
    }
}

/// Every named quantity of a run.
#[derive(Default)]
pub struct Record(BTreeMap<String, Samples>);

impl Record {
    pub fn push(&mut self, key: &str, round: usize, v: f64) {
        self.0
            .entry(key.to_string())
            .or_default()
            .0
            .push((round, v));
    }

    pub fn get(&self, key: &str) -> Samples {
        self.0.get(key).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_ratio_pair_rounds() {
        let mut r = Record::default();
        for (round, a, b) in [(0, 10.0, 5.0), (1, 30.0, 10.0), (2, 20.0, 20.0)] {
            r.push("a", round, a);
            r.push("b", round, b);
        }
        r.push("b", 3, 1.0); // no partner in "a": left out of the ratio
        assert_eq!(r.get("a").median(), Some(20.0));
        let q = r.get("a").ratio(&r.get("b"));
        assert_eq!(q.median(), Some(2.0));
        assert_eq!((q.min(), q.max()), (Some(1.0), Some(3.0)));
        assert_eq!(r.get("b").median(), Some(7.5));
        assert_eq!(r.get("none").cell(1, 1.0, ""), "-");
    }
}
