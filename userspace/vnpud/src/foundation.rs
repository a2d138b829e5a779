//! The foundation model as the device sees it: sub-models built straight
//! over the firmware region of NPU memory. Nothing is copied; the engine
//! reads the weights where the driver pinned them.

use m4npu_format::Firmware;
use vnpu_engine::{tensor::TensorTable, Bert, Llama};

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
