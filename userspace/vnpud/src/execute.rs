//! One job, on the foundation model: what each op reads and writes. A bad
//! job gets an errno for its app; nothing here panics on job contents.
//!
//! Errnos: `EBADMSG` for an input or state not in the job formats of
//! `m4npu_format::job_io` (or tokens outside the vocabulary), `EOVERFLOW`
//! for an output range too small, `ENOSPC` for a full KV cache,
//! `EOPNOTSUPP` for what this device cannot do, `ENODEV` for a sub-model the
//! firmware lacks. `EINVAL` stays the driver's: a descriptor it refused.

use m4npu::hw::JobBuffers;
use m4npu::Op;
use m4npu_format::job_io::{put_f32s, GenerateOutput, Input, StateHeader, HEADER_BYTES, STATE_KV_OFFSET};
use nix::errno::Errno;
use vnpu_engine::{ForwardOpts, Logits};

use crate::foundation::Foundation;

/// Runs `op` on `b`; returns the output bytes.
pub fn run(model: &Foundation<'_>, op: Option<Op>, b: JobBuffers<'_>) -> Result<usize, Errno> {
    match op {
        Some(Op::Echo) => echo(b),
        // Adapters (task heads, LoRA, input projections) come with the
        // adapter runtime; until then a job with one is not supported.
        _ if b.adapter.is_some() => Err(Errno::EOPNOTSUPP),
        Some(Op::Embed) => embed(model, b),
        Some(Op::Generate) => generate(model, b),
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

/// Sentence embedding from the text encoder (mean-pooled, normalised).
fn embed(model: &Foundation<'_>, b: JobBuffers<'_>) -> Result<usize, Errno> {
    let bert = model.text_encoder.as_ref().ok_or(Errno::ENODEV)?;
    let ids = tokens(b.input)?;
    if ids.len() > bert.cfg.max_pos || ids.iter().any(|&t| t as usize >= bert.cfg.vocab) {
        return Err(Errno::EBADMSG);
    }
    let v = bert.embed(&ids).map_err(|_| Errno::EIO)?;
    put_f32s(b.output, &v).ok_or(Errno::EOVERFLOW)
}

/// One step of a generation session on the backbone: the input tokens go
/// into the KV cache in the state range after the session's `n_past`; the
/// output is the greedy next token and, room permitting, the logits.
fn generate(model: &Foundation<'_>, b: JobBuffers<'_>) -> Result<usize, Errno> {
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
    let opts = ForwardOpts { logits: Logits::Last, ..Default::default() };
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
