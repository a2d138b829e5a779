//! C apps: the UAPI header serves them on its own (examples/c/m4npu-echo.c,
//! built by xtask against uapi/include, loads an adapter from a sealed memfd
//! and runs a job over io_uring with raw syscalls), and libm4npu serves
//! them through its C API (examples/c/m4npu-classify.c, built with
//! `pkg-config --cflags --libs m4npu`, linked to libm4npu.so.0).

use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use m4npu::Device;
use vnpu_engine::models::synthetic::Rng;
use vnpud::foundation::{sub_models, Foundation};

use crate::adapter_tasks::{feature_classifier, FEATURE_DIM};
use crate::jobs::support::PlayDevice;
use crate::vnpu::{start_vnpud, stop};
use crate::{adapters, module};

pub fn c_example_runs_a_job() -> Result<()> {
    let device = PlayDevice::start("serve", 1, 4)?;
    let hash = Device::open()?.info()?.model.context("no model loaded")?.hash;
    let adapter = "/tmp/c-example.m4a";
    std::fs::write(adapter, adapters::synthetic("c-example", hash))?;
    let out = Command::new("/bin/m4npu-echo").args(["hello from C", adapter]).output().context("running m4npu-echo")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = format!("stdout {stdout:?}, stderr {:?}", String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "m4npu-echo failed ({}): {said}", out.status);
    ensure!(stdout.contains("adapter 1 loaded"), "no adapter loaded: {said}");
    ensure!(stdout.contains("output 12 bytes: hello from C"), "wrong output: {said}");
    std::fs::remove_file(adapter)?;
    device.stop()
}

/// The libm4npu example (xtask's package::c_library_example: linked with
/// the versioned shared library on x86-64, statically on arm64).
const LIB_EXAMPLE: &str = "/bin/m4npu-classify";

fn said(out: &Output) -> String {
    format!("status {}, stdout {:?}, stderr {:?}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The libm4npu example classifies feature rows on vnpud (the tiny
/// synthetic model) as the Rust library does, and reports errors as errno
/// plus the library's message.
pub fn c_library_classifies_on_vnpud() -> Result<()> {
    module::reload("firmware=m4npu/tiny.m4fw")?;
    let vnpud = start_vnpud(4)?;
    let dev = Device::open()?;
    let hash = dev.info()?.model.context("no model")?.hash;
    let fw = vnpu_engine::AlignedBytes::from_slice(&std::fs::read("/lib/firmware/m4npu/tiny.m4fw")?);
    let subs = sub_models(&fw).map_err(anyhow::Error::msg)?;
    let reference = Foundation::build(&subs).map_err(anyhow::Error::msg)?;
    let cfg = &reference.backbone.as_ref().context("backbone")?.cfg;
    let blob = feature_classifier(hash, 3, cfg.d_model, cfg.d_ff)?;
    let path = "/tmp/c-library.m4a";
    std::fs::write(path, &blob)?;
    let features: Vec<f32> = Rng::new(9).vec(4 * FEATURE_DIM, 1.0);
    let want = dev.classify_features(&dev.load_adapter(&blob)?, &features, FEATURE_DIM)?;

    let values: Vec<String> = features.iter().map(|v| format!("{v:.9}")).collect();
    let run = |adapter: &str| {
        Command::new(LIB_EXAMPLE)
            .args([adapter, "--features", &FEATURE_DIM.to_string()])
            .args(&values)
            .output()
            .context("running m4npu-classify")
    };
    let out = run(path)?;
    ensure!(out.status.success(), "m4npu-classify failed: {}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(stdout.contains("model tiny-synthetic") && stdout.contains("adapter imu-test loaded"), "{}", said(&out));
    // `label INDEX NAME score S logit L`, best first, as the Rust library's.
    let got: Vec<(usize, String, f32)> = stdout
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 7 && w[0] == "label").then(|| Some((w[1].parse().ok()?, w[2].to_string(), w[6].parse().ok()?)))?
        })
        .collect();
    ensure!(got.len() == want.len(), "labels {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(&want) {
        ensure!(g.0 == w.index && g.1 == w.name && (g.2 - w.logit).abs() < 1e-4, "label {g:?}, want {w:?}");
    }

    // Errors: -errno, errno and the library's words.
    let out = run("/tmp/no-such-adapter.m4a")?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("reading the adapter file") && err.contains("errno 2,"), "missing adapter: {}", said(&out));
    stop(vnpud)?;
    let out = run(path)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("is vnpud running?") && err.contains(&format!("errno {},", libc::ENXIO)),
        "no device: {}",
        said(&out)
    );
    std::fs::remove_file(path)?;
    Ok(())
}

/// The libm4npu example on the real foundation model: its embedding and
/// its generation, streamed through the callback, are the Rust library's.
pub fn c_library_embeds_and_generates() -> Result<()> {
    module::reload("")?;
    let vnpud = start_vnpud(4)?;
    let dev = Device::open()?;
    let text = "The NPU runs one foundation model for every app.";
    let want = dev.embed(text)?;
    let out = Command::new(LIB_EXAMPLE).args(["--embed", text]).output().context("running m4npu-classify --embed")?;
    ensure!(out.status.success(), "m4npu-classify --embed failed: {}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("embedding of ")).with_context(|| said(&out))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    ensure!(words.get(2) == Some(&want.len().to_string().as_str()), "dimensions: {line:?}, want {}", want.len());
    for (w, v) in words.get(4..7).with_context(|| format!("{line:?}"))?.iter().zip(&want) {
        let got: f32 = w.parse().with_context(|| format!("{line:?}"))?;
        ensure!((got - v).abs() < 1e-5, "embedding {line:?}, want {:?}", &want[..3]);
    }

    let (prompt, room) = ("The capital of France is", 10);
    let mut session = dev.generate(prompt, room)?;
    let generated: String = session.by_ref().collect::<m4npu::Result<_>>()?;
    let tokens = session.tokens().len();
    ensure!(tokens > 0, "the Rust library generated nothing");
    let out = Command::new(LIB_EXAMPLE)
        .args(["--generate", prompt, &room.to_string()])
        .output()
        .context("running m4npu-classify --generate")?;
    ensure!(out.status.success(), "m4npu-classify --generate failed: {}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let body = stdout.split_once('\n').map(|(_, rest)| rest).unwrap_or_default();
    let want = format!("{prompt}{generated}\n{tokens} tokens\n");
    ensure!(body == want, "C generated {body:?}, want {want:?}");
    stop(vnpud)
}
