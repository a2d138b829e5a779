//! LLaMA-architecture decoder (SmolLM2) on packed integer weights.
//!
//! The KV cache is a caller-provided byte buffer (later: NPU memory owned by
//! an app context), laid out `[layer][k|v][slot][n_kv_head * head_dim]` f32,
//! so one decode step is one self-contained job over `(weights, kv)`.

use crate::adapter::{Adapter, Proj};
use crate::error::{Error, Result};
use crate::kernels;
use crate::ops::{apply_lora, rms_norm, rms_norm_row, ActRows, Exec, QMat};
use crate::quant::ActQ8;
use crate::tensor::{Region, TensorTable};
use std::sync::Arc;

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
                let theta = p * (self.rope_base as f64).powf(-2.0 * i as f64 / self.head_dim as f64);
                cos[t * half + i] = theta.cos() as f32;
                sin[t * half + i] = theta.sin() as f32;
            }
        }
        (cos, sin)
    }

    pub(crate) fn to_meta(&self, t: &mut TensorTable) {
        use crate::tensor::MetaValue::*;
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
        if c.n_head == 0
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
/// an [`crate::adapter::InputProjection`] for non-text modalities).
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

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// Safety: tasks write disjoint index ranges (documented at each use).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl<'a> Llama<'a> {
    /// Builds the model over a packed region (see [`crate::pack::pack_gguf_llama`]),
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
        let (d, kvd, ff) = (c.d_model, c.kv_dim(), c.d_ff);
        let mut x = self.embed(input)?;
        let n = x.len() / d;
        if n == 0 {
            return Err(Error::Input("empty input".into()));
        }
        let slots = self.kv_capacity(kv);
        let end = pos0
            .checked_add(n)
            .ok_or_else(|| Error::Kv("position overflow".into()))?;
        if end > slots {
            return Err(Error::Kv(format!(
                "positions up to {end} but buffer holds {slots}"
            )));
        }
        let kvf: &mut [f32] =
            bytemuck::try_cast_slice_mut(&mut kv[..slots * c.kv_bytes_per_token()])
                .map_err(|_| Error::Kv("buffer must be 4-byte aligned".into()))?;

        let exec = &*self.exec;
        let isa = exec.isa;
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
        let (cos, sin) = c.rope_tables(pos0, n);
        let half = c.head_dim / 2;

        // Row passes between the matmuls run over token ranges in parallel
        // (inline for one token); each writes only its own rows, through
        // raw pointers since the buffers are shared by the tasks.
        let (xp, hp, qkvp, op) = (
            SyncPtr(x.as_mut_ptr()),
            SyncPtr(h.as_mut_ptr()),
            SyncPtr(qkv.as_mut_ptr()),
            SyncPtr(o.as_mut_ptr()),
        );
        let gup = SyncPtr(gu.as_mut_ptr());
        // x += o (pending residual), h = rms_norm(x) * w, act = q8(h).
        let norm_quant = |act: &mut ActQ8, w: &[f32], add_o: bool| {
            let rows = ActRows::new(act, n, d);
            exec.par_tokens(n, &|t0, t1| {
                let (xp, hp, op) = (xp, hp, op);
                for t in t0..t1 {
                    // Safety: row t of x, h, o belongs to this task only.
                    let (xr, hr, or) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(xp.0.add(t * d), d),
                            std::slice::from_raw_parts_mut(hp.0.add(t * d), d),
                            std::slice::from_raw_parts(op.0.add(t * d), d),
                        )
                    };
                    if add_o {
                        xr.iter_mut().zip(or).for_each(|(a, b)| *a += b);
                    }
                    rms_norm_row(xr, w, c.rms_eps, hr);
                    // Safety: row t is this task's.
                    unsafe { rows.row(isa, t, hr) };
                }
            });
        };

        let n_layers = opts.layers.map_or(c.n_layer, |l| l.clamp(1, c.n_layer));
        for (li, l) in self.layers[..n_layers].iter().enumerate() {
            let lora = |p: Proj| opts.adapter.and_then(|a| a.lora(li, p));
            norm_quant(act, l.attn_norm, li > 0);
            l.qkv.matmul(exec, act, qkv);
            for (p, c0, od) in [(Proj::Q, 0, d), (Proj::K, d, kvd), (Proj::V, d + kvd, kvd)] {
                if let Some(lr) = lora(p) {
                    apply_lora(&lr, h, d, n, d, &mut qkv[c0..], wq, od)?;
                }
            }
            let (kc, vc) = kv_layer(kvf, li, slots, kvd);
            let (kcp, vcp) = (SyncPtr(kc.as_mut_ptr()), SyncPtr(vc.as_mut_ptr()));
            // RoPE on q and k in place; k and v into the cache.
            exec.par_tokens(n, &|t0, t1| {
                let (qkvp, kcp, vcp) = (qkvp, kcp, vcp);
                for t in t0..t1 {
                    // Safety: row t of qkv and cache slot pos0 + t are this task's.
                    let (r, kd, vd) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(qkvp.0.add(t * wq), wq),
                            std::slice::from_raw_parts_mut(kcp.0.add((pos0 + t) * kvd), kvd),
                            std::slice::from_raw_parts_mut(vcp.0.add((pos0 + t) * kvd), kvd),
                        )
                    };
                    let (cs, sn) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                    rope_row(&mut r[..d + kvd], c.head_dim, cs, sn);
                    kd.copy_from_slice(&r[d..d + kvd]);
                    vd.copy_from_slice(&r[d + kvd..]);
                }
            });
            self.attention(qkv, wq, kc, vc, pos0, n, att);
            {
                let rows = ActRows::new(act, n, d);
                let att: &[f32] = att;
                exec.par_tokens(n, &|t0, t1| {
                    for t in t0..t1 {
                        // Safety: row t is this task's.
                        unsafe { rows.row(isa, t, &att[t * d..(t + 1) * d]) };
                    }
                });
            }
            exec.matmul(&l.wo, act, o);
            if let Some(lr) = lora(Proj::O) {
                apply_lora(&lr, att, d, n, d, o, d, d)?;
            }

            norm_quant(act, l.ffn_norm, true);
            l.gate_up.matmul(exec, act, gu);
            if let Some(lr) = lora(Proj::Gate) {
                apply_lora(&lr, h, d, n, d, gu, 2 * ff, ff)?;
            }
            if let Some(lr) = lora(Proj::Up) {
                apply_lora(&lr, h, d, n, d, &mut gu[ff..], 2 * ff, ff)?;
            }
            {
                let rows = ActRows::new(act, n, ff);
                exec.par_tokens(n, &|t0, t1| {
                    let gup = gup;
                    for t in t0..t1 {
                        // Safety: row t of gu is this task's.
                        let r = unsafe {
                            std::slice::from_raw_parts_mut(gup.0.add(t * 2 * ff), 2 * ff)
                        };
                        let (g, u) = r.split_at_mut(ff);
                        kernels::silu_mul(isa, g, u);
                        // Safety: row t is this task's.
                        unsafe { rows.row(isa, t, g) };
                    }
                });
            }
            exec.matmul(&l.w_down, act, o);
            if let Some(lr) = lora(Proj::Down) {
                apply_lora(&lr, gu, 2 * ff, n, ff, o, d, d)?;
            }
        }
        x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
        if let Ok(mut s) = self.scratch.lock() {
            s.push(sc);
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

    /// Causal GQA attention for tokens at `pos0..pos0+n` over cache slots `0..pos0+n`.
    /// `q` row t starts at `t * ldq`.
    fn attention(
        &self,
        q: &[f32],
        ldq: usize,
        kc: &[f32],
        vc: &[f32],
        pos0: usize,
        n: usize,
        out: &mut [f32],
    ) {
        let c = &self.cfg;
        let (hd, kvd, d) = (c.head_dim, c.kv_dim(), c.d_model);
        let group = c.n_head / c.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        const TCHUNK: usize = 16;
        let tchunks = n.div_ceil(TCHUNK);
        let optr = SyncPtr(out.as_mut_ptr());
        let isa = self.exec.isa;
        self.exec.pool.run(c.n_head * tchunks, &|task| {
            let optr = optr;
            let (h, tc) = (task % c.n_head, task / c.n_head);
            let g = h / group;
            let mut sc = vec![0f32; pos0 + n];
            for t in tc * TCHUNK..((tc + 1) * TCHUNK).min(n) {
                let len = pos0 + t + 1;
                // Safety: (t, h) pairs are disjoint across tasks; slice in bounds of out [n, d].
                let oh = unsafe { std::slice::from_raw_parts_mut(optr.0.add(t * d + h * hd), hd) };
                kernels::attend_row(
                    isa,
                    &q[t * ldq + h * hd..][..hd],
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
