//! Training an adapter with the foundation model frozen.
//!
//! - Feature tasks (vision, sensors, audio) run through the backbone: an
//!   input projection maps each group of feature rows to one backbone
//!   embedding, LoRA adapts the first `layers` layers (the adapter's early
//!   exit), the final hidden states are mean-pooled into a task head. The
//!   gradient flows through the frozen layers into all three.
//! - Tasks with feature rows and a text (an image and its caption) run the
//!   same way on one sequence: the projected rows, then the text, either
//!   as its token embeddings from the backbone's own table or as one more
//!   token, the text encoder's sentence embedding through its own columns
//!   of the input projection.
//! - Text tasks run through the text encoder, LoRA on its top layers and
//!   a head on its sentence embedding: see `text`.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use m4npu_format::adapter_meta::{lora_name, AdapterMeta, AdapterTask, Pooling, SubModel};
use m4npu_format::job_io::rows_with_embedding;

use crate::augment::{ImageLayout, SeriesAug};
use crate::data::{Samples, Split, Task};
use crate::frozen::Frozen;
use crate::lora::Lora;
use crate::texts::Texts;

/// Named F32 tensors (shape outermost first) ready to pack.
pub type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

#[derive(Clone, Debug)]
pub struct Options {
    pub layers: usize,
    pub rank: usize,
    /// Projections the LoRA adapts (`adapter_meta::LORA_PROJS` names).
    pub targets: Vec<&'static str>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Feature rows per backbone token (1: one row, one token).
    pub group: usize,
    /// Image tasks: each training sample moved by up to this many pixels
    /// in each direction, drawn anew every time it is seen.
    pub shift: Option<(ImageLayout, usize)>,
    /// Sensor tasks: each training series moved, scaled and jittered anew
    /// every time it is seen.
    pub series: Option<SeriesAug>,
    /// Tasks with a text: the text encoder's sentence embedding of it as
    /// one token, not the backbone's tokens of it.
    pub text_embedding: bool,
    /// Stop after this many steps (CI: prove the path in seconds).
    pub max_steps: Option<usize>,
    pub seed: u64,
}

/// Deterministic shuffling (xorshift; the split's order is data, not noise).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in `-max..=max`.
    fn offset(&mut self, max: usize) -> isize {
        (self.next() % (2 * max as u64 + 1)) as isize - max as isize
    }
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

pub(crate) fn values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1()
}

/// A classification head `[labels, d]` trained with the rest.
pub(crate) struct Head {
    pub(crate) w: Var,
    pub(crate) b: Var,
}

impl Head {
    pub(crate) fn new(labels: usize, d: usize, dev: &Device) -> candle_core::Result<Self> {
        Ok(Head { w: crate::init::normal(0.01, (labels, d), dev)?, b: Var::zeros(labels, DType::F32, dev)? })
    }
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.w.as_tensor().t()?)?.broadcast_add(self.b.as_tensor())
    }
    pub(crate) fn export(&self, out: &mut Tensors) -> candle_core::Result<()> {
        out.push(("head.weight".into(), self.w.dims().to_vec(), values(self.w.as_tensor())?));
        out.push(("head.bias".into(), self.b.dims().to_vec(), values(self.b.as_tensor())?));
        Ok(())
    }
}

pub(crate) fn log_epoch(task: &str, epoch: usize, steps: usize, loss: f64, correct: usize, seen: usize) {
    eprintln!(
        "  {task}: epoch {epoch} step {steps}: loss {loss:.4}, train accuracy {:.1}%",
        100.0 * correct as f64 / seen.max(1) as f64
    );
}

/// Mean over the positions `mask` (`[b, t]`, 1 or 0) keeps of `h`
/// (`[b, t, d]`): the device pools a job's real positions only, and a
/// batch's padding is not part of any job.
fn masked_mean(h: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    h.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?.broadcast_div(&mask.sum_keepdim(1)?)
}

/// The text of a task whose samples are feature rows and a text, as the
/// device gets it.
#[derive(Clone, Copy)]
pub enum TextPart<'a> {
    /// The backbone's tokens of each sample's text.
    Tokens(&'a Texts),
    /// Each sample's text encoder sentence embedding (`rows_with_embedding`).
    Embedding(&'a [Vec<f32>]),
}

/// Trains a backbone adapter for a feature task, or, with `text`, for a
/// task whose samples are feature rows and a text.
pub fn features(task: &Task, train: &Split, m: &Frozen, o: &Options, text: Option<TextPart<'_>>) -> Result<(AdapterMeta, Tensors), String> {
    let ce = |e: candle_core::Error| e.to_string();
    let dev = Device::Cpu;
    let (Samples::Features { t, d: fd0, .. } | Samples::Mixed { t, d: fd0, .. }) = train.samples else {
        return Err("not a feature task".into());
    };
    if matches!(train.samples, Samples::Mixed { .. }) != text.is_some() {
        return Err("texts are for the tasks with texts after the features".into());
    }
    if t % o.group != 0 {
        return Err(format!("{t} rows do not group by {}", o.group));
    }
    let (tokens, fd) = (t / o.group, fd0 * o.group);
    let (d, labels) = (m.cfg.d_model, task.meta.labels.len());
    // An embedded text: one more token, through columns of its own.
    let w = match &text {
        Some(TextPart::Embedding(e)) => e.first().map_or(0, Vec::len),
        _ => 0,
    };
    let (n_in, width) = (tokens + usize::from(w > 0), fd + w);
    crate::init::seed(o.seed);
    let w_in = crate::init::normal((1.0 / fd as f64).sqrt() as f32, (d, fd), &dev).map_err(ce)?;
    // A unit-length embedding starts at about the rows' scale.
    let w_in = match w {
        0 => w_in,
        _ => {
            let cols = crate::init::normal(0.5, (d, w), &dev).map_err(ce)?;
            Var::from_tensor(&Tensor::cat(&[w_in.as_tensor(), cols.as_tensor()], 1).map_err(ce)?).map_err(ce)?
        }
    };
    let b_in = Var::zeros(d, DType::F32, &dev).map_err(ce)?;
    let head = Head::new(labels, d, &dev).map_err(ce)?;
    let lora = Lora::new(m, &o.targets, o.rank, 2.0 * o.rank as f32, &dev).map_err(ce)?;
    let mut vars = vec![w_in.clone(), b_in.clone(), head.w.clone(), head.b.clone()];
    vars.extend(lora.vars().iter().cloned());
    let mut opt = AdamW::new(vars, ParamsAdamW { lr: o.lr, weight_decay: 1e-4, ..Default::default() }).map_err(ce)?;

    // The samples' logits, as the device computes them.
    let features_of = |chunk: &[usize]| -> Vec<f32> { chunk.iter().flat_map(|&i| train.features(i).iter().copied()).collect() };
    let logits_of = |chunk: &[usize], xb: Vec<f32>| -> candle_core::Result<Tensor> {
        let x = Tensor::from_vec(xb, (chunk.len(), n_in, width), &dev)?;
        let e = x.broadcast_matmul(&w_in.as_tensor().t()?)?.broadcast_add(b_in.as_tensor())?;
        let pooled = match text {
            // An embedded text is one more row: no padding to mask.
            None | Some(TextPart::Embedding(_)) => m.forward(&e, &lora)?.mean(1)?,
            Some(TextPart::Tokens(texts)) => {
                // The rows first, then the text: causal attention keeps the
                // right padding out of every real position.
                let (te, text_mask) = texts.batch(chunk)?;
                let mask = Tensor::cat(&[&Tensor::ones((chunk.len(), tokens), DType::F32, &dev)?, &text_mask], 1)?;
                masked_mean(&m.forward(&Tensor::cat(&[&e, &te], 1)?, &lora)?, &mask)?
            }
        };
        head.forward(&pooled)
    };

    let mut rng = Rng(o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let total_steps = o.epochs * order.len().div_ceil(o.batch);
    let mut steps = 0;
    'train: for epoch in 0..o.epochs {
        rng.shuffle(&mut order);
        let (mut loss_sum, mut batches, mut correct, mut seen) = (0.0, 0, 0, 0);
        for chunk in order.chunks(o.batch) {
            // Cosine decay: big steps first, settle at the end.
            let lr = o.lr * 0.5 * (1.0 + (std::f64::consts::PI * steps as f64 / total_steps as f64).cos());
            opt.set_learning_rate(lr);
            let mut xb = features_of(chunk);
            if let Some((layout, max)) = o.shift.filter(|(l, _)| l.pixels() == t * fd0) {
                let mut moved = vec![0f32; t * fd0];
                for x in xb.chunks_exact_mut(t * fd0) {
                    let (dy, dx) = (rng.offset(max), rng.offset(max));
                    layout.shift(x, dy, dx, &mut moved);
                    x.copy_from_slice(&moved);
                }
            }
            if let Some(aug) = o.series {
                for x in xb.chunks_exact_mut(t * fd0) {
                    aug.apply(x, t, fd0, || rng.unit());
                }
            }
            if let Some(TextPart::Embedding(emb)) = text {
                xb = chunk.iter().zip(xb.chunks_exact(t * fd0)).flat_map(|(&i, x)| rows_with_embedding(x, fd, &emb[i])).collect();
            }
            let yb: Vec<u32> = chunk.iter().map(|&i| train.y[i] as u32).collect();
            let y = Tensor::from_vec(yb.clone(), chunk.len(), &dev).map_err(ce)?;
            let logits = logits_of(chunk, xb).map_err(ce)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y).map_err(ce)?;
            opt.backward_step(&loss).map_err(ce)?;
            loss_sum += f64::from(loss.to_scalar::<f32>().map_err(ce)?);
            batches += 1;
            let pred: Vec<u32> = logits.argmax(D::Minus1).map_err(ce)?.to_vec1().map_err(ce)?;
            correct += pred.iter().zip(&yb).filter(|(p, y)| p == y).count();
            seen += chunk.len();
            steps += 1;
            if o.max_steps.is_some_and(|s| steps >= s) {
                log_epoch(&task.meta.task, epoch, steps, loss_sum / batches as f64, correct, seen);
                break 'train;
            }
        }
        log_epoch(&task.meta.task, epoch, steps, loss_sum / batches.max(1) as f64, correct, seen);
    }

    let mut out = Tensors::new();
    head.export(&mut out).map_err(ce)?;
    out.push(("input.weight".into(), vec![d, width], values(w_in.as_tensor()).map_err(ce)?));
    out.push(("input.bias".into(), vec![d], values(b_in.as_tensor()).map_err(ce)?));
    for (layer, proj, a, b) in lora.export().map_err(ce)? {
        out.push((lora_name(layer, proj, "a"), a.dims().to_vec(), values(&a).map_err(ce)?));
        out.push((lora_name(layer, proj, "b"), b.dims().to_vec(), values(&b).map_err(ce)?));
    }
    let meta = AdapterMeta {
        task: AdapterTask::Classify,
        submodel: SubModel::Backbone,
        labels: task.meta.labels.clone(),
        pooling: Pooling::Mean,
        feature_dim: Some(width as u32),
        text_embedding: (w > 0).then_some(w as u32),
        layers: Some(m.layers.len() as u32),
        lora_alpha: lora.alpha,
        description: format!(
            "{}: {} ({}), {tokens} tokens of {fd} features{}, LoRA r{} on {} of {} layers, {steps} steps",
            task.meta.task,
            task.meta.modality,
            task.meta.source,
            match text {
                Some(TextPart::Tokens(_)) => " then the text's backbone tokens",
                Some(TextPart::Embedding(_)) => " then the text's sentence embedding from the text encoder",
                None => "",
            },
            o.rank,
            o.targets.join(","),
            m.layers.len()
        ),
    };
    Ok((meta, out))
}
