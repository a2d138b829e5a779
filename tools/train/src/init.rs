//! Seeded initial weights. candle's CPU random numbers cannot be seeded,
//! so an adapter trained twice from the same command came out different
//! (pickupgesture: 80% and 84% on test); with these, a recipe and its seed
//! give the same adapter every time.

use std::cell::Cell;

use candle_core::{Device, Result, Shape, Tensor, Var};

thread_local!(static STATE: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) });

/// Starts the draws of this thread over from `seed`.
pub fn seed(seed: u64) {
    STATE.with(|s| s.set(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1));
}

fn uniform() -> f64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    })
}

/// A variable of normal(0, `std`) values, the next draws of this thread.
pub fn normal(std: f32, shape: impl Into<Shape>, dev: &Device) -> Result<Var> {
    let shape = shape.into();
    let v: Vec<f32> = (0..shape.elem_count())
        .map(|_| {
            // Box-Muller.
            let (u1, u2) = (uniform(), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std
        })
        .collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_its_draws() {
        let dev = Device::Cpu;
        seed(7);
        let a = normal(0.5, (3, 4), &dev).and_then(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>());
        seed(7);
        let b = normal(0.5, (3, 4), &dev).and_then(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>());
        seed(8);
        let c = normal(0.5, (3, 4), &dev).and_then(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>());
        let (a, b, c) = (a.expect("a"), b.expect("b"), c.expect("c"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let sd = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
        assert!(sd > 0.1 && sd < 1.5, "{sd}");
    }
}
