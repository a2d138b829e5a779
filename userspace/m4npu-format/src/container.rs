//! The layout firmware and adapter blobs share: header, table of
//! `FwTensor`, metadata, then `FW_ALIGN`-aligned tensor data. The header
//! types differ; the sections and their checks do not.

use m4npu_uapi::{FwTensor, SectionError, FW_ALIGN, FW_MAX_TENSORS};
use sha2::{Digest, Sha256};

use crate::bytes::{as_bytes, name_str, read};
use crate::FormatError;

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

pub(crate) use m4npu_uapi::BlobSections as Sections;

fn align_up(v: u64) -> u64 {
    v.div_ceil(FW_ALIGN) * FW_ALIGN
}

pub(crate) fn name_field<const N: usize>(s: &str) -> Result<[u8; N], FormatError> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() >= N || b.contains(&0) {
        return Err(FormatError::Name(s.to_string()));
    }
    let mut out = [0u8; N];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

/// Tensors and metadata being assembled into a blob.
#[derive(Default)]
pub(crate) struct Contents {
    pub meta: Vec<u8>,
    pub tensors: Vec<(FwTensor, Vec<u8>)>,
}

impl Contents {
    pub fn tensor(&mut self, name: &str, dtype: u32, dims: &[u64], data: Vec<u8>) -> Result<(), FormatError> {
        if dims.is_empty() || dims.len() > 4 {
            return Err(FormatError::Bounds(format!("tensor {name} with {} dims", dims.len())));
        }
        let mut d = [1u64; 4];
        d[..dims.len()].copy_from_slice(dims);
        let entry =
            FwTensor { name: name_field(name)?, dtype, ndim: dims.len() as u32, dims: d, offset: 0, size: data.len() as u64 };
        if self.tensors.iter().any(|(e, _)| e.name == entry.name) {
            return Err(FormatError::Duplicate(name.to_string()));
        }
        if self.tensors.len() >= FW_MAX_TENSORS as usize {
            return Err(FormatError::Bounds(format!("tensor {name}: more than {FW_MAX_TENSORS} tensors")));
        }
        self.tensors.push((entry, data));
        Ok(())
    }

    /// Lays out everything after a header of `header_size` bytes; returns
    /// the blob (header bytes zero), the sections and the content hash.
    pub fn build(&self, header_size: u64) -> Result<(Vec<u8>, Sections, [u8; 32]), FormatError> {
        let entry_size = std::mem::size_of::<FwTensor>() as u64;
        let table_offset = header_size;
        let meta_offset = table_offset + entry_size * self.tensors.len() as u64;
        let data_offset = align_up(meta_offset + self.meta.len() as u64);
        let mut data_size = 0;
        let mut entries = Vec::with_capacity(self.tensors.len());
        for (e, data) in &self.tensors {
            entries.push(FwTensor { offset: data_size, ..*e });
            data_size = align_up(data_size + data.len() as u64);
        }
        let total = data_offset + data_size;
        let mut blob = vec![0u8; usize::try_from(total).map_err(|_| FormatError::Field("total_size"))?];
        for (i, e) in entries.iter().enumerate() {
            let at = (table_offset + i as u64 * entry_size) as usize;
            blob[at..at + entry_size as usize].copy_from_slice(as_bytes(e));
        }
        blob[meta_offset as usize..][..self.meta.len()].copy_from_slice(&self.meta);
        for (e, (_, data)) in entries.iter().zip(&self.tensors) {
            blob[(data_offset + e.offset) as usize..][..data.len()].copy_from_slice(data);
        }
        let hash = Sha256::digest(&blob[header_size as usize..]).into();
        let sections = Sections {
            header_size,
            total_size: total,
            tensor_table_offset: table_offset,
            tensor_count: entries.len() as u32,
            tensor_entry_size: entry_size as u32,
            meta_offset,
            meta_size: self.meta.len() as u64,
            data_offset,
            data_size,
        };
        Ok((blob, sections, hash))
    }
}

/// The section checks the kernel makes too (the UAPI's one validator,
/// which the module compiles in); returns the decoded tensors.
pub(crate) fn check(blob: &[u8], s: &Sections) -> Result<Vec<Tensor>, FormatError> {
    let actual = blob.len() as u64;
    if s.total_size != actual {
        return Err(FormatError::Size { declared: s.total_size, actual });
    }
    let mut order = vec![0u32; s.tensor_count.min(FW_MAX_TENSORS) as usize];
    let name = |i: u32| String::from_utf8_lossy(m4npu_uapi::tensor_name(blob, s, i).unwrap_or_default()).into_owned();
    m4npu_uapi::check_sections(blob, s, &mut order).map_err(|e| match e {
        SectionError::EntrySize => FormatError::Field("tensor_entry_size"),
        SectionError::TableBounds => FormatError::Bounds("tensor table".into()),
        SectionError::MetaBounds => FormatError::Bounds("metadata".into()),
        SectionError::DataBounds => FormatError::Bounds("data section".into()),
        SectionError::TooManyTensors => {
            FormatError::Bounds(format!("a table of {} tensors (at most {FW_MAX_TENSORS})", s.tensor_count))
        }
        SectionError::BadTensor(i) => FormatError::Bounds(format!("tensor {i} ({})", name(i))),
        SectionError::NameNotUtf8(i) => FormatError::Name(name(i)),
        SectionError::Duplicate(i, _) => FormatError::Duplicate(name(i)),
        SectionError::Scratch => FormatError::Bounds("tensor table".into()),
    })?;
    (0..u64::from(s.tensor_count))
        .map(|i| {
            let e: FwTensor = read(blob, s.tensor_table_offset + i * u64::from(s.tensor_entry_size))
                .ok_or_else(|| FormatError::Bounds(format!("tensor entry {i}")))?;
            Ok(Tensor {
                name: name_str(&e.name),
                dtype: e.dtype,
                dims: e.dims[..e.ndim as usize].to_vec(),
                offset: e.offset,
                size: e.size,
            })
        })
        .collect()
}

pub(crate) fn verify_hash(blob: &[u8], header_size: u64, want: &[u8; 32]) -> Result<(), FormatError> {
    let hash: [u8; 32] = Sha256::digest(&blob[header_size as usize..]).into();
    if &hash == want { Ok(()) } else { Err(FormatError::Hash) }
}
