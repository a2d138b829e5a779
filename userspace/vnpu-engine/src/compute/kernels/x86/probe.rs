//! Peak-rate probes for the benchmark's "GEMM GOPS against the machine's
//! peak": the core clock and the sustained int8 multiply rate, measured
//! with hand-written loops (x86_64).

/// Core clock in GHz: a chain of dependent 1-cycle `add`s runs one per
/// cycle, so chain length / time is the clock the core actually runs at
/// (boost included). Best of many ~0.3 ms runs: a run that other load
/// preempted only reads low, and short ones mostly escape preemption.
pub fn probe_ghz() -> f64 {
    let mut best = 0f64;
    for _ in 0..200 {
        let iters: u64 = 100_000;
        let (mut x, mut n) = (0u64, iters);
        let t = std::time::Instant::now();
        // SAFETY: pure register arithmetic.
        unsafe {
            std::arch::asm!(
                "2:",
                "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                "sub {n}, 1",
                "jnz 2b",
                x = inout(reg) x,
                n = inout(reg) n,
                options(nomem, nostack),
            );
        }
        std::hint::black_box((x, n));
        best = best.max((iters * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Instructions per cycle of a hand-written loop: `run(n)` executes `n`
/// iterations of `per_iter` independent instructions; best of many runs,
/// timed against `ghz`.
fn per_cycle(ghz: f64, per_iter: u64, run: impl Fn(u64)) -> f64 {
    let mut best = 0f64;
    for _ in 0..200 {
        let iters: u64 = 50_000;
        let t = std::time::Instant::now();
        run(iters);
        let secs = t.elapsed().as_secs_f64();
        best = best.max((iters * per_iter) as f64 / (secs * ghz * 1e9));
    }
    best
}

/// Sustained `vpmaddubsw ymm` (the int8 multiply every AVX2 GEMM kernel
/// here is built on: 32 u8 x i8 products summed in pairs) per cycle on one
/// core: 12 independent ones per loop iteration.
///
/// # Safety
/// Requires AVX2.
pub unsafe fn probe_maddubs_per_cycle(ghz: f64) -> f64 {
    #[target_feature(enable = "avx2")]
    unsafe fn run(mut n: u64) {
        std::arch::asm!(
            "vpxor ymm0, ymm0, ymm0",
            "vpxor ymm1, ymm1, ymm1",
            "2:",
            "vpmaddubsw ymm2, ymm0, ymm1", "vpmaddubsw ymm3, ymm0, ymm1",
            "vpmaddubsw ymm4, ymm0, ymm1", "vpmaddubsw ymm5, ymm0, ymm1",
            "vpmaddubsw ymm6, ymm0, ymm1", "vpmaddubsw ymm7, ymm0, ymm1",
            "vpmaddubsw ymm8, ymm0, ymm1", "vpmaddubsw ymm9, ymm0, ymm1",
            "vpmaddubsw ymm10, ymm0, ymm1", "vpmaddubsw ymm11, ymm0, ymm1",
            "vpmaddubsw ymm12, ymm0, ymm1", "vpmaddubsw ymm13, ymm0, ymm1",
            "sub {n}, 1",
            "jnz 2b",
            n = inout(reg) n,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _,
            options(nomem, nostack),
        );
        std::hint::black_box(n);
    }
    // SAFETY: the caller guarantees AVX2.
    per_cycle(ghz, 12, |n| unsafe { run(n) })
}

/// Sustained `vpdpbusd zmm` (the AVX-512 VNNI GEMMs' multiply: 64 u8 x i8
/// products summed in fours into i32) per cycle on one core: 12
/// independent accumulators per loop iteration.
///
/// # Safety
/// Requires AVX-512 F and VNNI.
pub unsafe fn probe_dpbusd_zmm_per_cycle(ghz: f64) -> f64 {
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn run(mut n: u64) {
        std::arch::asm!(
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "2:",
            "vpdpbusd zmm2, zmm0, zmm1", "vpdpbusd zmm3, zmm0, zmm1",
            "vpdpbusd zmm4, zmm0, zmm1", "vpdpbusd zmm5, zmm0, zmm1",
            "vpdpbusd zmm6, zmm0, zmm1", "vpdpbusd zmm7, zmm0, zmm1",
            "vpdpbusd zmm8, zmm0, zmm1", "vpdpbusd zmm9, zmm0, zmm1",
            "vpdpbusd zmm10, zmm0, zmm1", "vpdpbusd zmm11, zmm0, zmm1",
            "vpdpbusd zmm12, zmm0, zmm1", "vpdpbusd zmm13, zmm0, zmm1",
            "sub {n}, 1",
            "jnz 2b",
            n = inout(reg) n,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _,
            options(nomem, nostack),
        );
        std::hint::black_box(n);
    }
    // SAFETY: the caller guarantees AVX-512 F and VNNI.
    per_cycle(ghz, 12, |n| unsafe { run(n) })
}
