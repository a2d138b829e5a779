//! The benchmark's adapters on the real path: each committed adapter
//! (tools/eaibench/adapters) loaded through the app library into the module
//! with the real foundation firmware, its task's first test samples
//! classified by vnpud, and every answer equal to the host path's (vnpud's
//! job code on the same firmware, in this process), which produced the
//! report's numbers.

use anyhow::{ensure, Context, Result};
use m4_train::apps::classify_sample;
use m4_train::data::Task;
use m4_train::eval::{host_logits, FirmwareFile, Jobs};
use m4npu::Device;
use m4npu_format::adapter_meta::AdapterMeta;
use vnpud::foundation::Foundation;

use crate::module;
use crate::vnpu::{start_vnpud, stop};

/// Where xtask puts the tasks' test splits and the adapters.
const ROOT: &str = "/eaibench";
/// Test samples per task: enough to catch a divergence, few enough for TCG.
const SAMPLES: usize = 8;

pub fn eaibench_adapters_agree_with_the_host_path() -> Result<()> {
    let adapters = std::path::Path::new(ROOT).join("adapters");
    let mut names: Vec<String> = std::fs::read_dir(&adapters)
        .with_context(|| format!("{} (xtask copies the committed adapters)", adapters.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".m4a").map(String::from))
        .collect();
    names.sort();
    ensure!(names.len() >= 9, "only {} adapters in {}", names.len(), adapters.display());

    module::reload("")?;
    let vnpud = start_vnpud(4)?;
    let fw = FirmwareFile::read(std::path::Path::new("/lib/firmware/m4npu/foundation.m4fw")).map_err(anyhow::Error::msg)?;
    let subs = fw.sub_models().map_err(anyhow::Error::msg)?;
    let reference = Foundation::build(&subs).map_err(anyhow::Error::msg)?;
    let dev = Device::open()?;

    for name in &names {
        let blob = std::fs::read(adapters.join(format!("{name}.m4a")))?;
        let meta = AdapterMeta::parse(m4npu_format::Adapter::parse(&blob)?.meta()).map_err(anyhow::Error::msg)?;
        let adapter = dev.load_adapter(&blob).with_context(|| format!("{name}: loading"))?;
        let task = Task::open(&std::path::Path::new(ROOT).join(name)).map_err(anyhow::Error::msg)?;
        let test = task.split("test").map_err(anyhow::Error::msg)?;
        let aligned = vnpu_engine::AlignedBytes::from_slice(&blob);
        // Each sample as the app library makes its jobs (a caption: the
        // backbone's tokens, or the text encoder's embedding).
        let jobs = Jobs::new(&fw, &reference, &test.samples, meta.clone()).map_err(anyhow::Error::msg)?;
        let mut right = 0;
        for i in 0..SAMPLES.min(test.len()) {
            let labels = classify_sample(&dev, &adapter, &test, i).map_err(|e| anyhow::anyhow!("{name} sample {i}: {e}"))?;
            let input = jobs.input(&test, i).map_err(anyhow::Error::msg)?;
            let want = host_logits(&reference, &aligned, &input, meta.labels.len())
                .map_err(|e| anyhow::anyhow!("{name} host path: {e}"))?;
            ensure!(want.len() == labels.len(), "{name} sample {i}: {} logits on the host path, {} labels on the real path", want.len(), labels.len());
            for l in &labels {
                ensure!((l.logit - want[l.index]).abs() < 1e-4, "{name} sample {i}: label {} logit {} on the real path, {} on the host path", l.name, l.logit, want[l.index]);
            }
            right += usize::from(labels[0].index == test.y[i]);
        }
        println!("    {name}: {right}/{} of the first test samples right, real path = host path", SAMPLES.min(test.len()));
    }
    stop(vnpud)
}
