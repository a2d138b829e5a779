//! The virtual NPU: vnpud serves real jobs through the real module on the
//! real foundation model, and its outputs equal the engine's run directly
//! on the same firmware in this process.

use anyhow::{ensure, Context, Result};
use m4npu::model::{BACKBONE, TEXT_ENCODER};
use m4npu::{Device, Error, Errno, JobDesc, Op};
use vnpud::foundation::{sub_models, Foundation};

use crate::children::Helper;
use crate::jobs::support::pattern;
use crate::module;

const FIRMWARE: &str = "/lib/firmware/m4npu/foundation.m4fw";

fn start_vnpud() -> Result<Helper> {
    let mut vnpud = Helper::spawn_program("/bin/vnpud", &["--depth", "4"])?;
    vnpud.expect("its ready line", |l| l.starts_with("vnpud: ready").then_some(()))?;
    Ok(vnpud)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn vnpud_runs_the_foundation_model() -> Result<()> {
    module::reload("")?;
    let mut vnpud = start_vnpud()?;
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
        let next = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b }) as u32;
        want.push(next);
        ids = vec![next];
    }
    ensure!(got.len() == 4, "generated {} tokens, want 4", got.len());
    ensure!(got == want, "vnpud generated {got:?}, the engine {want:?}");

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
    vnpud.signal(libc::SIGTERM)?;
    let status = vnpud.wait()?;
    ensure!(status.success(), "vnpud exited with {status} on SIGTERM; it said {:?}", vnpud.log());
    match dev.embed("nobody home") {
        Err(Error::NoNpuDevice) => Ok(()),
        other => anyhow::bail!("embed after vnpud stopped: {other:?}, want NoNpuDevice"),
    }
}
