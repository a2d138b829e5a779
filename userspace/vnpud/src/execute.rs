//! One job, on the foundation model: what each op reads and writes. A bad
//! job gets an errno for its app; nothing here panics on job contents.
//!
//! Errnos: `EBADMSG` for an input or state not in the job formats of
//! `m4npu_format::job_io` (or tokens outside the vocabulary), `EOVERFLOW`
//! for an output range too small, `ENOSPC` for a full KV cache,
//! `ENOEXEC` for an adapter this model cannot run (shapes, metadata),
//! `EOPNOTSUPP` for what this device cannot do, `ENODEV` for a sub-model the
//! firmware lacks. `EINVAL` stays the driver's: a descriptor it refused.

use m4npu::Op;
use m4npu_format::adapter_meta::{AdapterTask, Pooling, SubModel};
use m4npu_format::job_io::{put_f32s, GenerateOutput, Input, StateHeader, HEADER_BYTES, STATE_KV_OFFSET};
use m4npu_hw::JobBuffers;
use nix::errno::Errno;
use vnpu_engine::{Logits, SeqRow};

use crate::adapter::TaskAdapter;
use crate::foundation::Foundation;

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
///
/// EMBED and CLASSIFY write a vector (the sentence embedding, or the
/// adapter's head on its pooled hidden states); GENERATE is one step of a
/// session: the input tokens go into the KV cache in the state range after
/// the session's `n_past`, and the output is the greedy next token and,
/// room permitting, the logits. Each runs as a batch of one.
pub fn run_job(model: &Foundation<'_>, job: u64, op: Option<Op>, b: JobBuffers<'_>, adapter: Option<&TaskAdapter<'_>>) -> Result<usize, Errno> {
    if op == Some(Op::Echo) {
        return echo(b);
    }
    match (op, adapter) {
        (Some(Op::Embed), _) | (Some(Op::Classify), Some(_)) => {
            pooled_batch_jobs(model, vec![(op, b, adapter, job)]).pop().unwrap_or(Err(Errno::EIO))
        }
        (Some(Op::Generate), a) => generate_batch_jobs(model, vec![(b, a, job)]).pop().unwrap_or(Err(Errno::EIO)),
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
        // Feature inputs (alone or with tokens) need an adapter's input projection.
        Ok(Input::Features { .. } | Input::Mixed { .. }) => Err(Errno::EOPNOTSUPP),
        Err(_) => Err(Errno::EBADMSG),
    }
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// A backbone job's input, checked as the job alone checks it: token ids,
/// feature rows through the adapter's input projection, or both (the
/// projected rows, then the tokens' own embeddings).
pub(crate) enum BackboneRows {
    Tokens(Vec<u32>),
    Embedded { x: Vec<f32>, n: usize },
}

impl BackboneRows {
    fn check(llama: &vnpu_engine::Llama<'_>, a: &TaskAdapter<'_>, input: Input) -> Result<Self, Errno> {
        let rows = match input {
            Input::Tokens(ids) => {
                if ids.iter().any(|&t| t as usize >= llama.cfg.vocab) {
                    return Err(Errno::EBADMSG);
                }
                Self::Tokens(ids)
            }
            Input::Features { dim, data } => Self::Embedded { x: projected(a, dim, &data)?, n: data.len() / dim },
            Input::Mixed { dim, data, tokens } => {
                let mut x = projected(a, dim, &data)?;
                // The lookup refuses ids outside the vocabulary.
                x.extend(llama.token_embeddings(&tokens).map_err(|_| Errno::EBADMSG)?);
                Self::Embedded { x, n: data.len() / dim + tokens.len() }
            }
        };
        if rows.len() > llama.cfg.max_ctx {
            return Err(Errno::EBADMSG);
        }
        Ok(rows)
    }

    fn len(&self) -> usize {
        match self {
            Self::Tokens(ids) => ids.len(),
            Self::Embedded { n, .. } => *n,
        }
    }

    fn input(&self) -> vnpu_engine::Input<'_> {
        match self {
            Self::Tokens(ids) => vnpu_engine::Input::Tokens(ids),
            Self::Embedded { x, .. } => vnpu_engine::Input::Embeddings(x),
        }
    }
}

/// Feature rows of `dim` values through the adapter's input projection.
fn projected(a: &TaskAdapter<'_>, dim: usize, data: &[f32]) -> Result<Vec<f32>, Errno> {
    let proj = a.input.as_ref().ok_or(Errno::EOPNOTSUPP)?;
    if dim != proj.in_dim || data.iter().any(|v| !v.is_finite()) {
        return Err(Errno::EBADMSG);
    }
    proj.project(data).map_err(|_| Errno::EBADMSG)
}

/// The pooled backbone hidden states of many jobs at once, each with its
/// adapter's LoRA, exit layer and pooling: one `Llama::hidden_batch`, so
/// the base weights are read once for all of them. A job alone is a batch
/// of one.
fn backbone_pooled(llama: &vnpu_engine::Llama<'_>, jobs: &[(&TaskAdapter<'_>, BackboneRows)]) -> Result<Vec<Vec<f32>>, Errno> {
    // Classification needs no cache beyond the job: scratch ones.
    let mut kvs: Vec<_> = jobs.iter().map(|(_, r)| vnpu_engine::AlignedBytes::zeroed(llama.cfg.kv_bytes(r.len()))).collect();
    let mut rows: Vec<_> = jobs
        .iter()
        .zip(kvs.iter_mut())
        .map(|((a, r), kv)| {
            let opts = a.forward_opts(Logits::None, true);
            vnpu_engine::HiddenRow { input: r.input(), kv: &mut kv[..], adapter: opts.adapter, layers: opts.layers }
        })
        .collect();
    let hidden = llama.hidden_batch(&mut rows).map_err(|_| Errno::EBADMSG)?;
    let d = llama.cfg.d_model;
    Ok(hidden
        .into_iter()
        .zip(jobs)
        .map(|(h, (a, _))| match a.pooling() {
            Pooling::Mean => {
                let n = h.len() / d;
                let mut p = vec![0f32; d];
                h.chunks_exact(d).for_each(|r| p.iter_mut().zip(r).for_each(|(s, v)| *s += v));
                p.iter_mut().for_each(|v| *v /= n as f32);
                p
            }
            Pooling::Last => h[h.len() - d..].to_vec(),
        })
        .collect())
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

/// EMBED and CLASSIFY jobs of many apps at once, each through its
/// sub-model as one batch: the ones that need the text encoder's sentence
/// embedding (EMBED without an adapter or with a text-encoder adapter,
/// CLASSIFY with a text-encoder adapter) packed through the encoder (one
/// batch per text-encoder LoRA, one for all jobs without), the
/// ones on the backbone (feature or token classifiers, each with its own
/// LoRA, input projection and exit layer) through `Llama::hidden_batch`;
/// any other job runs as [`run_job`] runs it. A job alone is a batch of
/// one, and each result in a batch is the same bit for bit. The jobs'
/// buffers must not overlap one another.
pub fn pooled_batch_jobs(model: &Foundation<'_>, jobs: Vec<(Option<Op>, JobBuffers<'_>, Option<&TaskAdapter<'_>>, u64)>) -> Vec<Result<usize, Errno>> {
    let mut results: Vec<Option<Result<usize, Errno>>> = Vec::with_capacity(jobs.len());
    let mut sentences: Vec<Waiting<'_, '_, Sentence<'_, '_>>> = Vec::new();
    let mut backbone: Vec<Waiting<'_, '_, (&TaskAdapter<'_>, BackboneRows)>> = Vec::new();
    for (i, (op, b, a, job)) in jobs.into_iter().enumerate() {
        results.push(None);
        match pooled_job(model, op, &b, a) {
            Ok(Some((Pooled::Sentence(ids, lora), then))) => sentences.push((i, (ids, lora), then, b.output)),
            Ok(Some((Pooled::Backbone(a, rows), then))) => backbone.push((i, (a, rows), then, b.output)),
            // Not a pooled job: not this function's to run.
            Ok(None) => results[i] = Some(run_job(model, job, op, b, a)),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    if let Some(bert) = model.text_encoder.as_ref() {
        // One encoder batch per LoRA (jobs without one share a batch): a
        // batch runs one adapter's deltas on all its rows.
        while let Some((_, (_, lora), ..)) = sentences.first() {
            let key = lora.map(|a| a as *const TaskAdapter<'_>);
            let (group, rest): (Vec<_>, Vec<_>) =
                sentences.into_iter().partition(|(_, (_, l), ..)| l.map(|a| a as *const TaskAdapter<'_>) == key);
            sentences = rest;
            let lora = group[0].1 .1.map(|a| a as &dyn vnpu_engine::Adapter);
            let seqs: Vec<&[u32]> = group.iter().map(|(_, (ids, _), _, _)| &ids[..]).collect();
            match bert.embed_batch_with(&seqs, lora) {
                Ok(vs) => group.into_iter().zip(vs).for_each(|((i, _, then, out), v)| results[i] = Some(then.write(v, out))),
                Err(_) => group.into_iter().for_each(|(i, ..)| results[i] = Some(Err(Errno::EIO))),
            }
        }
    }
    if let (Some(llama), false) = (model.backbone.as_ref(), backbone.is_empty()) {
        let (rest, inputs): (Vec<_>, Vec<_>) = backbone.into_iter().map(|(i, input, then, out)| ((i, then, out), input)).unzip();
        match backbone_pooled(llama, &inputs) {
            Ok(vs) => rest.into_iter().zip(vs).for_each(|((i, then, out), v)| results[i] = Some(then.write(v, out))),
            Err(e) => rest.into_iter().for_each(|(i, ..)| results[i] = Some(Err(e))),
        }
    }
    results.into_iter().map(|r| r.unwrap_or(Err(Errno::EIO))).collect()
}

/// A pooled job waiting for its batch: its index, its checked input, what
/// to make of its vector, its output.
type Waiting<'h, 'o, I> = (usize, I, Then<'h>, &'o mut [u8]);

/// A text-encoder job's tokens and the adapter whose LoRA it runs, if any.
type Sentence<'a, 'm> = (Vec<u32>, Option<&'a TaskAdapter<'m>>);

/// The sub-model a pooled job runs through, with its checked input.
enum Pooled<'a, 'm> {
    /// Tokens, and the adapter when it has a LoRA for the encoder.
    Sentence(Vec<u32>, Option<&'a TaskAdapter<'m>>),
    Backbone(&'a TaskAdapter<'m>, BackboneRows),
}

/// What a pooled job makes of its vector.
enum Then<'h> {
    Embedding,
    Renormalized,
    Head(&'h crate::adapter::Head<'h>),
}

impl Then<'_> {
    fn write(self, mut v: Vec<f32>, output: &mut [u8]) -> Result<usize, Errno> {
        let v = match self {
            Then::Embedding => v,
            Then::Renormalized => {
                normalize(&mut v);
                v
            }
            Then::Head(head) => head.apply(&v),
        };
        put_f32s(output, &v).ok_or(Errno::EOVERFLOW)
    }
}

/// A job that only needs a pooled vector of one sub-model: its checked
/// input and what follows; `None` for any other job. An empty input fails
/// here, as it would in the sub-model, so that it cannot fail a batch.
fn pooled_job<'a, 'm>(
    model: &Foundation<'_>,
    op: Option<Op>,
    b: &JobBuffers<'_>,
    adapter: Option<&'a TaskAdapter<'m>>,
) -> Result<Option<(Pooled<'a, 'm>, Then<'a>)>, Errno> {
    let (pooled, then) = match (op, adapter) {
        (Some(Op::Embed), None) => {
            // A missing sub-model is reported before anything about the input.
            model.text_encoder.as_ref().ok_or(Errno::ENODEV)?;
            let ids = tokens(b.input)?;
            check_sentence(model, &ids)?;
            (Pooled::Sentence(ids, None), Then::Embedding)
        }
        (Some(Op::Embed), Some(a)) => (adapter_input(model, a, b.input)?, Then::Renormalized),
        (Some(Op::Classify), Some(a)) => {
            if a.meta.task != AdapterTask::Classify {
                return Err(Errno::EOPNOTSUPP);
            }
            let head = a.head.as_ref().ok_or(Errno::ENOEXEC)?;
            (adapter_input(model, a, b.input)?, Then::Head(head))
        }
        _ => return Ok(None),
    };
    match &pooled {
        Pooled::Sentence(ids, _) if ids.is_empty() => Err(Errno::EIO),
        Pooled::Backbone(_, rows) if rows.len() == 0 => Err(Errno::EBADMSG),
        _ => Ok(Some((pooled, then))),
    }
}

/// An adapter job's input, checked for the adapter's sub-model.
fn adapter_input<'a, 'm>(model: &Foundation<'_>, a: &'a TaskAdapter<'m>, input: &[u8]) -> Result<Pooled<'a, 'm>, Errno> {
    let input = Input::decode(input).map_err(|_| Errno::EBADMSG)?;
    Ok(match a.meta.submodel {
        SubModel::TextEncoder => {
            let Input::Tokens(ids) = input else { return Err(Errno::EOPNOTSUPP) };
            check_sentence(model, &ids)?;
            Pooled::Sentence(ids, Some(a).filter(|a| a.has_lora()))
        }
        SubModel::Backbone => {
            let llama = model.backbone.as_ref().ok_or(Errno::ENODEV)?;
            Pooled::Backbone(a, BackboneRows::check(llama, a, input)?)
        }
    })
}

/// What the text encoder needs of token ids: its vocabulary and length.
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
