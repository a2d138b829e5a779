//! Firmware blobs: header, tensor table, metadata, aligned tensor data.

use m4npu_uapi::{FwHeader, FwTensor, FW_ALIGN, FW_FORMAT_VERSION, FW_MAGIC};
use sha2::{Digest, Sha256};

use crate::bytes::{as_bytes, name_str, read};

/// Why a blob is not a valid firmware. The kernel refuses the same blobs.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("bad magic: not an m4npu firmware blob")]
    BadMagic,
    #[error("unsupported firmware format version {0} (this build reads {FW_FORMAT_VERSION})")]
    Version(u32),
    #[error("size mismatch: the header says {declared} bytes, the blob has {actual} (truncated?)")]
    Size { declared: u64, actual: u64 },
    #[error("{0} lies outside the blob or is misaligned")]
    Bounds(String),
    #[error("invalid header field {0}")]
    Field(&'static str),
    #[error("content hash mismatch: the blob is corrupt")]
    Hash,
    #[error("name {0:?} is empty or longer than 63 bytes")]
    Name(String),
}

/// A tensor entry of the table, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    /// `uapi::FW_DTYPE_*`.
    pub dtype: u32,
    /// Innermost first.
    pub dims: Vec<u64>,
    /// Offset in the data section.
    pub offset: u64,
    pub size: u64,
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(FW_ALIGN) * FW_ALIGN
}

fn name_field<const N: usize>(s: &str) -> Result<[u8; N], FormatError> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() >= N || b.contains(&0) {
        return Err(FormatError::Name(s.to_string()));
    }
    let mut out = [0u8; N];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

/// Assembles a firmware blob.
///
/// ```
/// use m4npu_format::{Firmware, FirmwareBuilder};
/// let mut b = FirmwareBuilder::new("tiny");
/// b.meta(br#"{"arch":"test"}"#.to_vec());
/// b.tensor("w", m4npu_uapi::FW_DTYPE_F32, &[2], vec![0u8; 8]).unwrap();
/// let blob = b.build().unwrap();
/// assert_eq!(Firmware::parse(&blob).unwrap().tensors()[0].name, "w");
/// ```
#[derive(Default)]
pub struct FirmwareBuilder {
    name: String,
    meta: Vec<u8>,
    tensors: Vec<(FwTensor, Vec<u8>)>,
}

impl FirmwareBuilder {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), ..Default::default() }
    }

    /// Sets the metadata (UTF-8 JSON by convention).
    pub fn meta(&mut self, meta: Vec<u8>) -> &mut Self {
        self.meta = meta;
        self
    }

    /// Appends a tensor; `dims` innermost first, at most 4.
    pub fn tensor(&mut self, name: &str, dtype: u32, dims: &[u64], data: Vec<u8>) -> Result<&mut Self, FormatError> {
        if dims.is_empty() || dims.len() > 4 {
            return Err(FormatError::Bounds(format!("tensor {name} with {} dims", dims.len())));
        }
        let mut d = [1u64; 4];
        d[..dims.len()].copy_from_slice(dims);
        let entry = FwTensor {
            name: name_field(name)?,
            dtype,
            ndim: dims.len() as u32,
            dims: d,
            offset: 0,
            size: data.len() as u64,
        };
        self.tensors.push((entry, data));
        Ok(self)
    }

    /// Lays the blob out and seals it with its content hash.
    pub fn build(&self) -> Result<Vec<u8>, FormatError> {
        let header_size = std::mem::size_of::<FwHeader>() as u64;
        let entry_size = std::mem::size_of::<FwTensor>() as u64;
        let table_offset = header_size;
        let meta_offset = table_offset + entry_size * self.tensors.len() as u64;
        let data_offset = align_up(meta_offset + self.meta.len() as u64);
        let mut entries = Vec::with_capacity(self.tensors.len());
        let mut data_size = 0;
        for (e, data) in &self.tensors {
            let mut e = *e;
            e.offset = data_size;
            data_size = align_up(data_size + data.len() as u64);
            entries.push(e);
        }
        let total = data_offset + data_size;
        let mut blob = vec![0u8; usize::try_from(total).map_err(|_| FormatError::Field("total_size"))?];
        let mut header = FwHeader {
            magic: FW_MAGIC,
            format_version: FW_FORMAT_VERSION,
            header_size: header_size as u32,
            total_size: total,
            tensor_table_offset: table_offset,
            tensor_count: entries.len() as u32,
            tensor_entry_size: entry_size as u32,
            meta_offset,
            meta_size: self.meta.len() as u64,
            data_offset,
            data_size,
            name: name_field(&self.name)?,
            content_hash: [0; 32],
            reserved: [0; 32],
        };
        for (i, e) in entries.iter().enumerate() {
            let at = (table_offset + i as u64 * entry_size) as usize;
            blob[at..at + entry_size as usize].copy_from_slice(as_bytes(e));
        }
        blob[meta_offset as usize..][..self.meta.len()].copy_from_slice(&self.meta);
        for (e, (_, data)) in entries.iter().zip(&self.tensors) {
            blob[(data_offset + e.offset) as usize..][..data.len()].copy_from_slice(data);
        }
        header.content_hash = Sha256::digest(&blob[header_size as usize..]).into();
        blob[..header_size as usize].copy_from_slice(as_bytes(&header));
        Ok(blob)
    }
}

/// A validated firmware blob, borrowing its bytes (e.g. NPU memory).
pub struct Firmware<'a> {
    header: FwHeader,
    blob: &'a [u8],
    tensors: Vec<Tensor>,
}

fn within(off: u64, len: u64, limit: u64) -> bool {
    off.checked_add(len).is_some_and(|end| end <= limit)
}

impl<'a> Firmware<'a> {
    /// Validates everything, the content hash included.
    pub fn parse(blob: &'a [u8]) -> Result<Self, FormatError> {
        let fw = Self::parse_unverified(blob)?;
        let hash: [u8; 32] = Sha256::digest(&blob[fw.header.header_size as usize..]).into();
        if hash != fw.header.content_hash {
            return Err(FormatError::Hash);
        }
        Ok(fw)
    }

    /// Validates the structure but trusts the content hash: for the device
    /// side, which reads a blob the kernel has verified and pinned.
    pub fn parse_unverified(blob: &'a [u8]) -> Result<Self, FormatError> {
        let actual = blob.len() as u64;
        let h: FwHeader = read(blob, 0).ok_or(FormatError::Size { declared: 0, actual })?;
        if h.magic != FW_MAGIC {
            return Err(FormatError::BadMagic);
        }
        if h.format_version != FW_FORMAT_VERSION {
            return Err(FormatError::Version(h.format_version));
        }
        if h.header_size as usize != std::mem::size_of::<FwHeader>() {
            return Err(FormatError::Field("header_size"));
        }
        if h.total_size != actual {
            return Err(FormatError::Size { declared: h.total_size, actual });
        }
        if h.reserved != [0; 32] {
            return Err(FormatError::Field("reserved"));
        }
        if h.tensor_entry_size as usize != std::mem::size_of::<FwTensor>() {
            return Err(FormatError::Field("tensor_entry_size"));
        }
        let hs = u64::from(h.header_size);
        let table_len = u64::from(h.tensor_count) * u64::from(h.tensor_entry_size);
        if h.tensor_table_offset < hs || !within(h.tensor_table_offset, table_len, actual) {
            return Err(FormatError::Bounds("tensor table".into()));
        }
        if h.meta_offset < hs || !within(h.meta_offset, h.meta_size, actual) {
            return Err(FormatError::Bounds("metadata".into()));
        }
        if h.data_offset < hs || h.data_offset % FW_ALIGN != 0 || !within(h.data_offset, h.data_size, actual) {
            return Err(FormatError::Bounds("data section".into()));
        }
        let mut tensors = Vec::with_capacity(h.tensor_count as usize);
        for i in 0..u64::from(h.tensor_count) {
            let e: FwTensor = read(blob, h.tensor_table_offset + i * u64::from(h.tensor_entry_size))
                .ok_or_else(|| FormatError::Bounds(format!("tensor entry {i}")))?;
            let named = e.name.contains(&0) && e.name[0] != 0;
            if !named || !(1..=4).contains(&e.ndim) || e.offset % FW_ALIGN != 0 || !within(e.offset, e.size, h.data_size) {
                return Err(FormatError::Bounds(format!("tensor {i} ({})", name_str(&e.name))));
            }
            tensors.push(Tensor {
                name: name_str(&e.name),
                dtype: e.dtype,
                dims: e.dims[..e.ndim as usize].to_vec(),
                offset: e.offset,
                size: e.size,
            });
        }
        Ok(Self { header: h, blob, tensors })
    }

    pub fn header(&self) -> &FwHeader {
        &self.header
    }

    pub fn name(&self) -> String {
        name_str(&self.header.name)
    }

    pub fn content_hash(&self) -> [u8; 32] {
        self.header.content_hash
    }

    pub fn meta(&self) -> &'a [u8] {
        &self.blob[self.header.meta_offset as usize..][..self.header.meta_size as usize]
    }

    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The bytes of `t`, borrowed from the blob.
    pub fn data(&self, t: &Tensor) -> &'a [u8] {
        &self.blob[(self.header.data_offset + t.offset) as usize..][..t.size as usize]
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<(&Tensor, &'a [u8])> {
        self.tensors.iter().find(|t| t.name == name).map(|t| (t, self.data(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = FirmwareBuilder::new("sample");
        b.meta(b"{}".to_vec());
        b.tensor("a", m4npu_uapi::FW_DTYPE_F32, &[3], vec![1; 12]).unwrap();
        b.tensor("b", m4npu_uapi::FW_DTYPE_I8, &[5, 2], vec![2; 10]).unwrap();
        b.build().unwrap()
    }

    #[test]
    fn round_trip() {
        let blob = sample();
        let fw = Firmware::parse(&blob).unwrap();
        assert_eq!(fw.name(), "sample");
        assert_eq!(fw.meta(), b"{}");
        let (t, d) = fw.get("b").unwrap();
        assert_eq!((t.dims.as_slice(), d), (&[5u64, 2][..], &[2u8; 10][..]));
        assert_eq!(fw.header().data_offset % FW_ALIGN, 0);
        assert!(fw.tensors().iter().all(|t| t.offset % FW_ALIGN == 0));
    }

    #[test]
    fn refuses_corruption() {
        let good = sample();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Firmware::parse(&bad).err(), Some(FormatError::BadMagic));
        assert!(matches!(Firmware::parse(&good[..good.len() - 1]), Err(FormatError::Size { .. })));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(Firmware::parse(&bad).err(), Some(FormatError::Hash));
        assert!(Firmware::parse_unverified(&bad).is_ok());
        let mut bad = good.clone();
        bad[8] = 2; // format_version
        assert_eq!(Firmware::parse(&bad).err(), Some(FormatError::Version(2)));
    }

    #[test]
    fn refuses_out_of_bounds_tensor() {
        let mut blob = sample();
        let h: FwHeader = read(&blob, 0).unwrap();
        // First entry's size field: the last 8 bytes of the entry.
        let at = (h.tensor_table_offset as usize) + std::mem::size_of::<FwTensor>() - 8;
        blob[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Firmware::parse_unverified(&blob), Err(FormatError::Bounds(_))));
    }
}
