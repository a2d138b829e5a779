//! The foundation model as firmware: load, validation, GET_INFO.

use anyhow::{bail, ensure, Context, Result};
use m4npu::Device;
use m4npu_format::{Firmware, FirmwareBuilder};

use crate::kmsg::Kmsg;
use crate::module;

const DIR: &str = "/lib/firmware/m4npu";
/// The firmware the later tests run with.
pub const GOOD: &str = "m4npu/test-good.m4fw";

/// A small synthetic model of our own making: a few tensors of
/// deterministic bytes, about 1 MiB.
pub fn synthetic(name: &str) -> Vec<u8> {
    synthetic_sized(name, 700_000)
}

/// As [`synthetic`], with a last tensor of `last` bytes.
fn synthetic_sized(name: &str, last: usize) -> Vec<u8> {
    let mut b = FirmwareBuilder::new(name);
    b.meta(br#"{"arch":"synthetic","purpose":"guest tests"}"#.to_vec());
    let mut x = 0x9e37_79b9u32;
    for (i, n) in [4096usize, 300_000, last].into_iter().enumerate() {
        let data = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        b.tensor(&format!("t{i}"), m4npu::uapi::FW_DTYPE_I8, &[n as u64], data).expect("tensor");
    }
    b.build().expect("synthetic firmware")
}

/// A small model (a few KiB) installed as `file`, for tests that load the
/// module many times; its firmware name.
pub fn install_small(file: &str) -> Result<String> {
    install(file, &synthetic_sized(file, 4096))
}

fn install(file: &str, blob: &[u8]) -> Result<String> {
    std::fs::create_dir_all(DIR)?;
    std::fs::write(format!("{DIR}/{file}"), blob)?;
    Ok(format!("m4npu/{file}"))
}

/// Reloads with `firmware=name` and returns what the kernel logged meanwhile.
fn load_logged(params: &str) -> Result<Vec<String>> {
    let mut log = Kmsg::now()?;
    module::reload(params)?;
    Ok(log.new_messages())
}

fn expect_refused(file: &str, blob: &[u8], reason: &str) -> Result<()> {
    let name = install(file, blob)?;
    let log = load_logged(&format!("firmware={name}"))?;
    let info = Device::open()?.info()?;
    ensure!(info.model.is_none(), "{file}: a model was loaded: {:?}", info.model);
    ensure!(info.pool_used == 0, "{file}: {} bytes of NPU memory stay used after the refusal", info.pool_used);
    ensure!(
        log.iter().any(|l| l.contains(&name) && l.contains(reason)),
        "{file}: no kernel log line naming the firmware and {reason:?}; log: {log:?}"
    );
    Ok(())
}

pub fn valid_firmware_is_pinned() -> Result<()> {
    let blob = synthetic("synthetic-test");
    let fw = Firmware::parse(&blob)?;
    let name = install("test-good.m4fw", &blob)?;
    ensure!(name == GOOD);
    let log = load_logged(&format!("firmware={name}"))?;
    let info = Device::open()?.info()?;
    let model = info.model.context("no model reported after loading a valid blob")?;
    ensure!(model.name == "synthetic-test", "model name {:?}", model.name);
    ensure!(model.size == blob.len() as u64, "model size {} != blob {}", model.size, blob.len());
    ensure!(model.hash == fw.content_hash(), "GET_INFO hash differs from the blob's content hash");
    ensure!(info.pool_used >= model.size, "pool_used {} < model size", info.pool_used);
    ensure!(log.iter().any(|l| l.contains("bytes pinned")), "no load message: {log:?}");
    Ok(())
}

pub fn bad_magic_is_refused() -> Result<()> {
    let mut blob = synthetic("bad-magic");
    blob[0] = b'X';
    expect_refused("bad-magic.m4fw", &blob, "bad magic")
}

pub fn truncated_firmware_is_refused() -> Result<()> {
    let blob = synthetic("truncated");
    expect_refused("truncated.m4fw", &blob[..blob.len() - 4096], "truncated")
}

pub fn bad_checksum_is_refused() -> Result<()> {
    let mut blob = synthetic("bad-checksum");
    let last = blob.len() - 1;
    blob[last] ^= 0x55;
    expect_refused("bad-checksum.m4fw", &blob, "checksum mismatch")
}

pub fn out_of_bounds_tensor_is_refused() -> Result<()> {
    let mut blob = synthetic("oob-tensor");
    let h = *Firmware::parse(&blob)?.header();
    // The size field (last 8 bytes) of the first tensor entry.
    let at = h.tensor_table_offset as usize + std::mem::size_of::<m4npu::uapi::FwTensor>() - 8;
    blob[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_refused("oob-tensor.m4fw", &blob, "bad tensor entry")
}

/// Two tensors of one name (junk after the NUL does not make them
/// differ), and a name that is not UTF-8: refused before the hash is
/// checked, so the stale hash of the patched blob cannot be what refuses it.
pub fn duplicate_tensor_names_are_refused() -> Result<()> {
    let mut blob = synthetic("dup-names");
    let h = *Firmware::parse(&blob)?.header();
    let at = h.tensor_table_offset as usize + std::mem::size_of::<m4npu::uapi::FwTensor>();
    ensure!(blob[at..at + 3] == *b"t1\0", "the second tensor is not t1");
    blob[at..at + 4].copy_from_slice(b"t0\0x");
    expect_refused("dup-names.m4fw", &blob, "two tensors share a name")?;
    // Names are looked up as strings: bytes that are not UTF-8 are refused.
    blob[at..at + 3].copy_from_slice(b"\xff\0\0");
    expect_refused("non-utf8-name.m4fw", &blob, "tensor name not UTF-8")
}

pub fn too_many_tensors_are_refused() -> Result<()> {
    let entry = std::mem::size_of::<m4npu::uapi::FwTensor>();
    let count = m4npu::uapi::FW_MAX_TENSORS + 1;
    // Room for the longer table, so that its count is all that is wrong.
    let mut blob = synthetic_sized("many-tensors", count as usize * entry);
    let h = *Firmware::parse(&blob)?.header();
    ensure!(h.tensor_table_offset as usize + count as usize * entry <= blob.len(), "the blob cannot hold the table");
    let at = std::mem::offset_of!(m4npu::uapi::FwHeader, tensor_count);
    blob[at..at + 4].copy_from_slice(&count.to_le_bytes());
    ensure!(Firmware::parse(&blob).is_err(), "the library reads a table of {count} tensors");
    expect_refused("many-tensors.m4fw", &blob, "too many tensors")
}

pub fn missing_firmware_leaves_driver_usable() -> Result<()> {
    let log = load_logged("firmware=m4npu/does-not-exist.m4fw")?;
    let info = Device::open()?.info()?;
    ensure!(info.model.is_none());
    if !log.iter().any(|l| l.contains("no such file")) {
        bail!("no 'no such file' log line: {log:?}");
    }
    Ok(())
}

pub fn firmware_larger_than_pool_is_refused() -> Result<()> {
    let blob = synthetic_sized("too-big", 1 << 20);
    let name = install("too-big.m4fw", &blob)?;
    // 1 MiB pool, blob a little over 1 MiB.
    ensure!(blob.len() > 1 << 20);
    let log = load_logged(&format!("firmware={name} pool_mb=1"))?;
    let info = Device::open()?.info()?;
    ensure!(info.model.is_none() && info.pool_size == 1 << 20);
    ensure!(log.iter().any(|l| l.contains("larger than the NPU pool")), "log: {log:?}");
    Ok(())
}

/// The real foundation model, packed by `m4 pack firmware` and installed
/// as the default firmware name: loaded, verified and pinned by the kernel.
pub fn real_foundation_model_is_pinned() -> Result<()> {
    let path = "/lib/firmware/m4npu/foundation.m4fw";
    let blob = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let fw = Firmware::parse_unverified(&blob)?;
    let log = load_logged("")?;
    let info = Device::open()?.info()?;
    let model = info.model.with_context(|| format!("the real foundation model was not loaded; log: {log:?}"))?;
    ensure!(model.name == fw.name() && model.name.contains("smollm2"), "model name {:?}", model.name);
    ensure!(model.size == blob.len() as u64, "model size {} != {}", model.size, blob.len());
    ensure!(model.hash == fw.content_hash(), "GET_INFO hash differs from the packed blob's");
    ensure!(fw.get("backbone.weights").is_some() && fw.get("text_encoder.weights").is_some(), "sub-models missing");
    Ok(())
}

/// Leaves the good firmware loaded for the tests that follow.
pub fn reload_good_firmware() -> Result<()> {
    module::reload(&format!("firmware={GOOD}"))?;
    ensure!(Device::open()?.info()?.model.is_some(), "good firmware not loaded");
    Ok(())
}

pub fn debugfs_shows_firmware_and_contexts() -> Result<()> {
    let (a, b) = (Device::open()?, Device::open()?);
    let _buf = a.alloc(3 * 4096)?;
    let (ia, ib) = (a.info()?, b.info()?);
    let state = std::fs::read_to_string("/sys/kernel/debug/m4npu/state").context("reading debugfs state")?;
    let model = ia.model.context("no model")?;
    let hash: String = model.hash.iter().map(|b| format!("{b:02x}")).collect();
    let pid = std::process::id();
    for want in [
        format!("firmware:\t{} ({} bytes) sha256 {hash}", model.name, model.size),
        format!("pool:\t{} of {} bytes used", ia.pool_used, ia.pool_size),
        format!("context {}:\tpid {pid} memory {} of", ia.context_id, 3 * 4096),
        format!("context {}:\tpid {pid} memory 0 of", ib.context_id),
    ] {
        ensure!(state.contains(&want), "debugfs state lacks {want:?}:\n{state}");
    }
    let id = ib.context_id;
    drop(b);
    let state = std::fs::read_to_string("/sys/kernel/debug/m4npu/state")?;
    ensure!(!state.contains(&format!("context {id}:")), "a closed context is still listed:\n{state}");
    Ok(())
}
