//! Apps' adapters executed by vnpud through the real module: a feature
//! classifier with an input projection, LoRA and early exit on the tiny
//! synthetic model, checked against vnpud's own code run in this process
//! on the same firmware; and the messages developers get when it goes wrong.

use anyhow::{bail, ensure, Context, Result};
use m4_train::eval::host_logits;
use m4npu::{Device, Error, JobDesc, Op};
use m4npu_format::adapter_meta::{lora_name, AdapterMeta, AdapterTask, Pooling, SubModel};
use m4npu_format::job_io::{f32s, rows_with_embedding, Input};
use m4npu_format::AdapterBuilder;
use vnpu_engine::models::synthetic::Rng;
use vnpud::foundation::{sub_models, Foundation};

use crate::module;
use crate::vnpu::{max_abs_diff, start_vnpud, stop};

const TINY: &str = "/lib/firmware/m4npu/tiny.m4fw";
pub const FEATURE_DIM: usize = 6;

/// A classifier of 6-wide feature rows for the tiny backbone.
pub fn feature_classifier(base: [u8; 32], head_rows: usize, d: usize, ff: usize) -> Result<Vec<u8>> {
    let meta = AdapterMeta {
        task: AdapterTask::Classify,
        submodel: SubModel::Backbone,
        labels: ["walk", "run", "sit"].map(String::from).to_vec(),
        pooling: Pooling::Mean,
        feature_dim: Some(FEATURE_DIM as u32),
        text_embedding: None,
        layers: Some(1),
        lora_alpha: 4.0,
        description: "guest test".into(),
    };
    let mut rng = Rng::new(21);
    let mut b = AdapterBuilder::new("imu-test", base);
    b.meta(meta.to_json());
    b.tensor_f32(&lora_name(0, "q", "a"), &[2, d], &rng.vec(2 * d, 0.3))?;
    b.tensor_f32(&lora_name(0, "q", "b"), &[d, 2], &rng.vec(2 * d, 0.3))?;
    b.tensor_f32(&lora_name(0, "up", "a"), &[2, d], &rng.vec(2 * d, 0.3))?;
    b.tensor_f32(&lora_name(0, "up", "b"), &[ff, 2], &rng.vec(2 * ff, 0.3))?;
    b.tensor_f32("head.weight", &[head_rows, d], &rng.vec(head_rows * d, 0.3))?;
    b.tensor_f32("head.bias", &[head_rows], &rng.vec(head_rows, 0.1))?;
    b.tensor_f32("input.weight", &[d, FEATURE_DIM], &rng.vec(d * FEATURE_DIM, 0.4))?;
    b.tensor_f32("input.bias", &[d], &rng.vec(d, 0.1))?;
    Ok(b.build()?)
}

/// A classifier of 6-wide feature rows and a text the text encoder embeds
/// (`w` wide): an input projection and a head, no LoRA.
fn captioned_classifier(base: [u8; 32], d: usize, w: usize) -> Result<Vec<u8>> {
    let width = FEATURE_DIM + w;
    let meta = AdapterMeta {
        task: AdapterTask::Classify,
        submodel: SubModel::Backbone,
        labels: ["mismatch", "match"].map(String::from).to_vec(),
        pooling: Pooling::Mean,
        feature_dim: Some(width as u32),
        text_embedding: Some(w as u32),
        layers: Some(1),
        lora_alpha: 1.0,
        description: "guest test".into(),
    };
    let mut rng = Rng::new(22);
    let mut b = AdapterBuilder::new("caption-test", base);
    b.meta(meta.to_json());
    b.tensor_f32("head.weight", &[2, d], &rng.vec(2 * d, 0.3))?;
    b.tensor_f32("head.bias", &[2], &rng.vec(2, 0.1))?;
    b.tensor_f32("input.weight", &[d, width], &rng.vec(d * width, 0.4))?;
    b.tensor_f32("input.bias", &[d], &rng.vec(d, 0.1))?;
    Ok(b.build()?)
}

pub fn adapters_classify_on_vnpud() -> Result<()> {
    module::reload("firmware=m4npu/tiny.m4fw")?;
    let vnpud = start_vnpud(4)?;
    let dev = Device::open()?;
    let hash = dev.info()?.model.context("no model")?.hash;
    let fw = vnpu_engine::AlignedBytes::from_slice(&std::fs::read(TINY)?);
    let subs = sub_models(&fw).map_err(anyhow::Error::msg)?;
    let reference = Foundation::build(&subs).map_err(anyhow::Error::msg)?;
    let cfg = &reference.backbone.as_ref().context("backbone")?.cfg;
    let blob = feature_classifier(hash, 3, cfg.d_model, cfg.d_ff)?;
    let adapter = dev.load_adapter(&blob)?;
    ensure!(adapter.meta().is_some_and(|m| m.labels.len() == 3), "the library did not read the adapter's metadata");

    let features: Vec<f32> = Rng::new(4).vec(5 * FEATURE_DIM, 1.0);
    let labels = dev.classify_features(&adapter, &features, FEATURE_DIM)?;
    // The same job on vnpud's code in this process.
    let input = Input::Features { dim: FEATURE_DIM, data: features.clone() };
    let want = host_logits(&reference, &vnpu_engine::AlignedBytes::from_slice(&blob), &input, 3)
        .map_err(|e| anyhow::anyhow!("reference: {e}"))?;
    ensure!(labels.len() == 3, "{labels:?}");
    for l in &labels {
        ensure!((l.logit - want[l.index]).abs() < 1e-4, "label {} logit {} != {}", l.name, l.logit, want[l.index]);
    }
    ensure!(labels.windows(2).all(|w| w[0].score >= w[1].score), "labels not best first: {labels:?}");
    ensure!(["walk", "run", "sit"].contains(&labels[0].name.as_str()), "label names lost: {labels:?}");

    // The same CLASSIFY job over io_uring gives the same logits.
    let enc = Input::Features { dim: FEATURE_DIM, data: features.clone() }.encode();
    let mut inbuf = dev.alloc(enc.len())?;
    inbuf.as_mut_slice().copy_from_slice(&enc);
    let out = dev.alloc(4096)?;
    let mut ring = dev.ring(8)?;
    ring.push(&JobDesc::new(Op::Classify).adapter(&adapter).input(&inbuf, 0, enc.len()).output(&out, 0, 4096), 1)?;
    let n = ring.wait(1)?.remove(0).result()?;
    ensure!(max_abs_diff(&f32s(&out.as_slice()[..n]), &want) < 1e-4, "uring logits differ");

    // Wrong input shapes are the library's to refuse, with words.
    expect_msg(dev.classify_features(&adapter, &features, 4), "takes 6-wide feature vectors, not 4")?;
    expect_msg(dev.classify(&adapter, "hello"), "takes feature vectors, not text")?;
    // One that also takes a text's sentence embedding: never without it.
    let w = reference.text_encoder.as_ref().context("text encoder")?.cfg.d_model;
    let captioned_blob = captioned_classifier(hash, cfg.d_model, w)?;
    let captioned = dev.load_adapter(&captioned_blob)?;
    // The app's rows and a text's embedding by an EMBED job (the tiny
    // firmware has no tokenizer: token ids), then the CLASSIFY job, each
    // equal to vnpud's code in this process.
    let ids = [1u32, 5, 9, 2];
    let emb = dev.embed_tokens(&ids, w)?;
    let want_emb = reference.text_encoder.as_ref().context("text encoder")?.embed(&ids)?;
    ensure!(max_abs_diff(&emb, &want_emb) < 1e-5, "the text embedding differs from the host path's");
    let got = dev.classify_features_and_embedding(&captioned, &features, FEATURE_DIM, &emb)?;
    let input = Input::Features { dim: FEATURE_DIM + w, data: rows_with_embedding(&features, FEATURE_DIM, &want_emb) };
    let want = host_logits(&reference, &vnpu_engine::AlignedBytes::from_slice(&captioned_blob), &input, 2)
        .map_err(|e| anyhow::anyhow!("reference: {e}"))?;
    for l in &got {
        ensure!((l.logit - want[l.index]).abs() < 1e-4, "captioned: label {} logit {} != {}", l.name, l.logit, want[l.index]);
    }
    expect_msg(dev.classify_features(&captioned, &features, FEATURE_DIM), "needs a text as well as feature vectors")?;
    expect_msg(dev.classify(&captioned, "a caption"), "needs feature vectors as well as the text")?;
    expect_msg(dev.classify_features_and_embedding(&captioned, &features, FEATURE_DIM, &emb[1..]), &format!("a text embedding of {} values, not the adapter's {w}", w - 1))?;
    expect_msg(
        dev.classify_features_and_text(&captioned, &features[..4], 4, "a caption"),
        &format!("takes 6-wide feature vectors and a {w}-wide text embedding, not 4-wide vectors"),
    )?;

    // An adapter that loads (right base model, valid blob) but that the
    // device cannot run: ENOEXEC, worded, and vnpud serves on.
    let misfit = feature_classifier(hash, 3, cfg.d_model + 32, cfg.d_ff)?;
    let misfit = dev.load_adapter(&misfit)?;
    match dev.classify_features(&misfit, &features, FEATURE_DIM) {
        Err(e @ Error::JobFailed(m4npu::Errno::ENOEXEC)) => {
            ensure!(e.to_string().contains("cannot run this adapter"), "message: {e}")
        }
        other => bail!("misfit adapter: {other:?}, want ENOEXEC"),
    }
    ensure!(dev.classify_features(&adapter, &features, FEATURE_DIM)?[0].index == labels[0].index, "vnpud changed its answer");

    // The device closed: the message says who is missing.
    stop(vnpud)?;
    expect_msg(dev.classify_features(&adapter, &features, FEATURE_DIM), "no NPU device is serving jobs (is vnpud running?)")?;
    Ok(())
}

fn expect_msg<T: std::fmt::Debug>(r: m4npu::Result<T>, words: &str) -> Result<()> {
    match r {
        Err(e) if e.to_string().contains(words) => Ok(()),
        other => bail!("want an error saying {words:?}, got {other:?}"),
    }
}

/// What a developer reads for the usual mistakes: quota, the wrong base
/// model, an unsealed memfd.
pub fn errors_speak_to_developers() -> Result<()> {
    module::reload("firmware=m4npu/tiny.m4fw ctx_quota_mb=1")?;
    let dev = Device::open()?;
    let hash = dev.info()?.model.context("no model")?.hash;
    let _held = dev.alloc(768 * 1024)?;
    expect_msg(dev.alloc(512 * 1024), "context memory quota exceeded: 786432 of 1048576 bytes used, 524288 more requested")?;

    let mut other = hash;
    other[0] ^= 0x80;
    let foreign = feature_classifier(other, 3, 64, 128)?;
    let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    expect_msg(
        dev.load_adapter(&foreign),
        &format!("adapter was trained for foundation model {}, this device runs {}", hex(&other), hex(&hash)),
    )?;

    let own = feature_classifier(hash, 3, 64, 128)?;
    let unsealed = crate::adapters::memfd(&own, 0)?;
    expect_msg(
        dev.load_adapter_fd(std::os::fd::AsFd::as_fd(&unsealed), 0, own.len() as u64),
        "adapter memfd is not sealed against writes",
    )?;
    Ok(())
}

/// A generation adapter for a backbone `d` wide: rank-`rank` LoRA on each
/// (layer, projection) of `targets` (d-wide both ways: q or o), factors
/// from `seed` at `scale`.
pub fn generation_adapter(base: [u8; 32], seed: u64, d: usize, rank: usize, targets: &[(usize, &str)], scale: f32) -> Result<Vec<u8>> {
    let meta = AdapterMeta {
        task: AdapterTask::Generate,
        submodel: SubModel::Backbone,
        labels: vec![],
        pooling: Pooling::Mean,
        feature_dim: None,
        text_embedding: None,
        layers: None,
        lora_alpha: 2.0 * rank as f32,
        description: "guest test".into(),
    };
    let mut rng = Rng::new(seed);
    let mut b = AdapterBuilder::new("style-test", base);
    b.meta(meta.to_json());
    for &(layer, proj) in targets {
        b.tensor_f32(&lora_name(layer, proj, "a"), &[rank, d], &rng.vec(rank * d, scale))?;
        b.tensor_f32(&lora_name(layer, proj, "b"), &[d, rank], &rng.vec(d * rank, scale))?;
    }
    Ok(b.build()?)
}

/// Four apps (contexts) generate at once through vnpud, three with their
/// own adapter and one without: vnpud runs their steps in batches, and
/// every step's output and KV state equals vnpud's code run alone for that
/// app in this process, bit for bit.
pub fn generations_of_many_apps_on_vnpud() -> Result<()> {
    use m4npu_format::job_io::STATE_KV_OFFSET;
    use m4npu_hw::JobBuffers;

    module::reload("firmware=m4npu/tiny.m4fw")?;
    let vnpud = crate::vnpu::start_vnpud_with(16, &["--verbose"])?;
    let fw = vnpu_engine::AlignedBytes::from_slice(&std::fs::read(TINY)?);
    let subs = sub_models(&fw).map_err(anyhow::Error::msg)?;
    let reference = Foundation::build(&subs).map_err(anyhow::Error::msg)?;
    let cfg = &reference.backbone.as_ref().context("backbone")?.cfg;
    let (state_len, out_len) = (STATE_KV_OFFSET + cfg.kv_bytes(24), 16 + 4 * cfg.vocab);

    const APPS: usize = 4;
    const STEPS: usize = 12;
    let devs: Vec<Device> = (0..APPS).map(|_| Device::open()).collect::<m4npu::Result<_>>()?;
    let hash = devs[0].info()?.model.context("no model")?.hash;
    let blobs: Vec<Option<Vec<u8>>> =
        (0..APPS).map(|i| (i < 3).then(|| generation_adapter(hash, 30 + i as u64, cfg.d_model, 4, &[(i % 2, "o")], 0.5)).transpose()).collect::<Result<_>>()?;
    let adapters: Vec<Option<m4npu::Adapter<'_>>> =
        devs.iter().zip(&blobs).map(|(d, b)| b.as_ref().map(|b| d.load_adapter(b)).transpose()).collect::<m4npu::Result<_>>()?;
    let mut bufs = Vec::new();
    for d in &devs {
        bufs.push((d.alloc(4096)?, d.alloc(out_len)?, d.alloc(state_len)?));
    }
    let mut rings: Vec<_> = devs.iter().map(|d| d.ring(4)).collect::<m4npu::Result<_>>()?;
    // The reference: each app's state, stepped by vnpud's code here.
    let mut ref_states: Vec<vnpu_engine::AlignedBytes> = (0..APPS).map(|_| vnpu_engine::AlignedBytes::zeroed(state_len)).collect();
    let ref_blobs: Vec<Option<vnpu_engine::AlignedBytes>> =
        blobs.iter().map(|b| b.as_ref().map(|b| vnpu_engine::AlignedBytes::from_slice(b))).collect();
    for step in 0..STEPS {
        let mut want = Vec::new();
        for i in 0..APPS {
            // A prompt of i + 2 tokens first, then one token a step.
            let tokens: Vec<u32> =
                if step == 0 { (0..i as u32 + 2).map(|t| 1 + (t * 5 + i as u32) % 7).collect() } else { vec![1 + ((step * 3 + i) % 9) as u32] };
            let input = Input::Tokens(tokens);
            let len = input.encode_into(bufs[i].0.as_mut_slice())?;
            let mut out = vec![0u8; out_len];
            let n = vnpud::execute::run(
                &reference,
                Some(Op::Generate),
                JobBuffers {
                    input: &bufs[i].0.as_slice()[..len],
                    output: &mut out,
                    state: Some(&mut ref_states[i]),
                    adapter: ref_blobs[i].as_deref(),
                },
            )
            .map_err(|e| anyhow::anyhow!("reference step {step} of app {i}: {e}"))?;
            want.push(out[..n].to_vec());
            let mut job = JobDesc::new(Op::Generate).input(&bufs[i].0, 0, len).output(&bufs[i].1, 0, out_len).state(&bufs[i].2, 0, state_len);
            if let Some(a) = &adapters[i] {
                job = job.adapter(a);
            }
            rings[i].push(&job, step as u64)?;
        }
        // All four steps go to the driver back to back.
        for r in rings.iter_mut() {
            r.submit()?;
        }
        for (i, r) in rings.iter_mut().enumerate() {
            let done = r.wait_timeout(1, crate::children::HANG)?;
            ensure!(done.len() == 1, "app {i} step {step}: no completion");
            let n = done[0].result().with_context(|| format!("app {i} step {step}"))?;
            ensure!(bufs[i].1.as_slice()[..n] == want[i][..], "app {i} step {step}: output differs from the solo run");
            // The same but for the id of the job that wrote the header,
            // which only the driver knows (`StateHeader::last_job`).
            let (got, want) = (bufs[i].2.as_slice(), &ref_states[i][..]);
            let header = |s: &[u8]| m4npu_format::job_io::StateHeader::decode(s).map(|h| h.n_past);
            ensure!(
                header(got)? == header(want)? && got[m4npu_format::job_io::HEADER_BYTES..] == want[m4npu_format::job_io::HEADER_BYTES..],
                "app {i} step {step}: KV state differs from the solo run"
            );
        }
    }
    let batched: usize = vnpud
        .log()
        .iter()
        .filter_map(|l| l.strip_prefix("vnpud: ")?.strip_suffix(" generation steps in one batch")?.parse::<usize>().ok())
        .filter(|&n| n > 1)
        .sum();
    println!("    {batched} of {} steps ran in batches of several apps", APPS * STEPS);
    drop(rings);
    drop(adapters);
    stop(vnpud)
}
