//! Per-job adapters: LoRA deltas on top of the shared, read-only base
//! projections (`y += scale * B (A x)`), never merged into base weights.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// A LoRA factor, row-major. Int8 rows carry one f32 scale each.
#[derive(Clone, Copy)]
pub enum LoraMat<'a> {
    F32(&'a [f32]),
    I8 { q: &'a [i8], row_scale: &'a [f32] },
}

impl LoraMat<'_> {
    fn len(&self) -> usize {
        match self {
            LoraMat::F32(v) => v.len(),
            LoraMat::I8 { q, .. } => q.len(),
        }
    }
    pub(crate) fn row(&self, i: usize, cols: usize, out: &mut [f32]) {
        match self {
            LoraMat::F32(v) => out.copy_from_slice(&v[i * cols..(i + 1) * cols]),
            LoraMat::I8 { q, row_scale } => {
                let s = row_scale[i];
                for (o, &v) in out.iter_mut().zip(&q[i * cols..(i + 1) * cols]) {
                    *o = v as f32 * s;
                }
            }
        }
    }
}

/// `A: rank x in`, `B: out x rank`.
#[derive(Clone, Copy)]
pub struct Lora<'a> {
    pub rank: usize,
    pub a: LoraMat<'a>,
    pub b: LoraMat<'a>,
    pub scale: f32,
}

impl Lora<'_> {
    pub(crate) fn check(&self, in_dim: usize, out_dim: usize) -> Result<()> {
        let ok_scales = |m: &LoraMat, rows| match m {
            LoraMat::I8 { row_scale, .. } => row_scale.len() == rows,
            LoraMat::F32(_) => true,
        };
        if self.rank == 0
            || self.a.len() != self.rank * in_dim
            || self.b.len() != out_dim * self.rank
            || !ok_scales(&self.a, self.rank)
            || !ok_scales(&self.b, out_dim)
        {
            return Err(Error::Adapter(format!(
                "LoRA rank {} does not fit a {in_dim}->{out_dim} projection",
                self.rank
            )));
        }
        Ok(())
    }
}

/// Supplies optional LoRA deltas per (layer, projection) for one job.
pub trait Adapter: Sync {
    fn lora(&self, layer: usize, proj: Proj) -> Option<Lora<'_>>;
}

/// One owned f32 LoRA of a [`LoraSet`].
pub struct OwnedLora {
    pub layer: usize,
    pub proj: Proj,
    pub rank: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub scale: f32,
}

/// Adapter backed by owned f32 factors (convenient for tests and tools).
#[derive(Default)]
pub struct LoraSet {
    pub items: Vec<OwnedLora>,
}

impl LoraSet {
    pub fn add(
        &mut self,
        layer: usize,
        proj: Proj,
        rank: usize,
        a: Vec<f32>,
        b: Vec<f32>,
        scale: f32,
    ) {
        self.items.push(OwnedLora {
            layer,
            proj,
            rank,
            a,
            b,
            scale,
        });
    }
}

impl Adapter for LoraSet {
    fn lora(&self, layer: usize, proj: Proj) -> Option<Lora<'_>> {
        self.items
            .iter()
            .find(|it| it.layer == layer && it.proj == proj)
            .map(|it| Lora {
                rank: it.rank,
                a: LoraMat::F32(&it.a),
                b: LoraMat::F32(&it.b),
                scale: it.scale,
            })
    }
}

/// Maps per-modality feature vectors to model embeddings (`y = W x + b`,
/// `W: d_model x in`), so non-text inputs can be fed as embeddings.
pub struct InputProjection<'a> {
    pub w: &'a [f32],
    pub b: Option<&'a [f32]>,
    pub in_dim: usize,
    pub d_model: usize,
}

impl InputProjection<'_> {
    pub fn project(&self, feats: &[f32]) -> Result<Vec<f32>> {
        if self.w.len() != self.in_dim * self.d_model
            || self.in_dim == 0
            || feats.len() % self.in_dim != 0
            || self.b.is_some_and(|b| b.len() != self.d_model)
        {
            return Err(Error::Input("input projection shape mismatch".into()));
        }
        let n = feats.len() / self.in_dim;
        let mut out = vec![0f32; n * self.d_model];
        for t in 0..n {
            let x = &feats[t * self.in_dim..(t + 1) * self.in_dim];
            for o in 0..self.d_model {
                let w = &self.w[o * self.in_dim..(o + 1) * self.in_dim];
                out[t * self.d_model + o] =
                    crate::compute::kernels::scalar::dot_f32(w, x) + self.b.map_or(0.0, |b| b[o]);
            }
        }
        Ok(out)
    }
}
