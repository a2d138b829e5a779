//! Row normalizations in f32: RMSNorm, LayerNorm, softmax.

/// One row: `out = x / rms(x) * w`.
pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    // f64 sum as llama.cpp's rms_norm does: int8 activation rounding
    // downstream turns small norm differences into visible logit drift.
    let ms = (x.iter().map(|&v| (v * v) as f64).sum::<f64>() / x.len() as f64) as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * g;
    }
}

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        rms_norm_row(xr, w, eps, or);
    }
}

/// LayerNorm of one row in place (sums in f64, as the reference does in
/// effect: int8 activation rounding downstream amplifies small drifts).
pub fn layer_norm_row(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let [st] = layer_norm_stats([&*x], eps);
    layer_norm_apply(x, st, w, b);
}

/// Each row's (mean, 1 / std), the rows' f64 sums interleaved: each sum is
/// one serial chain (its rounding fixed, whatever R), so R rows at once
/// run R chains side by side instead of waiting on one add's latency.
pub fn layer_norm_stats<const R: usize>(xs: [&[f32]; R], eps: f32) -> [(f32, f32); R] {
    let n = xs.iter().map(|x| x.len()).min().unwrap_or(0);
    let d = n as f64;
    let mut s = [-0.0f64; R];
    for i in 0..n {
        for r in 0..R {
            s[r] += xs[r][i] as f64;
        }
    }
    let mean = s.map(|v| v / d);
    let mut v = [-0.0f64; R];
    for i in 0..n {
        for r in 0..R {
            v[r] += (xs[r][i] as f64 - mean[r]).powi(2);
        }
    }
    std::array::from_fn(|r| {
        let var = v[r] / d;
        (mean[r] as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
    })
}

/// `x = (x - mean) * inv * w + b` with a row's [`layer_norm_stats`].
pub fn layer_norm_apply(x: &mut [f32], (mean, inv): (f32, f32), w: &[f32], b: &[f32]) {
    for ((v, &g), &bb) in x.iter_mut().zip(w).zip(b) {
        *v = (*v - mean) * inv * g + bb;
    }
}

pub fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    for xr in x.chunks_exact_mut(d) {
        let mean = xr.iter().sum::<f32>() / d as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &bb) in xr.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * g + bb;
        }
    }
}

pub fn softmax(x: &mut [f32]) {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut s = 0f32;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    let inv = 1.0 / s;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::synthetic::Rng;

    #[test]
    fn interleaved_layer_norm_stats_are_each_rows_own() {
        // Grouped rows (BERT's row passes) and a row alone (and the
        // iterator sums this replaced) give the same bits.
        let mut rng = Rng::new(3);
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|r| (0..384).map(|_| rng.normal() * (1.0 + 10.0 * r as f32)).collect())
            .collect();
        let eps = 1e-12;
        let four = layer_norm_stats([&rows[0][..], &rows[1], &rows[2], &rows[3]], eps);
        for (x, st) in rows.iter().zip(four) {
            let [one] = layer_norm_stats([&x[..]], eps);
            assert_eq!((one.0.to_bits(), one.1.to_bits()), (st.0.to_bits(), st.1.to_bits()));
            let d = x.len() as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d;
            let inv = (1.0 / (var + eps as f64).sqrt()) as f32;
            assert_eq!(((mean as f32).to_bits(), inv.to_bits()), (st.0.to_bits(), st.1.to_bits()));
        }
    }
}
