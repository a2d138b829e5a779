//! The UAPI header serves C apps on its own: the C example (examples/c/,
//! built by xtask against uapi/include) loads an adapter from a sealed memfd
//! and runs a job over io_uring with raw syscalls.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use m4npu::Device;

use crate::adapters;
use crate::jobs::support::PlayDevice;

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
