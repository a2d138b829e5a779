//! Training a text adapter end to end: LoRA on the text encoder's top
//! layers plus a head on its sentence embedding, the encoder frozen.
//!
//! The layers below the LoRA never change, so their output is computed
//! once per sentence and cached; each step then runs only the adapted
//! layers forward and back (minutes per task on two cores, not hours).
//! The head starts as the linear probe of the frozen embedding, so training
//! starts where head-only adapters end. A hold-out carved from the train
//! split picks the epoch to keep; the test split is not looked at.

use std::time::Instant;

use candle_core::{Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use m4npu_format::adapter_meta::{lora_name, AdapterMeta, AdapterTask, Pooling, SubModel};

use crate::data::Task;
use crate::frozen_bert::{FrozenBert, Padding};
use crate::lora::Lora;
use crate::train::{log_epoch, values, Head, Rng, Tensors};

#[derive(Clone, Debug)]
pub struct TextOptions {
    /// The encoder's top layers the LoRA adapts.
    pub top_layers: usize,
    pub rank: usize,
    pub targets: Vec<&'static str>,
    pub epochs: usize,
    pub batch: usize,
    /// LoRA learning rate (AdamW, cosine decay); the head's is `head_lr`.
    pub lr: f64,
    pub head_lr: f64,
    /// Share of the train split held out to pick the epoch.
    pub holdout: f64,
    pub max_steps: Option<usize>,
    pub seed: u64,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            top_layers: 2,
            rank: 8,
            targets: vec!["q", "k", "v", "o", "up", "down"],
            epochs: 3,
            batch: 32,
            lr: 1e-3,
            head_lr: 1e-3,
            holdout: 0.1,
            max_steps: None,
            seed: 1,
        }
    }
}

/// Each sentence's hidden states entering the first adapted layer, and
/// its frozen sentence embedding.
struct Cached {
    h: Vec<Vec<f32>>,
    emb: Vec<Vec<f32>>,
}

/// What a forward from the cache runs: the encoder from layer `first` on,
/// with the LoRA and head being trained.
struct Model<'a> {
    m: &'a FrozenBert,
    first: usize,
    lora: &'a Lora,
    head: &'a Head,
}

/// Sample indices in batches of similar length (little padding).
fn by_length(idx: &[usize], len: impl Fn(usize) -> usize, batch: usize) -> Vec<Vec<usize>> {
    let mut v = idx.to_vec();
    v.sort_by_key(|&i| len(i));
    v.chunks(batch).map(|c| c.to_vec()).collect()
}

fn cache(m: &FrozenBert, ids: &[Vec<u32>], first: usize, dev: &Device) -> candle_core::Result<Cached> {
    let d = m.cfg.d_model;
    let (mut h, mut emb) = (vec![Vec::new(); ids.len()], vec![Vec::new(); ids.len()]);
    let all: Vec<usize> = (0..ids.len()).collect();
    let none = Lora::default();
    for b in by_length(&all, |i| ids[i].len(), 64) {
        let seqs: Vec<&[u32]> = b.iter().map(|&i| &ids[i][..]).collect();
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let pad = Padding::new(&lens, dev)?;
        let low = m.run_layers(&m.embed_tokens(&seqs)?, &pad, 0..first, &none)?;
        let e = m.pool(&m.run_layers(&low, &pad, first..m.layers.len(), &none)?, &pad)?;
        let low: Vec<f32> = values(&low)?;
        let t = lens.iter().copied().max().unwrap_or(0);
        for (j, &i) in b.iter().enumerate() {
            h[i] = low[j * t * d..][..lens[j] * d].to_vec();
        }
        for (&i, row) in b.iter().zip(e.to_vec2::<f32>()?) {
            emb[i] = row;
        }
    }
    Ok(Cached { h, emb })
}

/// The logits of the samples `b` from their cached hidden states.
fn logits(net: &Model, c: &Cached, b: &[usize], dev: &Device) -> candle_core::Result<Tensor> {
    let Model { m, first, lora, head } = *net;
    let d = m.cfg.d_model;
    let lens: Vec<usize> = b.iter().map(|&i| c.h[i].len() / d).collect();
    let t = lens.iter().copied().max().unwrap_or(0);
    let mut x = vec![0f32; b.len() * t * d];
    for (j, &i) in b.iter().enumerate() {
        x[j * t * d..][..c.h[i].len()].copy_from_slice(&c.h[i]);
    }
    let pad = Padding::new(&lens, dev)?;
    let x = Tensor::from_vec(x, (b.len(), t, d), dev)?;
    let h = m.run_layers(&x, &pad, first..m.layers.len(), lora)?;
    head.forward(&m.pool(&h, &pad)?)
}

fn correct(logits: &Tensor, b: &[usize], y: &[usize]) -> candle_core::Result<usize> {
    let pred: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
    Ok(pred.iter().zip(b).filter(|(p, &i)| **p as usize == y[i]).count())
}

fn accuracy(net: &Model, c: &Cached, idx: &[usize], y: &[usize], dev: &Device) -> candle_core::Result<f64> {
    let mut ok = 0;
    for b in by_length(idx, |i| c.h[i].len(), 64) {
        ok += correct(&logits(net, c, &b, dev)?, &b, y)?;
    }
    Ok(ok as f64 / idx.len().max(1) as f64)
}

/// The linear probe: the head alone on the frozen embeddings (full batch,
/// a convex problem).
fn probe(c: &Cached, fit: &[usize], y: &[usize], labels: usize, d: usize, dev: &Device) -> candle_core::Result<Head> {
    let x: Vec<f32> = fit.iter().flat_map(|&i| c.emb[i].iter().copied()).collect();
    let x = Tensor::from_vec(x, (fit.len(), d), dev)?;
    let yt = Tensor::from_vec(fit.iter().map(|&i| y[i] as u32).collect::<Vec<_>>(), fit.len(), dev)?;
    let head = Head::new(labels, d, dev)?;
    let mut opt = AdamW::new(vec![head.w.clone(), head.b.clone()], ParamsAdamW { lr: 1e-2, weight_decay: 1e-3, ..Default::default() })?;
    for _ in 0..400 {
        opt.backward_step(&candle_nn::loss::cross_entropy(&head.forward(&x)?, &yt)?)?;
    }
    Ok(head)
}

/// Trains LoRA + head for a text task on token ids `ids` with labels `y`
/// (the train split, tokenized as the device's jobs are).
pub fn text_lora(task: &Task, m: &FrozenBert, ids: &[Vec<u32>], y: &[usize], o: &TextOptions) -> Result<(AdapterMeta, Tensors), String> {
    let ce = |e: candle_core::Error| e.to_string();
    let dev = Device::Cpu;
    let name = &task.meta.task;
    let (d, labels, n_layer) = (m.cfg.d_model, task.meta.labels.len(), m.layers.len());
    let first = n_layer - o.top_layers.clamp(1, n_layer);
    let mut order: Vec<usize> = (0..ids.len()).collect();
    let mut rng = Rng(o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    crate::init::seed(o.seed);
    rng.shuffle(&mut order);
    let (val, fit) = order.split_at((ids.len() as f64 * o.holdout) as usize);
    let (val, fit) = (val.to_vec(), fit.to_vec());

    let t0 = Instant::now();
    let c = cache(m, ids, first, &dev).map_err(ce)?;
    eprintln!("  {name}: layers 0..{first} cached for {} sentences in {:.0} s", ids.len(), t0.elapsed().as_secs_f64());
    let head = probe(&c, &fit, y, labels, d, &dev).map_err(ce)?;
    let dims = |p| m.cfg.proj_dims(p);
    let lora = Lora::on(first..n_layer, &o.targets, o.rank, 2.0 * o.rank as f32, dims, &dev).map_err(ce)?;
    let net = Model { m, first, lora: &lora, head: &head };
    let probe_acc = accuracy(&net, &c, &val, y, &dev).map_err(ce)?;
    eprintln!("  {name}: linear probe: hold-out accuracy {:.2}% ({} of {} held out)", 100.0 * probe_acc, val.len(), ids.len());

    let params = |lr| ParamsAdamW { lr, weight_decay: 1e-4, ..Default::default() };
    let mut opt_lora = AdamW::new(lora.vars().to_vec(), params(o.lr)).map_err(ce)?;
    let mut opt_head = AdamW::new(vec![head.w.clone(), head.b.clone()], params(o.head_lr)).map_err(ce)?;
    let vars: Vec<Var> = lora.vars().iter().cloned().chain([head.w.clone(), head.b.clone()]).collect();
    let snapshot = || vars.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<Vec<_>>>();
    let (mut best, mut best_epoch, mut kept) = (probe_acc, None, snapshot().map_err(ce)?);

    let mut batches = by_length(&fit, |i| ids[i].len(), o.batch);
    let total = (o.epochs * batches.len()).max(1);
    let mut steps = 0;
    'train: for epoch in 0..o.epochs {
        let te = Instant::now();
        rng.shuffle(&mut batches);
        let (mut loss_sum, mut n_batches, mut ok, mut seen) = (0.0, 0, 0, 0);
        for b in &batches {
            let f = 0.5 * (1.0 + (std::f64::consts::PI * steps as f64 / total as f64).cos());
            opt_lora.set_learning_rate(o.lr * f);
            opt_head.set_learning_rate(o.head_lr * f);
            let lg = logits(&net, &c, b, &dev).map_err(ce)?;
            let yt = Tensor::from_vec(b.iter().map(|&i| y[i] as u32).collect::<Vec<_>>(), b.len(), &dev).map_err(ce)?;
            let loss = candle_nn::loss::cross_entropy(&lg, &yt).map_err(ce)?;
            let grads = loss.backward().map_err(ce)?;
            opt_lora.step(&grads).map_err(ce)?;
            opt_head.step(&grads).map_err(ce)?;
            loss_sum += f64::from(loss.to_scalar::<f32>().map_err(ce)?);
            n_batches += 1;
            ok += correct(&lg, b, y).map_err(ce)?;
            seen += b.len();
            steps += 1;
            if o.max_steps.is_some_and(|s| steps >= s) {
                log_epoch(name, epoch, steps, loss_sum / n_batches as f64, ok, seen);
                break 'train;
            }
        }
        log_epoch(name, epoch, steps, loss_sum / n_batches.max(1) as f64, ok, seen);
        let acc = accuracy(&net, &c, &val, y, &dev).map_err(ce)?;
        eprintln!("  {name}: epoch {epoch}: hold-out accuracy {:.2}% ({:.0} s)", 100.0 * acc, te.elapsed().as_secs_f64());
        if acc > best {
            (best, best_epoch, kept) = (acc, Some(epoch), snapshot().map_err(ce)?);
        }
    }
    if o.max_steps.is_none() {
        for (v, t) in vars.iter().zip(&kept) {
            v.set(t).map_err(ce)?;
        }
    }
    let kept_what = best_epoch.map_or("the linear probe (B = 0)".to_string(), |e| format!("epoch {e}"));
    eprintln!("  {name}: keeping {kept_what}: hold-out accuracy {:.2}%", 100.0 * best);

    let mut out = Tensors::new();
    head.export(&mut out).map_err(ce)?;
    for (layer, proj, a, b) in lora.export().map_err(ce)? {
        out.push((lora_name(layer, proj, "a"), a.dims().to_vec(), values(&a).map_err(ce)?));
        out.push((lora_name(layer, proj, "b"), b.dims().to_vec(), values(&b).map_err(ce)?));
    }
    let meta = AdapterMeta {
        task: AdapterTask::Classify,
        submodel: SubModel::TextEncoder,
        labels: task.meta.labels.clone(),
        pooling: Pooling::Mean,
        feature_dim: None,
        text_embedding: None,
        layers: None,
        lora_alpha: lora.alpha,
        description: format!(
            "{name}: {} ({}), LoRA r{} on {} of the text encoder's top {} layers + head on its sentence embedding, {steps} steps, kept {kept_what} (hold-out {:.1}%)",
            task.meta.modality,
            task.meta.source,
            o.rank,
            o.targets.join(","),
            n_layer - first,
            100.0 * best
        ),
    };
    Ok((meta, out))
}
