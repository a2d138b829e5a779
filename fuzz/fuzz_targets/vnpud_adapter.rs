//! vnpud's reading of an adapter for the model it serves (a synthetic
//! foundation model, built once): LoRA factors, head, input projection and
//! metadata against the model's shapes. The kernel verified the container
//! and its hash; everything after that is vnpud's to check.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vnpu_engine::pack::pack_bert;
use vnpu_engine::{synthetic, AlignedBytes};
use vnpud::foundation::{Foundation, SubModel};
use vnpud::task::TaskAdapter;

/// The synthetic model's weights and sub-models, made once and kept for
/// the process (held here, so the leak checker sees them reachable), and
/// the model built over them.
static WEIGHTS: OnceLock<(&'static AlignedBytes, &'static [u8], &'static [SubModel<'static>])> = OnceLock::new();
static MODEL: OnceLock<Foundation<'static>> = OnceLock::new();

fn model() -> &'static Foundation<'static> {
    MODEL.get_or_init(|| {
        let (_, _, subs) = WEIGHTS.get_or_init(|| {
            let llama = synthetic::tiny_llama_with(1, true);
            let (bert_table, bert) = pack_bert(&synthetic::tiny_bert_safetensors(1), 4, 1e-12).expect("synthetic MiniLM");
            let llama_weights: &'static AlignedBytes = Box::leak(Box::new(llama.blob));
            let bert_weights: &'static [u8] = Box::leak(bert.into_boxed_slice());
            let subs: &'static [SubModel<'static>] = Box::leak(Box::new([
                SubModel { name: "backbone", table: llama.table, weights: &llama_weights[..] },
                SubModel { name: "text_encoder", table: bert_table, weights: bert_weights },
            ]));
            (llama_weights, bert_weights, subs)
        });
        Foundation::build(subs).expect("synthetic model")
    })
}

fuzz_target!(|blob: &[u8]| {
    // As in NPU memory: aligned for the f32 views.
    let blob = AlignedBytes::from_slice(blob);
    let _ = TaskAdapter::parse(&blob, model());
});
