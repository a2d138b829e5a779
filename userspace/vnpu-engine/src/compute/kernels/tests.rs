use super::*;
use crate::compute::quant::{quantize_q4_1, quantize_q8_0, ActQ8};
use crate::models::synthetic::Rng;

/// Every SIMD ISA of this architecture the CPU has (x86_64: AVX2, AVX-512
/// VNNI; aarch64: NEON, DotProd, I8MM; under qemu-user pick the CPU with
/// `QEMU_CPU`, e.g. cortex-a53 / cortex-a76 / max), noting the ones it lacks.
fn simd_isas() -> Vec<Isa> {
    let (v, missing): (Vec<Isa>, Vec<Isa>) = Isa::SIMD.iter().partition(|i| i.available());
    static NOTE: std::sync::Once = std::sync::Once::new();
    if !missing.is_empty() {
        NOTE.call_once(|| {
            eprintln!(
                "note: {missing:?} not available on this CPU; their kernels are not exercised"
            )
        });
    }
    v
}

#[test]
fn detect_picks_the_best_available() {
    let best = Isa::SIMD
        .iter()
        .copied()
        .find(|i| i.available())
        .unwrap_or(Isa::Scalar);
    eprintln!("detected {:?}, best available {best:?}", detect());
    assert!(detect().available());
    if std::env::var_os("VNPU_ISA").is_none() {
        assert_eq!(detect(), best);
    }
    #[cfg(target_arch = "aarch64")]
    assert!(Isa::Neon.available(), "ASIMD is aarch64's baseline");
    #[cfg(target_arch = "x86_64")]
    assert!(!Isa::Neon.available() && !Isa::NeonDot.available() && !Isa::NeonI8mm.available());
}

/// `wf` (`[rows, k]`) packed as Q4_1 or Q8_0 panels.
fn packed(q4: bool, wf: &[f32], rows: usize, k: usize) -> crate::formats::tensor::AlignedBytes {
    crate::formats::tensor::AlignedBytes::from_slice(&if q4 {
        quantize_q4_1(wf, rows, k)
    } else {
        quantize_q8_0(wf, rows, k)
    })
}

fn run(isa: Isa, q4: bool, wb: &[u8], rows: usize, k: usize, x: &ActQ8) -> Vec<f32> {
    let mut out = vec![0f32; x.n * rows];
    let o = OutMat::new(&mut out, x.n, rows);
    // SAFETY: `out` is [x.n, rows], all rows written by this one call; the
    // ISAs tested are available.
    unsafe {
        if q4 {
            let w = Q4_1Mat::from_bytes(wb, rows, k).expect("q4");
            gemm_q4_1(isa, &w, x, 0, rows, o);
        } else {
            let w = Q8_0Mat::from_bytes(wb, rows, k).expect("q8");
            gemm_q8_0(isa, &w, x, 0, rows, o);
        }
    }
    out
}

#[test]
fn gemm_simd_matches_scalar() {
    let mut rng = Rng::new(7);
    for &(rows, k, n) in &[
        (13usize, 64usize, 1usize),
        (8, 96, 3),
        (37, 160, 5),
        (4, 32, 2),
        (64, 576, 7),
        (24, 64, 4),
        (40, 96, 9),
        (17, 64, 1),
        (48, 1536, 2),
        (16, 1536, 90), // crosses a token block (128 KB of activations)
    ] {
        let wf: Vec<f32> = (0..rows * k).map(|_| rng.normal()).collect();
        let xf: Vec<f32> = (0..n * k).map(|_| rng.normal() * 3.0).collect();
        let mut x = ActQ8::default();
        x.quantize(&xf, n, k);
        for q4 in [true, false] {
            let wb = packed(q4, &wf, rows, k);
            let want = run(Isa::Scalar, q4, &wb, rows, k, &x);
            for isa in simd_isas() {
                let got = run(isa, q4, &wb, rows, k, &x);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                        "{isa:?} q4={q4} {rows}x{k}x{n} [{i}] {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn gemm_row_of_a_batch_is_bitwise_its_single_token_gemm() {
    // What batched jobs rely on (decode_batch = forward per row, vnpud's
    // cross-app batches = solo jobs): a token's outputs do not depend on how
    // many tokens share the GEMM, whichever tiles the count selects.
    let mut rng = Rng::new(5);
    let (rows, k) = (43usize, 96usize); // an odd last panel, partly filled
    let wf: Vec<f32> = (0..rows * k).map(|_| rng.normal()).collect();
    for n in [2usize, 5, 8, 15, 19] {
        let xf: Vec<f32> = (0..n * k).map(|_| rng.normal() * 2.0).collect();
        let mut x = ActQ8::default();
        x.quantize(&xf, n, k);
        for q4 in [true, false] {
            let wb = packed(q4, &wf, rows, k);
            for isa in simd_isas().into_iter().chain([Isa::Scalar]) {
                let all = run(isa, q4, &wb, rows, k, &x);
                for t in 0..n {
                    let mut one = ActQ8::default();
                    one.quantize(&xf[t * k..(t + 1) * k], 1, k);
                    let solo = run(isa, q4, &wb, rows, k, &one);
                    let batched = &all[t * rows..(t + 1) * rows];
                    assert!(
                        solo.iter().zip(batched).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} q4={q4} n={n} token {t}: batched differs from solo"
                    );
                }
            }
        }
    }
}

#[test]
fn gemm_panel_ranges_cover_rows() {
    // Threads split rows at panel boundaries; the last range ends at `rows`.
    let mut rng = Rng::new(11);
    let (rows, k, n) = (43usize, 128usize, 6usize);
    let wf: Vec<f32> = (0..rows * k).map(|_| rng.normal()).collect();
    let xf: Vec<f32> = (0..n * k).map(|_| rng.normal()).collect();
    let mut x = ActQ8::default();
    x.quantize(&xf, n, k);
    for q4 in [true, false] {
        let wb = packed(q4, &wf, rows, k);
        let want = run(Isa::Scalar, q4, &wb, rows, k, &x);
        for isa in simd_isas() {
            let mut out = vec![f32::NAN; n * rows];
            for (r0, r1) in [(0, 16), (16, 24), (24, 40), (40, 43)] {
                let o = OutMat::new(&mut out, n, rows);
                // SAFETY: `out` is [n, rows]; the calls write disjoint panel
                // ranges, one after another.
                unsafe {
                    if q4 {
                        let w = Q4_1Mat::from_bytes(&wb, rows, k).expect("q4");
                        gemm_q4_1(isa, &w, &x, r0, r1, o);
                    } else {
                        let w = Q8_0Mat::from_bytes(&wb, rows, k).expect("q8");
                        gemm_q8_0(isa, &w, &x, r0, r1, o);
                    }
                }
            }
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{isa:?} q4={q4}");
            }
        }
    }
}

#[test]
fn q4_1_extremes_do_not_saturate() {
    // All-15 weights against all +-127 activations: the 16-bit block sums
    // reach 8 * 2 * 15 * 127 = 30480, just inside i16.
    let (rows, k, n) = (16usize, 64usize, 2usize); // two panels: the wide tiles too
    let wb = crate::compute::quant::pack_q4_1(rows, k, |_, _| ([0xff; 16], 0x3c00, 0));
    let wb = crate::formats::tensor::AlignedBytes::from_slice(&wb);
    let mut x = ActQ8::default();
    let xf: Vec<f32> = (0..n * k).map(|i| if i < k { 1.0 } else { -1.0 }).collect();
    x.quantize(&xf, n, k);
    let want = run(Isa::Scalar, true, &wb, rows, k, &x);
    assert!((want[0] - 15.0 * 64.0).abs() < 1e-3, "{}", want[0]);
    for isa in simd_isas() {
        assert_eq!(run(isa, true, &wb, rows, k, &x), want, "{isa:?}");
    }
}

#[test]
fn q8_0_extremes_do_not_saturate() {
    // -128 weights (possible in a GGUF Q8_0 block) against +-127
    // activations: plain NEON's i16 pair sums reach 2 x 128 x 127 = 32512.
    let (rows, k) = (16usize, 64usize); // two panels: the wide tiles too
    let wb = crate::compute::quant::pack_q8_0(rows, k, |_, _| ([-128; 32], 0x3c00));
    let wb = crate::formats::tensor::AlignedBytes::from_slice(&wb);
    for n in [1usize, 2, 3, 4] {
        let mut x = ActQ8::default();
        let xf: Vec<f32> = (0..n * k)
            .map(|i| if (i / k) % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        x.quantize(&xf, n, k);
        let want = run(Isa::Scalar, false, &wb, rows, k, &x);
        assert!((want[0] + 128.0 * 64.0).abs() < 1e-3, "{}", want[0]);
        for isa in simd_isas() {
            let got = run(isa, false, &wb, rows, k, &x);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| (a - b).abs() <= 1e-5 * b.abs()),
                "{isa:?} n={n}: {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn gemm_matches_f32_reference() {
    // Integer path vs dequantized-weight f32 math: only activation rounding differs.
    let mut rng = Rng::new(3);
    let (rows, k, n) = (16, 128, 3);
    let wf: Vec<f32> = (0..rows * k).map(|_| rng.normal()).collect();
    let xf: Vec<f32> = (0..n * k).map(|_| rng.normal()).collect();
    let wb = crate::formats::tensor::AlignedBytes::from_slice(&quantize_q4_1(&wf, rows, k));
    let w = Q4_1Mat::from_bytes(&wb, rows, k).expect("q4");
    let mut x = ActQ8::default();
    x.quantize(&xf, n, k);
    let got = run(detect(), true, &wb, rows, k, &x);
    let mut row = vec![0f32; k];
    for r in 0..rows {
        w.row_f32(r, &mut row);
        for t in 0..n {
            let want: f32 = row.iter().zip(&xf[t * k..]).map(|(a, b)| a * b).sum();
            assert!(
                (got[t * rows + r] - want).abs() < 0.05 * (1.0 + want.abs()),
                "{} vs {want}",
                got[t * rows + r]
            );
        }
    }
}

#[test]
fn f32_helpers_match_scalar() {
    let mut rng = Rng::new(1);
    for n in [1usize, 7, 8, 31, 64, 100] {
        let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let want = scalar::dot_f32(&a, &b);
        for isa in simd_isas() {
            assert!((dot_f32(isa, &a, &b) - want).abs() < 1e-4 * (1.0 + want.abs()));
            let mut y1 = b.clone();
            let mut y2 = b.clone();
            axpy_f32(isa, 0.7, &a, &mut y1);
            scalar::axpy_f32(0.7, &a, &mut y2);
            assert!(y1.iter().zip(&y2).all(|(p, q)| (p - q).abs() < 1e-5));
        }
    }
}

#[test]
fn quantize_simd_matches_scalar() {
    let mut rng = Rng::new(5);
    let mut x: Vec<f32> = (0..32 * 9).map(|_| rng.normal() * 4.0).collect();
    x[40..72].iter_mut().for_each(|v| *v = 0.0); // all-zero block
    let nb = x.len() / 32;
    let (mut q1, mut d1, mut s1) = (vec![0i8; x.len()], vec![0f32; nb], vec![0f32; nb]);
    crate::compute::quant::quantize_q8_scalar(&x, &mut q1, &mut d1, &mut s1);
    for isa in simd_isas() {
        let (mut q2, mut d2, mut s2) = (vec![0i8; x.len()], vec![0f32; nb], vec![0f32; nb]);
        let mut off = vec![0i32; nb];
        quantize_row_q8_with(isa, &x, &mut q2, &mut d2, &mut s2, &mut off);
        assert_eq!(d1, d2);
        for (b, o) in off.iter().enumerate() {
            let sum: i32 = q2[b * 32..(b + 1) * 32].iter().map(|&q| q as i32).sum();
            assert_eq!(*o, -128 * sum, "{isa:?} block {b}");
        }
        assert!(
            q1.iter()
                .zip(&q2)
                .all(|(a, b)| (*a as i32 - *b as i32).abs() <= 1),
            "{isa:?}"
        );
        assert!(s1
            .iter()
            .zip(&s2)
            .zip(&d1)
            .all(|((a, b), d)| (a - b).abs() <= 32.0 * d + 1e-6));
    }
}

#[test]
fn silu_mul_simd_matches_scalar() {
    let mut rng = Rng::new(21);
    let mut g: Vec<f32> = (0..203).map(|_| rng.normal() * 6.0).collect();
    g[0] = -100.0;
    g[1] = 100.0;
    g[2] = 0.0;
    let u: Vec<f32> = (0..203).map(|_| rng.normal()).collect();
    let mut want = g.clone();
    scalar::silu_mul(&mut want, &u);
    for isa in simd_isas() {
        let mut got = g.clone();
        silu_mul(isa, &mut got, &u);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{isa:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn gelu_simd_matches_scalar() {
    let mut rng = Rng::new(22);
    let x: Vec<f32> = (0..203).map(|_| rng.normal() * 4.0).collect();
    let want: Vec<f32> = x
        .iter()
        .map(|&v| crate::compute::kernels::scalar::gelu(v))
        .collect();
    for isa in simd_isas() {
        let mut got = x.clone();
        gelu(isa, &mut got);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 2e-6 * (1.0 + b.abs()),
                "{isa:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn attend_rows_give_each_row_its_attend_row_bitwise() {
    // Prefill groups a chunk's query rows (causal: lengths one apart) and
    // BERT a sequence's rows (equal lengths); decode runs one row. A row's
    // output must not depend on which of these computed it.
    let mut rng = Rng::new(29);
    for hd in [32usize, 64, 128, 40] {
        let stride = hd * 3;
        let maxlen = 21;
        let k: Vec<f32> = (0..maxlen * stride).map(|_| rng.normal()).collect();
        let v: Vec<f32> = (0..maxlen * stride).map(|_| rng.normal()).collect();
        let qs: Vec<Vec<f32>> = (0..7).map(|_| (0..hd).map(|_| rng.normal()).collect()).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        for lens in [vec![15usize, 16, 17, 18, 19, 20, 21], vec![9; 7], vec![1, 2, 3, 4, 5, 6, 7]] {
            for isa in simd_isas().into_iter().chain([Isa::Scalar]) {
                let mut outs = vec![vec![0f32; hd]; 7];
                let qr: Vec<&[f32]> = qs.iter().map(|q| q.as_slice()).collect();
                let mut or: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                let mut sc = Vec::new();
                attend_rows(isa, &qr, &k, &v, stride, &lens, scale, &mut sc, &mut or);
                for (r, &len) in lens.iter().enumerate() {
                    let mut one = vec![0f32; hd];
                    let mut sc1 = vec![0f32; len.next_multiple_of(8)];
                    attend_row(isa, &qs[r], &k, &v, stride, len, scale, &mut sc1, &mut one);
                    assert!(
                        one.iter().zip(&outs[r]).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} hd={hd} lens={lens:?} row {r}"
                    );
                }
            }
        }
    }
}

#[test]
fn attend_row_simd_matches_scalar() {
    let mut rng = Rng::new(23);
    for hd in [32usize, 64, 128, 40] {
        let stride = hd * 3;
        for len in [1usize, 5, 8, 9, 33, 130] {
            let q: Vec<f32> = (0..hd).map(|_| rng.normal()).collect();
            let k: Vec<f32> = (0..len * stride).map(|_| rng.normal()).collect();
            let v: Vec<f32> = (0..len * stride).map(|_| rng.normal()).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let mut sc = vec![0f32; len.next_multiple_of(8)];
            let mut want = vec![0f32; hd];
            scalar::attend_row(
                &q,
                &k[hd..],
                &v[hd..],
                stride,
                len - 1,
                scale,
                &mut sc,
                &mut want,
            );
            if len == 1 {
                continue;
            }
            for isa in simd_isas() {
                let mut got = vec![0f32; hd];
                attend_row(
                    isa,
                    &q,
                    &k[hd..],
                    &v[hd..],
                    stride,
                    len - 1,
                    scale,
                    &mut sc,
                    &mut got,
                );
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{isa:?} hd={hd} len={len}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn x86_isas_compute_the_same_bits() {
    // The guest (QEMU TCG: AVX2) and the host (AVX-512) must give equal
    // answers (the eaibench guest test compares them), so every kernel of
    // a forward pass is bitwise the same on both.
    if !(Isa::Avx2.available() && Isa::Avx512Vnni.available()) {
        eprintln!("note: AVX2 and AVX-512 VNNI not both available; not compared");
        return;
    }
    let mut rng = Rng::new(31);
    let (rows, k, n) = (43usize, 96usize, 11usize);
    let wf: Vec<f32> = (0..rows * k).map(|_| rng.normal()).collect();
    let xf: Vec<f32> = (0..n * k).map(|_| rng.normal() * 3.0).collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut acts = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512Vnni] {
        let nb = n * k / 32;
        let (mut q, mut d, mut s, mut o) = (vec![0i8; n * k], vec![0f32; nb], vec![0f32; nb], vec![0i32; nb]);
        quantize_row_q8_with(isa, &xf, &mut q, &mut d, &mut s, &mut o);
        acts.push((q, bits(&d), bits(&s), o));
    }
    assert!(acts[0] == acts[1], "quantize_q8");
    let mut x = ActQ8::default();
    x.quantize(&xf, n, k);
    for q4 in [true, false] {
        let wb = packed(q4, &wf, rows, k);
        for xs in [&x, &{
            let mut one = ActQ8::default();
            one.quantize(&xf[..k], 1, k);
            one
        }] {
            let a = run(Isa::Avx2, q4, &wb, rows, k, xs);
            let b = run(Isa::Avx512Vnni, q4, &wb, rows, k, xs);
            assert_eq!(bits(&a), bits(&b), "gemm q4={q4} n={}", xs.n);
        }
    }
    let u: Vec<f32> = (0..100).map(|_| rng.normal() * 4.0).collect();
    let (mut g2, mut g5) = (u.clone(), u.clone());
    silu_mul(Isa::Avx2, &mut g2, &xf[..100]);
    silu_mul(Isa::Avx512Vnni, &mut g5, &xf[..100]);
    assert_eq!(bits(&g2), bits(&g5), "silu_mul");
    let (mut e2, mut e5) = (u.clone(), u);
    gelu(Isa::Avx2, &mut e2);
    gelu(Isa::Avx512Vnni, &mut e5);
    assert_eq!(bits(&e2), bits(&e5), "gelu");
    for hd in [32usize, 64] {
        let stride = 3 * hd;
        let kv: Vec<f32> = (0..40 * stride).map(|_| rng.normal()).collect();
        let vv: Vec<f32> = (0..40 * stride).map(|_| rng.normal()).collect();
        let qs: Vec<Vec<f32>> = (0..6).map(|_| (0..hd).map(|_| rng.normal()).collect()).collect();
        let lens = [30usize, 31, 32, 33, 34, 35];
        let mut res = Vec::new();
        for isa in [Isa::Avx2, Isa::Avx512Vnni] {
            let mut outs = vec![vec![0f32; hd]; 6];
            let qr: Vec<&[f32]> = qs.iter().map(|q| q.as_slice()).collect();
            let mut or: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            attend_rows(isa, &qr, &kv, &vv, stride, &lens, 0.125, &mut Vec::new(), &mut or);
            res.push(outs.concat().iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
        assert!(res[0] == res[1], "attend_rows hd={hd}");
    }
}
