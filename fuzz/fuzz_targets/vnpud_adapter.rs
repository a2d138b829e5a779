//! vnpud's reading of an adapter for the model it serves (a synthetic
//! foundation model, built once): LoRA factors, head, input projection and
//! metadata against the model's shapes. The kernel verified the container
//! and its hash; everything after that is vnpud's to check.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vnpu_engine::AlignedBytes;
use vnpud::adapter::TaskAdapter;
use vnpud::foundation::{Foundation, SubModel, SyntheticWeights};

/// The synthetic model's weights and sub-models, made once and kept for
/// the process, and the model built over them.
static WEIGHTS: OnceLock<SyntheticWeights> = OnceLock::new();
static SUBS: OnceLock<Vec<SubModel<'static>>> = OnceLock::new();
static MODEL: OnceLock<Foundation<'static>> = OnceLock::new();

fn model() -> &'static Foundation<'static> {
    MODEL.get_or_init(|| {
        let subs = SUBS.get_or_init(|| WEIGHTS.get_or_init(|| SyntheticWeights::new(1)).sub_models());
        Foundation::build(subs).expect("synthetic model")
    })
}

fuzz_target!(|blob: &[u8]| {
    // As in NPU memory: aligned for the f32 views.
    let blob = AlignedBytes::from_slice(blob);
    let _ = TaskAdapter::parse(&blob, model());
});
