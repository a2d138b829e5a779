//! The virtual NPU: vnpud serves real jobs through the real module on the
//! real foundation model, and its outputs equal the engine's run directly
//! on the same firmware in this process.

use anyhow::{ensure, Context, Result};
use m4npu::model::{BACKBONE, TEXT_ENCODER};
use m4npu::{uapi, Device, Errno, Error, JobDesc, Op};
use m4npu_format::job_io::{f32s, GenerateOutput, Input, STATE_KV_OFFSET};
use vnpud::execute::argmax;
use vnpud::foundation::{sub_models, Foundation};

use crate::children::Helper;
use crate::jobs::support::{device_attached, pattern};
use crate::module;
use crate::raw::{errno_name, ioctl};

pub const FIRMWARE: &str = "/lib/firmware/m4npu/foundation.m4fw";

/// Starts vnpud with `depth` slots per queue; returns once it serves.
pub fn start_vnpud(depth: u16) -> Result<Helper> {
    start_vnpud_with(depth, &[])
}

/// As [`start_vnpud`], with more arguments for vnpud.
pub fn start_vnpud_with(depth: u16, more: &[&str]) -> Result<Helper> {
    let depth = depth.to_string();
    let mut args = vec!["--depth", &depth];
    args.extend_from_slice(more);
    let mut vnpud = Helper::spawn_program("/bin/vnpud", &args)?;
    vnpud.expect("its ready line", |l| l.starts_with("vnpud: ready").then_some(()))?;
    Ok(vnpud)
}

/// Largest difference of two equally long vectors (infinite if their
/// lengths differ).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The tiny synthetic model (`m4 pack firmware --synthetic`): the same
/// architecture, so the same device paths, in moments.
pub fn vnpud_runs_a_synthetic_model() -> Result<()> {
    module::reload("firmware=m4npu/tiny.m4fw")?;
    let vnpud = start_vnpud(4)?;
    let dev = Device::open()?;
    ensure!(dev.info()?.model.context("no model")?.name == "tiny-synthetic", "not the synthetic firmware");
    let blob = vnpu_engine::AlignedBytes::from_slice(&std::fs::read("/lib/firmware/m4npu/tiny.m4fw")?);
    let subs = sub_models(&blob).map_err(anyhow::Error::msg)?;
    let reference = Foundation::build(&subs).map_err(anyhow::Error::msg)?;
    let (llama, bert) = (reference.backbone.as_ref().context("backbone")?, reference.text_encoder.as_ref().context("text encoder")?);

    // MODEL_META: the size without a copy when the buffer is short, the
    // metadata when it fits, EFAULT for a bad buffer.
    let meta_len = {
        let mut req = uapi::ModelMeta { addr: 0, size: 0 };
        ioctl(&dev, uapi::IOC_MODEL_META, &mut req as *mut _ as usize).map_err(|e| anyhow::anyhow!("MODEL_META probe: {}", errno_name(e)))?;
        req.size as usize
    };
    let mut buf = vec![0u8; meta_len];
    let mut req = uapi::ModelMeta { addr: buf.as_mut_ptr() as u64, size: buf.len() as u64 };
    ioctl(&dev, uapi::IOC_MODEL_META, &mut req as *mut _ as usize).map_err(|e| anyhow::anyhow!("MODEL_META: {}", errno_name(e)))?;
    ensure!(std::str::from_utf8(&buf).is_ok_and(|m| m.contains("\"synthetic\":true")), "MODEL_META returned {:?}", String::from_utf8_lossy(&buf));
    let mut bad = uapi::ModelMeta { addr: 16, size: meta_len as u64 };
    let r = ioctl(&dev, uapi::IOC_MODEL_META, &mut bad as *mut _ as usize);
    ensure!(r == Err(libc::EFAULT), "MODEL_META into a bad buffer: {r:?}, want EFAULT");

    let ids = vec![1u32, 5, 9, 2];
    let input = Input::Tokens(ids.clone()).encode();
    let mut inbuf = dev.alloc(4096)?;
    inbuf.as_mut_slice()[..input.len()].copy_from_slice(&input);
    let out = dev.alloc(4096 + 4 * llama.cfg.vocab)?;
    let n = dev.run(&JobDesc::new(Op::Embed).input(&inbuf, 0, input.len()).output(&out, 0, out.len()))?;
    let want = bert.embed(&ids)?;
    ensure!(max_abs_diff(&f32s(&out.as_slice()[..n]), &want) < 1e-5 && n == 4 * want.len(), "synthetic embedding differs");

    let state = dev.alloc(STATE_KV_OFFSET + llama.cfg.kv_bytes(16))?;
    let n = dev.run(&JobDesc::new(Op::Generate).input(&inbuf, 0, input.len()).output(&out, 0, out.len()).state(&state, 0, state.len()))?;
    let got = GenerateOutput::decode(&out.as_slice()[..n])?;
    let mut kv = vec![0u8; llama.cfg.kv_bytes(16)];
    let logits = llama.prefill(&ids, &mut kv)?.logits.context("no logits")?;
    let want = argmax(&logits);
    ensure!(got.next_token == want && got.n_past == 4, "synthetic generate: {got:?}, want token {want} at 4");
    ensure!(max_abs_diff(&f32s(&out.as_slice()[16..n]), &logits) < 1e-4, "synthetic logits differ");
    stop(vnpud)
}

/// SIGTERM, a clean exit, and the driver letting the device go (its ring
/// is torn down by a kernel worker after the exit).
pub fn stop(vnpud: Helper) -> Result<()> {
    stop_reporting(vnpud).map(drop)
}

/// As [`stop`]; returns what vnpud says it served.
pub fn stop_reporting(mut vnpud: Helper) -> Result<String> {
    vnpud.signal(libc::SIGTERM)?;
    let served = vnpud.expect("what it served", |l| l.strip_prefix("vnpud: served ").map(str::to_string))?;
    let status = vnpud.wait()?;
    ensure!(status.success(), "vnpud exited with {status} on SIGTERM; it said {:?}", vnpud.log());
    // Closing its file let the device go, before its exit completed.
    ensure!(!device_attached()?, "the stopped vnpud is still attached");
    Ok(served)
}

pub fn vnpud_runs_the_foundation_model() -> Result<()> {
    module::reload("")?;
    let vnpud = start_vnpud(4)?;
    let dev = Device::open()?;
    let meta = dev.model_meta()?;

    // The reference: the engine on the same firmware, in this process.
    let blob = std::fs::read(FIRMWARE).with_context(|| format!("reading {FIRMWARE}"))?;
    let subs = sub_models(&blob).map_err(anyhow::Error::msg)?;
    let reference = Foundation::build(&subs).map_err(anyhow::Error::msg)?;

    let text = "The virtual NPU runs the foundation model.";
    let got = dev.embed(text)?;
    let ids: Vec<u32> = meta.tokenizer(TEXT_ENCODER)?.encode(text, true).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    let want = reference.text_encoder.as_ref().context("no text encoder")?.embed(&ids)?;
    ensure!(got.len() == meta.shape(TEXT_ENCODER)?.d_model, "embedding of {} dimensions", got.len());
    ensure!(max_abs_diff(&got, &want) < 1e-5, "vnpud's embedding differs from the engine's: {:?} vs {:?}", &got[..4], &want[..4]);

    let prompt = "The capital of France is";
    let mut session = dev.generate(prompt, 64)?;
    for piece in session.by_ref().take(4) {
        piece?;
    }
    let got = session.tokens().to_vec();
    let llama = reference.backbone.as_ref().context("no backbone")?;
    let mut ids: Vec<u32> = meta.tokenizer(BACKBONE)?.encode(prompt, false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    let mut kv = vec![0u8; llama.cfg.kv_bytes(64)];
    let mut want = Vec::new();
    let mut pos = 0;
    while want.len() < got.len() {
        let out = llama.forward(vnpu_engine::Input::Tokens(&ids), pos, &mut kv, &Default::default())?;
        pos += ids.len();
        let logits = out.logits.context("no logits")?;
        let next = argmax(&logits);
        want.push(next);
        ids = vec![next];
    }
    ensure!(got.len() == 4, "generated {} tokens, want 4", got.len());
    ensure!(got == want, "vnpud generated {got:?}, the engine {want:?}");

    // An app's classifier on the text encoder, from a sentence per label
    // (its head rows are their embeddings): Device::classify tokenizes,
    // runs CLASSIFY on vnpud, and names the labels.
    let labels = ["positive", "negative"];
    let prototypes = ["a glowing review: I loved it, wonderful", "a scathing review: I hated it, awful"];
    let mut head = Vec::new();
    for p in prototypes {
        head.extend(dev.embed(p)?);
    }
    let d = meta.shape(TEXT_ENCODER)?.d_model;
    let mut b = m4npu_format::AdapterBuilder::new("sentiment-prototypes", dev.info()?.model.context("no model")?.hash);
    b.meta(
        m4npu_format::adapter_meta::AdapterMeta::parse(
            br#"{"task":"classify","submodel":"text_encoder","labels":["positive","negative"]}"#,
        )
        .map_err(anyhow::Error::msg)?
        .to_json(),
    );
    b.tensor_f32("head.weight", &[2, d], &head)?;
    b.tensor_f32("head.bias", &[2], &[0.0, 0.0])?;
    let adapter = dev.load_adapter(&b.build()?)?;
    let text = "What a delightful, moving film. I enjoyed every minute.";
    let got = dev.classify(&adapter, text)?;
    let e = dev.embed(text)?;
    for l in &got {
        let want: f32 = head[l.index * d..][..d].iter().zip(&e).map(|(a, b)| a * b).sum();
        ensure!((l.logit - want).abs() < 1e-4, "{}: logit {} != {want}", l.name, l.logit);
    }
    ensure!(got[0].name == labels[0], "the real model calls {text:?} {got:?}");

    // Many jobs in flight over io_uring, as in the driver's own tests.
    const N: usize = 64;
    const LEN: usize = 256;
    let mut echo_in = dev.alloc(N * LEN)?;
    let echo_out = dev.alloc(N * LEN)?;
    for (i, chunk) in echo_in.as_mut_slice().chunks_exact_mut(LEN).enumerate() {
        pattern(7, i as u32, chunk);
    }
    let mut ring = dev.ring(N as u32)?;
    for i in 0..N {
        ring.push(&JobDesc::new(Op::Echo).input(&echo_in, i * LEN, LEN).output(&echo_out, i * LEN, LEN), i as u64)?;
    }
    let done = ring.wait(N)?;
    ensure!(done.len() == N, "{} of {N} echo jobs completed", done.len());
    for c in &done {
        ensure!(c.result()? == LEN, "echo job {}: {:?}", c.user_data, c.result());
    }
    ensure!(echo_in.as_slice() == echo_out.as_slice(), "echo outputs differ from their inputs");

    // A bad input fails that job only.
    let input = dev.alloc(4096)?;
    let output = dev.alloc(4096)?;
    let garbage = JobDesc::new(Op::Embed).input(&input, 0, 64).output(&output, 0, 4096);
    match dev.run(&garbage) {
        Err(Error::JobFailed(Errno::EBADMSG)) => {}
        other => anyhow::bail!("an embed job on garbage input: {other:?}, want EBADMSG from the device"),
    }
    let d_model = meta.shape(TEXT_ENCODER)?.d_model;
    ensure!(dev.embed("still serving")?.len() == d_model, "vnpud stopped serving after a bad job");

    // `m4 top` sees this context and its jobs.
    let out = std::process::Command::new("/bin/m4").args(["top", "--json"]).output().context("running m4 top")?;
    ensure!(out.status.success(), "m4 top failed: {}", String::from_utf8_lossy(&out.stderr));
    let top: serde_json::Value = serde_json::from_slice(&out.stdout).context("m4 top --json output")?;
    let me = dev.info()?.context_id;
    let row = top.as_array().and_then(|rows| rows.iter().find(|r| r["context"] == me));
    let row = row.with_context(|| format!("m4 top lacks our context {me}: {top}"))?;
    ensure!(row["pid"] == std::process::id(), "m4 top: wrong pid in {row}");
    ensure!(row["jobs_failed"] == 1 && row["jobs_inflight"] == 0, "m4 top: want one failed job, none in flight: {row}");
    ensure!(row["jobs_completed"].as_u64() > Some(N as u64), "m4 top: too few completed jobs in {row}");

    // SIGTERM: a clean stop, and the driver knows there is no device.
    stop(vnpud)?;
    match dev.embed("nobody home") {
        Err(Error::NoNpuDevice) => Ok(()),
        other => anyhow::bail!("embed after vnpud stopped: {other:?}, want NoNpuDevice"),
    }
}
