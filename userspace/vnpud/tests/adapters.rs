//! Adapter jobs as vnpud executes them, on a synthetic foundation model,
//! against the engine driven directly with the same factors: the blob's
//! names, shapes and LoRA scale must mean what `adapter_meta` says.

use m4npu::Op;
use m4npu_format::adapter_meta::{lora_name, AdapterMeta, AdapterTask, Pooling, SubModel};
use m4npu_format::job_io::{f32s, Input};
use m4npu_format::AdapterBuilder;
use m4npu_hw::JobBuffers;
use nix::errno::Errno;
use vnpu_engine::models::synthetic::Rng;
use vnpu_engine::LoraSet;
use vnpu_engine::{AlignedBytes, ForwardOpts, InputProjection, Logits, Proj};
use vnpud::execute::{pooled_batch_jobs, run, run_with};
use vnpud::foundation::{Foundation, SyntheticWeights};

fn meta(task: AdapterTask, submodel: SubModel) -> AdapterMeta {
    AdapterMeta {
        task,
        submodel,
        labels: vec![],
        pooling: Pooling::Mean,
        feature_dim: None,
        text_embedding: None,
        layers: None,
        lora_alpha: 8.0,
        description: String::new(),
    }
}

/// Runs one job; the output as f32s.
fn job(f: &Foundation<'_>, op: Op, adapter: &[u8], input: &Input) -> Result<Vec<f32>, Errno> {
    let blob = AlignedBytes::from_slice(adapter);
    let input = input.encode();
    let mut out = vec![0u8; 4096];
    let n = run(f, Some(op), JobBuffers { input: &input, output: &mut out, state: None, adapter: Some(&blob) })?;
    Ok(f32s(&out[..n]))
}

const LABELS: usize = 3;

/// A backbone classifier on 5-wide features: input projection, rank-2 LoRA
/// on q, v and down of layer 0, a head, early exit after layer 1.
fn feature_classifier(rng: &mut Rng, d: usize, ff: usize, kvd: usize, m: &AdapterMeta) -> (Vec<u8>, LoraSet, Vec<f32>) {
    let mut b = AdapterBuilder::new("feat", [0; 32]);
    b.meta(m.to_json());
    let mut set = LoraSet::default();
    for (proj, p, i, o) in [("q", Proj::Q, d, d), ("v", Proj::V, d, kvd), ("down", Proj::Down, ff, d)] {
        let (a, bb) = (rng.vec(2 * i, 0.3), rng.vec(o * 2, 0.3));
        b.tensor_f32(&lora_name(0, proj, "a"), &[2, i], &a).unwrap();
        b.tensor_f32(&lora_name(0, proj, "b"), &[o, 2], &bb).unwrap();
        set.add(0, p, 2, a, bb, m.lora_alpha / 2.0);
    }
    let head = rng.vec(LABELS * d, 0.2);
    b.tensor_f32("head.weight", &[LABELS, d], &head).unwrap();
    b.tensor_f32("head.bias", &[LABELS], &[0.1, -0.2, 0.3]).unwrap();
    let (w, bias) = (rng.vec(d * 5, 0.5), rng.vec(d, 0.1));
    b.tensor_f32("input.weight", &[d, 5], &w).unwrap();
    b.tensor_f32("input.bias", &[d], &bias).unwrap();
    let mut inw = w;
    inw.extend(bias);
    (b.build().unwrap(), set, inw)
}

/// A classifier of 5-wide feature rows with an early exit after layer 0.
fn feature_meta() -> AdapterMeta {
    let mut m = meta(AdapterTask::Classify, SubModel::Backbone);
    m.feature_dim = Some(5);
    m.layers = Some(1);
    m.labels = (0..LABELS).map(|i| format!("l{i}")).collect();
    m
}

#[test]
fn feature_classifier_matches_the_engine() {
    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let llama = f.backbone.as_ref().unwrap();
    let (d, ff, kvd) = (llama.cfg.d_model, llama.cfg.d_ff, llama.cfg.kv_dim());
    let m = feature_meta();
    let mut rng = Rng::new(11);
    let (blob, set, inw) = feature_classifier(&mut rng, d, ff, kvd, &m);
    let feats = rng.vec(4 * 5, 1.0);
    let got = job(&f, Op::Classify, &blob, &Input::Features { dim: 5, data: feats.clone() }).unwrap();

    let proj = InputProjection { w: &inw[..d * 5], b: Some(&inw[d * 5..]), in_dim: 5, d_model: d };
    let x = proj.project(&feats).unwrap();
    let mut kv = vec![0u8; llama.cfg.kv_bytes(4)];
    let opts = ForwardOpts { all_hidden: true, logits: Logits::None, adapter: Some(&set), layers: Some(1) };
    let h = llama.forward(vnpu_engine::Input::Embeddings(&x), 0, &mut kv, &opts).unwrap().hidden_all.unwrap();
    let pooled: Vec<f32> = (0..d).map(|j| (0..4).map(|t| h[t * d + j]).sum::<f32>() / 4.0).collect();
    let AdapterBuilderParts { head, bias } = parts(&blob);
    let want: Vec<f32> =
        (0..LABELS).map(|o| bias[o] + head[o * d..][..d].iter().zip(&pooled).map(|(a, b)| a * b).sum::<f32>()).collect();
    assert_eq!(got.len(), LABELS);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
    }

    // The LoRA counts: without it the logits move.
    let without = {
        let opts = ForwardOpts { adapter: None, ..opts };
        let mut kv = vec![0u8; llama.cfg.kv_bytes(4)];
        llama.forward(vnpu_engine::Input::Embeddings(&x), 0, &mut kv, &opts).unwrap().hidden_all.unwrap()
    };
    assert!(without.iter().zip(&h).any(|(a, b)| (a - b).abs() > 1e-3));

    // Wrong feature width, or tokens to a features-only path, fail cleanly.
    assert_eq!(job(&f, Op::Classify, &blob, &Input::Features { dim: 4, data: vec![0.5; 8] }), Err(Errno::EBADMSG));
    assert_eq!(job(&f, Op::Classify, &blob, &Input::Features { dim: 5, data: vec![f32::NAN; 5] }), Err(Errno::EBADMSG));
    // EMBED through the same adapter: the pooled state, normalised.
    let e = job(&f, Op::Embed, &blob, &Input::Features { dim: 5, data: feats }).unwrap();
    let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(e.iter().zip(&pooled).all(|(a, b)| (a - b / norm).abs() < 1e-4));
}

struct AdapterBuilderParts {
    head: Vec<f32>,
    bias: Vec<f32>,
}

fn parts(blob: &[u8]) -> AdapterBuilderParts {
    let a = m4npu_format::Adapter::parse(blob).unwrap();
    let get = |n: &str| f32s(a.get(n).unwrap().1);
    AdapterBuilderParts { head: get("head.weight"), bias: get("head.bias") }
}

#[test]
fn text_encoder_classifier_is_a_head_on_the_sentence_embedding() {
    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let bert = f.text_encoder.as_ref().unwrap();
    let d = bert.cfg.d_model;
    let mut rng = Rng::new(5);
    let mut b = AdapterBuilder::new("text", [0; 32]);
    b.meta(meta(AdapterTask::Classify, SubModel::TextEncoder).to_json());
    let head = rng.vec(2 * d, 0.5);
    b.tensor_f32("head.weight", &[2, d], &head).unwrap();
    b.tensor_f32("head.bias", &[2], &[0.0, 1.0]).unwrap();
    let blob = b.build().unwrap();
    let ids = [1u32, 7, 9, 2];
    let got = job(&f, Op::Classify, &blob, &Input::Tokens(ids.to_vec())).unwrap();
    let e = bert.embed(&ids).unwrap();
    for (o, g) in got.iter().enumerate() {
        let want = o as f32 + head[o * d..][..d].iter().zip(&e).map(|(a, b)| a * b).sum::<f32>();
        assert!((g - want).abs() < 1e-5);
    }
    // Features need an input projection this adapter lacks.
    assert_eq!(job(&f, Op::Classify, &blob, &Input::Features { dim: 2, data: vec![1.0; 2] }), Err(Errno::EOPNOTSUPP));
}

/// A text classifier with a rank-2 LoRA on q, up and down of layer `layer`
/// of the text encoder: the blob and the same factors for the engine.
fn text_lora_classifier(rng: &mut Rng, d: usize, ff: usize, layer: usize) -> (Vec<u8>, LoraSet, Vec<f32>) {
    let m = meta(AdapterTask::Classify, SubModel::TextEncoder);
    let mut b = AdapterBuilder::new("text-lora", [0; 32]);
    b.meta(m.to_json());
    let mut set = LoraSet::default();
    for (proj, p, i, o) in [("q", Proj::Q, d, d), ("up", Proj::Up, d, ff), ("down", Proj::Down, ff, d)] {
        let (a, bb) = (rng.vec(2 * i, 0.3), rng.vec(o * 2, 0.3));
        b.tensor_f32(&lora_name(layer, proj, "a"), &[2, i], &a).unwrap();
        b.tensor_f32(&lora_name(layer, proj, "b"), &[o, 2], &bb).unwrap();
        set.add(layer, p, 2, a, bb, m.lora_alpha / 2.0);
    }
    let head = rng.vec(2 * d, 0.5);
    b.tensor_f32("head.weight", &[2, d], &head).unwrap();
    b.tensor_f32("head.bias", &[2], &[0.0, 1.0]).unwrap();
    (b.build().unwrap(), set, head)
}

#[test]
fn text_encoder_lora_adapts_the_encoder() {
    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let bert = f.text_encoder.as_ref().unwrap();
    let (d, ff) = (bert.cfg.d_model, bert.cfg.d_ff);
    let (blob, set, head) = text_lora_classifier(&mut Rng::new(6), d, ff, 1);
    let ids = [1u32, 7, 9, 2];
    let got = job(&f, Op::Classify, &blob, &Input::Tokens(ids.to_vec())).unwrap();
    let e = bert.embed_batch_with(&[&ids], Some(&set)).unwrap().remove(0);
    let base = bert.embed(&ids).unwrap();
    assert!(e.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-3), "the LoRA changed nothing");
    for (o, g) in got.iter().enumerate() {
        let want = o as f32 + head[o * d..][..d].iter().zip(&e).map(|(a, b)| a * b).sum::<f32>();
        assert!((g - want).abs() < 1e-5, "label {o}: {g} vs {want}");
    }
}

#[test]
fn unfit_text_encoder_loras_are_refused_with_the_reason() {
    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let c = &f.text_encoder.as_ref().unwrap().cfg;
    let (d, ff, layers) = (c.d_model, c.d_ff, c.n_layer);
    let build = |m: &AdapterMeta, tensors: &[(String, Vec<usize>)]| {
        let mut b = AdapterBuilder::new("bad", [0; 32]);
        b.meta(m.to_json());
        b.tensor_f32("head.weight", &[2, d], &vec![0.1; 2 * d]).unwrap();
        b.tensor_f32("head.bias", &[2], &[0.0; 2]).unwrap();
        for (n, s) in tensors {
            b.tensor_f32(n, s, &vec![0.1; s.iter().product()]).unwrap();
        }
        AlignedBytes::from_slice(&b.build().unwrap())
    };
    let m = meta(AdapterTask::Classify, SubModel::TextEncoder);
    let pair = |l: usize, p: &str, a: Vec<usize>, b: Vec<usize>| vec![(lora_name(l, p, "a"), a), (lora_name(l, p, "b"), b)];
    let mut early = m.clone();
    early.layers = Some(1);
    let cases = [
        ("does not fit", build(&m, &pair(0, "up", vec![2, d], vec![d, 2]))),
        ("does not fit", build(&m, &pair(0, "down", vec![2, d], vec![d, 2]))),
        ("does not fit", build(&m, &pair(layers, "q", vec![2, d], vec![d, 2]))),
        ("no gate projection", build(&m, &pair(0, "gate", vec![2, d], vec![ff, 2]))),
        ("lacks a factor", build(&m, &pair(0, "v", vec![2, d], vec![d, 2])[..1])),
        ("no early exit", build(&early, &[])),
    ];
    for (why, blob) in &cases {
        let e = vnpud::adapter::TaskAdapter::parse(blob, &f).err().unwrap_or_else(|| panic!("{why}: parsed"));
        assert!(e.contains(why), "{why}: {e}");
        assert_eq!(job(&f, Op::Classify, blob, &Input::Tokens(vec![1, 2])), Err(Errno::ENOEXEC), "{why}");
    }
    // The right shapes parse.
    let ok = build(&m, &[pair(0, "up", vec![2, d], vec![ff, 2]), pair(layers - 1, "o", vec![3, d], vec![d, 3])].concat());
    assert!(vnpud::adapter::TaskAdapter::parse(&ok, &f).unwrap().has_lora());
}

/// Text jobs of different LoRAs in one call: each runs with its own
/// adapter's LoRA, as it runs alone, never another's.
/// Runs `cases` one by one and as one pooled batch; asserts each job's
/// result and output bytes are the same both ways; returns them.
type Case<'a, 'm> = (Op, Vec<u8>, Option<&'a vnpud::adapter::TaskAdapter<'m>>);
fn batched_equals_solo(f: &Foundation<'_>, cases: &[Case<'_, '_>]) -> (Vec<Result<usize, Errno>>, Vec<Vec<u8>>) {
    let solo: Vec<(Result<usize, Errno>, Vec<u8>)> = cases
        .iter()
        .map(|(op, input, a)| {
            let mut out = vec![0u8; 4096];
            let r = run_with(f, Some(*op), JobBuffers { input, output: &mut out, state: None, adapter: None }, *a);
            (r, out)
        })
        .collect();
    let mut outs = vec![vec![0u8; 4096]; cases.len()];
    let jobs = cases
        .iter()
        .zip(outs.iter_mut())
        .map(|((op, input, a), out)| (Some(*op), JobBuffers { input, output: out, state: None, adapter: None }, *a, 0))
        .collect();
    let batched = pooled_batch_jobs(f, jobs);
    for (i, (r, out)) in solo.iter().enumerate() {
        assert_eq!(&batched[i], r, "job {i}: result");
        assert!(outs[i] == *out, "job {i}: output differs from the job run alone");
    }
    (batched, outs)
}

#[test]
fn batched_text_loras_are_not_mixed() {
    use vnpud::adapter::TaskAdapter;

    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let bert = f.text_encoder.as_ref().unwrap();
    let (d, ff) = (bert.cfg.d_model, bert.cfg.d_ff);
    let mut rng = Rng::new(12);
    let (one, _, _) = text_lora_classifier(&mut rng, d, ff, 0);
    let (two, _, _) = text_lora_classifier(&mut rng, d, ff, 1);
    let mut plain = AdapterBuilder::new("text", [0; 32]);
    plain.meta(meta(AdapterTask::Classify, SubModel::TextEncoder).to_json());
    plain.tensor_f32("head.weight", &[2, d], &rng.vec(2 * d, 0.5)).unwrap();
    plain.tensor_f32("head.bias", &[2], &[0.0, 1.0]).unwrap();
    let (one, two, plain) =
        (AlignedBytes::from_slice(&one), AlignedBytes::from_slice(&two), AlignedBytes::from_slice(&plain.build().unwrap()));
    let (one, two, plain) = (TaskAdapter::parse(&one, &f).unwrap(), TaskAdapter::parse(&two, &f).unwrap(), TaskAdapter::parse(&plain, &f).unwrap());
    let toks = |v: &[u32]| Input::Tokens(v.to_vec()).encode();
    let cases: Vec<(Op, Vec<u8>, Option<&TaskAdapter<'_>>)> = vec![
        (Op::Classify, toks(&[1, 4, 4, 5, 6, 2]), Some(&one)),
        (Op::Classify, toks(&[1, 4, 4, 5, 6, 2]), Some(&two)),
        (Op::Embed, toks(&[1, 8, 2]), None),
        (Op::Classify, toks(&[1, 8, 2]), Some(&plain)),
        (Op::Embed, toks(&[1, 9, 3, 2]), Some(&one)),
        (Op::Classify, toks(&[1, 4, 4, 5, 6, 2]), Some(&plain)),
        (Op::Classify, toks(&[1, 3, 2]), Some(&two)),
    ];
    let (batched, outs) = batched_equals_solo(&f, &cases);
    assert!(batched.iter().all(Result::is_ok), "{batched:?}");
    assert!(outs[0] != outs[1] && outs[1] != outs[5], "the LoRAs make no difference");
}

/// A generation adapter: rank-4 LoRA on `o` of `layer`; the blob and its
/// A and B factors.
fn o_lora(rng: &mut Rng, d: usize, layer: usize, base: [u8; 32]) -> (AlignedBytes, Vec<f32>, Vec<f32>) {
    let mut b = AdapterBuilder::new("style", base);
    b.meta(meta(AdapterTask::Generate, SubModel::Backbone).to_json());
    let (a, bb) = (rng.vec(4 * d, 0.5), rng.vec(d * 4, 0.5));
    b.tensor_f32(&lora_name(layer, "o", "a"), &[4, d], &a).unwrap();
    b.tensor_f32(&lora_name(layer, "o", "b"), &[d, 4], &bb).unwrap();
    (AlignedBytes::from_slice(&b.build().unwrap()), a, bb)
}

#[test]
fn generation_applies_the_lora() {
    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let llama = f.backbone.as_ref().unwrap();
    let d = llama.cfg.d_model;
    let mut rng = Rng::new(9);
    let m = meta(AdapterTask::Generate, SubModel::Backbone);
    let (blob, a, bb) = o_lora(&mut rng, d, 1, [0; 32]);
    let mut set = LoraSet::default();
    set.add(1, Proj::O, 4, a, bb, m.lora_alpha / 4.0);

    let step = |adapter: Option<&[u8]>| {
        let input = Input::Tokens(vec![3, 4, 5]).encode();
        let mut state = vec![0u8; 4096 + llama.cfg.kv_bytes(8)];
        let mut out = vec![0u8; 16 + 4 * llama.cfg.vocab];
        let n = run(&f, Some(Op::Generate), JobBuffers { input: &input, output: &mut out, state: Some(&mut state), adapter })
            .unwrap();
        f32s(&out[16..n])
    };
    let with = step(Some(&blob));
    let mut kv = vec![0u8; llama.cfg.kv_bytes(8)];
    let opts = ForwardOpts { adapter: Some(&set), ..Default::default() };
    let want = llama.forward(vnpu_engine::Input::Tokens(&[3, 4, 5]), 0, &mut kv, &opts).unwrap().logits.unwrap();
    assert!(with.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
    assert!(step(None).iter().zip(&with).any(|(a, b)| (a - b).abs() > 1e-3));
}

/// Adapters whose contents do not fit the model: ENOEXEC, never a panic.
#[test]
fn unfit_adapters_are_refused() {
    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let d = f.backbone.as_ref().unwrap().cfg.d_model;
    let tokens = Input::Tokens(vec![1, 2]);
    let build = |m: &AdapterMeta, tensors: &[(&str, Vec<usize>)]| {
        let mut b = AdapterBuilder::new("bad", [0; 32]);
        b.meta(m.to_json());
        for (n, s) in tensors {
            b.tensor_f32(n, s, &vec![0.1; s.iter().product()]).unwrap();
        }
        b.build().unwrap()
    };
    let cls = meta(AdapterTask::Classify, SubModel::Backbone);
    let head = |l: usize| [("head.weight", vec![l, d]), ("head.bias", vec![l])];
    let mut named = cls.clone();
    named.labels = vec!["a".into(), "b".into(), "c".into()];
    let mut feats = cls.clone();
    feats.feature_dim = Some(3);
    // Rows of 3 plus the text encoder's sentence embedding.
    let w = f.text_encoder.as_ref().unwrap().cfg.d_model;
    let mut captioned = feats.clone();
    (captioned.feature_dim, captioned.text_embedding) = (Some(3 + w as u32), Some(w as u32));
    let projection = |m: &AdapterMeta| {
        let fd = m.feature_dim.unwrap() as usize;
        [head(2)[0].clone(), head(2)[1].clone(), ("input.weight", vec![d, fd]), ("input.bias", vec![d])]
    };
    let rows = Input::Features { dim: 3 + w, data: m4npu_format::job_io::rows_with_embedding(&[0.5; 6], 3, &vec![0.1; w]) };
    assert!(job(&f, Op::Classify, &build(&captioned, &projection(&captioned)), &rows).is_ok());
    let mut narrow = captioned.clone();
    narrow.text_embedding = Some(w as u32 - 1);
    let mut no_rows = captioned.clone();
    no_rows.feature_dim = Some(w as u32);
    let mut no_features = cls.clone();
    no_features.text_embedding = Some(w as u32);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no head", build(&cls, &[])),
        ("head width", build(&cls, &[("head.weight", vec![2, d + 1]), ("head.bias", vec![2])])),
        ("label count", build(&named, &head(2))),
        ("LoRA rank", build(&cls, &[head(2)[0].clone(), head(2)[1].clone(), ("lora.0.q.a", vec![2, d]), ("lora.0.q.b", vec![d, 3])])),
        ("LoRA layer", build(&cls, &[head(2)[0].clone(), head(2)[1].clone(), ("lora.9.q.a", vec![2, d]), ("lora.9.q.b", vec![d, 2])])),
        ("LoRA half", build(&cls, &[head(2)[0].clone(), head(2)[1].clone(), ("lora.0.q.a", vec![2, d])])),
        ("no input projection", build(&feats, &head(2))),
        ("not the encoder's embedding", build(&narrow, &projection(&narrow))),
        ("an embedding and no rows", build(&no_rows, &projection(&no_rows))),
        ("an embedding without features", build(&no_features, &head(2))),
        ("not JSON", {
            let mut b = AdapterBuilder::new("bad", [0; 32]);
            b.meta(b"{".to_vec());
            b.build().unwrap()
        }),
    ];
    for (what, blob) in cases {
        assert_eq!(job(&f, Op::Classify, &blob, &tokens), Err(Errno::ENOEXEC), "{what}");
    }
    // An embed adapter asked to classify: not this adapter's job.
    let e = build(&meta(AdapterTask::Embed, SubModel::Backbone), &[]);
    assert_eq!(job(&f, Op::Classify, &e, &tokens), Err(Errno::EOPNOTSUPP));
}

/// The daemon's adapter cache: one parse per adapter, the same logits as a
/// fresh parse, a new adapter at the same address parsed anew, and an
/// unloaded (zeroed) adapter swept out.
#[test]
fn adapter_cache_parses_once_and_follows_unloads() {
    use m4npu_uapi::HwRange;
    use vnpud::adapter_cache::AdapterCache;

    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let llama = f.backbone.as_ref().unwrap();
    let (d, ff, kvd) = (llama.cfg.d_model, llama.cfg.d_ff, llama.cfg.kv_dim());
    let mut m = meta(AdapterTask::Classify, SubModel::Backbone);
    m.feature_dim = Some(5);
    m.labels = (0..LABELS).map(|i| format!("l{i}")).collect();
    let mut rng = Rng::new(5);
    let (first, _, _) = feature_classifier(&mut rng, d, ff, kvd, &m);
    let (second, _, _) = feature_classifier(&mut rng, d, ff, kvd, &m);
    assert_eq!(first.len(), second.len(), "both adapters fit the same range");
    let input = Input::Features { dim: 5, data: rng.vec(3 * 5, 1.0) }.encode();
    fn logits(f: &Foundation<'_>, input: &[u8], a: &vnpud::adapter::TaskAdapter<'_>) -> Vec<f32> {
        let mut out = vec![0u8; 4096];
        let n = run_with(f, Some(Op::Classify), JobBuffers { input, output: &mut out, state: None, adapter: None }, Some(a)).unwrap();
        f32s(&out[..n])
    }

    // "NPU memory" with the adapter at device address 0.
    let range = HwRange { addr: 0, len: first.len() as u64 };
    let mem = AlignedBytes::from_slice(&first);
    let mut cache = AdapterCache::new();
    let a = logits(&f, &input, cache.get(&mem, 0, &f).unwrap());
    let b = logits(&f, &input, cache.get(&mem, 0, &f).unwrap());
    assert_eq!((cache.misses, cache.hits), (1, 1));
    assert_eq!(a, b);
    assert_eq!(a, job(&f, Op::Classify, &first, &Input::decode(&input).unwrap()).unwrap(), "cached parse differs from a fresh one");

    // Another adapter loaded at the same address: parsed anew.
    let mem2 = AlignedBytes::from_slice(&second);
    let c = logits(&f, &input, cache.get(&mem2, 0, &f).unwrap());
    assert_eq!((cache.misses, cache.hits, cache.len()), (2, 1, 1));
    assert_ne!(a, c);

    // Still loaded: kept. Unloaded (the driver zeroes it): dropped.
    cache.sweep_with(|r| (r == range).then_some(&mem2[..]));
    assert_eq!(cache.len(), 1);
    let zeroed = vec![0u8; second.len()];
    cache.sweep_with(|r| (r == range).then_some(&zeroed[..]));
    assert!(cache.is_empty());
}

/// GENERATE jobs of several apps as one batch (`generate_batch`): decode
/// steps with three different adapters and none, at different positions,
/// a prefill among them and a bad job, give bit for bit what each job gives
/// run alone, states included.
#[test]
fn batched_generation_equals_solo() {
    use m4npu_format::job_io::STATE_KV_OFFSET;
    use vnpud::adapter::TaskAdapter;
    use vnpud::execute::generate_batch;

    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let llama = f.backbone.as_ref().unwrap();
    let d = llama.cfg.d_model;
    let mut rng = Rng::new(21);
    let blobs: Vec<AlignedBytes> = (0..3).map(|k| o_lora(&mut rng, d, k % 2, [k as u8; 32]).0).collect();
    let parsed: Vec<TaskAdapter<'_>> = blobs.iter().map(|b| TaskAdapter::parse(b, &f).unwrap()).collect();
    let state_len = STATE_KV_OFFSET + llama.cfg.kv_bytes(16);
    let out_len = 16 + 4 * llama.cfg.vocab;
    // Session i: adapter i % 4 (3 = none), prefilled with i + 1 tokens.
    let sessions = 8;
    let mut states: Vec<Vec<u8>> = (0..sessions)
        .map(|i| {
            let mut state = vec![0u8; state_len];
            let input = Input::Tokens((0..=i as u32).map(|t| 1 + t % 7).collect()).encode();
            let mut out = vec![0u8; out_len];
            let a = (i % 4 < 3).then(|| &blobs[i % 4][..]);
            run(&f, Some(Op::Generate), JobBuffers { input: &input, output: &mut out, state: Some(&mut state), adapter: a }).unwrap();
            state
        })
        .collect();
    // The step each session takes next; session 5 prefills 3 more tokens,
    // session 6's token is outside the vocabulary.
    let inputs: Vec<Vec<u8>> = (0..sessions)
        .map(|i| match i {
            5 => Input::Tokens(vec![2, 3, 4]).encode(),
            6 => Input::Tokens(vec![llama.cfg.vocab as u32]).encode(),
            _ => Input::Tokens(vec![1 + i as u32]).encode(),
        })
        .collect();

    let mut solo_states = states.clone();
    let solo: Vec<(Result<usize, Errno>, Vec<u8>)> = (0..sessions)
        .map(|i| {
            let mut out = vec![0u8; out_len];
            let a = (i % 4 < 3).then(|| &blobs[i % 4][..]);
            let r = run(&f, Some(Op::Generate), JobBuffers { input: &inputs[i], output: &mut out, state: Some(&mut solo_states[i]), adapter: a });
            (r, out)
        })
        .collect();

    let mut outs = vec![vec![0u8; out_len]; sessions];
    let jobs = outs
        .iter_mut()
        .zip(states.iter_mut())
        .enumerate()
        .map(|(i, (out, state))| {
            let b = JobBuffers { input: &inputs[i], output: out, state: Some(state), adapter: None };
            (b, parsed.get(i % 4))
        })
        .collect();
    let batched = generate_batch(&f, jobs);
    for i in 0..sessions {
        assert_eq!(batched[i], solo[i].0, "session {i}: result");
        assert!(outs[i] == solo[i].1, "session {i}: output differs from the solo run");
        assert!(states[i] == solo_states[i], "session {i}: state differs from the solo run");
    }
    assert_eq!(batched[6], Err(Errno::EBADMSG));
}

/// A GENERATE job the device runs twice (it died after writing the state,
/// and the driver handed the job to the next device) writes the same
/// output and state both times; the session's next job goes on from there.
#[test]
fn generation_steps_are_safe_to_run_twice() {
    use m4npu_format::job_io::{StateHeader, STATE_KV_OFFSET};
    use vnpud::execute::run_job;

    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let llama = f.backbone.as_ref().unwrap();
    let out_len = 16 + 4 * llama.cfg.vocab;
    let mut state = vec![0u8; STATE_KV_OFFSET + llama.cfg.kv_bytes(16)];
    let step = |job: u64, tokens: Vec<u32>, state: &mut Vec<u8>| {
        let input = Input::Tokens(tokens).encode();
        let mut out = vec![0u8; out_len];
        let n = run_job(&f, job, Some(Op::Generate), JobBuffers { input: &input, output: &mut out, state: Some(state), adapter: None }, None)
            .unwrap();
        out.truncate(n);
        out
    };
    let prompt = step(41, vec![3, 4, 5], &mut state);
    let after_prompt = state.clone();
    assert_eq!(step(41, vec![3, 4, 5], &mut state), prompt, "a re-run prompt");
    assert!(state == after_prompt, "a re-run prompt changed the state");
    let next = step(42, vec![6], &mut state);
    let after_next = state.clone();
    assert_eq!(step(42, vec![6], &mut state), next, "a re-run decode step");
    assert!(state == after_next, "a re-run decode step changed the state");
    assert_eq!(StateHeader::decode(&state).unwrap(), StateHeader { n_past: 4, last_job: 42 });
    // Without job ids (0), every run is a new step.
    let mut fresh = after_prompt.clone();
    step(0, vec![6], &mut fresh);
    step(0, vec![6], &mut fresh);
    assert_eq!(StateHeader::decode(&fresh).unwrap().n_past, 5);
}

/// EMBED and CLASSIFY jobs of several apps as one batch per sub-model
/// (`pooled_batch_jobs`): plain embeddings of different lengths, a
/// text-encoder adapter's EMBED and CLASSIFY, backbone classifiers of two
/// apps with different exit layers and pooling (features, and tokens), a
/// backbone EMBED, an empty input (run alone), a bad token, features of
/// the wrong width and features for a text adapter give what each gives
/// alone.
#[test]
fn batched_pooled_jobs_equal_solo() {
    use vnpud::adapter::TaskAdapter;

    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let (bert, llama) = (f.text_encoder.as_ref().unwrap(), f.backbone.as_ref().unwrap());
    let d = bert.cfg.d_model;
    let mut rng = Rng::new(8);
    let mut b = AdapterBuilder::new("text", [0; 32]);
    b.meta(meta(AdapterTask::Classify, SubModel::TextEncoder).to_json());
    b.tensor_f32("head.weight", &[2, d], &rng.vec(2 * d, 0.5)).unwrap();
    b.tensor_f32("head.bias", &[2], &[0.0, 1.0]).unwrap();
    let text = AlignedBytes::from_slice(&b.build().unwrap());
    let mut m = feature_meta();
    let (feat, _, _) = feature_classifier(&mut rng, llama.cfg.d_model, llama.cfg.d_ff, llama.cfg.kv_dim(), &m);
    let feat = AlignedBytes::from_slice(&feat);
    // Another app's: its own LoRA, every layer, the last position.
    m.layers = None;
    m.pooling = Pooling::Last;
    let (deep, _, _) = feature_classifier(&mut rng, llama.cfg.d_model, llama.cfg.d_ff, llama.cfg.kv_dim(), &m);
    let deep = AlignedBytes::from_slice(&deep);
    let (text, feat, deep) = (TaskAdapter::parse(&text, &f).unwrap(), TaskAdapter::parse(&feat, &f).unwrap(), TaskAdapter::parse(&deep, &f).unwrap());

    let toks = |v: &[u32]| Input::Tokens(v.to_vec()).encode();
    let cases: Vec<(Op, Vec<u8>, Option<&TaskAdapter<'_>>)> = vec![
        (Op::Embed, toks(&[1, 7, 9, 2]), None),
        (Op::Embed, toks(&[1, 3, 2]), None),
        (Op::Classify, toks(&[1, 4, 4, 5, 6, 2]), Some(&text)),
        (Op::Embed, toks(&[1, 8, 2]), Some(&text)),
        (Op::Classify, Input::Features { dim: 5, data: rng.vec(10, 1.0) }.encode(), Some(&feat)),
        (Op::Embed, toks(&[1, bert.cfg.vocab as u32]), None),
        (Op::Classify, Input::Features { dim: 2, data: vec![1.0; 2] }.encode(), Some(&text)),
        (Op::Embed, toks(&[2, 11, 12, 13, 14, 15, 16, 1]), None),
        (Op::Classify, Input::Features { dim: 5, data: rng.vec(15, 1.0) }.encode(), Some(&deep)),
        (Op::Classify, toks(&[3, 9, 27]), Some(&deep)),
        (Op::Embed, Input::Features { dim: 5, data: rng.vec(20, 1.0) }.encode(), Some(&feat)),
        (Op::Classify, Input::Features { dim: 5, data: vec![] }.encode(), Some(&feat)),
        (Op::Classify, Input::Features { dim: 4, data: vec![1.0; 8] }.encode(), Some(&deep)),
        (Op::Classify, Input::Features { dim: 5, data: rng.vec(5, 1.0) }.encode(), Some(&feat)),
        (Op::Classify, Input::Mixed { dim: 5, data: rng.vec(10, 1.0), tokens: vec![4, 5] }.encode(), Some(&feat)),
    ];
    let (batched, _) = batched_equals_solo(&f, &cases);
    assert_eq!(batched[5], Err(Errno::EBADMSG));
    assert_eq!(batched[6], Err(Errno::EOPNOTSUPP));
    assert_eq!(batched[11], Err(Errno::EBADMSG), "no feature rows");
    assert_eq!(batched[12], Err(Errno::EBADMSG), "features of the wrong width");
    assert!([4, 8, 9, 10, 13, 14].iter().all(|&i| batched[i].is_ok()), "the backbone jobs: {batched:?}");
}

/// An image and its caption as one job: the feature rows through the
/// adapter's input projection, then the caption's token embeddings (the
/// backbone's own table), one sequence through the LoRA layers, mean-pooled
/// over all of it into the head.
#[test]
fn mixed_input_is_projected_rows_then_token_embeddings() {
    let model = SyntheticWeights::new(3);
    let subs = model.sub_models();
    let f = Foundation::build(&subs).unwrap();
    let llama = f.backbone.as_ref().unwrap();
    let (d, ff, kvd) = (llama.cfg.d_model, llama.cfg.d_ff, llama.cfg.kv_dim());
    let m = feature_meta();
    let mut rng = Rng::new(21);
    let (blob, set, inw) = feature_classifier(&mut rng, d, ff, kvd, &m);
    let (feats, tokens) = (rng.vec(3 * 5, 1.0), vec![4u32, 17, 2]);
    let mixed = |dim: usize, data: Vec<f32>, tokens: Vec<u32>| Input::Mixed { dim, data, tokens };
    let got = job(&f, Op::Classify, &blob, &mixed(5, feats.clone(), tokens.clone())).unwrap();

    // By hand: the rows, then the tokens, as one sequence of embeddings.
    let proj = InputProjection { w: &inw[..d * 5], b: Some(&inw[d * 5..]), in_dim: 5, d_model: d };
    let mut x = proj.project(&feats).unwrap();
    x.extend(llama.token_embeddings(&tokens).unwrap());
    let n = 3 + tokens.len();
    let mut kv = vec![0u8; llama.cfg.kv_bytes(n)];
    let opts = ForwardOpts { all_hidden: true, logits: Logits::None, adapter: Some(&set), layers: Some(1) };
    let h = llama.forward(vnpu_engine::Input::Embeddings(&x), 0, &mut kv, &opts).unwrap().hidden_all.unwrap();
    let pooled: Vec<f32> = (0..d).map(|j| (0..n).map(|t| h[t * d + j]).sum::<f32>() / n as f32).collect();
    let AdapterBuilderParts { head, bias } = parts(&blob);
    let want: Vec<f32> =
        (0..LABELS).map(|o| bias[o] + head[o * d..][..d].iter().zip(&pooled).map(|(a, b)| a * b).sum::<f32>()).collect();
    assert_eq!(got.len(), LABELS);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
    }
    // The caption counts: the image alone answers otherwise.
    let image_only = job(&f, Op::Classify, &blob, &Input::Features { dim: 5, data: feats.clone() }).unwrap();
    assert!(image_only.iter().zip(&got).any(|(a, b)| (a - b).abs() > 1e-4));

    // What the job holds is checked: width, values, vocabulary, length.
    let bad = |input: Input| job(&f, Op::Classify, &blob, &input);
    assert_eq!(bad(mixed(4, vec![0.5; 8], tokens.clone())), Err(Errno::EBADMSG));
    assert_eq!(bad(mixed(5, vec![f32::INFINITY; 5], tokens.clone())), Err(Errno::EBADMSG));
    assert_eq!(bad(mixed(5, feats.clone(), vec![1, llama.cfg.vocab as u32])), Err(Errno::EBADMSG));
    let room = llama.cfg.max_ctx - 3;
    assert!(bad(mixed(5, feats.clone(), vec![1; room])).is_ok(), "the context's length fits");
    assert_eq!(bad(mixed(5, feats.clone(), vec![1; room + 1])), Err(Errno::EBADMSG), "one row more does not");

    // Whoever has no input projection for the rows refuses them.
    let mut b = AdapterBuilder::new("tokens", [0; 32]);
    b.meta(meta(AdapterTask::Classify, SubModel::Backbone).to_json());
    b.tensor_f32("head.weight", &[LABELS, d], &rng.vec(LABELS * d, 0.2)).unwrap();
    b.tensor_f32("head.bias", &[LABELS], &[0.0; LABELS]).unwrap();
    let token_classifier = b.build().unwrap();
    assert!(job(&f, Op::Classify, &token_classifier, &Input::Tokens(tokens.clone())).is_ok());
    assert_eq!(job(&f, Op::Classify, &token_classifier, &mixed(5, feats.clone(), tokens.clone())), Err(Errno::EOPNOTSUPP));
    let bert_d = f.text_encoder.as_ref().unwrap().cfg.d_model;
    let mut b = AdapterBuilder::new("text", [0; 32]);
    b.meta(meta(AdapterTask::Classify, SubModel::TextEncoder).to_json());
    b.tensor_f32("head.weight", &[2, bert_d], &rng.vec(2 * bert_d, 0.5)).unwrap();
    b.tensor_f32("head.bias", &[2], &[0.0, 1.0]).unwrap();
    let text = b.build().unwrap();
    assert_eq!(job(&f, Op::Classify, &text, &mixed(5, feats.clone(), tokens.clone())), Err(Errno::EOPNOTSUPP));
    // EMBED without an adapter (the text encoder) and GENERATE take tokens only.
    let input = mixed(5, feats, tokens).encode();
    let mut out = vec![0u8; 4096];
    let embed = run(&f, Some(Op::Embed), JobBuffers { input: &input, output: &mut out, state: None, adapter: None });
    assert_eq!(embed, Err(Errno::EOPNOTSUPP));
    let mut state = AlignedBytes::zeroed(m4npu_format::job_io::STATE_KV_OFFSET + llama.cfg.kv_bytes(16));
    let generate = run(&f, Some(Op::Generate), JobBuffers { input: &input, output: &mut out, state: Some(&mut state[..]), adapter: None });
    assert_eq!(generate, Err(Errno::EOPNOTSUPP));
}
