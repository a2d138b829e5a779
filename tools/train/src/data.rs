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
            let mut idx: Vec<usize> = (0..self.len()).filter(|&i| self.y[i] == c).collect();
            // Fibonacci hashing of the index: a fixed, label-blind shuffle.
            idx.sort_by_key(|&i| (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let n = if idx.len() >= 2 { ((idx.len() as f64 * fraction).round() as usize).clamp(1, idx.len() - 1) } else { 0 };
            val.extend_from_slice(&idx[..n]);
            fit.extend_from_slice(&idx[n..]);
        }
        fit.sort_unstable();
        val.sort_unstable();
        (self.subset(&fit), self.subset(&val))
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
}
