//! The benchmark's task data as `tools/eaibench/fetch.py` writes it:
//! `meta.json`, then `{train,test}.safetensors` (`x` F32 `[n, T, D]`, `y`
//! I64 `[n]`) for feature tasks, `{train,test}.jsonl` (`{"text", "label"}`
//! lines) for text tasks, or both, in the same order, for tasks with two
//! inputs (an image and its caption).

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct TaskMeta {
    pub task: String,
    pub modality: String,
    /// `"text"`, `"features"` or `"features+text"`.
    pub input: String,
    pub labels: Vec<String>,
    #[serde(default)]
    pub source: String,
}

pub enum Samples {
    Text(Vec<String>),
    /// `n` samples of `T x D` values each.
    Features { t: usize, d: usize, x: Vec<f32> },
    /// `n` samples of `T x D` values and a text each (the text follows
    /// the rows in the model's sequence).
    Mixed { t: usize, d: usize, x: Vec<f32>, texts: Vec<String> },
}

pub struct Split {
    pub samples: Samples,
    pub y: Vec<usize>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The samples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Split {
        let samples = match &self.samples {
            Samples::Text(t) => Samples::Text(idx.iter().map(|&i| t[i].clone()).collect()),
            Samples::Features { t, d, .. } => {
                Samples::Features { t: *t, d: *d, x: idx.iter().flat_map(|&i| self.features(i).iter().copied()).collect() }
            }
            Samples::Mixed { t, d, texts, .. } => Samples::Mixed {
                t: *t,
                d: *d,
                x: idx.iter().flat_map(|&i| self.features(i).iter().copied()).collect(),
                texts: idx.iter().map(|&i| texts[i].clone()).collect(),
            },
        };
        Split { samples, y: idx.iter().map(|&i| self.y[i]).collect() }
    }

    /// A seeded, per-class hold-out: `(fit, validation)`, `fraction` of each
    /// class in validation (at least one sample of a class with two).
    /// Recipes are chosen on it; the test split is scored once, at the end.
    pub fn holdout(&self, fraction: f64) -> (Split, Split) {
        let (mut fit, mut val) = (Vec::new(), Vec::new());
        let classes = self.y.iter().max().map_or(0, |m| m + 1);
        for c in 0..classes {
            let idx = self.class_order(c);
            let n = if idx.len() >= 2 { ((idx.len() as f64 * fraction).round() as usize).clamp(1, idx.len() - 1) } else { 0 };
            val.extend_from_slice(&idx[..n]);
            fit.extend_from_slice(&idx[n..]);
        }
        fit.sort_unstable();
        val.sort_unstable();
        (self.subset(&fit), self.subset(&val))
    }

    /// Fold `i` of `k` for cross-validation: `(fit, validation)`. Each
    /// class's samples go round the folds in `holdout`'s fixed order, or,
    /// with `groups`, whole groups go round them in name order. Every
    /// sample is validated in exactly one fold.
    pub fn fold(&self, groups: Option<&[String]>, k: usize, i: usize) -> Result<(Split, Split), String> {
        if k < 2 || i >= k {
            return Err(format!("fold {i} of {k}: want 2 or more folds"));
        }
        let mut in_fold = vec![false; self.len()];
        match groups {
            Some(groups) => {
                let names = self.group_names(groups)?;
                if names.len() < k {
                    return Err(format!("{} groups cannot make {k} folds", names.len()));
                }
                for (s, g) in in_fold.iter_mut().zip(groups) {
                    *s = names.binary_search(&g.as_str()).is_ok_and(|j| j % k == i);
                }
            }
            None => {
                let classes = self.y.iter().max().map_or(0, |m| m + 1);
                for c in 0..classes {
                    for (n, &j) in self.class_order(c).iter().enumerate() {
                        in_fold[j] = n % k == i;
                    }
                }
            }
        }
        let (val, fit): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|&j| in_fold[j]);
        Ok((self.subset(&fit), self.subset(&val)))
    }

    /// A hold-out of whole groups (`groups[i]` is sample `i`'s, a speaker
    /// say): `(fit, validation, the held-out groups)`, `fraction` of the
    /// groups (at least one, never all) in validation. For tasks whose test
    /// split is by group, where a per-class hold-out would share every group
    /// with the fit part. The held-out groups are evenly spaced in name
    /// order, so kinds named alike (m1, m2, f1, ...) land on both sides.
    pub fn holdout_groups(&self, groups: &[String], fraction: f64) -> Result<(Split, Split, Vec<String>), String> {
        let names = self.group_names(groups)?;
        if names.len() < 2 {
            return Err("a group hold-out needs at least two groups".into());
        }
        let n = ((names.len() as f64 * fraction).round() as usize).clamp(1, names.len() - 1);
        let held: Vec<&str> = (0..n).map(|k| names[(2 * k + 1) * names.len() / (2 * n)]).collect();
        let (val, fit): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|&i| held.contains(&groups[i].as_str()));
        let held = held.iter().map(|s| s.to_string()).collect();
        Ok((self.subset(&fit), self.subset(&val), held))
    }

    /// Class `c`'s samples in a fixed, label-blind order (Fibonacci hashing
    /// of the index), shared by `holdout` and `fold`.
    fn class_order(&self, c: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len()).filter(|&i| self.y[i] == c).collect();
        idx.sort_by_key(|&i| (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        idx
    }

    /// The distinct names in `groups`, one per sample, sorted.
    fn group_names<'g>(&self, groups: &'g [String]) -> Result<Vec<&'g str>, String> {
        if groups.len() != self.len() {
            return Err(format!("{} groups for {} samples", groups.len(), self.len()));
        }
        let mut names: Vec<&str> = groups.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Sample `i`'s features (`T * D` values).
    pub fn features(&self, i: usize) -> &[f32] {
        match &self.samples {
            Samples::Features { t, d, x } | Samples::Mixed { t, d, x, .. } => &x[i * t * d..(i + 1) * t * d],
            Samples::Text(_) => &[],
        }
    }

    /// Sample `i`'s text, if the task has texts.
    pub fn text(&self, i: usize) -> Option<&str> {
        match &self.samples {
            Samples::Text(t) | Samples::Mixed { texts: t, .. } => t.get(i).map(String::as_str),
            Samples::Features { .. } => None,
        }
    }
}

pub struct Task {
    pub dir: PathBuf,
    pub meta: TaskMeta,
}

/// Where the benchmark's data lives: `eaibench/` in the cache xtask uses
/// (`$M4NPU_CACHE`, else `$XDG_CACHE_HOME/m4npu`, else `~/.cache/m4npu`).
pub fn data_root() -> PathBuf {
    let cache = std::env::var_os("M4NPU_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"))
            .join("m4npu")
    });
    cache.join("eaibench")
}

fn err(p: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", p.display())
}

impl Task {
    pub fn open(dir: &Path) -> Result<Task, String> {
        let p = dir.join("meta.json");
        let meta = std::fs::read(&p).map_err(|e| err(&p, format!("{e} (run tools/eaibench/setup.sh)")))?;
        let meta: TaskMeta = serde_json::from_slice(&meta).map_err(|e| err(&p, e))?;
        Ok(Task { dir: dir.to_path_buf(), meta })
    }

    pub fn split(&self, name: &str) -> Result<Split, String> {
        match self.meta.input.as_str() {
            "text" => {
                let (texts, y) = self.texts(name)?;
                Ok(Split { samples: Samples::Text(texts), y })
            }
            "features" => {
                let (t, d, x, y) = self.features(name)?;
                Ok(Split { samples: Samples::Features { t, d, x }, y })
            }
            "features+text" => {
                let (t, d, x, y) = self.features(name)?;
                let (texts, text_y) = self.texts(name)?;
                if text_y != y {
                    return Err(format!("{}: {name}.jsonl and {name}.safetensors disagree on the samples' labels", self.dir.display()));
                }
                Ok(Split { samples: Samples::Mixed { t, d, x, texts }, y })
            }
            other => Err(format!("{}: unknown input {other:?}", self.dir.join("meta.json").display())),
        }
    }

    /// `train_groups.json`, if the task has one: each train sample's group.
    pub fn train_groups(&self) -> Result<Option<Vec<String>>, String> {
        let p = self.dir.join("train_groups.json");
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(&p, e)),
        };
        #[derive(Deserialize)]
        struct Groups {
            groups: Vec<String>,
        }
        let g: Groups = serde_json::from_slice(&text).map_err(|e| err(&p, e))?;
        Ok(Some(g.groups))
    }

    /// `{name}.jsonl`: texts and labels.
    fn texts(&self, name: &str) -> Result<(Vec<String>, Vec<usize>), String> {
        let p = self.dir.join(format!("{name}.jsonl"));
        let text = std::fs::read_to_string(&p).map_err(|e| err(&p, e))?;
        #[derive(Deserialize)]
        struct Line {
            text: String,
            label: usize,
        }
        let mut xs = Vec::new();
        let mut y = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let l: Line = serde_json::from_str(l).map_err(|e| err(&p, format!("line {}: {e}", i + 1)))?;
            xs.push(l.text);
            y.push(l.label);
        }
        Ok((xs, y))
    }

    /// `{name}.safetensors`: `T`, `D`, the `[n, T, D]` values and the labels.
    fn features(&self, name: &str) -> Result<(usize, usize, Vec<f32>, Vec<usize>), String> {
        let p = self.dir.join(format!("{name}.safetensors"));
        let buf = std::fs::read(&p).map_err(|e| err(&p, e))?;
        let st = SafeTensors::deserialize(&buf).map_err(|e| err(&p, e))?;
        let x = st.tensor("x").map_err(|e| err(&p, e))?;
        let y = st.tensor("y").map_err(|e| err(&p, e))?;
        let &[n, t, d] = x.shape() else { return Err(err(&p, "x is not [n, T, D]")) };
        if x.dtype() != safetensors::Dtype::F32 || y.dtype() != safetensors::Dtype::I64 || y.shape() != [n] {
            return Err(err(&p, "want x F32 [n, T, D] and y I64 [n]"));
        }
        let xs = x.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        let ys = y
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .collect::<Vec<_>>();
        if ys.iter().any(|&c| c >= self.meta.labels.len()) {
            return Err(err(&p, "a label outside meta.json's labels"));
        }
        Ok((t, d, xs, ys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_per_class_disjoint_and_complete() {
        let y: Vec<usize> = (0..50).map(|i| usize::from(i % 5 == 0)).collect();
        let x: Vec<f32> = (0..50).map(|i| i as f32).collect();
        let split = Split { samples: Samples::Features { t: 1, d: 1, x }, y };
        let (fit, val) = split.holdout(0.2);
        assert_eq!(fit.len() + val.len(), 50);
        assert_eq!(val.y.iter().filter(|&&c| c == 1).count(), 2, "20% of the 10 in class 1");
        assert_eq!(val.y.iter().filter(|&&c| c == 0).count(), 8, "20% of the 40 in class 0");
        let mut seen: Vec<f32> = fit.features(0).to_vec();
        for i in 1..fit.len() {
            seen.extend_from_slice(fit.features(i));
        }
        for i in 0..val.len() {
            assert!(!seen.contains(&val.features(i)[0]), "sample in both parts");
        }
        assert_eq!(split.holdout(0.2).1.y, val.y, "seeded: the same every time");
    }

    #[test]
    fn folds_validate_every_sample_once() {
        let y: Vec<usize> = (0..23).map(|i| usize::from(i % 3 == 0)).collect();
        let split = Split { samples: Samples::Features { t: 1, d: 1, x: (0..23).map(|i| i as f32).collect() }, y };
        let mut seen = Vec::new();
        for i in 0..4 {
            let (fit, val) = split.fold(None, 4, i).unwrap();
            assert_eq!(fit.len() + val.len(), 23);
            assert!(val.y.contains(&0) && val.y.contains(&1), "every fold sees both classes");
            seen.extend((0..val.len()).map(|j| val.features(j)[0] as usize));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
        let groups: Vec<String> = (0..23).map(|i| format!("g{}", i % 5)).collect();
        let (_, val) = split.fold(Some(&groups), 2, 1).unwrap();
        let held: Vec<usize> = (0..val.len()).map(|j| val.features(j)[0] as usize % 5).collect();
        assert!(held.iter().all(|&g| g == 1 || g == 3), "fold 1 of 2 holds groups g1 and g3: {held:?}");
        assert!(split.fold(Some(&groups), 6, 0).is_err(), "5 groups, 6 folds");
    }

    #[test]
    fn group_holdout_keeps_each_group_on_one_side() {
        let groups: Vec<String> = (0..40).map(|i| format!("voice{}", i % 8)).collect();
        let split = Split { samples: Samples::Features { t: 1, d: 1, x: (0..40).map(|i| i as f32).collect() }, y: vec![0; 40] };
        let (fit, val, held) = split.holdout_groups(&groups, 0.25).unwrap();
        assert_eq!(held, ["voice2", "voice6"], "a quarter of 8 groups, evenly spaced");
        assert_eq!((fit.len(), val.len()), (30, 10));
        for i in 0..val.len() {
            let g = &groups[val.features(i)[0] as usize];
            assert!(held.contains(g), "validation sample of a group not held out");
        }
        for i in 0..fit.len() {
            assert!(!held.contains(&groups[fit.features(i)[0] as usize]), "a held-out group in the fit part");
        }
        assert!(split.holdout_groups(&groups[..39], 0.25).is_err(), "one group per sample");
    }
}
