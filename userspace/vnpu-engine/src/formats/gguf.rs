//! Minimal, fully bounds-checked GGUF (v2/v3) reader.
//!
//! Produces the metadata map and a [`TensorTable`] whose byte ranges are
//! absolute offsets into the file buffer, so the tensors stay borrowed.

use crate::error::{Error, Result};
use crate::formats::tensor::{DType, Reader, TensorEntry, TensorTable};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U64(v) => Some(v),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            GgufValue::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    /// Offsets are absolute within the parsed buffer; shapes in GGUF order
    /// (innermost dimension first).
    pub tensors: TensorTable,
}

impl GgufFile {
    pub fn meta(&self, key: &str) -> Result<&GgufValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::Meta(key.to_string()))
    }
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        self.meta(key)?
            .as_u64()
            .ok_or_else(|| Error::Meta(key.to_string()))
    }
    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        self.meta(key)?
            .as_f64()
            .ok_or_else(|| Error::Meta(key.to_string()))
    }
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        self.meta(key)?
            .as_str()
            .ok_or_else(|| Error::Meta(key.to_string()))
    }
    pub fn meta_strs(&self, key: &str) -> Result<Vec<&str>> {
        let a = self
            .meta(key)?
            .as_array()
            .ok_or_else(|| Error::Meta(key.to_string()))?;
        a.iter()
            .map(|v| v.as_str().ok_or_else(|| Error::Meta(key.to_string())))
            .collect()
    }
}

fn gerr(m: impl Into<String>) -> Error {
    Error::Gguf(m.into())
}

/// Block geometry of the ggml types we can at least size (so any GGUF file
/// parses); the engine itself consumes F32, F16, Q4_1 and Q8_0.
fn ggml_dtype(id: u32) -> Option<DType> {
    let (block, bytes) = match id {
        0 => return Some(DType::F32),
        1 => return Some(DType::F16),
        30 => return Some(DType::BF16),
        24 => return Some(DType::I8),
        26 => return Some(DType::I32),
        27 => return Some(DType::I64),
        2 => (32, 18),   // Q4_0
        3 => (32, 20),   // Q4_1
        6 => (32, 22),   // Q5_0
        7 => (32, 24),   // Q5_1
        8 => (32, 34),   // Q8_0
        9 => (32, 36),   // Q8_1
        10 => (256, 84), // Q2_K
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        _ => return None,
    };
    Some(DType::Gguf { id, block, bytes })
}

// Guards against absurd counts before allocating.
const MAX_ITEMS: u64 = 1 << 24;

fn read_value(r: &mut Reader<'_>, ty: u32, depth: u32) -> Result<GgufValue> {
    Ok(match ty {
        0 => GgufValue::U64(r.take(1)?[0] as u64),
        1 => GgufValue::I64(r.take(1)?[0] as i8 as i64),
        2 => {
            let s = r.take(2)?;
            GgufValue::U64(u16::from_le_bytes([s[0], s[1]]) as u64)
        }
        3 => {
            let s = r.take(2)?;
            GgufValue::I64(i16::from_le_bytes([s[0], s[1]]) as i64)
        }
        4 => GgufValue::U64(r.u32()? as u64),
        5 => GgufValue::I64(r.u32()? as i32 as i64),
        6 => GgufValue::F64(f32::from_bits(r.u32()?) as f64),
        7 => GgufValue::Bool(r.take(1)?[0] != 0),
        8 => GgufValue::Str(read_string(r)?),
        9 => {
            if depth > 2 {
                return Err(gerr("nested arrays too deep"));
            }
            let et = r.u32()?;
            let n = r.u64()?;
            if n > MAX_ITEMS {
                return Err(gerr(format!("array of {n} items")));
            }
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                v.push(read_value(r, et, depth + 1)?);
            }
            GgufValue::Array(v)
        }
        10 => GgufValue::U64(r.u64()?),
        11 => GgufValue::I64(r.u64()? as i64),
        12 => GgufValue::F64(f64::from_le_bytes(r.arr8()?)),
        t => return Err(gerr(format!("unknown value type {t}"))),
    })
}

fn read_string(r: &mut Reader<'_>) -> Result<String> {
    let n = r.u64()?;
    let n = usize::try_from(n).map_err(|_| gerr("string length"))?;
    let s = r.take(n)?;
    // Token strings may in principle be invalid UTF-8; keep them lossy
    // rather than rejecting the file.
    Ok(String::from_utf8_lossy(s).into_owned())
}

pub fn parse(buf: &[u8]) -> Result<GgufFile> {
    let mut r = Reader { buf, pos: 0 };
    let wrap = |e: Error| match e {
        Error::Table(m) => gerr(m),
        e => e,
    };
    let magic = r.take(4).map_err(wrap)?;
    if magic != b"GGUF" {
        return Err(gerr("bad magic"));
    }
    let version = r.u32().map_err(wrap)?;
    if !(2..=3).contains(&version) {
        return Err(gerr(format!("unsupported version {version}")));
    }
    let n_tensors = r.u64().map_err(wrap)?;
    let n_kv = r.u64().map_err(wrap)?;
    if n_tensors > MAX_ITEMS || n_kv > MAX_ITEMS {
        return Err(gerr("implausible counts"));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = read_string(&mut r).map_err(wrap)?;
        let ty = r.u32().map_err(wrap)?;
        let v = read_value(&mut r, ty, 0).map_err(wrap)?;
        metadata.insert(key, v);
    }
    struct Info {
        name: String,
        dims: Vec<usize>,
        ty: u32,
        off: u64,
    }
    let mut infos = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = read_string(&mut r).map_err(wrap)?;
        let nd = r.u32().map_err(wrap)?;
        if nd == 0 || nd > 4 {
            return Err(gerr(format!("{name}: {nd} dims")));
        }
        let mut dims = Vec::new();
        for _ in 0..nd {
            let d = r.u64().map_err(wrap)?;
            dims.push(usize::try_from(d).map_err(|_| gerr("dim"))?);
        }
        let ty = r.u32().map_err(wrap)?;
        let off = r.u64().map_err(wrap)?;
        infos.push(Info {
            name,
            dims,
            ty,
            off,
        });
    }
    let align = match metadata.get("general.alignment") {
        Some(v) => v.as_u64().ok_or_else(|| gerr("general.alignment type"))? as usize,
        None => 32,
    };
    if align == 0 || !align.is_power_of_two() {
        return Err(gerr(format!("alignment {align}")));
    }
    let data_start = r.pos.div_ceil(align) * align;
    let mut tensors = TensorTable::default();
    for i in infos {
        let dtype = ggml_dtype(i.ty)
            .ok_or_else(|| gerr(format!("{}: unknown ggml type {}", i.name, i.ty)))?;
        let len = dtype.byte_size(&i.dims).ok_or_else(|| {
            gerr(format!(
                "{}: shape {:?} invalid for type {}",
                i.name, i.dims, i.ty
            ))
        })?;
        let offset = usize::try_from(i.off)
            .ok()
            .and_then(|o| o.checked_add(data_start))
            .ok_or_else(|| gerr(format!("{}: offset overflow", i.name)))?;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| gerr("range overflow"))?;
        if end > buf.len() {
            return Err(gerr(format!(
                "{}: data [{offset}, {end}) beyond file of {}",
                i.name,
                buf.len()
            )));
        }
        tensors.entries.push(TensorEntry {
            name: i.name,
            dtype,
            shape: i.dims,
            offset,
            len,
        });
    }
    Ok(GgufFile {
        version,
        metadata,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::models::synthetic::tiny_gguf;

    #[test]
    fn parses_tiny_file() {
        let b = tiny_gguf();
        let g = parse(&b).expect("parse");
        assert_eq!(g.meta_u64("a.n").ok(), Some(7));
        assert_eq!(g.meta_strs("a.list").ok(), Some(vec!["x", "yz"]));
        let e = g.tensors.get("w").expect("w");
        assert_eq!(e.shape, vec![4, 2]);
        assert_eq!(e.len, 32);
        assert_eq!(&b[e.offset + 4..e.offset + 8], &1f32.to_le_bytes());
    }

    #[test]
    fn truncation_is_an_error_at_every_length() {
        let b = tiny_gguf();
        for n in 0..b.len() {
            assert!(parse(&b[..n]).is_err(), "prefix {n} parsed");
        }
    }

    #[test]
    fn corrupt_counts_are_errors() {
        let mut b = tiny_gguf();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
    }
}
