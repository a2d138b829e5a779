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
    let d = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d;
    let (mean, inv) = (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32);
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
