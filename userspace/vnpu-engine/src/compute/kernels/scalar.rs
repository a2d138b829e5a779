//! Portable reference kernels; every SIMD kernel is tested against these.

use super::OutMat;
use crate::compute::quant::{f16_to_f32, ActQ8, Q4_1Mat, Q8_0Mat, QK};

pub fn dot_q4_1_row(w: &Q4_1Mat, r: usize, x: &ActQ8, t: usize) -> f32 {
    let nb = w.k / QK;
    let mut acc = 0f32;
    for b in 0..nb {
        let (q, wd, wm) = w.block(r, b);
        let a = &x.qs[t * x.k + b * QK..][..QK];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (q[j] & 15) as i32 * a[j] as i32 + (q[j] >> 4) as i32 * a[j + 16] as i32;
        }
        let (wd, wm) = (f16_to_f32(wd), f16_to_f32(wm));
        acc += wd * x.d[t * nb + b] * isum as f32 + wm * x.s[t * nb + b];
    }
    acc
}

pub fn dot_q8_0_row(w: &Q8_0Mat, r: usize, x: &ActQ8, t: usize) -> f32 {
    let nb = w.k / QK;
    let mut acc = 0f32;
    for b in 0..nb {
        let (q, wd) = w.block(r, b);
        let a = &x.qs[t * x.k + b * QK..][..QK];
        let isum: i32 = q.iter().zip(a).map(|(&p, &q)| p as i32 * q as i32).sum();
        acc += f16_to_f32(wd) * x.d[t * nb + b] * isum as f32;
    }
    acc
}

/// # Safety
/// See [`super::gemm_q4_1`].
pub unsafe fn gemm_q4_1(w: &Q4_1Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
    for t in 0..x.n {
        for r in r0..r1 {
            out.set(t, r, dot_q4_1_row(w, r, x, t));
        }
    }
}

/// # Safety
/// See [`super::gemm_q4_1`].
pub unsafe fn gemm_q8_0(w: &Q8_0Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
    for t in 0..x.n {
        for r in r0..r1 {
            out.set(t, r, dot_q8_0_row(w, r, x, t));
        }
    }
}

pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    for (a, b) in g.iter_mut().zip(u) {
        *a = crate::compute::kernels::scalar::silu(*a) * b;
    }
}

/// Reference for [`super::attend_row`].
pub fn attend_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    len: usize,
    scale: f32,
    sc: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    for (j, s) in sc[..len].iter_mut().enumerate() {
        *s = dot_f32(q, &k[j * stride..j * stride + hd]) * scale;
    }
    crate::compute::norm::softmax(&mut sc[..len]);
    out.fill(0.0);
    for (j, &p) in sc[..len].iter().enumerate() {
        axpy_f32(p, &v[j * stride..j * stride + hd], out);
    }
}

/// `sc[j] = exp(sc[j] - m)` for `j in j0..len`, returning `total` plus
/// them, added in order: the scalar remainder of the SIMD softmaxes in
/// `attend_row` (`total` the sum of their vector part).
///
/// # Safety
/// `sc..sc + len` valid for reads and writes.
#[inline]
pub(super) unsafe fn exp_sub_from(sc: *mut f32, j0: usize, len: usize, m: f32, total: f32) -> f32 {
    let (mut total, mut j) = (total, j0);
    while j < len {
        let e = (*sc.add(j) - m).exp();
        total += e;
        *sc.add(j) = e;
        j += 1;
    }
    total
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Exact (erf) GELU as BERT uses.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// erf, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7) in f32: BERT calls it
/// once per FFN activation, so it stays cheap.
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let r = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        r
    } else {
        -r
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.5204999),
            (1.0, 0.8427008),
            (-2.0, -0.9953223),
            (3.0, 0.9999779),
        ] {
            assert!((super::erf(x) - want).abs() < 1e-6, "{x}");
        }
    }
}
