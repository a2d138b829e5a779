//! Adapter blobs (`.m4a`): LoRA matrices, task head, optional input
//! projection and JSON metadata, bound to one foundation model by its hash.

use m4npu_uapi::{AdapterHeader, ADAPTER_FORMAT_VERSION, ADAPTER_MAGIC};

use crate::bytes::{as_bytes, name_str, read};
use crate::container::{check, name_field, verify_hash, Contents, Tensor};
use crate::FormatError;

/// Assembles an adapter blob.
///
/// ```
/// use m4npu_format::{Adapter, AdapterBuilder};
/// let mut b = AdapterBuilder::new("sentiment", [7; 32]);
/// b.meta(br#"{"task":"classify"}"#.to_vec());
/// b.tensor("head.weight", m4npu_uapi::FW_DTYPE_F32, &[4, 2], vec![0; 32]).unwrap();
/// let blob = b.build().unwrap();
/// assert_eq!(Adapter::parse(&blob).unwrap().base_model_hash(), [7; 32]);
/// ```
#[derive(Default)]
pub struct AdapterBuilder {
    name: String,
    base: [u8; 32],
    contents: Contents,
}

impl AdapterBuilder {
    /// An adapter for the foundation model whose content hash is `base_model_hash`.
    pub fn new(name: &str, base_model_hash: [u8; 32]) -> Self {
        Self { name: name.to_string(), base: base_model_hash, ..Default::default() }
    }

    pub fn meta(&mut self, meta: Vec<u8>) -> &mut Self {
        self.contents.meta = meta;
        self
    }

    pub fn tensor(&mut self, name: &str, dtype: u32, dims: &[u64], data: Vec<u8>) -> Result<&mut Self, FormatError> {
        self.contents.tensor(name, dtype, dims, data)?;
        Ok(self)
    }

    /// An F32 tensor of `shape` (outermost first, as in safetensors and
    /// the names of `adapter_meta`), row-major.
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<&mut Self, FormatError> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(FormatError::Bounds(format!("tensor {name}: {} values for shape {shape:?}", data.len())));
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, m4npu_uapi::FW_DTYPE_F32, &dims, bytes)
    }

    pub fn build(&self) -> Result<Vec<u8>, FormatError> {
        let header_size = std::mem::size_of::<AdapterHeader>() as u64;
        let (mut blob, s, content_hash) = self.contents.build(header_size)?;
        let header = AdapterHeader {
            magic: ADAPTER_MAGIC,
            format_version: ADAPTER_FORMAT_VERSION,
            header_size: header_size as u32,
            total_size: s.total_size,
            tensor_table_offset: s.tensor_table_offset,
            tensor_count: s.tensor_count,
            tensor_entry_size: s.tensor_entry_size,
            meta_offset: s.meta_offset,
            meta_size: s.meta_size,
            data_offset: s.data_offset,
            data_size: s.data_size,
            name: name_field(&self.name)?,
            content_hash,
            base_model_hash: self.base,
            reserved: [0; 32],
        };
        blob[..header_size as usize].copy_from_slice(as_bytes(&header));
        Ok(blob)
    }
}

/// A validated adapter blob, borrowing its bytes.
pub struct Adapter<'a> {
    header: AdapterHeader,
    blob: &'a [u8],
    tensors: Vec<Tensor>,
}

impl<'a> Adapter<'a> {
    /// Validates everything the kernel validates, the content hash included.
    pub fn parse(blob: &'a [u8]) -> Result<Self, FormatError> {
        let a = Self::parse_unverified(blob)?;
        verify_hash(blob, u64::from(a.header.header_size), &a.header.content_hash)?;
        Ok(a)
    }

    /// Validates the structure but trusts the content hash: for the device,
    /// which reads a blob the kernel verified when the app loaded it.
    pub fn parse_unverified(blob: &'a [u8]) -> Result<Self, FormatError> {
        let actual = blob.len() as u64;
        let h: AdapterHeader = read(blob, 0).ok_or(FormatError::Size { declared: 0, actual })?;
        if h.magic != ADAPTER_MAGIC {
            return Err(FormatError::BadMagic);
        }
        if h.format_version != ADAPTER_FORMAT_VERSION {
            return Err(FormatError::Version(h.format_version));
        }
        if h.header_size as usize != std::mem::size_of::<AdapterHeader>() {
            return Err(FormatError::Field("header_size"));
        }
        if h.reserved != [0; 32] {
            return Err(FormatError::Field("reserved"));
        }
        let tensors = check(blob, &h.sections())?;
        Ok(Self { header: h, blob, tensors })
    }

    pub fn name(&self) -> String {
        name_str(&self.header.name)
    }

    /// SHA-256 of everything after the header.
    pub fn content_hash(&self) -> [u8; 32] {
        self.header.content_hash
    }

    /// Content hash of the foundation model the adapter was trained for.
    pub fn base_model_hash(&self) -> [u8; 32] {
        self.header.base_model_hash
    }

    pub fn meta(&self) -> &'a [u8] {
        &self.blob[self.header.meta_offset as usize..][..self.header.meta_size as usize]
    }

    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    pub fn data(&self, t: &Tensor) -> &'a [u8] {
        &self.blob[(self.header.data_offset + t.offset) as usize..][..t.size as usize]
    }

    pub fn get(&self, name: &str) -> Option<(&Tensor, &'a [u8])> {
        self.tensors.iter().find(|t| t.name == name).map(|t| (t, self.data(t)))
    }
}

/// Reads only the base model hash, for error messages about a blob the
/// kernel refused.
pub fn adapter_base_model_hash(blob: &[u8]) -> Option<[u8; 32]> {
    let h: AdapterHeader = read(blob, 0)?;
    (h.magic == ADAPTER_MAGIC).then_some(h.base_model_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut b = AdapterBuilder::new("a", [1; 32]);
        b.tensor("lora.a", m4npu_uapi::FW_DTYPE_F32, &[2, 2], vec![3; 16]).unwrap();
        let blob = b.build().unwrap();
        let a = Adapter::parse(&blob).unwrap();
        assert_eq!((a.name(), a.get("lora.a").unwrap().1), ("a".to_string(), &[3u8; 16][..]));
        assert_eq!(adapter_base_model_hash(&blob), Some([1; 32]));
        let mut bad = blob.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(Adapter::parse(&bad).err(), Some(FormatError::Hash));
        assert!(Adapter::parse_unverified(&bad).is_ok());
        assert!(matches!(Adapter::parse(&blob[..blob.len() - 1]), Err(FormatError::Size { .. })));
    }
}
