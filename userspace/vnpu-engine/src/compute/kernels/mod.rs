//! Compute kernels with runtime ISA dispatch.
//!
//! Each ISA implements the same small set of entry points; `Isa` selects
//! one at runtime (detected once, overridable for tests with `VNPU_ISA`).
//!
//! * x86_64 (`x86`): AVX2 (+FMA, F16C) and AVX-512 VNNI; VNNI has its own
//!   int8 GEMM and shares AVX2's f32 kernels.
//! * aarch64 (`aarch64`): baseline NEON (ASIMD, every aarch64 CPU),
//!   FEAT_DotProd (`sdot`) and FEAT_I8MM (`smmla` for token pairs, `sdot`
//!   for single tokens); each has its own int8 GEMM (one macro, stamped per
//!   ISA), all share the NEON f32 kernels.
//! * scalar ([`scalar`]): the portable reference every SIMD kernel is
//!   tested against (`tests.rs`), and the fallback on other targets.

use crate::compute::quant::{ActQ8, Q4_1Mat, Q8_0Mat};
use std::sync::OnceLock;

// First: its macros serve the arch modules' GEMMs.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[macro_use]
mod tiling;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    /// x86_64: AVX2 + FMA + F16C.
    Avx2,
    /// x86_64: AVX-512 F/BW/VL + VNNI (and AVX2).
    Avx512Vnni,
    /// aarch64: baseline ASIMD (always present).
    Neon,
    /// aarch64: FEAT_DotProd (`sdot`).
    NeonDot,
    /// aarch64: FEAT_I8MM (`smmla`) and FEAT_DotProd.
    NeonI8mm,
}

impl Isa {
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
                    && is_x86_feature_detected!("avx2")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonI8mm => {
                std::arch::is_aarch64_feature_detected!("dotprod")
                    && std::arch::is_aarch64_feature_detected!("i8mm")
            }
            _ => false,
        }
    }

    /// Every SIMD ISA of this architecture, best first.
    pub const SIMD: &'static [Isa] = if cfg!(target_arch = "x86_64") {
        &[Isa::Avx512Vnni, Isa::Avx2]
    } else if cfg!(target_arch = "aarch64") {
        &[Isa::NeonI8mm, Isa::NeonDot, Isa::Neon]
    } else {
        &[]
    };

    /// True for the aarch64 ISAs (they share the NEON f32 kernels).
    #[cfg(target_arch = "aarch64")]
    fn is_neon(self) -> bool {
        matches!(self, Isa::Neon | Isa::NeonDot | Isa::NeonI8mm)
    }
}

static DETECTED: OnceLock<Isa> = OnceLock::new();

/// Best ISA on this CPU; `VNPU_ISA` forces a lower one (x86_64:
/// `scalar|avx2|avx512`; aarch64: `scalar|neon|dotprod|i8mm`). A forced ISA
/// the CPU lacks is ignored.
pub fn detect() -> Isa {
    *DETECTED.get_or_init(|| {
        let forced = match std::env::var("VNPU_ISA").as_deref() {
            Ok("scalar") => Some(Isa::Scalar),
            Ok("avx2") => Some(Isa::Avx2),
            Ok("avx512") => Some(Isa::Avx512Vnni),
            Ok("neon") => Some(Isa::Neon),
            Ok("dotprod") => Some(Isa::NeonDot),
            Ok("i8mm") => Some(Isa::NeonI8mm),
            _ => None,
        };
        if let Some(i) = forced.filter(|i| i.available()) {
            return i;
        }
        Isa::SIMD
            .iter()
            .copied()
            .find(|i| i.available())
            .unwrap_or(Isa::Scalar)
    })
}

/// Output matrix `[n, ldo]` shared by threads that write disjoint row ranges.
#[derive(Clone, Copy)]
pub struct OutMat {
    pub ptr: *mut f32,
    pub ldo: usize,
    pub n: usize,
}
// SAFETY: callers partition the column (output-row) range across threads.
unsafe impl Send for OutMat {}
unsafe impl Sync for OutMat {}

impl OutMat {
    pub fn new(out: &mut [f32], n: usize, ldo: usize) -> OutMat {
        Self::strided(out, n, ldo, ldo)
    }
    /// `n` rows of `cols` values, `ldo` apart (a column range of a wider matrix).
    pub fn strided(out: &mut [f32], n: usize, ldo: usize, cols: usize) -> OutMat {
        assert!(cols <= ldo && (n == 0 || out.len() >= (n - 1) * ldo + cols));
        OutMat {
            ptr: out.as_mut_ptr(),
            ldo,
            n,
        }
    }
    /// # Safety
    /// `t < n`, `r < ldo`, and no other thread writes (t, r).
    #[inline(always)]
    pub unsafe fn set(&self, t: usize, r: usize, v: f32) {
        *self.ptr.add(t * self.ldo + r) = v;
    }
}

/// `out[t, r] = dot(w[r], x[t])` for rows `r0..r1` and all tokens.
///
/// # Safety
/// `out` must be `[x.n, >= w.rows]`, rows `r0..r1 <= w.rows` owned by the
/// caller, `w.k == x.k`; `r0` a multiple of [`crate::compute::quant::PANEL`] and `r1`
/// one too or `w.rows` (SIMD kernels write whole 8-row panels).
pub unsafe fn gemm_q4_1(isa: Isa, w: &Q4_1Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::avx2::gemm_q4_1(w, x, r0, r1, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::avx512::gemm_q4_1(w, x, r0, r1, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => aarch64::neon::gemm_q4_1(w, x, r0, r1, out),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => aarch64::dotprod::gemm_q4_1(w, x, r0, r1, out),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonI8mm => aarch64::i8mm::gemm_q4_1(w, x, r0, r1, out),
        _ => scalar::gemm_q4_1(w, x, r0, r1, out),
    }
}

/// # Safety
/// As [`gemm_q4_1`].
pub unsafe fn gemm_q8_0(isa: Isa, w: &Q8_0Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::avx2::gemm_q8_0(w, x, r0, r1, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::avx512::gemm_q8_0(w, x, r0, r1, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => aarch64::neon::gemm_q8_0(w, x, r0, r1, out),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => aarch64::dotprod::gemm_q8_0(w, x, r0, r1, out),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonI8mm => aarch64::i8mm::gemm_q8_0(w, x, r0, r1, out),
        _ => scalar::gemm_q8_0(w, x, r0, r1, out),
    }
}

/// Per-32-block int8 quantization of activations (see [`crate::compute::quant::ActQ8`]).
pub fn quantize_row_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], off: &mut [i32]) {
    quantize_row_q8_with(detect(), x, qs, d, s, off)
}

/// Quantizes `x` per 32-block into the parts of an [`crate::compute::quant::ActQ8`].
pub fn quantize_row_q8_with(
    isa: Isa,
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    off: &mut [i32],
) {
    assert!(
        x.len() % crate::compute::quant::QK == 0
            && qs.len() >= x.len()
            && d.len() * crate::compute::quant::QK >= x.len()
    );
    assert!(s.len() == d.len() && off.len() == d.len());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: ISA checked by the caller's Isa value; sizes asserted above.
        Isa::Avx512Vnni => return unsafe { x86::float512::quantize_q8(x, qs, d, s, off) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::float::quantize_q8(x, qs, d, s) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: ASIMD is aarch64's baseline; sizes asserted above.
        i if i.is_neon() => unsafe { aarch64::float::quantize_q8(x, qs, d, s) },
        _ => crate::compute::quant::quantize_q8_scalar(x, qs, d, s),
    }
    crate::compute::quant::block_offsets(&qs[..x.len()], off);
}

/// f32 dot product (attention scores).
#[inline]
pub fn dot_f32(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: engine code passes an Isa only once checked available.
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::float::dot_f32(a, b) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: ASIMD is aarch64's baseline.
        i if i.is_neon() => unsafe { aarch64::float::dot_f32(a, b) },
        _ => scalar::dot_f32(a, b),
    }
}

/// SwiGLU gate: `g = silu(g) * u`.
pub fn silu_mul(isa: Isa, g: &mut [f32], u: &[f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Isa value was checked available when the Exec was built.
        Isa::Avx512Vnni => unsafe { x86::float512::silu_mul(g, u) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::float::silu_mul(g, u) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: ASIMD is aarch64's baseline.
        i if i.is_neon() => unsafe { aarch64::float::silu_mul(g, u) },
        _ => scalar::silu_mul(g, u),
    }
}

/// BERT's erf-GELU in place.
pub fn gelu(isa: Isa, x: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Isa value was checked available when the Exec was built.
        Isa::Avx512Vnni => unsafe { x86::float512::gelu(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::float::gelu(x) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: ASIMD is aarch64's baseline.
        i if i.is_neon() => unsafe { aarch64::float::gelu(x) },
        _ => x
            .iter_mut()
            .for_each(|v| *v = crate::compute::kernels::scalar::gelu(*v)),
    }
}

/// One query row of attention: `out = softmax(scale * q . k_j) v` over
/// `j < len`, key/value rows `stride` floats apart in `k` / `v` (a KV cache
/// slice, or one sequence's rows of a stacked `[n, d]` matrix). `sc` is
/// scratch of at least `len` floats.
pub fn attend_row(
    isa: Isa,
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
    assert!(out.len() == hd && sc.len() >= len && hd <= stride);
    assert!(len == 0 || ((len - 1) * stride + hd <= k.len() && (len - 1) * stride + hd <= v.len()));
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && matches!(hd, 32 | 64 | 128) {
        return x86_attend_rows(isa, &[q], k, v, stride, &[len], scale, sc, &mut [out]);
    }
    match (isa, hd) {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: ASIMD is aarch64's baseline; bounds asserted above.
        (i, 32) if i.is_neon() => unsafe {
            aarch64::float::attend_row::<8>(q, k, v, stride, len, scale, sc, out)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        (i, 64) if i.is_neon() => unsafe {
            aarch64::float::attend_row::<16>(q, k, v, stride, len, scale, sc, out)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        (i, 128) if i.is_neon() => unsafe {
            aarch64::float::attend_row::<32>(q, k, v, stride, len, scale, sc, out)
        },
        _ => scalar::attend_row(q, k, v, stride, len, scale, sc, out),
    }
}

/// `y += a * x` (attention value accumulation).
#[inline]
pub fn axpy_f32(isa: Isa, a: f32, x: &[f32], y: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: engine code passes an Isa only once checked available.
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::float::axpy_f32(a, x, y) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: ASIMD is aarch64's baseline.
        i if i.is_neon() => unsafe { aarch64::float::axpy_f32(a, x, y) },
        _ => scalar::axpy_f32(a, x, y),
    }
}

/// [`attend_row`] for several query rows against the same keys and
/// values, row r over keys `0..lens[r]`; each row's result is bitwise
/// what [`attend_row`] gives it alone. On x86 the rows go through the keys
/// in groups, sharing the loads (see `x86::attention`).
/// `sc` is scratch, resized as needed.
#[allow(clippy::too_many_arguments)]
pub fn attend_rows(
    isa: Isa,
    qs: &[&[f32]],
    k: &[f32],
    v: &[f32],
    stride: usize,
    lens: &[usize],
    scale: f32,
    sc: &mut Vec<f32>,
    outs: &mut [&mut [f32]],
) {
    assert!(qs.len() == lens.len() && outs.len() == lens.len());
    let Some(&q0) = qs.first() else { return };
    let hd = q0.len();
    let maxlen = lens.iter().copied().max().unwrap_or(0);
    assert!(hd <= stride && qs.iter().all(|q| q.len() == hd) && outs.iter().all(|o| o.len() == hd));
    assert!(maxlen == 0 || ((maxlen - 1) * stride + hd <= k.len() && (maxlen - 1) * stride + hd <= v.len()));
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && matches!(hd, 32 | 64 | 128) {
        let need = qs.len().min(x86::attention::ROWS) * maxlen;
        if sc.len() < need {
            sc.resize(need, 0.0);
        }
        return x86_attend_rows(isa, qs, k, v, stride, lens, scale, sc, outs);
    }
    if sc.len() < maxlen {
        sc.resize(maxlen, 0.0);
    }
    for ((q, &len), o) in qs.iter().zip(lens).zip(outs.iter_mut()) {
        attend_row(isa, q, k, v, stride, len, scale, sc, o);
    }
}

/// The x86 kernels of [`attend_rows`], in groups of their `ROWS` rows
/// (head dims 32, 64, 128; `isa` AVX2 or AVX-512; operand bounds checked
/// by the callers; `sc` at least `min(rows, ROWS) * max(lens)`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn x86_attend_rows(
    isa: Isa,
    qs: &[&[f32]],
    k: &[f32],
    v: &[f32],
    stride: usize,
    lens: &[usize],
    scale: f32,
    sc: &mut [f32],
    outs: &mut [&mut [f32]],
) {
    use x86::attention::{attend_rows_avx2 as ymm, attend_rows_avx512 as zmm, ROWS};
    let (hd, maxlen) = (qs[0].len(), lens.iter().copied().max().unwrap_or(0));
    assert!(sc.len() >= qs.len().min(ROWS) * maxlen);
    let (kp, vp, wide) = (k.as_ptr(), v.as_ptr(), isa == Isa::Avx512Vnni);
    for ((q, l), o) in qs.chunks(ROWS).zip(lens.chunks(ROWS)).zip(outs.chunks_mut(ROWS)) {
        macro_rules! go {
            ($c:literal, $z:literal, $r:literal) => {{
                let qp: [*const f32; $r] = std::array::from_fn(|i| q[i].as_ptr());
                let op: [*mut f32; $r] = std::array::from_fn(|i| o[i].as_mut_ptr());
                let ls: [usize; $r] = std::array::from_fn(|i| l[i]);
                // SAFETY: the ISA was checked when the Exec was built;
                // row and key bounds asserted above; `sc` holds ROWS rows.
                unsafe {
                    if wide {
                        zmm::<$c, $z, $r>(qp, kp, vp, stride, ls, scale, sc, op)
                    } else {
                        ymm::<$c, $r>(qp, kp, vp, stride, ls, scale, sc, op)
                    }
                }
            }};
        }
        match (hd, q.len()) {
            (32, 1) => go!(4, 2, 1),
            (32, 2) => go!(4, 2, 2),
            (32, 3) => go!(4, 2, 3),
            (32, _) => go!(4, 2, 4),
            (64, 1) => go!(8, 4, 1),
            (64, 2) => go!(8, 4, 2),
            (64, 3) => go!(8, 4, 3),
            (64, _) => go!(8, 4, 4),
            (128, 1) => go!(16, 8, 1),
            (128, 2) => go!(16, 8, 2),
            (128, 3) => go!(16, 8, 3),
            (_, _) => go!(16, 8, 4),
        }
    }
}

/// What one core can do at most, measured on this machine: the clock and
/// the sustained rate of the ISA's int8 multiply instruction.
#[derive(Clone, Copy, Debug)]
pub struct PeakProbe {
    pub ghz: f64,
    /// Int8 multiply instructions retired per cycle (AVX2: `vpmaddubsw ymm`,
    /// AVX-512 VNNI: `vpdpbusd zmm`).
    pub mul_per_cycle: f64,
    /// Int8 multiply-accumulates per instruction (AVX2: 32; VNNI zmm: 64).
    pub macs_per_mul: f64,
}

impl PeakProbe {
    /// Peak int8 GOPS of one core (a multiply-accumulate counts as 2 ops).
    pub fn core_gops(&self) -> f64 {
        self.ghz * self.mul_per_cycle * self.macs_per_mul * 2.0
    }
}

/// Measures [`PeakProbe`] for `isa` (None where no probe exists yet:
/// scalar and the aarch64 ISAs).
pub fn probe_peak(isa: Isa) -> Option<PeakProbe> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => {
            let ghz = x86::probe::probe_ghz();
            // SAFETY: the ISA's features were checked available when `isa` was chosen.
            let (mul_per_cycle, macs_per_mul) = unsafe {
                if isa == Isa::Avx2 {
                    (x86::probe::probe_maddubs_per_cycle(ghz), 32.0)
                } else {
                    (x86::probe::probe_dpbusd_zmm_per_cycle(ghz), 64.0)
                }
            };
            Some(PeakProbe {
                ghz,
                mul_per_cycle,
                macs_per_mul,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
