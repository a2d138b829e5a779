//! The host path of evaluation: each test sample as the job an app would
//! submit, run by vnpud's own job code on the engine over the same
//! firmware bytes the driver pins. The guest path runs the same jobs
//! through the module and vnpud; both must agree.

use std::path::Path;

use m4npu::Op;
use m4npu_format::job_io::{f32s, Input};
use m4npu_format::Firmware;
use vnpu_engine::TextTokenizer;
use vnpu_engine::AlignedBytes;
use vnpud::foundation::{sub_models, Foundation, SubModel};

/// A firmware file read into aligned memory, as NPU memory holds it.
pub struct FirmwareFile {
    pub region: AlignedBytes,
    pub hash: [u8; 32],
}

impl FirmwareFile {
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e} (run `cargo xtask setup`)", path.display()))?;
        let region = AlignedBytes::from_slice(&bytes);
        let hash = Firmware::parse(&region).map_err(|e| format!("{}: {e}", path.display()))?.content_hash();
        Ok(FirmwareFile { region, hash })
    }

    pub fn sub_models(&self) -> Result<Vec<SubModel<'_>>, String> {
        sub_models(&self.region)
    }

    /// The tokenizer the firmware carries for `sub`.
    pub fn tokenizer(&self, sub: &str) -> Result<TextTokenizer, String> {
        let fw = Firmware::parse_unverified(&self.region).map_err(|e| e.to_string())?;
        let meta: serde_json::Value = serde_json::from_slice(fw.meta()).map_err(|e| e.to_string())?;
        let json = meta["tokenizers"].get(sub).ok_or_else(|| format!("the firmware has no {sub} tokenizer"))?;
        TextTokenizer::from_json(&json.to_string()).map_err(|e| e.to_string())
    }
}

/// Answers on a test split: how many were right, and a digest of every
/// answer in sample order, so two paths can be shown to agree on each one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Score {
    pub correct: usize,
    pub total: usize,
    /// FNV-1a over the predicted label indices.
    pub digest: u64,
}

impl Score {
    pub fn new() -> Self {
        Score { digest: 0xcbf2_9ce4_8422_2325, ..Default::default() }
    }

    pub fn record(&mut self, predicted: usize, truth: usize) {
        self.correct += usize::from(predicted == truth);
        self.total += 1;
        for b in (predicted as u32).to_le_bytes() {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

/// The job input of test sample `i`: tokens for text, feature rows as the
/// adapter groups them, or both: the rows, then the text in the backbone's
/// tokens without special ones (as the app library's
/// `classify_features_and_text` sends it), cut to what `max_tokens` leaves
/// after the rows.
pub fn job_input(tok: Option<&TextTokenizer>, split: &crate::data::Split, i: usize, feature_dim: Option<u32>, max_tokens: usize) -> Result<Input, String> {
    match (&split.samples, tok, feature_dim) {
        (crate::data::Samples::Text(t), Some(tok), None) => {
            let mut ids = tok.encode(&t[i], true).map_err(|e| e.to_string())?;
            ids.truncate(max_tokens);
            Ok(Input::Tokens(ids))
        }
        (crate::data::Samples::Features { .. }, _, Some(fd)) => Ok(Input::Features { dim: fd as usize, data: split.features(i).to_vec() }),
        (crate::data::Samples::Mixed { texts, .. }, Some(tok), Some(fd)) => {
            let (dim, data) = (fd as usize, split.features(i).to_vec());
            let mut tokens = tok.encode(&texts[i], false).map_err(|e| e.to_string())?;
            tokens.truncate(max_tokens.saturating_sub(data.len() / dim.max(1)));
            // No text left: the rows alone, as the app library sends them.
            Ok(if tokens.is_empty() { Input::Features { dim, data } } else { Input::Mixed { dim, data, tokens } })
        }
        _ => Err("the adapter's input does not match the task's".into()),
    }
}

/// The tokenizer a task's texts go through (none for feature tasks) and
/// the tokens its sub-model takes: the text encoder's for text tasks, the
/// backbone's for texts that follow feature rows.
pub fn text_input(fw: &FirmwareFile, model: &Foundation<'_>, samples: &crate::data::Samples) -> Result<(Option<TextTokenizer>, usize), String> {
    Ok(match samples {
        crate::data::Samples::Text(_) => {
            (Some(fw.tokenizer("text_encoder")?), model.text_encoder.as_ref().map_or(512, |b| b.cfg.max_pos))
        }
        crate::data::Samples::Mixed { .. } => {
            let llama = model.backbone.as_ref().ok_or("the firmware has no backbone")?;
            (Some(fw.tokenizer("backbone")?), llama.cfg.max_ctx)
        }
        crate::data::Samples::Features { .. } => (None, 0),
    })
}

/// The logits of one CLASSIFY job on the host path: vnpud's job code on
/// `model`, with the adapter `blob` (aligned as NPU memory holds it).
pub fn host_logits(model: &Foundation<'_>, blob: &AlignedBytes, input: &Input, labels: usize) -> Result<Vec<f32>, String> {
    let input = input.encode();
    let mut out = vec![0u8; 4 * labels.max(1)];
    let jb = m4npu_hw::JobBuffers { input: &input, output: &mut out, state: None, adapter: Some(blob) };
    let n = vnpud::execute::run(model, Some(Op::Classify), jb).map_err(|e| e.to_string())?;
    Ok(f32s(&out[..n]))
}

/// Accuracy of `blob` on the task's test split (first `limit` samples).
pub fn accuracy(fw: &FirmwareFile, model: &Foundation<'_>, task: &crate::data::Task, blob: &[u8], limit: usize) -> Result<Score, String> {
    let adapter = m4npu_format::Adapter::parse(blob).map_err(|e| e.to_string())?;
    if adapter.base_model_hash() != fw.hash {
        return Err("the adapter was trained for another firmware".into());
    }
    score_split(fw, model, &task.split("test")?, blob, limit)
}

/// Answers of `blob` on the first `limit` samples of `split`.
pub fn score_split(fw: &FirmwareFile, model: &Foundation<'_>, test: &crate::data::Split, blob: &[u8], limit: usize) -> Result<Score, String> {
    let adapter = m4npu_format::Adapter::parse(blob).map_err(|e| e.to_string())?;
    let meta = m4npu_format::adapter_meta::AdapterMeta::parse(adapter.meta())?;
    let (tok, max_tokens) = text_input(fw, model, &test.samples)?;
    let blob = AlignedBytes::from_slice(blob);
    let mut score = Score::new();
    for i in 0..test.len().min(limit) {
        let input = job_input(tok.as_ref(), test, i, meta.feature_dim, max_tokens)?;
        let logits = host_logits(model, &blob, &input, meta.labels.len()).map_err(|e| format!("sample {i}: {e}"))?;
        score.record(vnpud::execute::argmax(&logits) as usize, test.y[i]);
    }
    Ok(score)
}
