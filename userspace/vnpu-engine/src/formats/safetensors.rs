//! Tensor table from a safetensors file (header parsed by the `safetensors`
//! crate); offsets are absolute within the file buffer.

use crate::error::{Error, Result};
use crate::formats::tensor::{DType, TensorEntry, TensorTable};
use ::safetensors::tensor::{Dtype, SafeTensors};

pub fn table(buf: &[u8]) -> Result<TensorTable> {
    let (header_len, meta) =
        SafeTensors::read_metadata(buf).map_err(|e| Error::Safetensors(e.to_string()))?;
    let base = header_len
        .checked_add(8)
        .ok_or_else(|| Error::Safetensors("header size".into()))?;
    let mut t = TensorTable::default();
    for (name, info) in meta.tensors() {
        let dtype = match info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::I8 => DType::I8,
            Dtype::U8 => DType::U8,
            Dtype::I32 => DType::I32,
            Dtype::I64 => DType::I64,
            d => {
                return Err(Error::Safetensors(format!(
                    "{name}: unsupported dtype {d:?}"
                )))
            }
        };
        let (s, e) = info.data_offsets;
        let offset = base
            .checked_add(s)
            .ok_or_else(|| Error::Safetensors("offset".into()))?;
        let len = e
            .checked_sub(s)
            .ok_or_else(|| Error::Safetensors(format!("{name}: inverted range")))?;
        t.entries.push(TensorEntry {
            name: name.to_string(),
            dtype,
            shape: info.shape.clone(),
            offset,
            len,
        });
    }
    t.entries.sort_by(|a, b| a.name.cmp(&b.name));
    t.validate(buf.len())?;
    Ok(t)
}

/// Reads an F32 tensor into a Vec (safetensors data is not guaranteed to be
/// 4-byte aligned, and this is only used by the one-time packer).
pub fn read_f32(buf: &[u8], t: &TensorTable, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let e = t.get(name)?;
    if e.dtype != DType::F32 {
        return Err(crate::error::bad(name, "expected F32"));
    }
    let b = buf
        .get(e.offset..e.offset + e.len)
        .ok_or_else(|| crate::error::bad(name, "range"))?;
    let v = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((v, e.shape.clone()))
}
