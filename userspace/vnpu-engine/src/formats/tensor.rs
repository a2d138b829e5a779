//! Named tensor table over one borrowed byte region.
//!
//! A model never owns weights: it is built from a [`TensorTable`] (name,
//! dtype, shape, byte range) plus one `&[u8]` region, which in production is
//! the read-only firmware region of NPU memory. The table has a small binary
//! encoding so the firmware packer can store it next to the blob.

use crate::error::{bad, Error, Result};
use std::collections::BTreeMap;

/// Storage formats. `Gguf*` are the raw GGUF block layouts (f16 scales,
/// interleaved); `Q4_1R` / `Q8_0R` are the engine layouts written by
/// [`crate::formats::pack`]: 8-row panels whose quants are interleaved 4 bytes per
/// row, each panel-block followed by its f16 scales (see [`crate::compute::quant`]),
/// so kernels read one contiguous stream and produce 8 rows per vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    I8,
    U8,
    I32,
    I64,
    /// GGUF block types, carried with their ggml id and block geometry.
    Gguf {
        id: u32,
        block: usize,
        bytes: usize,
    },
    /// Packed Q4_1 in 8-row panels (160 bytes per panel and 32-block:
    /// quants, then d[8], m[8] f16). Value = d*q + m.
    Q4_1R,
    /// Packed Q8_0 in 8-row panels (272 bytes per panel and 32-block:
    /// quants, then d[8] f16). Value = d*q.
    Q8_0R,
}

pub const GGML_F32: u32 = 0;
pub const GGML_F16: u32 = 1;
pub const GGML_Q4_0: u32 = 2;
pub const GGML_Q4_1: u32 = 3;
pub const GGML_Q8_0: u32 = 8;

impl DType {
    /// Byte size of a tensor of this type and shape (innermost dim first for
    /// block types, as GGUF orders dims). Checked: overflow is an error.
    pub fn byte_size(&self, shape: &[usize]) -> Option<usize> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        match *self {
            DType::F32 | DType::I32 => n.checked_mul(4),
            DType::F16 | DType::BF16 => n.checked_mul(2),
            DType::I8 | DType::U8 => Some(n),
            DType::I64 => n.checked_mul(8),
            DType::Gguf { block, bytes, .. } => {
                let inner = *shape.first()?;
                if block == 0 || inner % block != 0 {
                    return None;
                }
                (n / block).checked_mul(bytes)
            }
            DType::Q4_1R | DType::Q8_0R => {
                let (rows, k) = rows_k(shape)?;
                if k % 32 != 0 {
                    return None;
                }
                let pb = if *self == DType::Q4_1R {
                    crate::compute::quant::Q4_1_PB
                } else {
                    crate::compute::quant::Q8_0_PB
                };
                crate::compute::quant::packed_bytes(rows, k, pb)
            }
        }
    }

    fn code(&self) -> (u32, u32, u32) {
        match *self {
            DType::F32 => (0, 0, 0),
            DType::F16 => (1, 0, 0),
            DType::BF16 => (2, 0, 0),
            DType::I8 => (3, 0, 0),
            DType::U8 => (4, 0, 0),
            DType::I32 => (5, 0, 0),
            DType::I64 => (6, 0, 0),
            DType::Gguf { id, block, bytes } => (7 | (id << 8), block as u32, bytes as u32),
            // 8 and 9 were the row-major layouts of earlier engines: tables
            // using them no longer decode (re-run the packer).
            DType::Q4_1R => (10, 0, 0),
            DType::Q8_0R => (11, 0, 0),
        }
    }

    fn from_code(c: u32, a: u32, b: u32) -> Option<DType> {
        Some(match c & 0xff {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::BF16,
            3 => DType::I8,
            4 => DType::U8,
            5 => DType::I32,
            6 => DType::I64,
            7 => DType::Gguf {
                id: c >> 8,
                block: a as usize,
                bytes: b as usize,
            },
            10 => DType::Q4_1R,
            11 => DType::Q8_0R,
            _ => return None,
        })
    }
}

/// Packed matrices use row-major shape `[rows, k]`.
fn rows_k(shape: &[usize]) -> Option<(usize, usize)> {
    match shape {
        [r, k] => Some((*r, *k)),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    /// Packed/safetensors tensors: row-major, outermost first. GGUF tensors
    /// keep GGUF order (innermost first), as produced by the GGUF loader.
    pub shape: Vec<usize>,
    /// Byte range within the region.
    pub offset: usize,
    pub len: usize,
}

/// Scalar metadata (hyper-parameters) carried with a table.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorTable {
    pub entries: Vec<TensorEntry>,
    pub meta: BTreeMap<String, MetaValue>,
}

const TABLE_MAGIC: &[u8; 8] = b"VNPUTBL1";

impl TensorTable {
    pub fn get(&self, name: &str) -> Result<&TensorEntry> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    pub fn meta_int(&self, key: &str) -> Result<i64> {
        match self.meta.get(key) {
            Some(MetaValue::Int(v)) => Ok(*v),
            _ => Err(Error::Meta(key.to_string())),
        }
    }

    pub fn meta_usize(&self, key: &str) -> Result<usize> {
        usize::try_from(self.meta_int(key)?).map_err(|_| Error::Meta(key.to_string()))
    }

    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        match self.meta.get(key) {
            Some(MetaValue::Float(v)) => Ok(*v),
            Some(MetaValue::Int(v)) => Ok(*v as f64),
            _ => Err(Error::Meta(key.to_string())),
        }
    }

    pub fn meta_str(&self, key: &str) -> Result<&str> {
        match self.meta.get(key) {
            Some(MetaValue::Str(v)) => Ok(v),
            _ => Err(Error::Meta(key.to_string())),
        }
    }

    /// Checks that every entry lies in a region of `region_len` bytes and
    /// that its length matches dtype x shape.
    pub fn validate(&self, region_len: usize) -> Result<()> {
        for e in &self.entries {
            let want = e.dtype.byte_size(&e.shape).ok_or_else(|| {
                bad(
                    &e.name,
                    format!("shape {:?} invalid for {:?}", e.shape, e.dtype),
                )
            })?;
            if want != e.len {
                return Err(bad(
                    &e.name,
                    format!("len {} but dtype/shape need {}", e.len, want),
                ));
            }
            let end = e
                .offset
                .checked_add(e.len)
                .ok_or_else(|| bad(&e.name, "range overflows"))?;
            if end > region_len {
                return Err(bad(
                    &e.name,
                    format!("range ends at {end} beyond region of {region_len}"),
                ));
            }
        }
        Ok(())
    }

    /// Simple little-endian binary encoding for storing the table in firmware.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(TABLE_MAGIC);
        put_u64(&mut o, self.meta.len() as u64);
        for (k, v) in &self.meta {
            put_str(&mut o, k);
            match v {
                MetaValue::Int(i) => {
                    o.push(0);
                    o.extend_from_slice(&i.to_le_bytes());
                }
                MetaValue::Float(f) => {
                    o.push(1);
                    o.extend_from_slice(&f.to_le_bytes());
                }
                MetaValue::Str(s) => {
                    o.push(2);
                    put_str(&mut o, s);
                }
            }
        }
        put_u64(&mut o, self.entries.len() as u64);
        for e in &self.entries {
            put_str(&mut o, &e.name);
            let (c, a, b) = e.dtype.code();
            for x in [c, a, b] {
                o.extend_from_slice(&x.to_le_bytes());
            }
            put_u64(&mut o, e.shape.len() as u64);
            for &d in &e.shape {
                put_u64(&mut o, d as u64);
            }
            put_u64(&mut o, e.offset as u64);
            put_u64(&mut o, e.len as u64);
        }
        o
    }

    pub fn decode(buf: &[u8]) -> Result<TensorTable> {
        let mut r = Reader { buf, pos: 0 };
        if r.take(8)? != TABLE_MAGIC {
            return Err(Error::Table("bad magic".into()));
        }
        let mut t = TensorTable::default();
        let nmeta = r.u64()?;
        for _ in 0..nmeta {
            let k = r.string()?;
            let v = match r.take(1)?[0] {
                0 => MetaValue::Int(i64::from_le_bytes(r.arr8()?)),
                1 => MetaValue::Float(f64::from_le_bytes(r.arr8()?)),
                2 => MetaValue::Str(r.string()?),
                x => return Err(Error::Table(format!("meta type {x}"))),
            };
            t.meta.insert(k, v);
        }
        let n = r.u64()?;
        for _ in 0..n {
            let name = r.string()?;
            let c = r.u32()?;
            let a = r.u32()?;
            let b = r.u32()?;
            let dtype =
                DType::from_code(c, a, b).ok_or_else(|| {
                    Error::Table(if c == 8 || c == 9 {
                        format!("dtype code {c}: row-major packed layout of an older engine, re-run the packer")
                    } else {
                        format!("dtype code {c}")
                    })
                })?;
            let nd = r.u64()?;
            if nd > 8 {
                return Err(Error::Table(format!("{name}: {nd} dims")));
            }
            let mut shape = Vec::new();
            for _ in 0..nd {
                shape.push(r.usize()?);
            }
            let offset = r.usize()?;
            let len = r.usize()?;
            t.entries.push(TensorEntry {
                name,
                dtype,
                shape,
                offset,
                len,
            });
        }
        Ok(t)
    }
}

fn put_u64(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put_str(o: &mut Vec<u8>, s: &str) {
    put_u64(o, s.len() as u64);
    o.extend_from_slice(s.as_bytes());
}

/// Bounds-checked little-endian cursor shared by the table and GGUF parsers.
pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| Error::Table(format!("truncated at {} (+{n})", self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn arr8(&mut self) -> Result<[u8; 8]> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr8()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| Error::Table("value exceeds usize".into()))
    }
    pub fn string(&mut self) -> Result<String> {
        let n = self.usize()?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| Error::Table("non-utf8 string".into()))
    }
}

/// Typed, bounds-checked views of table entries within one region.
#[derive(Clone, Copy)]
pub struct Region<'a> {
    pub table: &'a TensorTable,
    pub bytes: &'a [u8],
}

impl<'a> Region<'a> {
    pub fn new(table: &'a TensorTable, bytes: &'a [u8]) -> Result<Self> {
        table.validate(bytes.len())?;
        Ok(Region { table, bytes })
    }

    pub fn entry(&self, name: &str) -> Result<&'a TensorEntry> {
        self.table.get(name)
    }

    pub fn raw(&self, name: &str) -> Result<&'a [u8]> {
        let e = self.entry(name)?;
        // validate() checked the range; get() keeps this panic-free anyway.
        self.bytes
            .get(e.offset..e.offset + e.len)
            .ok_or_else(|| bad(name, "range outside region"))
    }

    /// f32 view; requires 4-byte alignment (packed blobs align every tensor to 64).
    pub fn f32s(&self, name: &str, shape: &[usize]) -> Result<&'a [f32]> {
        let e = self.entry(name)?;
        if e.dtype != DType::F32 {
            return Err(bad(name, format!("expected F32, got {:?}", e.dtype)));
        }
        check_shape(e, shape)?;
        bytemuck::try_cast_slice(self.raw(name)?)
            .map_err(|_| bad(name, "f32 data misaligned in region"))
    }

    pub fn q4_1(
        &self,
        name: &str,
        rows: usize,
        k: usize,
    ) -> Result<crate::compute::quant::Q4_1Mat<'a>> {
        let e = self.entry(name)?;
        if e.dtype != DType::Q4_1R {
            return Err(bad(name, format!("expected Q4_1R, got {:?}", e.dtype)));
        }
        check_shape(e, &[rows, k])?;
        crate::compute::quant::Q4_1Mat::from_bytes(self.raw(name)?, rows, k)
            .map_err(|m| bad(name, m))
    }

    pub fn q8_0(
        &self,
        name: &str,
        rows: usize,
        k: usize,
    ) -> Result<crate::compute::quant::Q8_0Mat<'a>> {
        let e = self.entry(name)?;
        if e.dtype != DType::Q8_0R {
            return Err(bad(name, format!("expected Q8_0R, got {:?}", e.dtype)));
        }
        check_shape(e, &[rows, k])?;
        crate::compute::quant::Q8_0Mat::from_bytes(self.raw(name)?, rows, k)
            .map_err(|m| bad(name, m))
    }
}

fn check_shape(e: &TensorEntry, shape: &[usize]) -> Result<()> {
    if e.shape != shape {
        return Err(bad(
            &e.name,
            format!("shape {:?}, expected {:?}", e.shape, shape),
        ));
    }
    Ok(())
}

/// Builder for packed blobs: appends tensors at 64-byte aligned offsets.
#[derive(Default)]
pub struct BlobBuilder {
    pub table: TensorTable,
    pub blob: Vec<u8>,
}

impl BlobBuilder {
    pub fn push(&mut self, name: &str, dtype: DType, shape: Vec<usize>, bytes: &[u8]) {
        while self.blob.len() % 64 != 0 {
            self.blob.push(0);
        }
        let offset = self.blob.len();
        self.blob.extend_from_slice(bytes);
        self.table.entries.push(TensorEntry {
            name: name.to_string(),
            dtype,
            shape,
            offset,
            len: bytes.len(),
        });
    }

    pub fn push_f32(&mut self, name: &str, shape: Vec<usize>, v: &[f32]) {
        self.push(name, DType::F32, shape, bytemuck::cast_slice(v));
    }
}

/// One 64-byte line (`[u64; 8]` alone is only 8-byte aligned).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; 8]);
// SAFETY: 64 bytes of plain integers, size == alignment, so no padding.
unsafe impl bytemuck::Zeroable for Line {}
unsafe impl bytemuck::Pod for Line {}

/// 64-byte aligned owned bytes, for tests/tools that hold a packed blob in
/// ordinary memory (a `Vec<u8>` only guarantees 1-byte alignment).
pub struct AlignedBytes {
    words: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    pub fn from_slice(b: &[u8]) -> Self {
        let mut words = vec![Line([0u64; 8]); b.len().div_ceil(64)];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        dst[..b.len()].copy_from_slice(b);
        AlignedBytes {
            words,
            len: b.len(),
        }
    }
    pub fn zeroed(len: usize) -> Self {
        AlignedBytes {
            words: vec![Line([0u64; 8]); len.div_ceil(64)],
            len,
        }
    }
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

impl std::ops::DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut bytemuck::cast_slice_mut(&mut self.words)[..len]
    }
}
