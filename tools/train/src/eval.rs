//! The host path of evaluation: each test sample as the job an app would
//! submit, run by vnpud's own job code on the engine over the same
//! firmware bytes the driver pins. The guest path runs the same jobs
//! through the module and vnpud; both must agree.

use std::path::Path;

use m4npu::Op;
use m4npu_format::adapter_meta::AdapterMeta;
use m4npu_format::job_io::{f32s, rows_with_embedding, Input};
use m4npu_format::Firmware;
use vnpu_engine::TextTokenizer;
use vnpu_engine::AlignedBytes;
use vnpud::foundation::{sub_models, Foundation, SubModel};

use crate::data::{Samples, Split, Task};

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
pub fn job_input(tok: Option<&TextTokenizer>, split: &Split, i: usize, feature_dim: Option<u32>, max_tokens: usize) -> Result<Input, String> {
    match (&split.samples, tok, feature_dim) {
        (Samples::Text(t), Some(tok), None) => {
            let mut ids = tok.encode(&t[i], true).map_err(|e| e.to_string())?;
            ids.truncate(max_tokens);
            Ok(Input::Tokens(ids))
        }
        (Samples::Features { .. }, _, Some(fd)) => Ok(Input::Features { dim: fd as usize, data: split.features(i).to_vec() }),
        (Samples::Mixed { texts, .. }, Some(tok), Some(fd)) => {
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
/// the tokens its sub-model takes: the text encoder's for text tasks and
/// for captions it embeds (`embedded`), the backbone's for texts that
/// follow feature rows as tokens.
pub fn text_input(fw: &FirmwareFile, model: &Foundation<'_>, samples: &Samples, embedded: bool) -> Result<(Option<TextTokenizer>, usize), String> {
    Ok(match (samples, embedded) {
        (Samples::Text(_), _) | (Samples::Mixed { .. }, true) => {
            (Some(fw.tokenizer("text_encoder")?), model.text_encoder.as_ref().map_or(512, |b| b.cfg.max_pos))
        }
        (Samples::Mixed { .. }, false) => {
            let llama = model.backbone.as_ref().ok_or("the firmware has no backbone")?;
            (Some(fw.tokenizer("backbone")?), llama.cfg.max_ctx)
        }
        (Samples::Features { .. }, _) => (None, 0),
    })
}

/// How one adapter's samples become jobs on the host path, exactly as the
/// app library makes them: `job_input`, or for an adapter that takes the
/// text encoder's sentence embedding of a caption, that embedding by an
/// EMBED job, then the rows and it (`rows_with_embedding`).
pub struct Jobs<'m, 'f> {
    model: &'m Foundation<'f>,
    meta: AdapterMeta,
    tok: Option<TextTokenizer>,
    max_tokens: usize,
}

impl<'m, 'f> Jobs<'m, 'f> {
    pub fn new(fw: &FirmwareFile, model: &'m Foundation<'f>, samples: &Samples, meta: AdapterMeta) -> Result<Self, String> {
        let (tok, max_tokens) = text_input(fw, model, samples, meta.text_embedding.is_some())?;
        Ok(Jobs { model, meta, tok, max_tokens })
    }

    pub fn meta(&self) -> &AdapterMeta {
        &self.meta
    }

    /// The job input of sample `i` of `split`.
    pub fn input(&self, split: &Split, i: usize) -> Result<Input, String> {
        let (Some(w), Samples::Mixed { texts, .. }) = (self.meta.text_embedding, &split.samples) else {
            return job_input(self.tok.as_ref(), split, i, self.meta.feature_dim, self.max_tokens);
        };
        let dim = self.meta.row_dim().ok_or("text_embedding leaves no feature columns")? as usize;
        let embedding = host_embedding(self.model, self.tok.as_ref().ok_or("no tokenizer")?, &texts[i], self.max_tokens)?;
        if embedding.len() != w as usize {
            return Err(format!("a text embedding of {} values, not the adapter's {w}", embedding.len()));
        }
        Ok(Input::Features { dim: dim + embedding.len(), data: rows_with_embedding(split.features(i), dim, &embedding) })
    }
}

/// The text encoder's sentence embedding of `text` on the host path: the
/// EMBED job `Device::embed` runs (special tokens, cut to `max_tokens`).
pub fn host_embedding(model: &Foundation<'_>, tok: &TextTokenizer, text: &str, max_tokens: usize) -> Result<Vec<f32>, String> {
    let mut ids = tok.encode(text, true).map_err(|e| e.to_string())?;
    ids.truncate(max_tokens);
    let d = model.text_encoder.as_ref().ok_or("the firmware has no text encoder")?.cfg.d_model;
    let input = Input::Tokens(ids).encode();
    let mut out = vec![0u8; 4 * d];
    let jb = m4npu_hw::JobBuffers { input: &input, output: &mut out, state: None, adapter: None };
    let n = vnpud::execute::run(model, Some(Op::Embed), jb).map_err(|e| e.to_string())?;
    Ok(f32s(&out[..n]))
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
pub fn accuracy(fw: &FirmwareFile, model: &Foundation<'_>, task: &Task, blob: &[u8], limit: usize) -> Result<Score, String> {
    let adapter = m4npu_format::Adapter::parse(blob).map_err(|e| e.to_string())?;
    if adapter.base_model_hash() != fw.hash {
        return Err("the adapter was trained for another firmware".into());
    }
    score_split(fw, model, &task.split("test")?, blob, limit)
}

/// Answers of `blob` on the first `limit` samples of `split`.
pub fn score_split(fw: &FirmwareFile, model: &Foundation<'_>, test: &Split, blob: &[u8], limit: usize) -> Result<Score, String> {
    let adapter = m4npu_format::Adapter::parse(blob).map_err(|e| e.to_string())?;
    let meta = AdapterMeta::parse(adapter.meta())?;
    let jobs = Jobs::new(fw, model, &test.samples, meta)?;
    let blob = AlignedBytes::from_slice(blob);
    let mut score = Score::new();
    for i in 0..test.len().min(limit) {
        let input = jobs.input(test, i)?;
        let logits = host_logits(model, &blob, &input, jobs.meta().labels.len()).map_err(|e| format!("sample {i}: {e}"))?;
        score.record(vnpud::execute::argmax(&logits) as usize, test.y[i]);
    }
    Ok(score)
}
