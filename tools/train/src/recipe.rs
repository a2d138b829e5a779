//! Per-task training recipes: how many feature rows make one backbone
//! token, how long to train. Chosen so each task trains in minutes on two
//! cores: few tokens per sample, an early exit after two layers.

use std::path::Path;

use candle_core::Device;
use m4npu_format::adapter_meta::{build_adapter, LORA_PROJS};

use m4npu_format::job_io::Input;
use vnpu_engine::LlamaConfig;
use vnpud::foundation::SubModel;

use crate::data::{Samples, Split, Task};
use crate::eval::{job_input, FirmwareFile};
use crate::frozen::{token_embeddings, Frozen};
use crate::texts::Texts;
use crate::train::{self, Options};

/// The defaults for a task: rows per token, epochs, batch.
fn defaults(task: &str, t: usize) -> Options {
    let (group, epochs, batch) = match task {
        "digits" => (1, 10, 32),
        "mnist5k" | "fashion" | "captionmatch" => (7, 4, 32),
        "basicmotions" => (5, 40, 8),
        "pickupgesture" => (8, 60, 8),
        "vowels" => (1, 12, 16),
        "keywords" => (2, 4, 32),
        _ => ((1..=t).rev().find(|g| t.is_multiple_of(*g) && t / g >= 8).unwrap_or(1), 10, 32),
    };
    let o = Options { layers: 2, rank: 4, targets: vec!["q", "v"], epochs, batch, lr: 3e-3, group, max_steps: None, seed: 1, holdout: 0 };
    match task {
        // Fashion's 7 image tokens, then the caption's. Whether they match
        // is an interaction of the two: LoRA on the MLPs too, to compute it
        // where attention has brought them together. Not there yet: this
        // (and rank 4 on q,v) stays at chance on the held-out 500 (train
        // loss ~0.69 after 6 epochs); the held-out 500 stay out so that
        // the next recipe is chosen on them, not on test.
        "captionmatch" => Options { rank: 8, targets: LORA_PROJS.to_vec(), epochs: 6, lr: 5e-3, holdout: 500, ..o },
        _ => o,
    }
}

/// Trains the adapter for the task in `dir`; returns the packed, checked blob.
/// What the command line may override in a task's recipe.
#[derive(Default)]
pub struct Overrides {
    pub max_steps: Option<usize>,
    pub layers: Option<usize>,
    pub epochs: Option<usize>,
    pub rank: Option<usize>,
    /// LoRA target projections, by name.
    pub targets: Option<Vec<String>>,
    /// Train samples to hold out and score after each epoch (see `Options::holdout`).
    pub holdout: Option<usize>,
}

/// Target names as the static names of `adapter_meta::LORA_PROJS`.
fn targets(names: &[String]) -> Result<Vec<&'static str>, String> {
    names
        .iter()
        .map(|n| {
            LORA_PROJS.iter().copied().find(|p| p == n).ok_or_else(|| format!("unknown LoRA target {n:?}; one of {LORA_PROJS:?}"))
        })
        .collect()
}

/// A mixed task's texts as the device gets them: each sample's job input
/// (`eval::job_input`, the app library's tokenization) and the backbone's
/// embedding rows of its tokens.
fn texts(fw: &FirmwareFile, subs: &[SubModel<'_>], split: &Split, group: usize) -> Result<Texts, String> {
    let bb = subs.iter().find(|s| s.name == "backbone").ok_or("the firmware has no backbone")?;
    let cfg = LlamaConfig::from_meta(&bb.table).map_err(|e| e.to_string())?;
    let tok = fw.tokenizer("backbone")?;
    let Samples::Mixed { d, .. } = split.samples else { return Err("not a task with texts".into()) };
    let tokens = (0..split.len())
        .map(|i| match job_input(Some(&tok), split, i, Some((d * group) as u32), cfg.max_ctx)? {
            Input::Mixed { tokens, .. } => Ok(tokens),
            _ => Ok(Vec::new()),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let n: usize = tokens.iter().map(Vec::len).sum();
    eprintln!("{} texts, {:.1} backbone tokens each on average", tokens.len(), n as f64 / tokens.len().max(1) as f64);
    Texts::new(&tokens, cfg.d_model, |ids| token_embeddings(&bb.table, bb.weights, ids), &Device::Cpu)
}

pub fn train(fw: &FirmwareFile, dir: &Path, ov: &Overrides) -> Result<Vec<u8>, String> {
    let Overrides { max_steps, layers, epochs, .. } = *ov;
    let task = Task::open(dir)?;
    let train_split = task.split("train")?;
    let subs = fw.sub_models()?;
    let (meta, tensors) = match &train_split.samples {
        Samples::Features { t, .. } | Samples::Mixed { t, .. } => {
            let mut o = defaults(&task.meta.task, *t);
            o.max_steps = max_steps;
            o.layers = layers.unwrap_or(o.layers);
            o.epochs = epochs.unwrap_or(o.epochs);
            o.rank = ov.rank.unwrap_or(o.rank);
            o.holdout = ov.holdout.unwrap_or(o.holdout);
            if let Some(t) = &ov.targets {
                o.targets = targets(t)?;
            }
            let bb = subs.iter().find(|s| s.name == "backbone").ok_or("the firmware has no backbone")?;
            let m = Frozen::load(&bb.table, bb.weights, o.layers, &Device::Cpu)?;
            eprintln!("{}: {} samples, {o:?}", task.meta.task, train_split.len());
            let texts = match train_split.samples {
                Samples::Mixed { .. } => Some(texts(fw, &subs, &train_split, o.group)?),
                _ => None,
            };
            train::features(&task, &train_split, &m, &o, texts.as_ref())?
        }
        Samples::Text(_) => {
            let model = vnpud::foundation::Foundation::build(&subs)?;
            let bert = model.text_encoder.as_ref().ok_or("the firmware has no text encoder")?;
            let tok = fw.tokenizer("text_encoder")?;
            eprintln!("{}: embedding {} texts with the text encoder", task.meta.task, train_split.len());
            let mut emb = Vec::with_capacity(train_split.len() * bert.cfg.d_model);
            for i in 0..train_split.len() {
                let Ok(m4npu_format::job_io::Input::Tokens(ids)) = job_input(Some(&tok), &train_split, i, None, bert.cfg.max_pos)
                else {
                    return Err("tokenizing".into());
                };
                emb.extend(bert.embed(&ids).map_err(|e| e.to_string())?);
            }
            let o = Options { lr: 1e-2, max_steps, ..defaults("text", 1) };
            train::text_head(&task, &emb, bert.cfg.d_model, &train_split, &o)?
        }
    };
    let items = tensors.iter().map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()));
    let blob = build_adapter(&task.meta.task, fw.hash, &meta, items).map_err(|e| e.to_string())?;
    vnpud::adapter::check_blob(&fw.region, &blob)?;
    Ok(blob)
}
