//! What a LLaMA job takes and returns.

use crate::models::adapter::Adapter;

/// Job input: token ids, or ready-made embeddings `[n, d_model]` (e.g. from
/// an [`crate::models::adapter::InputProjection`] for non-text modalities).
#[derive(Clone, Copy)]
pub enum Input<'x> {
    Tokens(&'x [u32]),
    Embeddings(&'x [f32]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

#[derive(Clone, Copy)]
pub struct ForwardOpts<'x> {
    pub all_hidden: bool,
    pub logits: Logits,
    pub adapter: Option<&'x dyn Adapter>,
    /// Run only the first `n` layers (an adapter's early exit), then the
    /// final norm. A KV cache filled this way holds only those layers.
    pub layers: Option<usize>,
}

impl Default for ForwardOpts<'_> {
    fn default() -> Self {
        ForwardOpts {
            all_hidden: false,
            logits: Logits::Last,
            adapter: None,
            layers: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct ForwardOut {
    /// Final-norm hidden state of the last position, `[d_model]`.
    pub hidden_last: Vec<f32>,
    /// `[n, d_model]` when requested.
    pub hidden_all: Option<Vec<f32>>,
    /// `[vocab]` (Last) or `[n, vocab]` (All).
    pub logits: Option<Vec<f32>>,
}

/// One session's row of [`super::Llama::decode_batch`]: `token` at position `pos`
/// (the session's `n_past`: positions `< pos` must already be in `kv`).
pub struct BatchRow<'x> {
    pub token: u32,
    pub pos: usize,
    /// This session's own KV cache, laid out as for [`super::Llama::forward`].
    pub kv: &'x mut [u8],
    pub adapter: Option<&'x dyn Adapter>,
}

/// One session's part of [`super::Llama::forward_batch`]: `tokens` at positions
/// `pos..pos + tokens.len()` (positions `< pos` must already be in `kv`).
pub struct SeqRow<'x> {
    pub tokens: &'x [u32],
    pub pos: usize,
    /// This session's own KV cache, laid out as for [`super::Llama::forward`].
    pub kv: &'x mut [u8],
    pub adapter: Option<&'x dyn Adapter>,
}

/// One job's part of [`super::Llama::hidden_batch`]: its whole `input` from
/// position 0 through the first `layers` layers (all when `None`), with
/// its own adapter.
pub struct HiddenRow<'x> {
    pub input: Input<'x>,
    /// Room for the job's positions; a classification keeps no cache, so
    /// this is scratch.
    pub kv: &'x mut [u8],
    pub adapter: Option<&'x dyn Adapter>,
    pub layers: Option<usize>,
}
