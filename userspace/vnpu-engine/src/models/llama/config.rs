//! The LLaMA hyperparameters, as stored in the packed table's metadata.

use crate::error::{Error, Result};
use crate::formats::tensor::TensorTable;
use crate::models::adapter::Proj;

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub max_ctx: usize,
}

impl LlamaConfig {
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    /// KV-cache bytes needed per token position.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.n_layer * 2 * self.kv_dim() * 4
    }
    pub fn kv_bytes(&self, max_tokens: usize) -> usize {
        self.kv_bytes_per_token() * max_tokens
    }
    /// (input, output) width of projection `p`: what a LoRA on it must fit.
    pub fn proj_dims(&self, p: Proj) -> (usize, usize) {
        match p {
            Proj::Q | Proj::O => (self.d_model, self.d_model),
            Proj::K | Proj::V => (self.d_model, self.kv_dim()),
            Proj::Gate | Proj::Up => (self.d_model, self.d_ff),
            Proj::Down => (self.d_ff, self.d_model),
        }
    }
    /// RoPE cos/sin `[n, head_dim / 2]` for positions `pos0..pos0 + n`
    /// (pair `i` of a head turns at `rope_base^(-2i / head_dim)`).
    pub fn rope_tables(&self, pos0: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.head_dim / 2;
        let mut cos = vec![0f32; n * half];
        let mut sin = vec![0f32; n * half];
        for t in 0..n {
            let p = (pos0 + t) as f64;
            for i in 0..half {
                let theta =
                    p * (self.rope_base as f64).powf(-2.0 * i as f64 / self.head_dim as f64);
                cos[t * half + i] = theta.cos() as f32;
                sin[t * half + i] = theta.sin() as f32;
            }
        }
        (cos, sin)
    }

    pub(crate) fn to_meta(&self, t: &mut TensorTable) {
        use crate::formats::tensor::MetaValue::*;
        let m = &mut t.meta;
        m.insert("arch".into(), Str("llama".into()));
        for (k, v) in [
            ("n_layer", self.n_layer),
            ("d_model", self.d_model),
            ("n_head", self.n_head),
            ("n_head_kv", self.n_head_kv),
            ("head_dim", self.head_dim),
            ("d_ff", self.d_ff),
            ("vocab", self.vocab),
            ("max_ctx", self.max_ctx),
        ] {
            m.insert(k.into(), Int(v as i64));
        }
        m.insert("rms_eps".into(), Float(self.rms_eps as f64));
        m.insert("rope_base".into(), Float(self.rope_base as f64));
    }

    pub fn from_meta(t: &TensorTable) -> Result<LlamaConfig> {
        if t.meta_str("arch")? != "llama" {
            return Err(Error::Meta("arch != llama".into()));
        }
        let c = LlamaConfig {
            n_layer: t.meta_usize("n_layer")?,
            d_model: t.meta_usize("d_model")?,
            n_head: t.meta_usize("n_head")?,
            n_head_kv: t.meta_usize("n_head_kv")?,
            head_dim: t.meta_usize("head_dim")?,
            d_ff: t.meta_usize("d_ff")?,
            vocab: t.meta_usize("vocab")?,
            rms_eps: t.meta_f64("rms_eps")? as f32,
            rope_base: t.meta_f64("rope_base")? as f32,
            max_ctx: t.meta_usize("max_ctx")?,
        };
        // Zero sizes would make `kv_capacity` divide by zero, empty rows.
        if c.n_layer == 0
            || c.head_dim == 0
            || c.d_ff == 0
            || c.n_head == 0
            || c.n_head_kv == 0
            || c.n_head % c.n_head_kv != 0
            || c.head_dim % 2 != 0
            || c.n_head * c.head_dim != c.d_model
            || c.d_model % 32 != 0
            || c.d_ff % 32 != 0
        {
            return Err(Error::Meta(format!("inconsistent llama config {c:?}")));
        }
        Ok(c)
    }
}
