//! The benchmark table: per task, the task-specific baseline (trained by
//! tools/eaibench/baselines.py on the same split) against the m4npu
//! adapter on the shared foundation model, in accuracy and bytes.

use std::fmt::Write;
use std::path::Path;

use crate::data::Task;
use crate::eval::{accuracy, FirmwareFile};

/// Parity as the paper counts it: within 2 points, or at least 95% of the
/// baseline's accuracy.
pub fn parity(m4: f64, baseline: f64) -> bool {
    // A hair of slack: accuracies are ratios of counts, 0.02 is not exact in binary.
    m4 + 0.02 + 1e-9 >= baseline || m4 >= 0.95 * baseline
}

pub fn markdown(fw: &FirmwareFile, data: &Path, adapters: &Path, sets: &Path) -> Result<String, String> {
    let p = data.join("baselines.json");
    let baselines: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    // One model for every task, as the device has one.
    let subs = fw.sub_models()?;
    let model = vnpud::foundation::Foundation::build(&subs)?;
    let mut rows = String::new();
    let (mut n, mut at_parity, mut adapter_bytes, mut baseline_bytes) = (0, 0, 0u64, 0u64);
    for (name, b) in baselines.as_object().ok_or("baselines.json: not an object")? {
        let path = adapters.join(format!("{name}.m4a"));
        let Ok(blob) = std::fs::read(&path) else {
            eprintln!("report: no adapter for {name} at {}", path.display());
            continue;
        };
        let task = Task::open(&data.join(name))?;
        let score = accuracy(fw, &model, &task, &blob, usize::MAX)?;
        let (acc, base) = (score.accuracy(), b["accuracy"].as_f64().unwrap_or(0.0));
        let bb = b["bytes"].as_u64().unwrap_or(0);
        let ok = parity(acc, base);
        n += 1;
        at_parity += usize::from(ok);
        adapter_bytes += blob.len() as u64;
        baseline_bytes += bb;
        let _ = writeln!(
            rows,
            "| {name} | {} | {} | {:.1}% | {bb} | {:.1}% | {} | {:+.1} | {} |",
            task.meta.modality,
            b["model"].as_str().unwrap_or("?"),
            100.0 * base,
            100.0 * acc,
            blob.len(),
            100.0 * (acc - base),
            if ok { "yes" } else { "no" }
        );
    }
    // The tasks without an adapter: the foundation model alone.
    let s = crate::sets::similarity(fw, &model, sets)?;
    let ok = parity(s.m4, s.tfidf);
    n += 1;
    at_parity += usize::from(ok);
    baseline_bytes += s.tfidf_bytes;
    let _ = writeln!(
        rows,
        "| similarity ({} sentences) | text embedding | tf-idf cosine | {:.1}% | {} | {:.1}% | 0 (no adapter) | {:+.1} | {} |",
        s.sentences,
        100.0 * s.tfidf,
        s.tfidf_bytes,
        100.0 * s.m4,
        100.0 * (s.m4 - s.tfidf),
        if ok { "yes" } else { "no" }
    );
    let (right, total, answers) = crate::sets::qa(fw, &model, sets, 12)?;
    let _ = writeln!(
        rows,
        "| short QA ({total} questions) | text generation | — | — | — | {:.1}% exact match | 0 (no adapter) | — | (no baseline) |",
        100.0 * right as f64 / total as f64
    );
    for a in answers {
        eprintln!("  qa: {a}");
    }
    let mut md = String::from(
        "# eaibench: m4npu adapters against task-specific models\n\n\
         Regenerate with `cargo xtask eaibench` (add `--train` to retrain every adapter first); \
         the data and baselines come from `tools/eaibench/setup.sh`, the adapters from `m4-train train <task>`.\n\n",
    );
    let _ = writeln!(md, "| task | modality | baseline | baseline acc. | baseline bytes | m4npu acc. | adapter bytes | Δ points | parity |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    md.push_str(&rows);
    let _ = writeln!(
        md,
        "\nParity (within 2 points or ≥ 95% of the baseline) on {at_parity} of {n} tasks with a baseline ({:.0}%). \
         Adapters: {adapter_bytes} bytes in all, on one shared {}-byte firmware; baselines: {baseline_bytes} bytes.\n\
         m4npu accuracy: the full test split on the host path (vnpud's job code and engine on the same firmware bytes); \
         the guest suite checks the real path (module, vnpud, app library) agrees on a sample of each task.\n\n\
         Notes:\n\
         - Adapter bytes are whole `.m4a` files: each tensor starts 4 KiB-aligned, so small adapters are mostly padding. \
         Feature adapters hold an input projection, rank-4 LoRA on q and v of the backbone's first 2 layers (their early exit) and a head; \
         text adapters a head on the text encoder's sentence embedding.\n\
         - The baselines are small classical models (logistic regression, MLP, TF-IDF) chosen on a validation split; \
         what m4npu saves is every app shipping and running its own model, not bytes against these.\n\
         - keywords is synthetic speech (espeak-ng voices, speeds, noise); the similarity pairs and questions are hand-written \
         (`tools/eaibench/sets`), the pairs with little word overlap, which TF-IDF cannot match by design.\n\
         - Short QA uses the backbone's chat template and counts an answer right if the expected word is in its first 12 tokens.",
        (100 * at_parity).checked_div(n).unwrap_or(0),
        fw.region.len()
    );
    Ok(md)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parity_is_two_points_or_95_percent() {
        assert!(super::parity(0.93, 0.95));
        assert!(super::parity(0.91, 0.95)); // 95.8% of the baseline
        assert!(!super::parity(0.90, 0.95));
        assert!(super::parity(0.30, 0.32)); // 2 points below a weak baseline
        assert!(!super::parity(0.29, 0.32));
    }
}
