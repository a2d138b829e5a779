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
