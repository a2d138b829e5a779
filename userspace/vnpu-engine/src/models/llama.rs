//! LLaMA-architecture decoder (SmolLM2) on packed integer weights.
//!
//! The KV cache is a caller-provided byte buffer (later: NPU memory owned by
//! an app context), laid out `[layer][k|v][slot][n_kv_head * head_dim]` f32,
//! so one decode step is one self-contained job over `(weights, kv)`.

use crate::compute::kernels;
use crate::compute::lora::{apply_lora_rows, lora_deltas};
use crate::compute::norm::{rms_norm, rms_norm_row};
use crate::compute::quant::ActQ8;
use crate::compute::rows::{ActRows, Rows};
use crate::compute::{Exec, QMat};
use crate::error::{Error, Result};
use crate::formats::tensor::{Region, TensorTable};
use crate::models::adapter::{Adapter, Lora, Proj};
use std::sync::{Arc, Mutex};

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

/// Projections sharing one input, either stacked row-wise in one packed
/// matrix (what the packer emits) or as separate tensors.
enum Stacked<'a> {
    Fused(QMat<'a>),
    Split(Vec<QMat<'a>>),
}

impl<'a> Stacked<'a> {
    fn load(
        reg: &Region<'a>,
        fused: &str,
        parts: &[(&str, usize)],
        k: usize,
    ) -> Result<Stacked<'a>> {
        if reg.table.get(fused).is_ok() {
            let rows = parts.iter().map(|p| p.1).sum();
            return Ok(Stacked::Fused(QMat::from_region(reg, fused, rows, k)?));
        }
        parts
            .iter()
            .map(|&(n, r)| QMat::from_region(reg, n, r, k))
            .collect::<Result<Vec<_>>>()
            .map(Stacked::Split)
    }

    fn rows(&self) -> usize {
        match self {
            Stacked::Fused(m) => m.rows(),
            Stacked::Split(ms) => ms.iter().map(|m| m.rows()).sum(),
        }
    }

    /// Runs all parts on `act` into `out` `[n, rows]`, parts side by side.
    fn matmul(&self, exec: &Exec, act: &ActQ8, out: &mut [f32]) {
        match self {
            Stacked::Fused(m) => exec.matmul(m, act, out),
            Stacked::Split(ms) => {
                let ld = self.rows();
                let mut c = 0;
                for m in ms {
                    exec.matmul_into(m, act, &mut out[c..], ld);
                    c += m.rows();
                }
            }
        }
    }
}

struct Layer<'a> {
    attn_norm: &'a [f32],
    qkv: Stacked<'a>,
    wo: QMat<'a>,
    ffn_norm: &'a [f32],
    gate_up: Stacked<'a>,
    w_down: QMat<'a>,
}

#[derive(Default)]
struct Scratch {
    act: ActQ8,
    /// Normalized layer input `[n, d]` (kept for LoRA).
    h: Vec<f32>,
    /// q | k | v side by side `[n, d + 2 kvd]`.
    qkv: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    /// gate | up side by side `[n, 2 ff]`; silu(gate) * up lands in the gate half.
    gu: Vec<f32>,
}

pub struct Llama<'a> {
    pub cfg: LlamaConfig,
    scratch: std::sync::Mutex<Vec<Scratch>>,
    layers: Vec<Layer<'a>>,
    embd: QMat<'a>,
    out_norm: &'a [f32],
    lm_head: QMat<'a>,
    exec: Arc<Exec>,
}

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

/// One session's row of [`Llama::decode_batch`]: `token` at position `pos`
/// (the session's `n_past`: positions `< pos` must already be in `kv`).
pub struct BatchRow<'x> {
    pub token: u32,
    pub pos: usize,
    /// This session's own KV cache, laid out as for [`Llama::forward`].
    pub kv: &'x mut [u8],
    pub adapter: Option<&'x dyn Adapter>,
}

/// One session's part of [`Llama::forward_batch`]: `tokens` at positions
/// `pos..pos + tokens.len()` (positions `< pos` must already be in `kv`).
pub struct SeqRow<'x> {
    pub tokens: &'x [u32],
    pub pos: usize,
    /// This session's own KV cache, laid out as for [`Llama::forward`].
    pub kv: &'x mut [u8],
    pub adapter: Option<&'x dyn Adapter>,
}

/// One job's part of [`Llama::hidden_batch`]: its whole `input` from
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

/// Rows `t0..t0 + n` of a job's activations, at positions `pos0..pos0 + n`.
#[derive(Clone, Copy)]
struct Span {
    t0: usize,
    n: usize,
    pos0: usize,
}

/// One sequence of a job: its rows, KV cache (`slots` positions) and adapter.
struct Seq<'k> {
    span: Span,
    slots: usize,
    kv: &'k mut [f32],
    adapter: Option<&'k dyn Adapter>,
}

/// The rows that share one adapter (Punica's SGMV segment) and its LoRAs,
/// `loras[layer][proj as usize]`.
struct Group<'k> {
    adapter: &'k dyn Adapter,
    rows: Vec<usize>,
    loras: Vec<[Option<Lora<'k>>; PROJS.len()]>,
}

const PROJS: [Proj; 7] = [
    Proj::Q,
    Proj::K,
    Proj::V,
    Proj::O,
    Proj::Gate,
    Proj::Up,
    Proj::Down,
];

/// Query rows per attention task.
const TCHUNK: usize = 16;

/// Names the batch row in a per-row error.
fn in_row(i: usize, e: Error) -> Error {
    match e {
        Error::Input(m) => Error::Input(format!("row {i}: {m}")),
        Error::Kv(m) => Error::Kv(format!("row {i}: {m}")),
        Error::Adapter(m) => Error::Adapter(format!("row {i}: {m}")),
        e => e,
    }
}

impl<'a> Llama<'a> {
    /// Builds the model over a packed region (see [`crate::formats::pack::pack_gguf_llama`]),
    /// using all available cores.
    pub fn from_region(table: &'a TensorTable, bytes: &'a [u8]) -> Result<Llama<'a>> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self::from_region_with(table, bytes, Arc::new(Exec::new(threads)))
    }

    pub fn from_region_with(
        table: &'a TensorTable,
        bytes: &'a [u8],
        exec: Arc<Exec>,
    ) -> Result<Llama<'a>> {
        let cfg = LlamaConfig::from_meta(table)?;
        let reg = Region::new(table, bytes)?;
        let (d, kvd, ff) = (cfg.d_model, cfg.kv_dim(), cfg.d_ff);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            layers.push(Layer {
                attn_norm: reg.f32s(&n("attn_norm"), &[d])?,
                qkv: Stacked::load(
                    &reg,
                    &n("attn_qkv"),
                    &[(&n("attn_q"), d), (&n("attn_k"), kvd), (&n("attn_v"), kvd)],
                    d,
                )?,
                wo: QMat::from_region(&reg, &n("attn_output"), d, d)?,
                ffn_norm: reg.f32s(&n("ffn_norm"), &[d])?,
                gate_up: Stacked::load(
                    &reg,
                    &n("ffn_gateup"),
                    &[(&n("ffn_gate"), ff), (&n("ffn_up"), ff)],
                    d,
                )?,
                w_down: QMat::from_region(&reg, &n("ffn_down"), d, ff)?,
            });
        }
        let embd = QMat::from_region(&reg, "token_embd.weight", cfg.vocab, d)?;
        let lm_head = match table.get("output.weight") {
            Ok(_) => QMat::from_region(&reg, "output.weight", cfg.vocab, d)?,
            Err(_) => embd,
        };
        let out_norm = reg.f32s("output_norm.weight", &[d])?;
        Ok(Llama {
            cfg,
            scratch: Default::default(),
            layers,
            embd,
            out_norm,
            lm_head,
            exec,
        })
    }

    pub fn exec(&self) -> &Arc<Exec> {
        &self.exec
    }
    pub fn set_exec(&mut self, exec: Arc<Exec>) {
        self.exec = exec;
    }

    /// Token positions the buffer can hold.
    pub fn kv_capacity(&self, kv: &[u8]) -> usize {
        kv.len() / self.cfg.kv_bytes_per_token()
    }

    /// Processes a prompt from position 0; logits of the last token.
    pub fn prefill(&self, tokens: &[u32], kv: &mut [u8]) -> Result<ForwardOut> {
        self.forward(Input::Tokens(tokens), 0, kv, &ForwardOpts::default())
    }

    /// One token at position `pos` (positions `< pos` must already be in `kv`).
    pub fn decode_step(&self, token: u32, pos: usize, kv: &mut [u8]) -> Result<ForwardOut> {
        self.forward(Input::Tokens(&[token]), pos, kv, &ForwardOpts::default())
    }

    /// General job: `n` inputs at positions `pos0..pos0+n`.
    pub fn forward(
        &self,
        input: Input,
        pos0: usize,
        kv: &mut [u8],
        opts: &ForwardOpts,
    ) -> Result<ForwardOut> {
        let c = &self.cfg;
        let d = c.d_model;
        let mut x = self.embed(input)?;
        let n = x.len() / d;
        if n == 0 {
            return Err(Error::Input("empty input".into()));
        }
        let (kv, slots) = self.kv_view(kv, pos0, n)?;
        let n_layers = opts.layers.map_or(c.n_layer, |l| l.clamp(1, c.n_layer));
        let mut seq = [Seq {
            span: Span { t0: 0, n, pos0 },
            slots,
            kv,
            adapter: opts.adapter,
        }];
        let groups = self.lora_groups(&seq, n_layers).map_err(|(_, e)| e)?;
        self.run_layers(&mut x, &mut seq, &groups, n_layers)?;

        rms_norm(&x.clone(), self.out_norm, c.rms_eps, &mut x);
        let last = x[(n - 1) * d..].to_vec();
        let logits = match opts.logits {
            Logits::None => None,
            Logits::Last => Some(self.lm_head_logits(&last, 1)),
            Logits::All => Some(self.lm_head_logits(&x, n)),
        };
        Ok(ForwardOut {
            hidden_last: last,
            hidden_all: opts.all_hidden.then_some(x),
            logits,
        })
    }

    /// One decode step of many independent sessions together: row `i`
    /// feeds its `token` at `pos` into its own `kv`, with its own adapter.
    /// The base matmuls and the LM head run once over all rows (one
    /// activation row per session), so the weights stream from memory once
    /// per step for the whole batch; each LoRA runs only on the rows of its
    /// adapter. Returns each row's logits (`[vocab]`), in row order.
    ///
    /// Row `i` gets bitwise the logits and KV writes of
    /// `forward(Input::Tokens(&[token]), pos, kv, &ForwardOpts { adapter, ..Default::default() })`
    /// alone (every layer runs: no early exit). All rows are checked
    /// (token, KV capacity and alignment, adapter shapes) before any KV
    /// buffer is written: a bad row fails the call, naming the row, and
    /// leaves every cache untouched. No rows: no logits.
    pub fn decode_batch(&self, rows: &mut [BatchRow<'_>]) -> Result<Vec<Vec<f32>>> {
        let tokens: Vec<u32> = rows.iter().map(|r| r.token).collect();
        let mut seqs: Vec<SeqRow<'_>> = rows
            .iter_mut()
            .zip(&tokens)
            .map(|(r, t)| SeqRow {
                tokens: std::slice::from_ref(t),
                pos: r.pos,
                kv: &mut *r.kv,
                adapter: r.adapter,
            })
            .collect();
        self.forward_batch(&mut seqs)
    }

    /// One step of many independent sessions together, each of any number
    /// of tokens (prompts and decode steps mixed): row `i` feeds `tokens`
    /// at `pos..` into its own `kv` with its own adapter, and gets bitwise
    /// the last-position logits and KV writes of `forward` alone, as
    /// [`Llama::decode_batch`] does for one token a row, with the same
    /// checks before any KV write.
    pub fn forward_batch(&self, rows: &mut [SeqRow<'_>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut tokens = Vec::new();
        let mut seqs = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter_mut().enumerate() {
            if r.tokens.is_empty() {
                return Err(Error::Input(format!("row {i}: empty input")));
            }
            if let Some(t) = r.tokens.iter().find(|&&t| t as usize >= c.vocab) {
                return Err(Error::Input(format!(
                    "row {i}: token {t} >= vocab {}",
                    c.vocab
                )));
            }
            let n = r.tokens.len();
            let (kv, slots) = self.kv_view(r.kv, r.pos, n).map_err(|e| in_row(i, e))?;
            seqs.push(Seq {
                span: Span {
                    t0: tokens.len(),
                    n,
                    pos0: r.pos,
                },
                slots,
                kv,
                adapter: r.adapter,
            });
            tokens.extend_from_slice(r.tokens);
        }
        let groups = self
            .lora_groups(&seqs, c.n_layer)
            .map_err(|(i, e)| in_row(i, e))?;
        let mut x = self.embed(Input::Tokens(&tokens))?;
        self.run_layers(&mut x, &mut seqs, &groups, c.n_layer)?;
        rms_norm(&x.clone(), self.out_norm, c.rms_eps, &mut x);
        let d = c.d_model;
        let last: Vec<f32> = seqs
            .iter()
            .flat_map(|s| &x[(s.span.t0 + s.span.n - 1) * d..][..d])
            .copied()
            .collect();
        let logits = self.lm_head_logits(&last, seqs.len());
        Ok(logits.chunks_exact(c.vocab).map(<[f32]>::to_vec).collect())
    }

    /// The final-norm hidden states (`[n, d_model]`) of many jobs'
    /// inputs at once, each from position 0 with its own adapter and exit
    /// layer: what a classifier or an embedding on the backbone pools.
    /// Rows that exit at the same layer run through it together (the base
    /// weights read once for all of them), so row `i` gets bitwise the
    /// `hidden_all` of `forward(input, 0, kv, &ForwardOpts { all_hidden:
    /// true, logits: Logits::None, adapter, layers })` alone. A bad row
    /// fails the call, naming it; the caches are scratch, so what the
    /// other rows wrote does not matter.
    pub fn hidden_batch(&self, rows: &mut [HiddenRow<'_>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let d = c.d_model;
        let depth = |r: &HiddenRow<'_>| r.layers.map_or(c.n_layer, |l| l.clamp(1, c.n_layer));
        let mut depths: Vec<usize> = rows.iter().map(depth).collect();
        depths.sort_unstable();
        depths.dedup();
        let mut out = vec![Vec::new(); rows.len()];
        for n_layers in depths {
            let mut x = Vec::new();
            let mut seqs = Vec::new();
            let mut index = Vec::new();
            for (i, r) in rows
                .iter_mut()
                .enumerate()
                .filter(|(_, r)| depth(r) == n_layers)
            {
                let e = self.embed(r.input).map_err(|e| in_row(i, e))?;
                let n = e.len() / d;
                if n == 0 {
                    return Err(Error::Input(format!("row {i}: empty input")));
                }
                let (kv, slots) = self.kv_view(r.kv, 0, n).map_err(|e| in_row(i, e))?;
                seqs.push(Seq {
                    span: Span {
                        t0: x.len() / d,
                        n,
                        pos0: 0,
                    },
                    slots,
                    kv,
                    adapter: r.adapter,
                });
                x.extend(e);
                index.push(i);
            }
            let groups = self
                .lora_groups(&seqs, n_layers)
                .map_err(|(s, e)| in_row(index[s], e))?;
            self.run_layers(&mut x, &mut seqs, &groups, n_layers)?;
            rms_norm(&x.clone(), self.out_norm, c.rms_eps, &mut x);
            for (s, i) in seqs.iter().zip(index) {
                out[i] = x[s.span.t0 * d..(s.span.t0 + s.span.n) * d].to_vec();
            }
        }
        Ok(out)
    }

    /// `kv` as f32, checked to hold positions `pos0..pos0 + n`; and its slots.
    fn kv_view<'k>(
        &self,
        kv: &'k mut [u8],
        pos0: usize,
        n: usize,
    ) -> Result<(&'k mut [f32], usize)> {
        let slots = self.kv_capacity(kv);
        let end = pos0
            .checked_add(n)
            .ok_or_else(|| Error::Kv("position overflow".into()))?;
        if end > slots {
            return Err(Error::Kv(format!(
                "positions up to {end} but buffer holds {slots}"
            )));
        }
        let kvf = bytemuck::try_cast_slice_mut(&mut kv[..slots * self.cfg.kv_bytes_per_token()])
            .map_err(|_| Error::Kv("buffer must be 4-byte aligned".into()))?;
        Ok((kvf, slots))
    }

    /// Groups the sequences' rows by adapter and resolves its LoRAs for the
    /// first `n_layers` layers, shape-checked before any KV write (the
    /// error names the first sequence of the bad adapter).
    fn lora_groups<'k>(
        &self,
        seqs: &[Seq<'k>],
        n_layers: usize,
    ) -> std::result::Result<Vec<Group<'k>>, (usize, Error)> {
        let mut groups: Vec<Group<'k>> = Vec::new();
        for (si, s) in seqs.iter().enumerate() {
            let Some(a) = s.adapter else { continue };
            let rows = s.span.t0..s.span.t0 + s.span.n;
            // Same object of the same type (data and vtable pointers): a
            // duplicated vtable can only split a group, never mix adapters.
            if let Some(g) = groups.iter_mut().find(|g| std::ptr::eq(g.adapter, a)) {
                g.rows.extend(rows);
                continue;
            }
            let loras = (0..n_layers)
                .map(|li| {
                    let mut ls = [None; PROJS.len()];
                    for p in PROJS {
                        if let Some(l) = a.lora(li, p) {
                            let (i, o) = self.cfg.proj_dims(p);
                            l.check(i, o)?;
                            ls[p as usize] = Some(l);
                        }
                    }
                    Ok(ls)
                })
                .collect::<Result<Vec<_>>>()
                .map_err(|e| (si, e))?;
            groups.push(Group {
                adapter: a,
                rows: rows.collect(),
                loras,
            });
        }
        Ok(groups)
    }

    /// The first `n_layers` decoder layers over `x` (`[n, d]`: the rows of
    /// all `seqs`, in order), each sequence at its own positions in its own
    /// KV cache, each LoRA group on its own rows; leaves the residual stream
    /// (before the final norm) in `x`. `forward` runs one sequence of `n`
    /// tokens through it, `decode_batch` `n` sequences of one token, and
    /// they agree bitwise: every step is per row (int8 activations are
    /// quantized per row and 32-block; a GEMM tile accumulates each token's
    /// dots in the same order whatever the number of tokens).
    fn run_layers(
        &self,
        x: &mut [f32],
        seqs: &mut [Seq],
        groups: &[Group],
        n_layers: usize,
    ) -> Result<()> {
        let c = &self.cfg;
        let (d, kvd, ff) = (c.d_model, c.kv_dim(), c.d_ff);
        let n = x.len() / d;
        let exec = &*self.exec;
        let isa = exec.isa;
        let spans: Vec<Span> = seqs.iter().map(|s| s.span).collect();
        debug_assert!(spans
            .iter()
            .scan(0, |t, s| {
                let ok = s.t0 == *t;
                *t += s.n;
                Some(ok)
            })
            .all(|ok| ok));
        // Per row: its RoPE angles.
        let half = c.head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for s in &spans {
            let (cs, sn) = c.rope_tables(s.pos0, s.n);
            cos.extend(cs);
            sin.extend(sn);
        }
        // Attention work: chunks of query rows of one sequence.
        let units: Vec<(usize, usize)> = spans
            .iter()
            .enumerate()
            .flat_map(|(si, s)| (0..s.n.div_ceil(TCHUNK)).map(move |tc| (si, tc)))
            .collect();

        // Reuse activation buffers across jobs: fresh multi-MB allocations
        // cost page faults on every prefill. Concurrent jobs just allocate.
        let mut sc = self
            .scratch
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default();
        let Scratch {
            act,
            h,
            qkv,
            att,
            o,
            gu,
        } = &mut sc;
        let wq = d + 2 * kvd;
        for (buf, len) in [
            (&mut *h, n * d),
            (&mut *qkv, n * wq),
            (&mut *att, n * d),
            (&mut *o, n * d),
            (&mut *gu, n * 2 * ff),
        ] {
            buf.clear();
            buf.resize(len, 0.0);
        }
        let (h, qkv, att, o, gu) = (
            &mut h[..],
            &mut qkv[..],
            &mut att[..],
            &mut o[..],
            &mut gu[..],
        );

        // Row passes between the matmuls run over token ranges in parallel
        // (inline for one token), each task on its own rows of the buffers.
        // x += o (pending residual), h = rms_norm(x) * w, act = q8(h).
        let norm_quant =
            |act: &mut ActQ8, x: &mut [f32], h: &mut [f32], o: &[f32], w: &[f32], add_o: bool| {
                let rows = (Rows::new(x, d), Rows::new(h, d), ActRows::new(act, n, d));
                exec.par_rows_mut(n, rows, &|t, (xr, hr, ar)| {
                    if add_o {
                        xr.iter_mut()
                            .zip(&o[t * d..][..d])
                            .for_each(|(a, b)| *a += b);
                    }
                    rms_norm_row(xr, w, c.rms_eps, hr);
                    ar.quantize(isa, hr);
                });
            };

        for (li, l) in self.layers[..n_layers].iter().enumerate() {
            norm_quant(act, x, h, o, l.attn_norm, li > 0);
            l.qkv.matmul(exec, act, qkv);
            let qkv_parts = [(Proj::Q, 0, d), (Proj::K, d, kvd), (Proj::V, d + kvd, kvd)];
            self.apply_loras(groups, li, &qkv_parts, h, d, d, qkv, wq)?;
            let mut kv: Vec<(&mut [f32], &mut [f32])> = seqs
                .iter_mut()
                .map(|s| kv_layer(s.kv, li, s.slots, kvd))
                .collect();
            // Row t's k and v cache slots: a sequence's rows are consecutive
            // and at consecutive positions (`pos0 + n <= slots` was checked).
            let mut slots: Vec<(&mut [f32], &mut [f32])> = Vec::with_capacity(n);
            for ((k, v), s) in kv.iter_mut().zip(&spans) {
                let w = s.pos0 * kvd..(s.pos0 + s.n) * kvd;
                slots.extend(k[w.clone()].chunks_mut(kvd).zip(v[w].chunks_mut(kvd)));
            }
            // RoPE on q and k in place; k and v into the cache.
            exec.par_rows_mut(
                n,
                (Rows::new(&mut *qkv, wq), &mut slots[..]),
                &|t, (r, (kd, vd))| {
                    let (cs, sn) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                    rope_row(&mut r[..d + kvd], c.head_dim, cs, sn);
                    kd.copy_from_slice(&r[d..d + kvd]);
                    vd.copy_from_slice(&r[d + kvd..]);
                },
            );
            self.attention(qkv, wq, &kv, &spans, &units, att);
            let att: &[f32] = att;
            exec.par_rows_mut(n, ActRows::new(act, n, d), &|t, ar| {
                ar.quantize(isa, &att[t * d..(t + 1) * d])
            });
            exec.matmul(&l.wo, act, o);
            self.apply_loras(groups, li, &[(Proj::O, 0, d)], att, d, d, o, d)?;

            norm_quant(act, x, h, o, l.ffn_norm, true);
            l.gate_up.matmul(exec, act, gu);
            let gu_parts = [(Proj::Gate, 0, ff), (Proj::Up, ff, ff)];
            self.apply_loras(groups, li, &gu_parts, h, d, d, gu, 2 * ff)?;
            let rows = (Rows::new(&mut *gu, 2 * ff), ActRows::new(act, n, ff));
            exec.par_rows_mut(n, rows, &|_, (r, ar)| {
                let (g, u) = r.split_at_mut(ff);
                kernels::silu_mul(isa, g, u);
                ar.quantize(isa, g);
            });
            exec.matmul(&l.w_down, act, o);
            self.apply_loras(groups, li, &[(Proj::Down, 0, d)], gu, 2 * ff, ff, o, d)?;
        }
        x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
        if let Ok(mut s) = self.scratch.lock() {
            s.push(sc);
        }
        Ok(())
    }

    /// Adds layer `li`'s LoRAs of `parts` (projection, first column in
    /// `y`, width) on input `x` (`in_dim` wide) to each group's rows of `y`.
    /// One group (always so for `forward`) runs in place; several run
    /// side by side on the pool, each computing its deltas apart, which are
    /// then added here (the same single rounding as adding in place).
    fn apply_loras(
        &self,
        groups: &[Group],
        li: usize,
        parts: &[(Proj, usize, usize)],
        x: &[f32],
        ldx: usize,
        in_dim: usize,
        y: &mut [f32],
        ldy: usize,
    ) -> Result<()> {
        if groups.len() < 2 {
            for g in groups {
                for &(p, c0, od) in parts {
                    if let Some(lr) = &g.loras[li][p as usize] {
                        apply_lora_rows(lr, x, ldx, &g.rows, in_dim, &mut y[c0..], ldy, od)?;
                    }
                }
            }
            return Ok(());
        }
        let jobs: Vec<(&Group, usize, usize, Lora)> = groups
            .iter()
            .flat_map(|g| {
                parts
                    .iter()
                    .filter_map(move |&(p, c0, od)| g.loras[li][p as usize].map(|l| (g, c0, od, l)))
            })
            .collect();
        let deltas: Vec<Mutex<Result<Vec<f32>>>> =
            jobs.iter().map(|_| Mutex::new(Ok(Vec::new()))).collect();
        self.exec.pool.run(jobs.len(), &|i| {
            let (g, _, od, l) = &jobs[i];
            let r = lora_deltas(l, x, ldx, &g.rows, in_dim, *od);
            *deltas[i].lock().unwrap_or_else(|e| e.into_inner()) = r;
        });
        for ((g, c0, od, _), dl) in jobs.iter().zip(deltas) {
            let dl = dl.into_inner().unwrap_or_else(|e| e.into_inner())?;
            for (&t, dr) in g.rows.iter().zip(dl.chunks_exact(*od)) {
                let yr = &mut y[t * ldy + c0..][..*od];
                yr.iter_mut().zip(dr).for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    /// LM head (tied embedding) on final-norm hidden states `[n, d]`.
    pub fn lm_head_logits(&self, hidden: &[f32], n: usize) -> Vec<f32> {
        let mut act = ActQ8::default();
        act.quantize(hidden, n, self.cfg.d_model);
        let mut out = vec![0f32; n * self.cfg.vocab];
        self.exec.matmul(&self.lm_head, &act, &mut out);
        out
    }

    fn embed(&self, input: Input) -> Result<Vec<f32>> {
        let d = self.cfg.d_model;
        match input {
            Input::Tokens(t) => {
                let mut x = vec![0f32; t.len() * d];
                for (i, &id) in t.iter().enumerate() {
                    if id as usize >= self.cfg.vocab {
                        return Err(Error::Input(format!(
                            "token {id} >= vocab {}",
                            self.cfg.vocab
                        )));
                    }
                    self.embd.row_f32(id as usize, &mut x[i * d..(i + 1) * d]);
                }
                Ok(x)
            }
            Input::Embeddings(e) => {
                if e.len() % d != 0 {
                    return Err(Error::Input(format!(
                        "embeddings len {} not a multiple of {d}",
                        e.len()
                    )));
                }
                if e.iter().any(|v| !v.is_finite()) {
                    return Err(Error::Input("non-finite embedding".into()));
                }
                Ok(e.to_vec())
            }
        }
    }

    /// Causal GQA attention: row `t0 + t` of each sequence (`spans`, with
    /// its layer cache in `kv`) attends over its slots `0..=pos0 + t`. `q`
    /// row r starts at `r * ldq`; `units` are (sequence, chunk of TCHUNK rows).
    fn attention(
        &self,
        q: &[f32],
        ldq: usize,
        kv: &[(&mut [f32], &mut [f32])],
        spans: &[Span],
        units: &[(usize, usize)],
        out: &mut [f32],
    ) {
        let c = &self.cfg;
        let (hd, kvd) = (c.head_dim, c.kv_dim());
        let group = c.n_head / c.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let isa = self.exec.isa;
        // Tasks are (unit, head): unit g's rows, head h's columns of `out`.
        let rows: Vec<usize> = units
            .iter()
            .map(|&(si, tc)| (spans[si].n - tc * TCHUNK).min(TCHUNK))
            .collect();
        self.exec
            .par_blocks_mut(out, c.n_head, hd, &rows, &|task, oh| {
                let (h, (si, tc)) = (task % c.n_head, units[task / c.n_head]);
                let (s, (kc, vc)) = (spans[si], &kv[si]);
                let g = h / group;
                let mut sc = vec![0f32; s.pos0 + s.n];
                for (t, oh) in (tc * TCHUNK..).zip(oh.iter_mut()) {
                    let (row, len) = (s.t0 + t, s.pos0 + t + 1);
                    kernels::attend_row(
                        isa,
                        &q[row * ldq + h * hd..][..hd],
                        &kc[g * hd..],
                        &vc[g * hd..],
                        kvd,
                        len,
                        scale,
                        &mut sc,
                        oh,
                    );
                }
            });
    }
}

fn kv_layer(kv: &mut [f32], l: usize, slots: usize, kvd: usize) -> (&mut [f32], &mut [f32]) {
    let per = slots * kvd;
    let (k, v) = kv[2 * l * per..2 * (l + 1) * per].split_at_mut(per);
    (k, v)
}

/// GGUF ("normal") RoPE on one token's heads (`x` = whole heads of
/// `hd`): rotates adjacent pairs (x[2i], x[2i+1]); the GGUF converter
/// permuted q/k rows so this equals HF's half-split rotation.
fn rope_row(x: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
    for v in x.chunks_exact_mut(hd) {
        for (i, (&c, &s)) in cos.iter().zip(sin).enumerate() {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            v[2 * i] = a * c - b * s;
            v[2 * i + 1] = a * s + b * c;
        }
    }
}
