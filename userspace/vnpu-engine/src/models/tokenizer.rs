//! Text tokenizers built with the `tokenizers` crate: the SmolLM2 byte-level
//! BPE reconstructed from GGUF metadata (llama.cpp's "smollm" pre-tokenizer
//! = single digits + GPT-2 byte-level split), and BERT WordPiece from a
//! tokenizer.json.

use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

fn terr(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// GPT-2 style BPE from `tokenizer.ggml.*` metadata; tokens of type
    /// CONTROL (3) / USER_DEFINED (4) become special added tokens.
    pub fn from_gguf(g: &GgufFile) -> Result<TextTokenizer> {
        let model = g.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Unsupported(format!("tokenizer model {model}")));
        }
        let tokens = g.meta_strs("tokenizer.ggml.tokens")?;
        let merges = g.meta_strs("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match g
            .meta("tokenizer.ggml.token_type")
            .ok()
            .and_then(|v| v.as_array())
        {
            Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| terr(format!("bad merge `{m}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(terr)?;
        let mut tk = Tokenizer::new(bpe);
        let pre = g.meta_str("tokenizer.ggml.pre").unwrap_or("gpt2");
        let bl = ByteLevel::new(false, true, true);
        match pre {
            "smollm" => {
                tk.with_pre_tokenizer(Some(Sequence::new(vec![
                    PreTokenizerWrapper::Digits(Digits::new(true)),
                    PreTokenizerWrapper::ByteLevel(bl),
                ])));
            }
            "gpt2" | "default" => {
                tk.with_pre_tokenizer(Some(bl));
            }
            p => return Err(Error::Unsupported(format!("pre-tokenizer {p}"))),
        }
        tk.with_decoder(Some(ByteLevel::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == 3 || t == 4)
            .map(|(s, _)| AddedToken::from(s.to_string(), true))
            .collect();
        tk.add_special_tokens(&special);
        Ok(TextTokenizer { inner: tk })
    }

    /// tokenizer.json; padding is disabled (the engine takes ragged batches),
    /// truncation as configured in the file (128 for MiniLM).
    pub fn from_tokenizer_json(path: &std::path::Path) -> Result<TextTokenizer> {
        let mut tk = Tokenizer::from_file(path).map_err(terr)?;
        tk.with_padding(None);
        Ok(TextTokenizer { inner: tk })
    }

    /// A tokenizer from its `tokenizer.json` text (as [`TextTokenizer::to_json`]
    /// writes it, or as shipped with a model); padding disabled.
    pub fn from_json(json: &str) -> Result<TextTokenizer> {
        let mut tk: Tokenizer = json.parse().map_err(terr)?;
        tk.with_padding(None);
        Ok(TextTokenizer { inner: tk })
    }

    /// The whole tokenizer as `tokenizer.json` text, for apps that must
    /// tokenize exactly as the model expects (the firmware carries it).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(terr)
    }

    /// `add_special`: post-processor specials ([CLS]/[SEP] for BERT).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, add_special)
            .map_err(terr)?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(terr)
    }
}
