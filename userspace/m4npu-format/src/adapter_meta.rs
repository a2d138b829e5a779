//! What an adapter holds and how the device runs it: the JSON metadata of
//! an `.m4a` and the names of its tensors. The packer writes it, the app
//! library reads it for labels and checks, the device executes it.
//!
//! Tensors (all F32, row-major, `dims` innermost first as in every blob):
//! - `lora.<layer>.<proj>.a` `[rank, in]` and `.b` `[out, rank]`, `proj` one
//!   of [`LORA_PROJS`]: `y += (alpha / rank) · B (A x)` on the sub-model's
//!   projection, never merged into the shared weights. On the text encoder
//!   (BERT) `q`, `k`, `v` are the parts of its stacked qkv, `up` and `down`
//!   its two feed-forward layers; it has no `gate`;
//! - `head.weight` `[labels, d]`, `head.bias` `[labels]`: the task head on
//!   the pooled hidden state (classify);
//! - `input.weight` `[d_model, feature_dim]`, `input.bias` `[d_model]`: the
//!   input projection from feature vectors to backbone embeddings. With
//!   `text_embedding` its last columns take a text's sentence embedding
//!   (see [`crate::job_io::rows_with_embedding`]).

use serde::{Deserialize, Serialize};

/// Projections a LoRA may target, as named in tensor names.
pub const LORA_PROJS: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// What the adapter's jobs produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterTask {
    /// One logit per label.
    Classify,
    /// Tokens from the backbone's LM head (LoRA only).
    Generate,
    /// The pooled hidden state.
    Embed,
}

/// The sub-model the adapter runs through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubModel {
    Backbone,
    TextEncoder,
}

/// How a sequence of hidden states becomes one vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    #[default]
    Mean,
    Last,
}

/// The adapter's metadata (the blob's meta section, JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterMeta {
    pub task: AdapterTask,
    pub submodel: SubModel,
    /// Label names, in head order (classify).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub pooling: Pooling,
    /// Width of each input feature vector; set when the adapter takes
    /// features (image patches, audio frames, sensor samples) through its
    /// input projection instead of tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_dim: Option<u32>,
    /// Width of the text encoder's sentence embedding, set when the adapter
    /// classifies feature rows together with a text that the text encoder
    /// embeds (an EMBED job before the CLASSIFY): the last this many of
    /// `feature_dim`'s columns take the embedding, the others the rows
    /// ([`crate::job_io::rows_with_embedding`] lays them out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_embedding: Option<u32>,
    /// Backbone layers to run, from the first: an adapter trained on an
    /// early exit stops there. `None`: all (always so on the text encoder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<u32>,
    /// LoRA scale numerator (`alpha / rank`).
    #[serde(default = "one")]
    pub lora_alpha: f32,
    /// Free text: how it was trained, on what.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn one() -> f32 {
    1.0
}

impl AdapterMeta {
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let meta: Self = serde_json::from_slice(json).map_err(|e| format!("adapter metadata: {e}"))?;
        // JSON numbers past f32's range read as infinity.
        if !meta.lora_alpha.is_finite() {
            return Err(format!("adapter metadata: lora_alpha {} is not a finite number", meta.lora_alpha));
        }
        Ok(meta)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("plain data serializes")
    }

    /// Width of the rows an app sends: `feature_dim` less an embedded
    /// text's columns. `None` for an adapter without features, or whose
    /// embedding leaves no columns for rows (the device refuses it).
    pub fn row_dim(&self) -> Option<u32> {
        self.feature_dim?.checked_sub(self.text_embedding.unwrap_or(0)).filter(|&d| d > 0)
    }
}

/// Assembles an adapter from named F32 tensors (shapes outermost first).
pub fn build_adapter<'t>(
    name: &str,
    base_model_hash: [u8; 32],
    meta: &AdapterMeta,
    tensors: impl IntoIterator<Item = (&'t str, &'t [usize], &'t [f32])>,
) -> Result<Vec<u8>, crate::FormatError> {
    let mut b = crate::AdapterBuilder::new(name, base_model_hash);
    b.meta(meta.to_json());
    for (n, shape, v) in tensors {
        b.tensor_f32(n, shape, v)?;
    }
    b.build()
}

/// A LoRA tensor name split into (layer, projection, factor `a`/`b`).
pub fn parse_lora_name(name: &str) -> Option<(usize, &str, &str)> {
    let mut it = name.strip_prefix("lora.")?.split('.');
    let (layer, proj, factor) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || !LORA_PROJS.contains(&proj) || !matches!(factor, "a" | "b") {
        return None;
    }
    Some((layer.parse().ok()?, proj, factor))
}

pub fn lora_name(layer: usize, proj: &str, factor: &str) -> String {
    format!("lora.{layer}.{proj}.{factor}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip_and_refusals() {
        let m = AdapterMeta {
            task: AdapterTask::Classify,
            submodel: SubModel::Backbone,
            labels: vec!["a".into(), "b".into()],
            pooling: Pooling::Last,
            feature_dim: Some(8),
            text_embedding: Some(3),
            layers: Some(4),
            lora_alpha: 16.0,
            description: String::new(),
        };
        assert_eq!(AdapterMeta::parse(&m.to_json()).unwrap(), m);
        assert_eq!(m.row_dim(), Some(5));
        let rows_only = AdapterMeta { text_embedding: None, ..m.clone() };
        assert_eq!(rows_only.row_dim(), Some(8));
        let no_rows = AdapterMeta { text_embedding: Some(8), ..m.clone() };
        assert_eq!(no_rows.row_dim(), None);
        let min = AdapterMeta::parse(br#"{"task":"embed","submodel":"text_encoder"}"#).unwrap();
        assert_eq!((min.pooling, min.lora_alpha, min.layers), (Pooling::Mean, 1.0, None));
        assert!(AdapterMeta::parse(br#"{"task":"dance","submodel":"backbone"}"#).is_err());
        assert!(AdapterMeta::parse(br#"{"task":"embed","submodel":"backbone","extra":1}"#).is_err());
        // Past f32's range: infinity, which would scale every LoRA to NaN.
        let e = AdapterMeta::parse(br#"{"task":"embed","submodel":"backbone","lora_alpha":1e39}"#).unwrap_err();
        assert!(e.contains("lora_alpha inf is not a finite number"), "{e}");
    }

    #[test]
    fn lora_names() {
        assert_eq!(parse_lora_name(&lora_name(12, "gate", "b")), Some((12, "gate", "b")));
        for bad in ["lora.1.x.a", "lora.1.q.c", "lora.q.a", "lora.1.q.a.b", "head.weight"] {
            assert_eq!(parse_lora_name(bad), None, "{bad}");
        }
    }
}
