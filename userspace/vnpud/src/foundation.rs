//! The foundation model as the device sees it: sub-models built straight
//! over the firmware region of NPU memory. Nothing is copied; the engine
//! reads the weights where the driver pinned them.

use m4npu_format::Firmware;
use vnpu_engine::{AlignedBytes, Bert, Llama, TensorTable};

/// The firmware's sub-models, as far as it has them.
pub struct Foundation<'m> {
    pub backbone: Option<Llama<'m>>,
    pub text_encoder: Option<Bert<'m>>,
}

/// A sub-model's engine tensor table and packed weights, from
/// `<sub>.table` and `<sub>.weights` (see `m4 pack firmware`).
pub struct SubModel<'m> {
    pub name: &'static str,
    pub table: TensorTable,
    pub weights: &'m [u8],
}

/// Finds the sub-models in the pinned blob, which the kernel has verified.
pub fn sub_models<'m>(blob: &'m [u8]) -> Result<Vec<SubModel<'m>>, String> {
    let fw = Firmware::parse_unverified(blob).map_err(|e| format!("firmware in NPU memory: {e}"))?;
    let mut subs = Vec::new();
    for name in ["backbone", "text_encoder"] {
        let (Some((_, table)), Some((_, weights))) = (fw.get(&format!("{name}.table")), fw.get(&format!("{name}.weights")))
        else {
            continue;
        };
        let table = TensorTable::decode(table).map_err(|e| format!("{name}.table: {e}"))?;
        subs.push(SubModel { name, table, weights });
    }
    Ok(subs)
}

impl<'m> Foundation<'m> {
    pub fn build(subs: &'m [SubModel<'m>]) -> Result<Self, String> {
        let mut f = Foundation { backbone: None, text_encoder: None };
        for s in subs {
            let what = |e: vnpu_engine::Error| format!("{}: {e}", s.name);
            match s.name {
                "backbone" => f.backbone = Some(Llama::from_region(&s.table, s.weights).map_err(what)?),
                _ => f.text_encoder = Some(Bert::from_region(&s.table, s.weights).map_err(what)?),
            }
        }
        Ok(f)
    }
}

/// The synthetic tiny foundation model's weights in memory, as
/// `m4 pack firmware --synthetic SEED` packs them: the same architectures
/// as the real model, for tests, fuzzing and benches without firmware.
pub struct SyntheticWeights {
    backbone: (TensorTable, AlignedBytes),
    text_encoder: (TensorTable, AlignedBytes),
}

impl SyntheticWeights {
    pub fn new(seed: u64) -> Self {
        let llama = vnpu_engine::models::synthetic::tiny_llama_with(seed, true);
        let bert = vnpu_engine::models::synthetic::tiny_bert_safetensors(seed);
        // The tiny BERT has 4 heads (MiniLM's packer assumes 12).
        let (table, weights) = vnpu_engine::formats::pack::pack_bert(&bert, 4, 1e-12).expect("the synthetic MiniLM packs");
        SyntheticWeights { backbone: (llama.table, llama.blob), text_encoder: (table, AlignedBytes::from_slice(&weights)) }
    }

    pub fn sub_models(&self) -> Vec<SubModel<'_>> {
        vec![
            SubModel { name: "backbone", table: self.backbone.0.clone(), weights: &self.backbone.1 },
            SubModel { name: "text_encoder", table: self.text_encoder.0.clone(), weights: &self.text_encoder.1 },
        ]
    }
}
