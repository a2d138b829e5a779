//! One job, on the foundation model: what each op reads and writes. A bad
//! job gets an errno for its app; nothing here panics on job contents.
//!
//! Errnos: `EBADMSG` for an input or state not in the job formats of
//! `m4npu_format::job_io` (or tokens outside the vocabulary), `EOVERFLOW`
//! for an output range too small, `ENOSPC` for a full KV cache,
//! `ENOEXEC` for an adapter this model cannot run (shapes, metadata),
//! `EOPNOTSUPP` for what this device cannot do, `ENODEV` for a sub-model the
//! firmware lacks. `EINVAL` stays the driver's: a descriptor it refused.

use m4npu::hw::JobBuffers;
use m4npu::Op;
use m4npu_format::adapter_meta::{AdapterTask, Pooling, SubModel};
use m4npu_format::job_io::{put_f32s, GenerateOutput, Input, StateHeader, HEADER_BYTES, STATE_KV_OFFSET};
use nix::errno::Errno;
use vnpu_engine::{ForwardOpts, Logits};

use crate::foundation::Foundation;
use crate::task::TaskAdapter;

/// Runs `op` on `b`, parsing its adapter if it has one; returns the output
/// bytes.
pub fn run(model: &Foundation<'_>, op: Option<Op>, b: JobBuffers<'_>) -> Result<usize, Errno> {
    if op == Some(Op::Echo) {
        return echo(b);
    }
    let adapter = match b.adapter {
        Some(blob) => Some(TaskAdapter::parse(blob, model).map_err(|_| Errno::ENOEXEC)?),
        None => None,
    };
    run_with(model, op, b, adapter.as_ref())
}

/// Runs `op` on `b` with `adapter`, the job's adapter already parsed (see
/// `adapter_cache`); returns the output bytes.
pub fn run_with(model: &Foundation<'_>, op: Option<Op>, b: JobBuffers<'_>, adapter: Option<&TaskAdapter<'_>>) -> Result<usize, Errno> {
    if op == Some(Op::Echo) {
        return echo(b);
    }
    match (op, adapter) {
        (Some(Op::Embed), None) => embed(model, b),
        (Some(Op::Embed), Some(a)) => {
            let mut v = pooled(model, a, b.input)?;
            normalize(&mut v);
            put_f32s(b.output, &v).ok_or(Errno::EOVERFLOW)
        }
        (Some(Op::Classify), Some(a)) => classify(model, a, b),
        (Some(Op::Generate), a) => generate(model, a, b),
        _ => Err(Errno::EOPNOTSUPP),
    }
}

fn echo(b: JobBuffers<'_>) -> Result<usize, Errno> {
    let dst = b.output.get_mut(..b.input.len()).ok_or(Errno::EOVERFLOW)?;
    dst.copy_from_slice(b.input);
    Ok(b.input.len())
}

fn tokens(input: &[u8]) -> Result<Vec<u32>, Errno> {
    match Input::decode(input) {
        Ok(Input::Tokens(t)) => Ok(t),
        // Feature inputs need an adapter's input projection.
        Ok(Input::Features { .. }) => Err(Errno::EOPNOTSUPP),
        Err(_) => Err(Errno::EBADMSG),
    }
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// The adapter's task head on the pooled hidden state: one logit per label.
fn classify(model: &Foundation<'_>, a: &TaskAdapter<'_>, b: JobBuffers<'_>) -> Result<usize, Errno> {
    if a.meta.task != AdapterTask::Classify {
        return Err(Errno::EOPNOTSUPP);
    }
    let head = a.head.as_ref().ok_or(Errno::ENOEXEC)?;
    let logits = head.apply(&pooled(model, a, b.input)?);
    put_f32s(b.output, &logits).ok_or(Errno::EOVERFLOW)
}

/// One vector for the whole input, through the adapter's sub-model: the
/// text encoder's sentence embedding, or the backbone's final hidden states
/// (with the adapter's LoRA, input projection and exit layer) pooled.
pub fn pooled(model: &Foundation<'_>, a: &TaskAdapter<'_>, input: &[u8]) -> Result<Vec<f32>, Errno> {
    let input = Input::decode(input).map_err(|_| Errno::EBADMSG)?;
    match a.meta.submodel {
        SubModel::TextEncoder => {
            let Input::Tokens(ids) = input else { return Err(Errno::EOPNOTSUPP) };
            sentence_embedding(model, &ids)
        }
        SubModel::Backbone => {
            let llama = model.backbone.as_ref().ok_or(Errno::ENODEV)?;
            let embedded;
            let (x, n) = match &input {
                Input::Tokens(ids) => {
                    if ids.iter().any(|&t| t as usize >= llama.cfg.vocab) {
                        return Err(Errno::EBADMSG);
                    }
                    (vnpu_engine::Input::Tokens(ids), ids.len())
                }
                Input::Features { dim, data } => {
                    let proj = a.input.as_ref().ok_or(Errno::EOPNOTSUPP)?;
                    if *dim != proj.in_dim || data.iter().any(|v| !v.is_finite()) {
                        return Err(Errno::EBADMSG);
                    }
                    embedded = proj.project(data).map_err(|_| Errno::EBADMSG)?;
                    (vnpu_engine::Input::Embeddings(&embedded), data.len() / dim)
                }
            };
            if n > llama.cfg.max_ctx {
                return Err(Errno::EBADMSG);
            }
            // Classification needs no cache beyond the job: a scratch one.
            let mut kv = vnpu_engine::AlignedBytes::zeroed(llama.cfg.kv_bytes(n));
            let mean = a.pooling() == Pooling::Mean;
            let out = llama.forward(x, 0, &mut kv, &a.forward_opts(Logits::None, mean)).map_err(|_| Errno::EBADMSG)?;
            Ok(match out.hidden_all {
                Some(h) if mean => {
                    let d = llama.cfg.d_model;
                    let mut p = vec![0f32; d];
                    h.chunks_exact(d).for_each(|r| p.iter_mut().zip(r).for_each(|(s, v)| *s += v));
                    p.iter_mut().for_each(|v| *v /= n as f32);
                    p
                }
                _ => out.hidden_last,
            })
        }
    }
}

/// The text encoder's sentence embedding (mean-pooled, normalised) of
/// token ids, checked against its vocabulary and length.
fn sentence_embedding(model: &Foundation<'_>, ids: &[u32]) -> Result<Vec<f32>, Errno> {
    let bert = model.text_encoder.as_ref().ok_or(Errno::ENODEV)?;
    if ids.len() > bert.cfg.max_pos || ids.iter().any(|&t| t as usize >= bert.cfg.vocab) {
        return Err(Errno::EBADMSG);
    }
    bert.embed(ids).map_err(|_| Errno::EIO)
}

fn embed(model: &Foundation<'_>, b: JobBuffers<'_>) -> Result<usize, Errno> {
    // A missing sub-model is reported before anything about the input.
    model.text_encoder.as_ref().ok_or(Errno::ENODEV)?;
    let v = sentence_embedding(model, &tokens(b.input)?)?;
    put_f32s(b.output, &v).ok_or(Errno::EOVERFLOW)
}

/// One step of a generation session on the backbone: the input tokens go
/// into the KV cache in the state range after the session's `n_past`; the
/// output is the greedy next token and, room permitting, the logits.
fn generate(model: &Foundation<'_>, adapter: Option<&TaskAdapter<'_>>, b: JobBuffers<'_>) -> Result<usize, Errno> {
    let llama = model.backbone.as_ref().ok_or(Errno::ENODEV)?;
    let state = b.state.ok_or(Errno::EBADMSG)?;
    let ids = tokens(b.input)?;
    if ids.iter().any(|&t| t as usize >= llama.cfg.vocab) {
        return Err(Errno::EBADMSG);
    }
    let header = StateHeader::decode(state).map_err(|_| Errno::EBADMSG)?;
    let n_past = header.n_past as usize;
    let kv = &mut state[STATE_KV_OFFSET..];
    if n_past + ids.len() > llama.kv_capacity(kv) {
        return Err(Errno::ENOSPC);
    }
    if b.output.len() < HEADER_BYTES {
        return Err(Errno::EOVERFLOW);
    }
    let opts = match adapter {
        // LoRA only: a generation runs every layer, whatever exit the
        // adapter was trained with for classification.
        Some(a) => ForwardOpts { layers: None, ..a.forward_opts(Logits::Last, false) },
        None => ForwardOpts { logits: Logits::Last, ..Default::default() },
    };
    let out = llama
        .forward(vnpu_engine::Input::Tokens(&ids), n_past, kv, &opts)
        // The one engine error left after the checks above: a misaligned KV cache.
        .map_err(|_| Errno::EBADMSG)?;
    let logits = out.logits.ok_or(Errno::EIO)?;
    let next = argmax(&logits);
    let n_past = n_past + ids.len();
    StateHeader { n_past: n_past as u32 }.encode_into(state).map_err(|_| Errno::EBADMSG)?;
    let room = (b.output.len() - HEADER_BYTES) / 4;
    let n_logits = if room >= logits.len() { logits.len() } else { 0 };
    let written = put_f32s(&mut b.output[HEADER_BYTES..], &logits[..n_logits]).unwrap_or(0);
    GenerateOutput { next_token: next, n_past: n_past as u32, n_logits: n_logits as u32 }
        .encode_into(b.output)
        .ok_or(Errno::EOVERFLOW)?;
    Ok(HEADER_BYTES + written)
}

/// Index of the largest value (the first of equals): the greedy token.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}
