//! LLaMA-architecture decoder (SmolLM2) on packed integer weights.
//!
//! The KV cache is a caller-provided byte buffer (later: NPU memory owned by
//! an app context), laid out `[layer][k|v][slot][n_kv_head * head_dim]` f32,
//! so one decode step is one self-contained job over `(weights, kv)`.

use crate::compute::norm::rms_norm;
use crate::compute::quant::ActQ8;
use crate::compute::{Exec, QMat};
use crate::error::{Error, Result};
use crate::formats::tensor::{Region, TensorTable};
use crate::models::adapter::{Adapter, Lora, Proj};
use std::sync::Arc;

mod config;
mod job;
mod layers;

pub use config::LlamaConfig;
pub use job::{BatchRow, ForwardOpts, ForwardOut, HiddenRow, Input, Logits, SeqRow};
use layers::{Layer, Scratch, Stacked};

pub struct Llama<'a> {
    pub cfg: LlamaConfig,
    scratch: std::sync::Mutex<Vec<Scratch>>,
    layers: Vec<Layer<'a>>,
    embd: QMat<'a>,
    out_norm: &'a [f32],
    lm_head: QMat<'a>,
    exec: Arc<Exec>,
    /// Tokens a prompt is processed in at a time (see `forward`).
    prefill_chunk: usize,
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

/// Prompt tokens per pass through the layers: the activations of 128
/// tokens (~3 MB for SmolLM2) stay in cache between the layers. A 512-token
/// prompt measured ~4% faster in chunks of 128 than in one pass (Zen 5, 2
/// threads); 256 alike, 64 slower (each pass streams all the weights).
const PREFILL_CHUNK: usize = 128;

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
            prefill_chunk: PREFILL_CHUNK,
        })
    }

    pub fn exec(&self) -> &Arc<Exec> {
        &self.exec
    }
    pub fn set_exec(&mut self, exec: Arc<Exec>) {
        self.exec = exec;
    }

    /// Tokens per pass of a long prompt (default 128; results do not
    /// depend on it, only speed does).
    pub fn set_prefill_chunk(&mut self, tokens: usize) {
        self.prefill_chunk = tokens.max(1);
    }

    /// Bytes one decode step at position `pos` reads from memory: every
    /// layer's weights, the LM head, one embedding row and the KV cache of
    /// positions `0..=pos` (the floor a memory-bound step cannot beat).
    pub fn decode_read_bytes(&self, pos: usize) -> usize {
        let layers: usize = self.layers.iter().map(|l| l.bytes()).sum();
        let embd_row = self.embd.bytes() / self.cfg.vocab;
        layers
            + self.lm_head.bytes()
            + embd_row
            + 4 * self.out_norm.len()
            + self.cfg.kv_bytes_per_token() * (pos + 1)
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
        // A long prompt runs in chunks, each through every layer before the
        // next (its K/V are in the cache by then): a chunk's activations
        // stay in cache between the layers. Every step is per row, so the
        // result is bitwise that of one pass (`tests::chunked_prefill_*`).
        let chunk = self.prefill_chunk.max(1);
        let mut t0 = 0;
        for xc in x.chunks_mut(chunk * d) {
            let m = xc.len() / d;
            let mut seq = [Seq {
                span: Span {
                    t0: 0,
                    n: m,
                    pos0: pos0 + t0,
                },
                slots,
                kv: &mut *kv,
                adapter: opts.adapter,
            }];
            let groups = self.lora_groups(&seq, n_layers).map_err(|(_, e)| e)?;
            self.run_layers(xc, &mut seq, &groups, n_layers)?;
            t0 += m;
        }

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

    /// LM head (tied embedding) on final-norm hidden states `[n, d]`.
    pub fn lm_head_logits(&self, hidden: &[f32], n: usize) -> Vec<f32> {
        let mut act = ActQ8::default();
        act.quantize(hidden, n, self.cfg.d_model);
        let mut out = vec![0f32; n * self.cfg.vocab];
        self.exec.matmul(&self.lm_head, &act, &mut out);
        out
    }

    /// The token embedding rows (`[ids.len(), d_model]`) exactly as the
    /// forward looks them up: for inputs that put token embeddings next to
    /// other embeddings (feature rows and a caption) as
    /// [`Input::Embeddings`].
    pub fn token_embeddings(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.embed(Input::Tokens(ids))
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
}
