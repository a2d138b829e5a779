//! The adapter's trainable LoRA factors: `B` starts at zero so training
//! starts from the foundation model itself.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor, Var};
use vnpu_engine::Proj;

use crate::frozen::Frozen;

#[derive(Default)]
pub struct Lora {
    /// (layer, projection) -> (A `[r, in]`, B `[out, r]`, scale).
    factors: HashMap<(usize, &'static str), (Tensor, Tensor, f64)>,
    vars: Vec<Var>,
    pub alpha: f32,
}

impl Lora {
    /// Rank-`rank` factors on `projs` of every loaded layer of `m`.
    pub fn new(m: &Frozen, projs: &[&'static str], rank: usize, alpha: f32, dev: &Device) -> Result<Self> {
        Self::on(0..m.layers.len(), projs, rank, alpha, |p| Some(m.cfg.proj_dims(p)), dev)
    }

    /// Rank-`rank` factors on `projs` of `layers` of a model whose
    /// projections are `dims(p)` = (in, out) wide (`None`: it has no `p`).
    pub fn on(
        layers: impl IntoIterator<Item = usize>,
        projs: &[&'static str],
        rank: usize,
        alpha: f32,
        dims: impl Fn(Proj) -> Option<(usize, usize)>,
        dev: &Device,
    ) -> Result<Self> {
        let mut l = Lora { alpha, ..Default::default() };
        if rank == 0 {
            return Ok(l);
        }
        for layer in layers {
            for &p in projs {
                let proj = vnpud::adapter::proj_named(p)
                    .ok_or_else(|| candle_core::Error::Msg(format!("unknown LoRA target {p}")))?;
                let (i, o) = dims(proj).ok_or_else(|| candle_core::Error::Msg(format!("the model has no {p} projection")))?;
                let a = crate::init::normal((1.0 / i as f64).sqrt() as f32, (rank, i), dev)?;
                let b = Var::zeros((o, rank), candle_core::DType::F32, dev)?;
                l.factors.insert((layer, p), (a.as_tensor().clone(), b.as_tensor().clone(), f64::from(alpha) / rank as f64));
                l.vars.extend([a, b]);
            }
        }
        Ok(l)
    }

    pub fn get(&self, layer: usize, proj: &str) -> Option<&(Tensor, Tensor, f64)> {
        self.factors.iter().find(|((l, p), _)| *l == layer && *p == proj).map(|(_, v)| v)
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// (layer, projection, A, B) for packing.
    pub fn export(&self) -> Result<Vec<(usize, &'static str, Tensor, Tensor)>> {
        let mut v: Vec<_> = self.factors.iter().map(|(&(l, p), (a, b, _))| (l, p, a.clone(), b.clone())).collect();
        v.sort_by_key(|(l, p, ..)| (*l, *p));
        Ok(v)
    }
}
