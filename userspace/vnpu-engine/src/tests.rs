//! Unit tests on tiny synthetic models.

use crate::compute::kernels::Isa;
use crate::compute::Exec;
use crate::formats::tensor::{AlignedBytes, TensorTable};
use crate::models::adapter::{LoraSet, Proj};
use crate::models::llama::{ForwardOpts, Input, Llama, Logits};
use crate::models::synthetic::{tiny_bert_safetensors, tiny_llama, Rng};
use std::collections::HashMap;
use std::sync::Arc;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const TOKENS: [u32; 7] = [3, 17, 42, 5, 88, 0, 61];

fn kv_for(m: &Llama, slots: usize) -> AlignedBytes {
    AlignedBytes::zeroed(m.cfg.kv_bytes(slots))
}

#[test]
fn tiny_llama_matches_f32_reference() {
    let t = tiny_llama(1);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let mut kv = kv_for(&m, 16);
    let opts = ForwardOpts {
        all_hidden: true,
        ..Default::default()
    };
    let out = m
        .forward(Input::Tokens(&TOKENS), 0, &mut kv, &opts)
        .expect("forward");
    let (hid, logits) = t.reference(&TOKENS, &HashMap::new());
    let got = out.logits.expect("logits");
    assert!(
        cosine(&got, &logits) > 0.995,
        "logits cosine {}",
        cosine(&got, &logits)
    );
    assert!(cosine(out.hidden_all.as_deref().unwrap_or(&[]), &hid) > 0.995);
}

#[test]
fn decode_steps_match_prefill() {
    let t = tiny_llama(2);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let mut kv = kv_for(&m, 16);
    let full = m.prefill(&TOKENS, &mut kv).expect("prefill");
    let mut kv2 = kv_for(&m, 16);
    m.prefill(&TOKENS[..3], &mut kv2).expect("prefill 3");
    let mut last = None;
    for (i, &tok) in TOKENS.iter().enumerate().skip(3) {
        last = Some(m.decode_step(tok, i, &mut kv2).expect("decode"));
    }
    let a = full.logits.expect("logits");
    let b = last.and_then(|o| o.logits).expect("logits");
    assert!(max_abs_diff(&a, &b) < 1e-3, "diff {}", max_abs_diff(&a, &b));
}

#[test]
fn thread_counts_and_isas_agree() {
    let t = tiny_llama(3);
    let mut results = Vec::new();
    for (threads, isa) in [
        (1, Isa::Scalar),
        (2, Isa::Scalar),
        (1, crate::compute::kernels::detect()),
        (3, crate::compute::kernels::detect()),
    ] {
        let exec = Arc::new(Exec::with_isa(threads, isa).expect("isa"));
        let m = Llama::from_region_with(&t.table, &t.blob, exec).expect("model");
        let mut kv = kv_for(&m, 8);
        results.push(
            m.prefill(&TOKENS, &mut kv)
                .expect("prefill")
                .logits
                .expect("logits"),
        );
    }
    for (i, r) in results.iter().enumerate().skip(1) {
        let scale = results[0].iter().fold(0f32, |a, v| a.max(v.abs()));
        // Summation order differs between kernels, which can flip the
        // rounding of an int8 activation downstream: allow ~1 LSB effects.
        assert!(
            max_abs_diff(r, &results[0]) < 5e-3 * scale,
            "config {i}: {} (max |logit| {scale})",
            max_abs_diff(r, &results[0])
        );
        assert!(cosine(r, &results[0]) > 0.9999);
    }
}

#[test]
fn embeddings_input_equals_token_input() {
    let t = tiny_llama(4);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let d = m.cfg.d_model;
    let emb = &t.f32w["token_embd.weight"].2;
    let e: Vec<f32> = TOKENS
        .iter()
        .flat_map(|&i| emb[i as usize * d..(i as usize + 1) * d].to_vec())
        .collect();
    let mut kv = kv_for(&m, 8);
    let a = m
        .prefill(&TOKENS, &mut kv)
        .expect("a")
        .logits
        .expect("logits");
    let b = m
        .forward(Input::Embeddings(&e), 0, &mut kv, &ForwardOpts::default())
        .expect("b")
        .logits
        .expect("logits");
    assert!(max_abs_diff(&a, &b) < 1e-5);
}

#[test]
fn all_logits_mode_matches_last() {
    let t = tiny_llama(5);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let mut kv = kv_for(&m, 8);
    let opts = ForwardOpts {
        logits: Logits::All,
        ..Default::default()
    };
    let all = m
        .forward(Input::Tokens(&TOKENS), 0, &mut kv, &opts)
        .expect("all")
        .logits
        .expect("l");
    let last = m
        .prefill(&TOKENS, &mut kv)
        .expect("last")
        .logits
        .expect("l");
    let v = m.cfg.vocab;
    assert_eq!(all.len(), TOKENS.len() * v);
    assert!(max_abs_diff(&all[(TOKENS.len() - 1) * v..], &last) < 1e-5);
}

#[test]
fn lora_with_zero_b_changes_nothing() {
    let t = tiny_llama(6);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let c = m.cfg.clone();
    let mut rng = Rng::new(9);
    let mut set = LoraSet::default();
    for l in 0..c.n_layer {
        for (p, i, o) in [
            (Proj::Q, c.d_model, c.d_model),
            (Proj::V, c.d_model, c.kv_dim()),
            (Proj::Down, c.d_ff, c.d_model),
        ] {
            set.add(l, p, 4, rng.vec(4 * i, 1.0), vec![0.0; o * 4], 2.0);
        }
    }
    let mut kv = kv_for(&m, 8);
    let base = m
        .prefill(&TOKENS, &mut kv)
        .expect("base")
        .logits
        .expect("l");
    let opts = ForwardOpts {
        adapter: Some(&set),
        ..Default::default()
    };
    let with = m
        .forward(Input::Tokens(&TOKENS), 0, &mut kv, &opts)
        .expect("lora")
        .logits
        .expect("l");
    assert_eq!(base, with);
}

#[test]
fn lora_equals_merged_f32_reference() {
    let t = tiny_llama(7);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let c = m.cfg.clone();
    let mut rng = Rng::new(11);
    let mut set = LoraSet::default();
    let mut deltas = HashMap::new();
    let rank = 3;
    let scale = 0.5;
    for (l, p, i, o) in [
        (0, Proj::Q, c.d_model, c.d_model),
        (1, Proj::Up, c.d_model, c.d_ff),
        (1, Proj::Down, c.d_ff, c.d_model),
    ] {
        let a = rng.vec(rank * i, 0.3);
        let b = rng.vec(o * rank, 0.3);
        // Explicit merge: W' = W + scale * B A.
        let mut dl = vec![0f32; o * i];
        for r in 0..o {
            for k in 0..i {
                dl[r * i + k] = scale
                    * (0..rank)
                        .map(|j| b[r * rank + j] * a[j * i + k])
                        .sum::<f32>();
            }
        }
        deltas.insert((l, p), dl);
        set.add(l, p, rank, a, b, scale);
    }
    let mut kv = kv_for(&m, 8);
    let opts = ForwardOpts {
        adapter: Some(&set),
        ..Default::default()
    };
    let got = m
        .forward(Input::Tokens(&TOKENS), 0, &mut kv, &opts)
        .expect("lora")
        .logits
        .expect("l");
    let (_, merged) = t.reference(&TOKENS, &deltas);
    let (_, base) = t.reference(&TOKENS, &HashMap::new());
    let err = 1.0 - cosine(&got, &merged);
    let effect = 1.0 - cosine(&base, &merged);
    assert!(
        err < 0.005,
        "engine+LoRA vs merged reference: 1-cos = {err}"
    );
    assert!(
        effect > 10.0 * err,
        "LoRA effect {effect} not clearly above error {err}"
    );
}

#[test]
fn fused_layout_matches_split_layout_with_lora() {
    let split = tiny_llama(12);
    let fused = crate::models::synthetic::tiny_llama_with(12, true);
    assert!(
        fused.table.get("blk.0.attn_qkv.weight").is_ok()
            && fused.table.get("blk.0.attn_q.weight").is_err()
    );
    let ms = Llama::from_region(&split.table, &split.blob).expect("split");
    let mf = Llama::from_region(&fused.table, &fused.blob).expect("fused");
    let c = ms.cfg.clone();
    let mut rng = Rng::new(13);
    let mut set = LoraSet::default();
    set.add(
        0,
        Proj::K,
        2,
        rng.vec(2 * c.d_model, 0.3),
        rng.vec(c.kv_dim() * 2, 0.3),
        1.0,
    );
    set.add(
        1,
        Proj::Up,
        2,
        rng.vec(2 * c.d_model, 0.3),
        rng.vec(c.d_ff * 2, 0.3),
        1.0,
    );
    let opts = ForwardOpts {
        adapter: Some(&set),
        ..Default::default()
    };
    let mut kv = kv_for(&ms, 8);
    let a = ms
        .forward(Input::Tokens(&TOKENS), 0, &mut kv, &opts)
        .expect("a")
        .logits
        .expect("l");
    let b = mf
        .forward(Input::Tokens(&TOKENS), 0, &mut kv, &opts)
        .expect("b")
        .logits
        .expect("l");
    assert!(max_abs_diff(&a, &b) < 1e-4, "{}", max_abs_diff(&a, &b));
}

#[test]
fn bad_inputs_are_errors() {
    let t = tiny_llama(8);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let mut kv = kv_for(&m, 4);
    assert!(m.prefill(&TOKENS, &mut kv).is_err(), "kv too small");
    assert!(m.prefill(&[1000], &mut kv).is_err(), "token out of vocab");
    assert!(m.prefill(&[], &mut kv).is_err(), "empty");
    let mut big = kv_for(&m, 9);
    assert!(m.prefill(&TOKENS, &mut big[1..]).is_err(), "misaligned kv");
    assert!(m
        .forward(
            Input::Embeddings(&[0.5; 3]),
            0,
            &mut kv,
            &ForwardOpts::default()
        )
        .is_err());
}

#[test]
fn table_roundtrip_and_validation() {
    let t = tiny_llama(9);
    let enc = t.table.encode();
    let dec = TensorTable::decode(&enc).expect("decode");
    assert_eq!(dec, t.table);
    for n in 0..enc.len() {
        assert!(TensorTable::decode(&enc[..n]).is_err());
    }
    // A truncated region must be rejected, not read out of bounds.
    assert!(Llama::from_region(&t.table, &t.blob[..t.blob.len() - 1]).is_err());
}

#[test]
fn tiny_bert_pack_and_embed() {
    let st = tiny_bert_safetensors(1);
    let (table, blob) = crate::formats::pack::pack_bert(&st, 4, 1e-12).expect("pack");
    let blob = AlignedBytes::from_slice(&blob);
    let b = crate::models::bert::Bert::from_region(&table, &blob).expect("bert");
    let s1: Vec<u32> = vec![1, 5, 9, 13, 2];
    let s2: Vec<u32> = vec![1, 7, 2];
    let e1 = b.embed(&s1).expect("e1");
    let e2 = b.embed(&s2).expect("e2");
    let batch = b.embed_batch(&[&s1, &s2]).expect("batch");
    assert!((e1.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4);
    assert!(max_abs_diff(&e1, &batch[0]) < 1e-5 && max_abs_diff(&e2, &batch[1]) < 1e-5);
    let exec = Arc::new(Exec::with_isa(1, Isa::Scalar).expect("scalar"));
    let bs = crate::models::bert::Bert::from_region_with(&table, &blob, exec).expect("bert");
    assert!(max_abs_diff(&bs.embed(&s1).expect("s"), &e1) < 1e-4);
    assert!(b.embed(&[60]).is_err(), "token out of vocab");
}

/// A LoRA on every BERT projection it may adapt: B = 0 is the base
/// embedding bit for bit; random factors move it; a batch runs them on
/// every sequence as they run alone.
#[test]
fn bert_lora_zero_is_base_and_nonzero_moves() {
    let st = tiny_bert_safetensors(1);
    let (table, blob) = crate::formats::pack::pack_bert(&st, 4, 1e-12).expect("pack");
    let blob = AlignedBytes::from_slice(&blob);
    let b = crate::models::bert::Bert::from_region(&table, &blob).expect("bert");
    let s1: Vec<u32> = vec![1, 5, 9, 13, 2];
    let s2: Vec<u32> = vec![1, 7, 2];
    let base = b.embed_batch(&[&s1, &s2]).expect("base");
    let lora_set = |b_scale: f32| {
        let mut rng = Rng::new(4);
        let mut set = LoraSet::default();
        for l in 0..b.cfg.n_layer {
            for p in [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Up, Proj::Down] {
                let (i, o) = b.cfg.proj_dims(p).expect("a BERT projection");
                set.add(l, p, 2, rng.vec(2 * i, 0.3), rng.vec(o * 2, b_scale), 2.0);
            }
        }
        set
    };
    assert_eq!(b.cfg.proj_dims(Proj::Gate), None);
    let zero = b.embed_batch_with(&[&s1, &s2], Some(&lora_set(0.0))).expect("zero");
    assert_eq!(zero, base, "B = 0 must leave the embedding as it is");
    let set = lora_set(0.3);
    let moved = b.embed_batch_with(&[&s1, &s2], Some(&set)).expect("lora");
    assert!(max_abs_diff(&moved[0], &base[0]) > 1e-2, "the LoRA changed nothing");
    let alone = b.embed_batch_with(&[&s2], Some(&set)).expect("alone");
    assert!(max_abs_diff(&alone[0], &moved[1]) < 1e-5);
    // Factors that do not fit the projection: an error, not a panic.
    let mut bad = LoraSet::default();
    bad.add(0, Proj::Up, 2, vec![0.1; 2 * b.cfg.d_model], vec![0.1; 2 * b.cfg.d_model], 1.0);
    assert!(b.embed_batch_with(&[&s1], Some(&bad)).is_err());
}

#[test]
fn input_projection_feeds_the_model() {
    use crate::models::adapter::InputProjection;
    let t = tiny_llama(14);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let d = m.cfg.d_model;
    let in_dim = 5;
    let mut rng = Rng::new(15);
    let w = rng.vec(d * in_dim, 0.5);
    let b = rng.vec(d, 0.1);
    let proj = InputProjection {
        w: &w,
        b: Some(&b),
        in_dim,
        d_model: d,
    };
    let feats = rng.vec(3 * in_dim, 1.0);
    let e = proj.project(&feats).expect("project");
    assert_eq!(e.len(), 3 * d);
    let want0: f32 = (0..in_dim).map(|i| w[i] * feats[i]).sum::<f32>() + b[0];
    assert!((e[0] - want0).abs() < 1e-5);
    let mut kv = kv_for(&m, 4);
    let out = m
        .forward(Input::Embeddings(&e), 0, &mut kv, &ForwardOpts::default())
        .expect("forward");
    assert_eq!(out.logits.map(|l| l.len()), Some(m.cfg.vocab));
    assert!(proj.project(&feats[..4]).is_err(), "ragged features");
}

#[test]
fn models_are_send_and_sync() {
    // The daemon shares one model between job threads.
    fn check<T: Send + Sync>() {}
    check::<Llama<'static>>();
    check::<crate::models::bert::Bert<'static>>();
    check::<Exec>();
}

// ---- decode_batch: many sessions, one step, against solo forward ----

/// Int8 LoRA factors (the format adapter blobs carry) on V and Down.
struct I8Adapter {
    items: Vec<I8Lora>,
}

struct I8Lora {
    layer: usize,
    proj: Proj,
    a: (Vec<i8>, Vec<f32>),
    b: (Vec<i8>, Vec<f32>),
}

impl I8Adapter {
    fn new(c: &crate::models::llama::LlamaConfig, seed: u64) -> I8Adapter {
        let mut rng = Rng::new(seed);
        let rank = 3;
        let mut q = |n: usize| -> Vec<i8> {
            (0..n)
                .map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8)
                .collect()
        };
        let mut items = Vec::new();
        for layer in 0..c.n_layer {
            for proj in [Proj::V, Proj::Down] {
                let (i, o) = c.proj_dims(proj);
                items.push(I8Lora {
                    layer,
                    proj,
                    a: (q(rank * i), vec![0.3 / 127.0; rank]),
                    b: (q(o * rank), vec![0.3 / 127.0; o]),
                });
            }
        }
        I8Adapter { items }
    }
}

impl crate::models::adapter::Adapter for I8Adapter {
    fn lora(&self, layer: usize, proj: Proj) -> Option<crate::models::adapter::Lora<'_>> {
        use crate::models::adapter::LoraMat;
        let it = self
            .items
            .iter()
            .find(|it| it.layer == layer && it.proj == proj)?;
        Some(crate::models::adapter::Lora {
            rank: it.a.1.len(),
            a: LoraMat::I8 {
                q: &it.a.0,
                row_scale: &it.a.1,
            },
            b: LoraMat::I8 {
                q: &it.b.0,
                row_scale: &it.b.1,
            },
            scale: 1.0,
        })
    }
}

/// A random f32 LoRA on `projs` of every layer.
fn lora_set(
    c: &crate::models::llama::LlamaConfig,
    seed: u64,
    rank: usize,
    projs: &[Proj],
) -> LoraSet {
    let mut rng = Rng::new(seed);
    let mut set = LoraSet::default();
    for l in 0..c.n_layer {
        for &p in projs {
            let (i, o) = c.proj_dims(p);
            set.add(
                l,
                p,
                rank,
                rng.vec(rank * i, 0.3),
                rng.vec(o * rank, 0.3),
                0.8,
            );
        }
    }
    set
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold(0, |b, (i, &x)| if x > v[b] { i } else { b }) as u32
}

/// Logits of `forward` on one token alone (what `decode_batch` must equal).
fn solo(
    m: &Llama,
    token: u32,
    pos: usize,
    kv: &mut [u8],
    adapter: Option<&dyn crate::models::adapter::Adapter>,
) -> Vec<f32> {
    let opts = ForwardOpts {
        logits: Logits::Last,
        adapter,
        ..Default::default()
    };
    m.forward(Input::Tokens(&[token]), pos, kv, &opts)
        .expect("solo forward")
        .logits
        .expect("logits")
}

#[test]
fn decode_batch_equals_solo_forward_bitwise() {
    use crate::models::adapter::Adapter;
    use crate::models::llama::BatchRow;
    for (seed, fused, threads, isa) in [
        (21, false, 2, crate::compute::kernels::detect()),
        (22, true, 3, crate::compute::kernels::detect()),
        (23, true, 1, Isa::Scalar),
        (24, false, 2, Isa::Scalar),
    ] {
        let t = crate::models::synthetic::tiny_llama_with(seed, fused);
        let exec = Arc::new(Exec::with_isa(threads, isa).expect("isa"));
        let m = Llama::from_region_with(&t.table, &t.blob, exec).expect("model");
        let c = m.cfg.clone();
        let a = lora_set(&c, seed + 100, 4, &[Proj::Q, Proj::K, Proj::O, Proj::Up]);
        let b = lora_set(&c, seed + 200, 2, &[Proj::V, Proj::Gate, Proj::Down]);
        let i8a = I8Adapter::new(&c, seed + 300);
        // 8 sessions: adapters A (3 rows, not adjacent), B (2), int8 (1),
        // none (2); prompts of different lengths and caches of different
        // sizes, so positions and KV layouts all differ.
        let ads: [Option<&dyn Adapter>; 8] = [
            Some(&a),
            None,
            Some(&b),
            Some(&a),
            Some(&i8a),
            None,
            Some(&b),
            Some(&a),
        ];
        let prompt_len = [3usize, 5, 1, 7, 2, 9, 4, 6];
        let mut kv_batch: Vec<AlignedBytes> = Vec::new();
        let mut pos = Vec::new();
        for (s, (&ad, &len)) in ads.iter().zip(&prompt_len).enumerate() {
            let mut kv = kv_for(&m, len + 5 + s);
            let prompt: Vec<u32> = (0..len)
                .map(|i| ((s * 31 + i * 7) % c.vocab) as u32)
                .collect();
            let opts = ForwardOpts {
                adapter: ad,
                ..Default::default()
            };
            m.forward(Input::Tokens(&prompt), 0, &mut kv, &opts)
                .expect("prefill");
            kv_batch.push(kv);
            pos.push(len);
        }
        let mut kv_solo: Vec<AlignedBytes> = kv_batch
            .iter()
            .map(|k| AlignedBytes::from_slice(k))
            .collect();
        let mut tokens: Vec<u32> = (0..8)
            .map(|s| (s * 11 + 5) as u32 % c.vocab as u32)
            .collect();
        for step in 0..4 {
            let mut rows: Vec<BatchRow> = kv_batch
                .iter_mut()
                .enumerate()
                .map(|(s, kv)| BatchRow {
                    token: tokens[s],
                    pos: pos[s],
                    kv: &mut kv[..],
                    adapter: ads[s],
                })
                .collect();
            let got = m.decode_batch(&mut rows).expect("decode_batch");
            assert_eq!(got.len(), 8);
            for s in 0..8 {
                let want = solo(&m, tokens[s], pos[s], &mut kv_solo[s], ads[s]);
                assert!(
                    same_bits(&got[s], &want),
                    "seed {seed} step {step} row {s}: logits differ by {}",
                    max_abs_diff(&got[s], &want)
                );
                assert!(
                    kv_batch[s][..] == kv_solo[s][..],
                    "seed {seed} step {step} row {s}: KV differs"
                );
                tokens[s] = argmax(&got[s]);
                pos[s] += 1;
            }
        }
        // The adapters did act: without them the logits differ.
        let mut kv = AlignedBytes::from_slice(&kv_solo[0]);
        let plain = solo(&m, tokens[0], pos[0], &mut kv, None);
        let mut kv = AlignedBytes::from_slice(&kv_solo[0]);
        assert!(max_abs_diff(&plain, &solo(&m, tokens[0], pos[0], &mut kv, ads[0])) > 1e-3);
    }
}

#[test]
fn decode_batch_single_row_equals_forward() {
    use crate::models::llama::BatchRow;
    let t = tiny_llama(25);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let a = lora_set(&m.cfg, 26, 3, &[Proj::Q, Proj::V, Proj::Down]);
    for adapter in [None, Some(&a as &dyn crate::models::adapter::Adapter)] {
        let mut kv = kv_for(&m, 12);
        m.prefill(&TOKENS, &mut kv).expect("prefill");
        let mut kv2 = AlignedBytes::from_slice(&kv);
        let got = m
            .decode_batch(&mut [BatchRow {
                token: 9,
                pos: TOKENS.len(),
                kv: &mut kv,
                adapter,
            }])
            .expect("batch");
        let want = solo(&m, 9, TOKENS.len(), &mut kv2, adapter);
        assert_eq!(got.len(), 1);
        assert!(same_bits(&got[0], &want));
        assert!(kv[..] == kv2[..]);
    }
    assert!(m.decode_batch(&mut []).expect("no rows").is_empty());
}

#[test]
fn decode_batch_bad_row_is_error_and_writes_no_cache() {
    use crate::error::Error;
    use crate::models::llama::BatchRow;
    let t = tiny_llama(27);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let c = m.cfg.clone();
    let good = lora_set(&c, 28, 2, &[Proj::Q]);
    // Fits no projection: A has the wrong length for rank 2.
    let mut misfit = LoraSet::default();
    misfit.add(
        1,
        Proj::Up,
        2,
        vec![0.1; 2 * c.d_model + 1],
        vec![0.1; 2 * c.d_ff],
        1.0,
    );
    let fresh = || {
        let mut kvs: Vec<AlignedBytes> = (0..3).map(|_| kv_for(&m, 6)).collect();
        for kv in &mut kvs {
            m.prefill(&TOKENS[..3], kv).expect("prefill");
        }
        kvs
    };
    type Case = (&'static str, usize, u32, usize, bool);
    // (what, cache slots of row 2 (0: 1 byte short of one), token, pos, misfit adapter)
    let cases: [Case; 6] = [
        ("token out of vocab", 6, c.vocab as u32, 3, false),
        ("kv too small for pos", 6, 1, 6, false),
        ("pos overflows", 6, 1, usize::MAX, false),
        ("kv shorter than one slot", 0, 1, 0, false),
        ("misfit adapter", 6, 1, 3, true),
        ("misaligned kv", 7, 1, 3, false),
    ];
    for (what, slots, token, pos, bad_adapter) in cases {
        let mut kvs = fresh();
        let mut own = if slots == 0 {
            AlignedBytes::zeroed(c.kv_bytes_per_token() - 1)
        } else {
            let mut b = kv_for(&m, slots);
            m.prefill(&TOKENS[..3], &mut b).expect("prefill");
            b
        };
        let before: Vec<Vec<u8>> = kvs.iter().chain([&own]).map(|k| k.to_vec()).collect();
        let bad_kv: &mut [u8] = if what == "misaligned kv" {
            &mut own[1..]
        } else {
            &mut own[..]
        };
        let (k0, rest) = kvs.split_at_mut(1);
        let (k1, k3) = rest.split_at_mut(1);
        let mut rows = [
            BatchRow {
                token: 4,
                pos: 3,
                kv: &mut k0[0],
                adapter: Some(&good),
            },
            BatchRow {
                token: 5,
                pos: 3,
                kv: &mut k1[0],
                adapter: None,
            },
            BatchRow {
                token,
                pos,
                kv: bad_kv,
                adapter: if bad_adapter {
                    Some(&misfit)
                } else {
                    Some(&good)
                },
            },
            BatchRow {
                token: 6,
                pos: 3,
                kv: &mut k3[0],
                adapter: None,
            },
        ];
        let err = m.decode_batch(&mut rows).expect_err(what);
        assert!(
            matches!(err, Error::Input(_) | Error::Kv(_) | Error::Adapter(_)),
            "{what}: {err}"
        );
        assert!(err.to_string().contains("row 2"), "{what}: {err}");
        let after: Vec<Vec<u8>> = kvs.iter().chain([&own]).map(|k| k.to_vec()).collect();
        assert!(before == after, "{what}: a cache was written");
    }
}

/// `forward_batch` with prompts of different lengths and decode steps
/// mixed, fresh and continued sessions, adapters and none: each row's
/// last logits and KV writes are bitwise those of `forward` alone.
#[test]
fn forward_batch_mixes_prompts_and_steps_bitwise() {
    use crate::models::adapter::Adapter;
    use crate::models::llama::SeqRow;
    for (seed, fused, threads, isa) in [
        (31, false, 2, crate::compute::kernels::detect()),
        (32, true, 1, Isa::Scalar),
    ] {
        let t = crate::models::synthetic::tiny_llama_with(seed, fused);
        let exec = Arc::new(Exec::with_isa(threads, isa).expect("isa"));
        let m = Llama::from_region_with(&t.table, &t.blob, exec).expect("model");
        let c = m.cfg.clone();
        let a = lora_set(&c, seed + 100, 4, &[Proj::Q, Proj::V, Proj::Down]);
        let b = lora_set(&c, seed + 200, 2, &[Proj::O, Proj::Up]);
        let ads: [Option<&dyn Adapter>; 6] = [Some(&a), None, Some(&b), Some(&a), None, Some(&b)];
        // (tokens fed now, positions already in the cache)
        let shape = [(5usize, 0usize), (1, 3), (9, 0), (1, 6), (3, 2), (2, 4)];
        let mut kv_batch: Vec<AlignedBytes> = Vec::new();
        for (s, &(n, past)) in shape.iter().enumerate() {
            let mut kv = kv_for(&m, n + past + 2);
            if past > 0 {
                let prompt: Vec<u32> = (0..past)
                    .map(|i| ((s * 13 + i * 5) % c.vocab) as u32)
                    .collect();
                let opts = ForwardOpts {
                    adapter: ads[s],
                    ..Default::default()
                };
                m.forward(Input::Tokens(&prompt), 0, &mut kv, &opts)
                    .expect("earlier tokens");
            }
            kv_batch.push(kv);
        }
        let mut kv_solo: Vec<AlignedBytes> = kv_batch
            .iter()
            .map(|k| AlignedBytes::from_slice(k))
            .collect();
        let inputs: Vec<Vec<u32>> = shape
            .iter()
            .enumerate()
            .map(|(s, &(n, _))| {
                (0..n)
                    .map(|i| ((s * 7 + i * 3 + 1) % c.vocab) as u32)
                    .collect()
            })
            .collect();
        let mut rows: Vec<SeqRow> = kv_batch
            .iter_mut()
            .enumerate()
            .map(|(s, kv)| SeqRow {
                tokens: &inputs[s],
                pos: shape[s].1,
                kv: &mut kv[..],
                adapter: ads[s],
            })
            .collect();
        let got = m.forward_batch(&mut rows).expect("forward_batch");
        for s in 0..shape.len() {
            let opts = ForwardOpts {
                adapter: ads[s],
                ..Default::default()
            };
            let want = m
                .forward(
                    Input::Tokens(&inputs[s]),
                    shape[s].1,
                    &mut kv_solo[s],
                    &opts,
                )
                .expect("solo")
                .logits
                .expect("logits");
            assert!(
                same_bits(&got[s], &want),
                "seed {seed} row {s}: logits differ by {}",
                max_abs_diff(&got[s], &want)
            );
            assert!(
                kv_batch[s][..] == kv_solo[s][..],
                "seed {seed} row {s}: KV differs"
            );
        }
        // An empty row is refused, naming it.
        let mut kv = kv_for(&m, 4);
        let err = m
            .forward_batch(&mut [SeqRow {
                tokens: &[],
                pos: 0,
                kv: &mut kv[..],
                adapter: None,
            }])
            .unwrap_err();
        assert!(err.to_string().contains("row 0"), "{err}");
    }
}

/// `hidden_batch` with token and embedding inputs of different lengths,
/// different adapters and exit layers: each row's hidden states are
/// bitwise those of `forward` alone.
#[test]
fn hidden_batch_equals_forward_bitwise() {
    use crate::models::adapter::Adapter;
    use crate::models::llama::HiddenRow;
    for (seed, fused, threads, isa) in [
        (41, false, 2, crate::compute::kernels::detect()),
        (42, true, 1, Isa::Scalar),
    ] {
        let t = crate::models::synthetic::tiny_llama_with(seed, fused);
        let exec = Arc::new(Exec::with_isa(threads, isa).expect("isa"));
        let m = Llama::from_region_with(&t.table, &t.blob, exec).expect("model");
        let c = m.cfg.clone();
        let d = c.d_model;
        let a = lora_set(&c, seed + 100, 4, &[Proj::Q, Proj::V]);
        let b = lora_set(&c, seed + 200, 2, &[Proj::O, Proj::Up]);
        let ads: [Option<&dyn Adapter>; 5] = [Some(&a), None, Some(&b), Some(&a), Some(&b)];
        let layers = [Some(1), None, Some(1), None, Some(99)];
        let tokens: Vec<Vec<u32>> = (0..5)
            .map(|s| {
                (0..s + 2)
                    .map(|i| ((s * 11 + i * 3 + 1) % c.vocab) as u32)
                    .collect()
            })
            .collect();
        let embedded: Vec<Vec<f32>> = (0..5)
            .map(|s| {
                (0..(s + 1) * d)
                    .map(|i| ((i * 7 + s) % 13) as f32 / 13.0 - 0.5)
                    .collect()
            })
            .collect();
        let input = |s: usize| {
            if s % 2 == 0 {
                Input::Tokens(&tokens[s])
            } else {
                Input::Embeddings(&embedded[s])
            }
        };
        let rows_of = |s: usize| if s % 2 == 0 { tokens[s].len() } else { s + 1 };
        let mut kvs: Vec<AlignedBytes> = (0..5).map(|s| kv_for(&m, rows_of(s))).collect();
        let mut rows: Vec<HiddenRow> = kvs
            .iter_mut()
            .enumerate()
            .map(|(s, kv)| HiddenRow {
                input: input(s),
                kv: &mut kv[..],
                adapter: ads[s],
                layers: layers[s],
            })
            .collect();
        let got = m.hidden_batch(&mut rows).expect("hidden_batch");
        for s in 0..5 {
            let mut kv = kv_for(&m, rows_of(s));
            let opts = ForwardOpts {
                all_hidden: true,
                logits: Logits::None,
                adapter: ads[s],
                layers: layers[s],
            };
            let want = m
                .forward(input(s), 0, &mut kv, &opts)
                .expect("solo")
                .hidden_all
                .expect("hidden");
            assert!(
                same_bits(&got[s], &want),
                "seed {seed} row {s}: hidden states differ by {}",
                max_abs_diff(&got[s], &want)
            );
        }
        // A bad row fails the call, naming it.
        let mut kv = kv_for(&m, 2);
        let bad = [c.vocab as u32];
        let err = m
            .hidden_batch(&mut [
                HiddenRow {
                    input: Input::Tokens(&tokens[0][..1]),
                    kv: &mut kvs[0][..],
                    adapter: None,
                    layers: None,
                },
                HiddenRow {
                    input: Input::Tokens(&bad),
                    kv: &mut kv[..],
                    adapter: None,
                    layers: None,
                },
            ])
            .unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
    }
}

#[test]
fn token_embeddings_are_what_the_forward_uses() {
    let t = tiny_llama(12);
    let m = Llama::from_region(&t.table, &t.blob).expect("model");
    let d = m.cfg.d_model;
    let e = m.token_embeddings(&TOKENS).expect("embeddings");
    assert_eq!(e.len(), TOKENS.len() * d);
    let opts = ForwardOpts {
        all_hidden: true,
        logits: Logits::All,
        ..Default::default()
    };
    let mut kv = kv_for(&m, 8);
    let by_tokens = m.forward(Input::Tokens(&TOKENS), 0, &mut kv, &opts).expect("tokens");
    let by_rows = m.forward(Input::Embeddings(&e), 0, &mut kv, &opts).expect("rows");
    assert!(same_bits(&by_tokens.hidden_all.unwrap(), &by_rows.hidden_all.unwrap()));
    assert!(same_bits(&by_tokens.logits.unwrap(), &by_rows.logits.unwrap()));
    // One row per id, in order; ids outside the vocabulary are refused.
    let one = m.token_embeddings(&TOKENS[2..3]).expect("one");
    assert!(same_bits(&one, &e[2 * d..3 * d]));
    assert!(m.token_embeddings(&[m.cfg.vocab as u32]).is_err());
}

/// A prompt in chunks (each through all layers before the next) gives the
/// bits of one pass: logits at every position, hidden states and the KV
/// cache, with and without LoRA, on SIMD and scalar kernels.
#[test]
fn chunked_prefill_equals_one_pass_bitwise() {
    use crate::models::adapter::Adapter;
    for (seed, threads, isa) in [(41, 2, crate::compute::kernels::detect()), (42, 1, Isa::Scalar)] {
        let t = crate::models::synthetic::tiny_llama_with(seed, true);
        let exec = Arc::new(Exec::with_isa(threads, isa).expect("isa"));
        let mut m = Llama::from_region_with(&t.table, &t.blob, exec).expect("model");
        let c = m.cfg.clone();
        let a = lora_set(&c, seed + 100, 4, &[Proj::Q, Proj::V, Proj::Up, Proj::Down]);
        let prompt: Vec<u32> = (0..37).map(|i| (i * 7 + seed as u32) % c.vocab as u32).collect();
        for adapter in [None, Some(&a as &dyn Adapter)] {
            let opts = ForwardOpts {
                all_hidden: true,
                logits: Logits::All,
                adapter,
                ..Default::default()
            };
            let mut runs = Vec::new();
            for chunk in [usize::MAX, 5, 16] {
                m.set_prefill_chunk(chunk);
                let mut kv = kv_for(&m, 40);
                let out = m.forward(Input::Tokens(&prompt), 0, &mut kv, &opts).expect("forward");
                let bits = |v: Option<Vec<f32>>| v.unwrap_or_default().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                runs.push((bits(out.logits), bits(out.hidden_all), kv.to_vec()));
            }
            assert!(runs[1] == runs[0] && runs[2] == runs[0], "{isa:?} lora={}", adapter.is_some());
        }
    }
}
