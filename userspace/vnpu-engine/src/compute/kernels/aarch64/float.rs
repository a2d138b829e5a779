//! f32 kernels on baseline ASIMD (attention, activations, activation
//! quantization); every aarch64 ISA runs these. Same algorithms and
//! constants as `x86/float.rs`, 4 lanes per register.
//!
//! ASIMD is part of the aarch64 target baseline (`neon` is on for every
//! `aarch64-*` Rust target), so these are safe to call on any aarch64 CPU;
//! they stay `unsafe fn` for the raw-pointer loops only.

use crate::compute::kernels::scalar;
use crate::compute::quant::QK;
use std::arch::aarch64::*;

/// # Safety
/// None beyond ASIMD (always present on aarch64).
#[inline]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (c, a) in acc.iter_mut().enumerate() {
            *a = vfmaq_f32(
                *a,
                vld1q_f32(pa.add(i + 4 * c)),
                vld1q_f32(pb.add(i + 4 * c)),
            );
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
        i += 4;
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// # Safety
/// None beyond ASIMD (always present on aarch64).
#[inline]
pub unsafe fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let va = vdupq_n_f32(a);
    let mut i = 0;
    while i + 4 <= n {
        vst1q_f32(
            py.add(i),
            vfmaq_f32(vld1q_f32(py.add(i)), va, vld1q_f32(px.add(i))),
        );
        i += 4;
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}

/// Per-32-block int8 quantization (same contract as
/// [`crate::compute::quant::quantize_q8_scalar`]; ties round to even instead of away).
///
/// # Safety
/// `x.len()` a multiple of 32 and the outputs sized to match.
pub unsafe fn quantize_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    let nb = x.len() / QK;
    for b in 0..nb {
        let p = x.as_ptr().add(b * QK);
        let mut v = [vdupq_n_f32(0.0); 8];
        for (i, vi) in v.iter_mut().enumerate() {
            *vi = vld1q_f32(p.add(4 * i));
        }
        let mut m = vabsq_f32(v[0]);
        for vi in &v[1..] {
            m = vmaxq_f32(m, vabsq_f32(*vi));
        }
        let amax = vmaxvq_f32(m);
        let sc = amax / 127.0;
        let inv = if sc > 0.0 { 1.0 / sc } else { 0.0 };
        let mut iv = [vdupq_n_s32(0); 8];
        for i in 0..8 {
            iv[i] = vcvtnq_s32_f32(vmulq_n_f32(v[i], inv));
        }
        let mut sum = iv[0];
        for vi in &iv[1..] {
            sum = vaddq_s32(sum, *vi);
        }
        let q = qs.as_mut_ptr().add(b * QK);
        for h in 0..2 {
            let a = vcombine_s16(vqmovn_s32(iv[4 * h]), vqmovn_s32(iv[4 * h + 1]));
            let c = vcombine_s16(vqmovn_s32(iv[4 * h + 2]), vqmovn_s32(iv[4 * h + 3]));
            vst1q_s8(q.add(16 * h), vcombine_s8(vqmovn_s16(a), vqmovn_s16(c)));
        }
        d[b] = sc;
        s[b] = sc * vaddvq_s32(sum) as f32;
    }
}

/// exp(x) for 4 lanes (Cephes expf polynomial, ~2 ulp; clamped to the f32
/// range), as `x86::float::exp8`.
#[inline]
unsafe fn exp4(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3)), vdupq_n_f32(88.3));
    let fx = vrndmq_f32(vfmaq_f32(
        vdupq_n_f32(0.5),
        x,
        vdupq_n_f32(std::f32::consts::LOG2_E),
    ));
    let x = vfmsq_f32(x, fx, vdupq_n_f32(0.693_359_4));
    let x = vfmsq_f32(x, fx, vdupq_n_f32(-2.121_944_4e-4));
    let mut y = vdupq_n_f32(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        y = vfmaq_f32(vdupq_n_f32(c), y, x);
    }
    let y = vaddq_f32(vfmaq_f32(x, y, vmulq_f32(x, x)), vdupq_n_f32(1.0));
    let pow2 = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)));
    vmulq_f32(y, vreinterpretq_f32_s32(pow2))
}

/// `g = silu(g) * u` (SwiGLU).
///
/// # Safety
/// None beyond ASIMD (always present on aarch64).
pub unsafe fn silu_mul(g: &mut [f32], u: &[f32]) {
    let n = g.len().min(u.len());
    let (pg, pu) = (g.as_mut_ptr(), u.as_ptr());
    let one = vdupq_n_f32(1.0);
    let mut i = 0;
    while i + 4 <= n {
        let x = vld1q_f32(pg.add(i));
        let e = exp4(vnegq_f32(x));
        let s = vdivq_f32(x, vaddq_f32(one, e));
        vst1q_f32(pg.add(i), vmulq_f32(s, vld1q_f32(pu.add(i))));
        i += 4;
    }
    while i < n {
        g[i] = scalar::silu(g[i]) * u[i];
        i += 1;
    }
}

/// Exact-form GELU `0.5 x (1 + erf(x / sqrt 2))` in place; erf by
/// Abramowitz & Stegun 7.1.26, as [`scalar::erf`].
///
/// # Safety
/// None beyond ASIMD (always present on aarch64).
pub unsafe fn gelu(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let one = vdupq_n_f32(1.0);
    let mut i = 0;
    while i + 4 <= n {
        let v = vld1q_f32(p.add(i));
        let u = vmulq_n_f32(v, std::f32::consts::FRAC_1_SQRT_2);
        let z = vabsq_f32(u);
        let t = vdivq_f32(one, vfmaq_n_f32(one, z, 0.327_591_1));
        let mut poly = vdupq_n_f32(1.061_405_4);
        for c in [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
            poly = vfmaq_f32(vdupq_n_f32(c), poly, t);
        }
        poly = vmulq_f32(poly, t);
        let e = exp4(vnegq_f32(vmulq_f32(z, z)));
        let r = vfmsq_f32(one, poly, e);
        // erf(u) = r with u's sign: copy the sign bit of u onto r (r >= 0).
        let sign = vandq_u32(vreinterpretq_u32_f32(u), vdupq_n_u32(0x8000_0000));
        let erf = vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(r), sign));
        vst1q_f32(
            p.add(i),
            vmulq_f32(vmulq_n_f32(v, 0.5), vaddq_f32(one, erf)),
        );
        i += 4;
    }
    while i < n {
        x[i] = scalar::gelu(x[i]);
        i += 1;
    }
}

/// One query row of attention, head dim `4 * C`
/// (see [`crate::compute::kernels::attend_row`]).
///
/// # Safety
/// `q.len() == out.len() == 4 * C`, rows `j * stride .. j * stride + 4 * C`
/// of `k` and `v` in bounds for `j < len`, `sc.len() >= len`.
pub unsafe fn attend_row<const C: usize>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    len: usize,
    scale: f32,
    sc: &mut [f32],
    out: &mut [f32],
) {
    let (qp, kp, vp, sp) = (q.as_ptr(), k.as_ptr(), v.as_ptr(), sc.as_mut_ptr());
    // Scores, 4 keys at a time: 4 accumulators, reduced pairwise (`faddp`)
    // into one vector of 4 scores.
    let mut mx = vdupq_n_f32(f32::NEG_INFINITY);
    let mut j = 0;
    while j + 4 <= len {
        let mut acc = [vdupq_n_f32(0.0); 4];
        for c in 0..C {
            let qv = vld1q_f32(qp.add(4 * c));
            for (i, a) in acc.iter_mut().enumerate() {
                *a = vfmaq_f32(*a, qv, vld1q_f32(kp.add((j + i) * stride + 4 * c)));
            }
        }
        let s = vmulq_n_f32(
            vpaddq_f32(vpaddq_f32(acc[0], acc[1]), vpaddq_f32(acc[2], acc[3])),
            scale,
        );
        mx = vmaxq_f32(mx, s);
        vst1q_f32(sp.add(j), s);
        j += 4;
    }
    let mut m = vmaxvq_f32(mx);
    while j < len {
        let mut a = vdupq_n_f32(0.0);
        for c in 0..C {
            a = vfmaq_f32(
                a,
                vld1q_f32(qp.add(4 * c)),
                vld1q_f32(kp.add(j * stride + 4 * c)),
            );
        }
        let s = vaddvq_f32(a) * scale;
        m = m.max(s);
        *sp.add(j) = s;
        j += 1;
    }
    // exp(s - max) in place, and its sum.
    let vm = vdupq_n_f32(m);
    let mut sum = vdupq_n_f32(0.0);
    let mut j = 0;
    while j + 4 <= len {
        let e = exp4(vsubq_f32(vld1q_f32(sp.add(j)), vm));
        sum = vaddq_f32(sum, e);
        vst1q_f32(sp.add(j), e);
        j += 4;
    }
    let total = scalar::exp_sub_from(sp, j, len, m, vaddvq_f32(sum));
    // Weighted sum of value rows, output kept in registers; normalized once.
    let mut o = [vdupq_n_f32(0.0); C];
    for j in 0..len {
        let p = *sp.add(j);
        for (c, oc) in o.iter_mut().enumerate() {
            *oc = vfmaq_n_f32(*oc, vld1q_f32(vp.add(j * stride + 4 * c)), p);
        }
    }
    let inv = 1.0 / total;
    for (c, oc) in o.iter().enumerate() {
        vst1q_f32(out.as_mut_ptr().add(4 * c), vmulq_n_f32(*oc, inv));
    }
}
