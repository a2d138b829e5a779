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
use vnpu_engine::{Logits, SeqRow};

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
    run_job(model, 0, op, b, adapter)
}

/// As [`run_with`], for the driver's job `job` (its `HwJob::id`): a job
/// that runs again (the device died after it wrote its state) writes what
/// it wrote the first time, see [`StateHeader::last_job`]. Job 0 is none.
pub fn run_job(model: &Foundation<'_>, job: u64, op: Option<Op>, b: JobBuffers<'_>, adapter: Option<&TaskAdapter<'_>>) -> Result<usize, Errno> {
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
        (Some(Op::Generate), a) => generate(model, job, a, b),
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
    check_sentence(model, ids)?;
    let bert = model.text_encoder.as_ref().ok_or(Errno::ENODEV)?;
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
/// A batch of one: `forward_batch` of one row is `forward`, bit for bit.
fn generate(model: &Foundation<'_>, job: u64, adapter: Option<&TaskAdapter<'_>>, b: JobBuffers<'_>) -> Result<usize, Errno> {
    generate_batch_jobs(model, vec![(b, adapter, job)]).pop().unwrap_or(Err(Errno::EIO))
}

/// A GENERATE job checked against the backbone, between its checks and its
/// output.
struct Step<'b> {
    job: u64,
    ids: Vec<u32>,
    n_past: usize,
    state: &'b mut [u8],
    output: &'b mut [u8],
}

impl<'b> Step<'b> {
    fn check(llama: &vnpu_engine::Llama<'_>, job: u64, b: JobBuffers<'b>) -> Result<Self, Errno> {
        let state = b.state.ok_or(Errno::EBADMSG)?;
        let ids = tokens(b.input)?;
        if ids.iter().any(|&t| t as usize >= llama.cfg.vocab) {
            return Err(Errno::EBADMSG);
        }
        let header = StateHeader::decode(state).map_err(|_| Errno::EBADMSG)?;
        let n_past = if job != 0 && header.last_job == job {
            // A re-run: from where this job started the first time.
            (header.n_past as usize).checked_sub(ids.len()).ok_or(Errno::EBADMSG)?
        } else {
            header.n_past as usize
        };
        if n_past + ids.len() > llama.kv_capacity(&state[STATE_KV_OFFSET..]) {
            return Err(Errno::ENOSPC);
        }
        if b.output.len() < HEADER_BYTES {
            return Err(Errno::EOVERFLOW);
        }
        Ok(Step { job, ids, n_past, state, output: b.output })
    }

    /// Records the step in the state and writes the output.
    fn finish(self, logits: Vec<f32>) -> Result<usize, Errno> {
        let next = argmax(&logits);
        let n_past = self.n_past + self.ids.len();
        StateHeader { n_past: n_past as u32, last_job: self.job }.encode_into(self.state).map_err(|_| Errno::EBADMSG)?;
        let room = (self.output.len() - HEADER_BYTES) / 4;
        let n_logits = if room >= logits.len() { logits.len() } else { 0 };
        let written = put_f32s(&mut self.output[HEADER_BYTES..], &logits[..n_logits]).unwrap_or(0);
        GenerateOutput { next_token: next, n_past: n_past as u32, n_logits: n_logits as u32 }
            .encode_into(self.output)
            .ok_or(Errno::EOVERFLOW)?;
        Ok(HEADER_BYTES + written)
    }
}

/// GENERATE jobs of many sessions (apps) at once: prompts and decode steps
/// run as one batch through the backbone (`Llama::forward_batch`), the
/// weights read once for all, each session with its own LoRA, positions and
/// KV cache (as Punica's SGMV). A generation runs every layer: an
/// adapter's early exit is for classification, its LoRA is what applies.
/// Each result is what [`run_with`] gives for the job alone, bit for bit. The jobs' buffers must not overlap one
/// another.
pub fn generate_batch(model: &Foundation<'_>, jobs: Vec<(JobBuffers<'_>, Option<&TaskAdapter<'_>>)>) -> Vec<Result<usize, Errno>> {
    generate_batch_jobs(model, jobs.into_iter().map(|(b, a)| (b, a, 0)).collect())
}

/// As [`generate_batch`], each with the driver's job id (see [`run_job`]).
pub fn generate_batch_jobs(model: &Foundation<'_>, jobs: Vec<(JobBuffers<'_>, Option<&TaskAdapter<'_>>, u64)>) -> Vec<Result<usize, Errno>> {
    let Some(llama) = model.backbone.as_ref() else {
        return jobs.iter().map(|_| Err(Errno::ENODEV)).collect();
    };
    let mut results: Vec<Option<Result<usize, Errno>>> = Vec::with_capacity(jobs.len());
    let mut steps: Vec<(usize, Step<'_>, Option<&TaskAdapter<'_>>)> = Vec::new();
    for (i, (b, a, job)) in jobs.into_iter().enumerate() {
        results.push(None);
        match Step::check(llama, job, b) {
            Err(e) => results[i] = Some(Err(e)),
            Ok(step) => steps.push((i, step, a)),
        }
    }
    let logits = {
        let mut rows: Vec<SeqRow<'_>> = steps
            .iter_mut()
            .map(|(_, step, a)| SeqRow {
                tokens: &step.ids,
                pos: step.n_past,
                kv: &mut step.state[STATE_KV_OFFSET..],
                adapter: a.map(|a| a as &dyn vnpu_engine::Adapter),
            })
            .collect();
        llama.forward_batch(&mut rows)
    };
    match logits {
        Ok(logits) => {
            for ((i, step, _), l) in steps.into_iter().zip(logits) {
                results[i] = Some(step.finish(l));
            }
        }
        // The steps were checked above: only a misaligned KV cache is left.
        Err(_) => steps.into_iter().for_each(|(i, _, _)| results[i] = Some(Err(Errno::EBADMSG))),
    }
    results.into_iter().map(|r| r.unwrap_or(Err(Errno::EIO))).collect()
}

/// EMBED and CLASSIFY jobs of many apps at once: the ones that need a
/// sentence embedding of the text encoder (EMBED without an adapter, or
/// with a text-encoder adapter; CLASSIFY with a text-encoder adapter) run
/// as one batch through the encoder, their sequences packed; the others run
/// one by one. Each result is what [`run_job`] gives for the job alone, bit
/// for bit. The jobs' buffers must not overlap one another.
pub fn sentence_batch_jobs(model: &Foundation<'_>, jobs: Vec<(Option<Op>, JobBuffers<'_>, Option<&TaskAdapter<'_>>, u64)>) -> Vec<Result<usize, Errno>> {
    let mut results: Vec<Option<Result<usize, Errno>>> = Vec::with_capacity(jobs.len());
    // (job index, its token ids, what to make of the embedding, its output).
    let mut sentences: Vec<(usize, Vec<u32>, Then<'_>, &mut [u8])> = Vec::new();
    for (i, (op, b, a, job)) in jobs.into_iter().enumerate() {
        results.push(None);
        match sentence_job(model, op, &b, a) {
            Ok(Some((ids, then))) => sentences.push((i, ids, then, b.output)),
            Ok(None) => results[i] = Some(run_job(model, job, op, b, a)),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    if let (Some(bert), false) = (model.text_encoder.as_ref(), sentences.is_empty()) {
        let seqs: Vec<&[u32]> = sentences.iter().map(|(_, ids, _, _)| &ids[..]).collect();
        match bert.embed_batch(&seqs) {
            Ok(embeddings) => {
                for ((i, _, then, output), mut v) in sentences.into_iter().zip(embeddings) {
                    let v = match then {
                        Then::Embedding => v,
                        Then::Renormalized => {
                            normalize(&mut v);
                            v
                        }
                        Then::Head(head) => head.apply(&v),
                    };
                    results[i] = Some(put_f32s(output, &v).ok_or(Errno::EOVERFLOW));
                }
            }
            Err(_) => sentences.into_iter().for_each(|(i, ..)| results[i] = Some(Err(Errno::EIO))),
        }
    }
    results.into_iter().map(|r| r.unwrap_or(Err(Errno::EIO))).collect()
}

/// What a sentence job makes of its embedding.
enum Then<'h> {
    Embedding,
    Renormalized,
    Head(&'h crate::task::Head<'h>),
}

/// A job that only needs the text encoder's sentence embedding: its token
/// ids (checked as [`run_job`] checks them, with the same errnos in the same
/// order) and what follows; `None` for any other job.
fn sentence_job<'h>(
    model: &Foundation<'_>,
    op: Option<Op>,
    b: &JobBuffers<'_>,
    adapter: Option<&'h TaskAdapter<'_>>,
) -> Result<Option<(Vec<u32>, Then<'h>)>, Errno> {
    let then = match (op, adapter) {
        (Some(Op::Embed), None) => {
            model.text_encoder.as_ref().ok_or(Errno::ENODEV)?;
            let ids = tokens(b.input)?;
            check_sentence(model, &ids)?;
            // An empty one fails in the encoder: alone, not the batch.
            return Ok((!ids.is_empty()).then_some((ids, Then::Embedding)));
        }
        (Some(Op::Embed), Some(a)) if a.meta.submodel == SubModel::TextEncoder => Then::Renormalized,
        (Some(Op::Classify), Some(a)) if a.meta.submodel == SubModel::TextEncoder => {
            if a.meta.task != AdapterTask::Classify {
                return Err(Errno::EOPNOTSUPP);
            }
            Then::Head(a.head.as_ref().ok_or(Errno::ENOEXEC)?)
        }
        _ => return Ok(None),
    };
    // As `pooled` reads a text-encoder adapter's input.
    let Input::Tokens(ids) = Input::decode(b.input).map_err(|_| Errno::EBADMSG)? else {
        return Err(Errno::EOPNOTSUPP);
    };
    check_sentence(model, &ids)?;
    Ok((!ids.is_empty()).then_some((ids, then)))
}

/// What [`sentence_embedding`] checks before it embeds.
fn check_sentence(model: &Foundation<'_>, ids: &[u32]) -> Result<(), Errno> {
    let bert = model.text_encoder.as_ref().ok_or(Errno::ENODEV)?;
    if ids.len() > bert.cfg.max_pos || ids.iter().any(|&t| t as usize >= bert.cfg.vocab) {
        return Err(Errno::EBADMSG);
    }
    Ok(())
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
