//! What a job's ranges hold: the input the app writes, the output the device
//! writes, and a generation session's state. Shared by the app library and
//! the device so both read the same bytes the same way. All integers and
//! floats are little-endian; every range starts with a 16-byte header.

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// First bytes of an input range.
pub const INPUT_MAGIC: [u8; 4] = *b"M4IN";
/// First bytes of a generation state range once the device has used it; a
/// zeroed range (a fresh BO) is an empty session.
pub const STATE_MAGIC: [u8; 4] = *b"M4KV";
/// Bytes of each header.
pub const HEADER_BYTES: usize = 16;

/// [`Input`] kinds.
const KIND_TOKENS: u32 = 1;
const KIND_FEATURES: u32 = 2;
/// Feature rows then token ids: the header counts the rows, the body
/// starts with the token count.
const KIND_MIXED: u32 = 3;

/// Why a range could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobIoError {
    #[error("range too short: {need} bytes needed, {have} given")]
    Short { need: usize, have: usize },
    #[error("bad magic: not an m4npu {0} range")]
    Magic(&'static str),
    #[error("unknown input kind {0}")]
    Kind(u32),
    #[error("empty input")]
    Empty,
}

/// A job's input: token ids for text, rows of feature vectors for the
/// other modalities (mapped into the model by the adapter's input
/// projection), or both: feature rows followed by token ids, one sequence
/// (an image and its caption).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Tokens(Vec<u32>),
    Features { dim: usize, data: Vec<f32> },
    Mixed { dim: usize, data: Vec<f32>, tokens: Vec<u32> },
}

impl Input {
    /// Bytes of the encoded input.
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES
            + 4 * match self {
                Input::Tokens(t) => t.len(),
                Input::Features { data, .. } => data.len(),
                Input::Mixed { data, tokens, .. } => 1 + data.len() + tokens.len(),
            }
    }

    /// Writes the input at the start of `buf`; returns the bytes written.
    pub fn encode_into(&self, buf: &mut [u8]) -> Result<usize, JobIoError> {
        let need = self.encoded_len();
        if buf.len() < need {
            return Err(JobIoError::Short { need, have: buf.len() });
        }
        let (kind, count, dim) = match self {
            Input::Tokens(t) => (KIND_TOKENS, t.len(), 0),
            Input::Features { dim, data } => (KIND_FEATURES, data.len() / dim.max(&1), *dim),
            Input::Mixed { dim, data, .. } => (KIND_MIXED, data.len() / dim.max(&1), *dim),
        };
        buf[..4].copy_from_slice(&INPUT_MAGIC);
        put_u32(buf, 4, kind);
        put_u32(buf, 8, count as u32);
        put_u32(buf, 12, dim as u32);
        let words: Box<dyn Iterator<Item = u32> + '_> = match self {
            Input::Tokens(t) => Box::new(t.iter().copied()),
            Input::Features { data, .. } => Box::new(data.iter().map(|f| f.to_bits())),
            Input::Mixed { data, tokens, .. } => Box::new(
                std::iter::once(tokens.len() as u32).chain(data.iter().map(|f| f.to_bits())).chain(tokens.iter().copied()),
            ),
        };
        for (i, w) in words.enumerate() {
            put_u32(buf, HEADER_BYTES + 4 * i, w);
        }
        Ok(need)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![0; self.encoded_len()];
        self.encode_into(&mut v).expect("sized to fit");
        v
    }

    /// Reads an input range.
    pub fn decode(buf: &[u8]) -> Result<Input, JobIoError> {
        short(buf, HEADER_BYTES)?;
        if buf[..4] != INPUT_MAGIC {
            return Err(JobIoError::Magic("input"));
        }
        let (kind, count, dim) = (le_u32(buf, 4), le_u32(buf, 8) as usize, le_u32(buf, 12) as usize);
        let too_long = JobIoError::Short { need: usize::MAX, have: buf.len() };
        let values = match kind {
            KIND_TOKENS => count,
            KIND_FEATURES | KIND_MIXED => count.checked_mul(dim).ok_or(too_long.clone())?,
            k => return Err(JobIoError::Kind(k)),
        };
        // A mixed input's body starts with its token count.
        let (skip, n_tokens) = match kind {
            KIND_MIXED => {
                short(buf, HEADER_BYTES + 4)?;
                (1, le_u32(buf, HEADER_BYTES) as usize)
            }
            _ => (0, 0),
        };
        // Both parts of a mixed input, or it would be one of the other kinds.
        if values == 0 || (kind == KIND_MIXED && n_tokens == 0) {
            return Err(JobIoError::Empty);
        }
        let words = values.checked_add(skip + n_tokens).ok_or(too_long)?;
        let need = words.checked_mul(4).and_then(|b| b.checked_add(HEADER_BYTES)).unwrap_or(usize::MAX);
        short(buf, need)?;
        let word = |i: usize| le_u32(buf, HEADER_BYTES + 4 * i);
        let floats = |from: usize| (from..from + values).map(|i| f32::from_bits(word(i))).collect();
        Ok(match kind {
            KIND_TOKENS => Input::Tokens((0..words).map(word).collect()),
            KIND_FEATURES => Input::Features { dim, data: floats(0) },
            _ => Input::Mixed { dim, data: floats(1), tokens: (1 + values..words).map(word).collect() },
        })
    }
}

/// The feature rows of a job whose adapter takes a text's sentence
/// embedding (`AdapterMeta::text_embedding`): each of the app's rows of
/// `dim` values, then zeros in the embedding's columns; last, zeros in the
/// rows' columns, then the embedding. Each row, one token, thus meets only
/// its own part of the input projection: the image and the caption enter
/// the backbone as tokens of their own, each through its own projection.
///
/// `features` must be whole rows of `dim > 0` and `embedding` non-empty;
/// callers check both against the adapter first (the device then refuses
/// any other width).
///
/// ```
/// let rows = m4npu_format::job_io::rows_with_embedding(&[1.0, 2.0, 3.0, 4.0], 2, &[9.0]);
/// assert_eq!(rows, [1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 9.0]);
/// ```
pub fn rows_with_embedding(features: &[f32], dim: usize, embedding: &[f32]) -> Vec<f32> {
    debug_assert!(dim > 0 && features.len().is_multiple_of(dim) && !embedding.is_empty());
    let width = dim + embedding.len();
    let mut out = Vec::with_capacity(features.len() / dim.max(1) * width + width);
    for row in features.chunks(dim.max(1)) {
        out.extend_from_slice(row);
        out.resize(out.len() + embedding.len(), 0.0);
    }
    out.resize(out.len() + dim, 0.0);
    out.extend_from_slice(embedding);
    out
}

fn short(buf: &[u8], need: usize) -> Result<(), JobIoError> {
    if buf.len() < need {
        return Err(JobIoError::Short { need, have: buf.len() });
    }
    Ok(())
}

/// Writes `values` as little-endian f32 (EMBED and CLASSIFY outputs: the
/// embedding, or one logit per label); returns the bytes written, or
/// `None` if `buf` is too small.
pub fn put_f32s(buf: &mut [u8], values: &[f32]) -> Option<usize> {
    let n = values.len() * 4;
    let dst = buf.get_mut(..n)?;
    for (d, v) in dst.chunks_exact_mut(4).zip(values) {
        d.copy_from_slice(&v.to_le_bytes());
    }
    Some(n)
}

/// Reads little-endian f32s (whole words only).
pub fn f32s(buf: &[u8]) -> Vec<f32> {
    buf.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Header of a GENERATE output: the step's greedy token, then (if the
/// output range has room) the logits over the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOutput {
    /// Arg-max token of the last position.
    pub next_token: u32,
    /// Tokens in the session after this step.
    pub n_past: u32,
    /// Logits that follow the header (0 if the range had no room).
    pub n_logits: u32,
}

impl GenerateOutput {
    pub fn encode_into(&self, buf: &mut [u8]) -> Option<usize> {
        let h = buf.get_mut(..HEADER_BYTES)?;
        put_u32(h, 0, self.next_token);
        put_u32(h, 4, self.n_past);
        put_u32(h, 8, self.n_logits);
        put_u32(h, 12, 0);
        Some(HEADER_BYTES)
    }

    pub fn decode(buf: &[u8]) -> Result<GenerateOutput, JobIoError> {
        short(buf, HEADER_BYTES)?;
        Ok(GenerateOutput { next_token: le_u32(buf, 0), n_past: le_u32(buf, 4), n_logits: le_u32(buf, 8) })
    }
}

/// Header of a generation state range: how many tokens its KV cache holds,
/// and which job put the last of them there. The cache itself follows at
/// [`STATE_KV_OFFSET`].
///
/// `last_job` makes a step safe to run twice (a device that died after
/// writing the state may see the job again, see `HW_FLAG_RECOVERY`): a
/// step whose job id is `last_job` is a re-run, and starts where that job
/// started, `n_past` minus its input's tokens, rewriting the same KV rows
/// and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateHeader {
    pub n_past: u32,
    /// The driver's id of the job that wrote the header; 0 for none.
    pub last_job: u64,
}

/// Where the KV cache starts in a state range (page-aligned for the device).
pub const STATE_KV_OFFSET: usize = 4096;

impl StateHeader {
    /// A zeroed range is a fresh session.
    pub fn decode(buf: &[u8]) -> Result<StateHeader, JobIoError> {
        short(buf, STATE_KV_OFFSET)?;
        if buf[..HEADER_BYTES].iter().all(|&b| b == 0) {
            return Ok(StateHeader::default());
        }
        if buf[..4] != STATE_MAGIC {
            return Err(JobIoError::Magic("state"));
        }
        let last_job = u64::from(le_u32(buf, 8)) | u64::from(le_u32(buf, 12)) << 32;
        Ok(StateHeader { n_past: le_u32(buf, 4), last_job })
    }

    pub fn encode_into(&self, buf: &mut [u8]) -> Result<(), JobIoError> {
        short(buf, HEADER_BYTES)?;
        buf[..4].copy_from_slice(&STATE_MAGIC);
        put_u32(buf, 4, self.n_past);
        put_u32(buf, 8, self.last_job as u32);
        put_u32(buf, 12, (self.last_job >> 32) as u32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_round_trip() {
        for input in [
            Input::Tokens(vec![1, 2, 49151]),
            Input::Features { dim: 3, data: vec![0.5, -1.0, 2.0, 3.0, 4.0, 5.0] },
            Input::Mixed { dim: 2, data: vec![0.5, -1.0, 2.0, 3.0], tokens: vec![7, 0, 49151] },
        ] {
            let bytes = input.encode();
            assert_eq!(bytes.len(), input.encoded_len());
            assert_eq!(Input::decode(&bytes).unwrap(), input);
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let good = Input::Tokens(vec![7, 8]).encode();
        assert_eq!(Input::decode(&good[..20]), Err(JobIoError::Short { need: 24, have: 20 }));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Input::decode(&bad), Err(JobIoError::Magic("input")));
        let mut bad = good.clone();
        put_u32(&mut bad, 4, 9);
        assert_eq!(Input::decode(&bad), Err(JobIoError::Kind(9)));
        let mut huge = good;
        put_u32(&mut huge, 8, u32::MAX);
        assert!(matches!(Input::decode(&huge), Err(JobIoError::Short { .. })));
        assert_eq!(Input::decode(&Input::Tokens(vec![]).encode()), Err(JobIoError::Empty));
    }

    #[test]
    fn old_kinds_keep_their_bytes() {
        let t = Input::Tokens(vec![5]).encode();
        assert_eq!(t, [b"M4IN".as_slice(), &[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0]].concat());
        let f = Input::Features { dim: 1, data: vec![1.0] }.encode();
        assert_eq!(f, [b"M4IN".as_slice(), &[2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], &1f32.to_le_bytes()].concat());
    }

    #[test]
    fn mixed_inputs_are_laid_out_rows_then_token_count_then_tokens() {
        let m = Input::Mixed { dim: 2, data: vec![1.0, 2.0], tokens: vec![9, 10] };
        let b = m.encode();
        assert_eq!(b.len(), HEADER_BYTES + 4 * 5);
        assert_eq!((le_u32(&b, 4), le_u32(&b, 8), le_u32(&b, 12)), (3, 1, 2));
        assert_eq!(le_u32(&b, 16), 2);
        assert_eq!((f32::from_bits(le_u32(&b, 20)), f32::from_bits(le_u32(&b, 24))), (1.0, 2.0));
        assert_eq!((le_u32(&b, 28), le_u32(&b, 32)), (9, 10));
    }

    #[test]
    fn bad_mixed_inputs_are_refused() {
        let good = Input::Mixed { dim: 2, data: vec![1.0, 2.0, 3.0, 4.0], tokens: vec![9, 10, 11] }.encode();
        // Every truncation, down to the header and into the token count.
        for cut in 0..good.len() {
            assert!(matches!(Input::decode(&good[..cut]), Err(JobIoError::Short { .. })), "cut at {cut}");
        }
        assert_eq!(Input::decode(&good[..good.len() - 1]), Err(JobIoError::Short { need: good.len(), have: good.len() - 1 }));
        // A token count past the end, or one that overflows.
        let mut bad = good.clone();
        put_u32(&mut bad, 16, 4);
        assert_eq!(Input::decode(&bad), Err(JobIoError::Short { need: good.len() + 4, have: good.len() }));
        put_u32(&mut bad, 16, u32::MAX);
        assert!(matches!(Input::decode(&bad), Err(JobIoError::Short { .. })));
        let mut huge = good.clone();
        put_u32(&mut huge, 8, u32::MAX);
        put_u32(&mut huge, 12, u32::MAX);
        assert!(matches!(Input::decode(&huge), Err(JobIoError::Short { .. })));
        // Either part missing.
        let no_tokens = Input::Mixed { dim: 2, data: vec![1.0, 2.0], tokens: vec![] }.encode();
        assert_eq!(Input::decode(&no_tokens), Err(JobIoError::Empty));
        let no_rows = Input::Mixed { dim: 2, data: vec![], tokens: vec![1] }.encode();
        assert_eq!(Input::decode(&no_rows), Err(JobIoError::Empty));
        let no_width = Input::Mixed { dim: 0, data: vec![], tokens: vec![1] }.encode();
        assert_eq!(Input::decode(&no_width), Err(JobIoError::Empty));
        // Trailing bytes are the range's slack, as for the other kinds.
        let mut long = good.clone();
        long.extend([0xff; 8]);
        assert_eq!(Input::decode(&long), Input::decode(&good));
    }

    #[test]
    fn zeroed_state_is_a_fresh_session() {
        let mut s = vec![0u8; STATE_KV_OFFSET];
        assert_eq!(StateHeader::decode(&s).unwrap(), StateHeader { n_past: 0, last_job: 0 });
        StateHeader { n_past: 12, last_job: 0 }.encode_into(&mut s).unwrap();
        assert_eq!(StateHeader::decode(&s).unwrap().n_past, 12);
        let h = StateHeader { n_past: 3, last_job: 0x1_0000_0002 };
        h.encode_into(&mut s).unwrap();
        assert_eq!(StateHeader::decode(&s).unwrap(), h);
        s[0] = 0xff;
        assert_eq!(StateHeader::decode(&s), Err(JobIoError::Magic("state")));
    }
}
