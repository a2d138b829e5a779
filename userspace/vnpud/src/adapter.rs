//! An app's adapter as the device runs it: the `.m4a` in NPU memory read in
//! place (its LoRA factors, task head and input projection are borrowed
//! from the blob, never copied), checked against the foundation model's
//! shapes before any job uses it.

use std::collections::HashMap;

use m4npu_format::adapter_meta::{parse_lora_name, AdapterMeta, AdapterTask, Pooling, SubModel};
use m4npu_format::Adapter as Blob;
use m4npu_uapi::FW_DTYPE_F32;
use vnpu_engine::{ForwardOpts, InputProjection, Logits, Lora, LoraMat, Proj};

use crate::foundation::Foundation;

/// A linear head `y = W x + b`, `W: [labels, d]`.
pub struct Head<'a> {
    pub w: &'a [f32],
    pub b: &'a [f32],
    pub labels: usize,
    pub dim: usize,
}

impl Head<'_> {
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        (0..self.labels)
            .map(|o| {
                let w = &self.w[o * self.dim..][..self.dim];
                self.b[o] + w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>()
            })
            .collect()
    }
}

/// A parsed adapter, borrowing the blob.
pub struct TaskAdapter<'a> {
    pub meta: AdapterMeta,
    loras: HashMap<(usize, Proj), Lora<'a>>,
    pub head: Option<Head<'a>>,
    pub input: Option<InputProjection<'a>>,
}

impl vnpu_engine::Adapter for TaskAdapter<'_> {
    fn lora(&self, layer: usize, proj: Proj) -> Option<Lora<'_>> {
        self.loras.get(&(layer, proj)).copied()
    }
}

/// The engine's projection for a LoRA tensor's projection name
/// (`adapter_meta::LORA_PROJS`).
pub fn proj_named(name: &str) -> Option<Proj> {
    Some(match name {
        "q" => Proj::Q,
        "k" => Proj::K,
        "v" => Proj::V,
        "o" => Proj::O,
        "gate" => Proj::Gate,
        "up" => Proj::Up,
        "down" => Proj::Down,
        _ => return None,
    })
}

/// The (input, output) width of projection `p` of `sub` and its number of
/// layers; `None` if it has no such projection (BERT has no gate).
fn lora_dims(model: &Foundation<'_>, sub: SubModel, p: Proj) -> Option<((usize, usize), usize)> {
    match sub {
        SubModel::Backbone => model.backbone.as_ref().map(|m| (m.cfg.proj_dims(p), m.cfg.n_layer)),
        SubModel::TextEncoder => model.text_encoder.as_ref().and_then(|m| Some((m.cfg.proj_dims(p)?, m.cfg.n_layer))),
    }
}

/// F32 data of tensor `name` with exactly `dims` (outermost first).
fn f32s<'a>(blob: &Blob<'a>, name: &str, dims: &[usize]) -> Result<&'a [f32], String> {
    let (t, data) = blob.get(name).ok_or_else(|| format!("missing tensor {name}"))?;
    let have: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
    if t.dtype != FW_DTYPE_F32 || have != dims {
        return Err(format!("{name}: expected F32 {dims:?}, found dtype {} {have:?}", t.dtype));
    }
    bytemuck::try_cast_slice(data).map_err(|_| format!("{name}: misaligned"))
}

impl<'a> TaskAdapter<'a> {
    /// Reads `blob` (already verified by the kernel) for `model`. The error
    /// says what does not fit; the job gets `ENOEXEC`.
    pub fn parse(blob: &'a [u8], model: &Foundation<'_>) -> Result<Self, String> {
        let blob = Blob::parse_unverified(blob).map_err(|e| e.to_string())?;
        let meta = AdapterMeta::parse(blob.meta())?;
        let d = match meta.submodel {
            SubModel::Backbone => model.backbone.as_ref().map(|m| m.cfg.d_model),
            SubModel::TextEncoder => model.text_encoder.as_ref().map(|m| m.cfg.d_model),
        }
        .ok_or("the firmware has no such sub-model")?;

        let mut loras = HashMap::new();
        // (layer, projection) -> [A, B], each with its shape.
        type Factor<'a> = Option<(&'a [f32], Vec<usize>)>;
        let mut factors: HashMap<(usize, &str), [Factor<'a>; 2]> = HashMap::new();
        for t in blob.tensors() {
            let Some((layer, proj, ab)) = parse_lora_name(&t.name) else { continue };
            let dims: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
            let data = f32s(&blob, &t.name, &dims)?;
            factors.entry((layer, proj)).or_default()[usize::from(ab == "b")] = Some((data, dims));
        }
        for ((layer, proj), [a, b]) in factors {
            // parse_lora_name accepts only LORA_PROJS names.
            let p = proj_named(proj).ok_or_else(|| format!("unknown projection {proj}"))?;
            let ((in_dim, out_dim), n_layer) = lora_dims(model, meta.submodel, p)
                .ok_or_else(|| format!("LoRA {layer}.{proj}: the sub-model has no {proj} projection"))?;
            let (Some((a, ad)), Some((b, bd))) = (a, b) else {
                return Err(format!("LoRA {layer}.{proj} lacks a factor"));
            };
            // A 0-d tensor has no rank: refused below, not indexed.
            let rank = ad.first().copied().unwrap_or(0);
            if layer >= n_layer || ad != [rank, in_dim] || bd != [out_dim, rank] || rank == 0 {
                return Err(format!("LoRA {layer}.{proj} {ad:?}x{bd:?} does not fit a {in_dim}->{out_dim} projection of {n_layer} layers"));
            }
            let lora = Lora { rank, a: LoraMat::F32(a), b: LoraMat::F32(b), scale: meta.lora_alpha / rank as f32 };
            loras.insert((layer, p), lora);
        }
        if meta.submodel == SubModel::TextEncoder && meta.layers.is_some() {
            return Err("the text encoder runs all its layers (no early exit)".into());
        }

        let head = match blob.get("head.weight") {
            Some((t, _)) => {
                let labels = t.dims.get(1).copied().unwrap_or(0) as usize;
                Some(Head {
                    w: f32s(&blob, "head.weight", &[labels, d])?,
                    b: f32s(&blob, "head.bias", &[labels])?,
                    labels,
                    dim: d,
                })
            }
            None => None,
        };
        if meta.task == AdapterTask::Classify {
            let h = head.as_ref().ok_or("a classify adapter needs head.weight")?;
            if h.labels == 0 || (!meta.labels.is_empty() && meta.labels.len() != h.labels) {
                return Err(format!("{} labels named, head has {}", meta.labels.len(), h.labels));
            }
        }

        let input = match meta.feature_dim {
            Some(fd) => {
                if meta.submodel != SubModel::Backbone || fd == 0 {
                    return Err("feature input needs the backbone and feature_dim > 0".into());
                }
                let fd = fd as usize;
                // The rows are laid out by the app; the device checks only
                // that the embedding columns fit and are the encoder's.
                if let Some(w) = meta.text_embedding {
                    match model.text_encoder.as_ref().map(|m| m.cfg.d_model) {
                        None => return Err("text_embedding: the firmware has no text encoder".into()),
                        Some(enc) if enc != w as usize => {
                            return Err(format!("text_embedding {w} is not the text encoder's width {enc}"))
                        }
                        Some(_) if meta.row_dim().is_none() => {
                            return Err(format!("text_embedding {w} leaves no feature columns in feature_dim {fd}"))
                        }
                        Some(_) => {}
                    }
                }
                Some(InputProjection {
                    w: f32s(&blob, "input.weight", &[d, fd])?,
                    b: Some(f32s(&blob, "input.bias", &[d])?),
                    in_dim: fd,
                    d_model: d,
                })
            }
            None if meta.text_embedding.is_some() => return Err("text_embedding needs feature_dim".into()),
            None => None,
        };
        Ok(TaskAdapter { meta, loras, head, input })
    }

    /// Forward options for this adapter's backbone jobs.
    pub fn forward_opts(&self, logits: Logits, all_hidden: bool) -> ForwardOpts<'_> {
        ForwardOpts { all_hidden, logits, adapter: Some(self), layers: self.meta.layers.map(|l| l as usize) }
    }

    /// Whether the adapter changes the sub-model itself (not only what
    /// follows it): its jobs then batch only with its own.
    pub fn has_lora(&self) -> bool {
        !self.loras.is_empty()
    }

    pub fn pooling(&self) -> Pooling {
        self.meta.pooling
    }
}

/// Checks an adapter blob against a firmware region the way the device
/// will when a job uses it: for packers and trainers, so that a misfit
/// fails at build time with the reason, not as `ENOEXEC` in an app.
pub fn check_blob(firmware: &[u8], blob: &[u8]) -> Result<(), String> {
    let subs = crate::foundation::sub_models(firmware)?;
    let model = Foundation::build(&subs)?;
    let blob = vnpu_engine::AlignedBytes::from_slice(blob);
    TaskAdapter::parse(&blob, &model).map(|_| ()).map_err(|e| format!("the adapter does not fit the firmware: {e}"))
}
