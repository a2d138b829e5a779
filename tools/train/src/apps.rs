//! The demo's apps: each a separate process with its own context and its
//! own adapter, classifying its task's test samples through the app
//! library, the module and the NPU device, all on the one pinned model.

use std::path::Path;
use std::process::{Command, Stdio};

use m4npu::{Adapter, Device, Label};
use serde::{Deserialize, Serialize};

use crate::data::{Samples, Split, Task};
use crate::eval::Score;

/// What one app reports (a JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
pub struct AppResult {
    pub task: String,
    pub pid: u32,
    pub samples: usize,
    pub correct: usize,
    /// [`Score::digest`] of the answers, to compare with the host path's.
    pub digest: u64,
    pub adapter_bytes: u64,
    /// NPU memory of the app's context once its adapter is loaded.
    pub context_bytes: u64,
    pub first_answers: Vec<String>,
}

/// Test sample `i` of `split` classified through the device as an app
/// does it: text with `classify`, feature rows with `classify_features`,
/// both with `classify_features_and_text`.
pub fn classify_sample(dev: &Device, a: &Adapter<'_>, split: &Split, i: usize) -> Result<Vec<Label>, String> {
    let feature_dim = a.meta().and_then(|m| m.row_dim()).map(|d| d as usize);
    match (&split.samples, feature_dim) {
        (Samples::Text(t), None) => dev.classify(a, &t[i]),
        (Samples::Features { .. }, Some(fd)) => dev.classify_features(a, split.features(i), fd),
        (Samples::Mixed { texts, .. }, Some(fd)) => dev.classify_features_and_text(a, split.features(i), fd, &texts[i]),
        _ => return Err(format!("adapter {} does not take this task's input", a.name())),
    }
    .map_err(|e| e.to_string())
}

/// One app: loads `adapter`, classifies the first `n` test samples of `task`.
pub fn app(task_dir: &Path, adapter: &Path, n: usize) -> Result<AppResult, String> {
    let e = |e: m4npu::Error| e.to_string();
    let task = Task::open(task_dir)?;
    let test = task.split("test")?;
    let dev = Device::open().map_err(e)?;
    let a = dev.load_adapter_file(adapter).map_err(e)?;
    let adapter_bytes = std::fs::metadata(adapter).map_err(|err| err.to_string())?.len();
    let context_bytes = dev.usage().map_err(e)?.memory_bytes;
    let (mut score, mut first_answers) = (Score::new(), Vec::new());
    for i in 0..n.min(test.len()) {
        let labels = classify_sample(&dev, &a, &test, i)?;
        score.record(labels[0].index, test.y[i]);
        if first_answers.len() < 3 {
            let truth = &task.meta.labels[test.y[i]];
            first_answers.push(format!("{} ({:.0}%), truth {truth}", labels[0].name, 100.0 * labels[0].score));
        }
    }
    Ok(AppResult {
        task: task.meta.task.clone(),
        pid: std::process::id(),
        samples: score.total,
        correct: score.correct,
        digest: score.digest,
        adapter_bytes,
        context_bytes,
        first_answers,
    })
}

/// Runs one app process per task at once, plus a generation app (`m4 run
/// generate`), and prints each app's results and the memory summary.
pub fn apps(data: &Path, adapters: &Path, tasks: &[String], n: usize, prompt: &str) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    for t in tasks {
        let child = Command::new(&me)
            .args(["--data"])
            .arg(data)
            .args(["app", t, "--samples", &n.to_string(), "--adapter"])
            .arg(adapters.join(format!("{t}.m4a")))
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the {t} app: {e}"))?;
        children.push((t.clone(), child));
    }
    let gen = Command::new("m4")
        .args(["run", "generate", prompt, "--max-new-tokens", "12", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the generation app: {e}"))?;

    let dev = Device::open().map_err(|e| e.to_string())?;
    let info = dev.info().map_err(|e| e.to_string())?;
    let model = info.model.ok_or("no foundation model is pinned")?;
    let mut results = Vec::new();
    for (t, c) in children {
        let out = c.wait_with_output().map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&out.stdout);
        let r: AppResult = serde_json::from_str(line.trim()).map_err(|e| format!("the {t} app failed ({e}): {line}"))?;
        println!("app {} (pid {}): {}/{} right; first answers: {}", r.task, r.pid, r.correct, r.samples, r.first_answers.join("; "));
        results.push(r);
    }
    let out = gen.wait_with_output().map_err(|e| e.to_string())?;
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("the generation app failed: {e}"))?;
    println!("app generate: {}{}", g["prompt"].as_str().unwrap_or(""), g["text"].as_str().unwrap_or(""));

    let baselines: serde_json::Value =
        std::fs::read(data.join("baselines.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    println!("\n| app | adapter bytes | context NPU bytes | task-specific model bytes |");
    println!("|---|---|---|---|");
    let (mut ad, mut ctx, mut base) = (0, 0, 0);
    for r in &results {
        let b = baselines[&r.task]["bytes"].as_u64().unwrap_or(0);
        println!("| {} | {} | {} | {} |", r.task, r.adapter_bytes, r.context_bytes, b);
        (ad, ctx, base) = (ad + r.adapter_bytes, ctx + r.context_bytes, base + b);
    }
    println!("| generate | 0 | (transient KV cache) | {} (its own copy of the model) |", model.size);
    println!(
        "\nfirmware pinned once: {} bytes ({}); {} apps add {ad} adapter bytes, {ctx} context bytes; \
         task-specific models for the same apps: {} bytes.",
        model.size,
        model.name,
        results.len() + 1,
        base + model.size
    );
    Ok(())
}
