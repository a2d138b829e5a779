//! Firmware blobs: header, tensor table, metadata, aligned tensor data.

use m4npu_uapi::{FwHeader, FW_FORMAT_VERSION, FW_MAGIC};

use crate::bytes::{as_bytes, name_str, read};
use crate::container::{check, name_field, verify_hash, Contents, Tensor};

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
    #[error("name {0:?} is empty, longer than 63 bytes or not UTF-8")]
    Name(String),
    #[error("two tensors are named {0:?}")]
    Duplicate(String),
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
    contents: Contents,
}

impl FirmwareBuilder {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), ..Default::default() }
    }

    /// Sets the metadata (UTF-8 JSON by convention).
    pub fn meta(&mut self, meta: Vec<u8>) -> &mut Self {
        self.contents.meta = meta;
        self
    }

    /// Appends a tensor; `dims` innermost first, at most 4.
    pub fn tensor(&mut self, name: &str, dtype: u32, dims: &[u64], data: Vec<u8>) -> Result<&mut Self, FormatError> {
        self.contents.tensor(name, dtype, dims, data)?;
        Ok(self)
    }

    /// Lays the blob out and seals it with its content hash.
    pub fn build(&self) -> Result<Vec<u8>, FormatError> {
        let header_size = std::mem::size_of::<FwHeader>() as u64;
        let (mut blob, s, content_hash) = self.contents.build(header_size)?;
        let header = FwHeader {
            magic: FW_MAGIC,
            format_version: FW_FORMAT_VERSION,
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
            reserved: [0; 32],
        };
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

impl<'a> Firmware<'a> {
    /// Validates everything, the content hash included.
    pub fn parse(blob: &'a [u8]) -> Result<Self, FormatError> {
        let fw = Self::parse_unverified(blob)?;
        verify_hash(blob, u64::from(fw.header.header_size), &fw.header.content_hash)?;
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
        let tensors = check(blob, &h.sections())?;
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
    use m4npu_uapi::{FwTensor, FW_ALIGN};

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

    /// Names are unique (found by fuzzing: a lookup by name picked the
    /// first of two): the builder refuses a second, the parser a table
    /// that has one, comparing the bytes up to the NUL as the kernel does.
    #[test]
    fn refuses_duplicate_names() {
        let mut b = FirmwareBuilder::new("dup");
        b.tensor("a", m4npu_uapi::FW_DTYPE_F32, &[1], vec![0; 4]).unwrap();
        let e = b.tensor("a", m4npu_uapi::FW_DTYPE_F32, &[1], vec![0; 4]).err();
        assert_eq!(e, Some(FormatError::Duplicate("a".into())));
        let mut blob = sample();
        let h: FwHeader = read(&blob, 0).unwrap();
        // The second entry's name "b" becomes "a", with junk after the NUL.
        let at = h.tensor_table_offset as usize + std::mem::size_of::<FwTensor>();
        blob[at..at + 3].copy_from_slice(b"a\0x");
        assert_eq!(Firmware::parse_unverified(&blob).err(), Some(FormatError::Duplicate("a".into())));
        // Names that differ only in bytes that are not UTF-8 would look up alike.
        blob[at..at + 3].copy_from_slice(b"\xff\0\0");
        assert_eq!(Firmware::parse_unverified(&blob).err(), Some(FormatError::Name("\u{fffd}".into())));
    }
}
