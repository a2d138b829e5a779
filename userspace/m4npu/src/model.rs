//! The pinned foundation model as apps see it: its metadata (sub-models,
//! their shapes) and the tokenizers that turn text into its tokens, read
//! from the driver so that they always belong to the loaded firmware.

#[cfg(feature = "text")]
use std::collections::HashMap;
use std::os::fd::AsFd;
#[cfg(feature = "text")]
use std::sync::Mutex;

#[cfg(feature = "text")]
use tokenizers::Tokenizer;

use crate::{sys, Device, Error, Result};

/// The sub-model that embeds text with [`Device::embed`].
pub const TEXT_ENCODER: &str = "text_encoder";
/// The sub-model that generates text with [`Device::generate`].
pub const BACKBONE: &str = "backbone";

/// The loaded foundation model's metadata (`MODEL_META`).
///
/// ```no_run
/// let dev = m4npu::Device::open()?;
/// let meta = dev.model_meta()?;
/// let tok = meta.tokenizer(m4npu::model::TEXT_ENCODER)?;
/// println!("{:?}", tok.encode("hello world", true).map(|e| e.get_ids().to_vec()));
/// # Ok::<(), m4npu::Error>(())
/// ```
#[derive(Debug)]
pub struct ModelMeta {
    json: serde_json::Value,
    /// Tokenizers built so far, by sub-model.
    #[cfg(feature = "text")]
    tokenizers: Mutex<HashMap<String, Tokenizer>>,
}

/// What a job needs to know of a sub-model ([`ModelMeta::shape`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubModelShape {
    /// Width of hidden states and embeddings.
    pub d_model: usize,
    /// Vocabulary size: token ids lie below it.
    pub vocab: usize,
    /// Longest input (context) in tokens.
    pub max_tokens: usize,
    /// Bytes of KV cache per token of a generation session (0 if the
    /// sub-model does not generate).
    pub kv_bytes_per_token: usize,
}

impl ModelMeta {
    /// Reads the metadata from the driver, for [`Device::model_meta`].
    pub(crate) fn read(dev: &Device) -> Result<Self> {
        let buf = sys::model_meta(dev.as_fd()).map_err(|e| match e {
            nix::errno::Errno::ENODEV => Error::NoModel,
            source => Error::Ioctl { op: "MODEL_META", source },
        })?;
        let json = serde_json::from_slice(&buf).map_err(|e| Error::ModelMeta(format!("not JSON: {e}")))?;
        Ok(ModelMeta {
            json,
            #[cfg(feature = "text")]
            tokenizers: Mutex::default(),
        })
    }

    /// Sub-models the firmware has.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let has_encoder = dev.model_meta()?.sub_models().iter().any(|s| s == m4npu::model::TEXT_ENCODER);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn sub_models(&self) -> Vec<String> {
        self.json["submodels"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Shape of sub-model `name`.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let s = dev.model_meta()?.shape(m4npu::model::BACKBONE)?;
    /// println!("{} wide, {} tokens of context, {} KV bytes a token", s.d_model, s.max_tokens, s.kv_bytes_per_token);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn shape(&self, name: &str) -> Result<SubModelShape> {
        let s = &self.json["submodels"][name];
        if s.is_null() {
            return Err(Error::ModelMeta(format!("the foundation model has no sub-model {name:?}")));
        }
        let n = |k: &str| s[k].as_u64().map(|v| v as usize);
        let missing = |k: &str| Error::ModelMeta(format!("sub-model {name:?} lacks {k}"));
        Ok(SubModelShape {
            d_model: n("d_model").ok_or_else(|| missing("d_model"))?,
            vocab: n("vocab").ok_or_else(|| missing("vocab"))?,
            max_tokens: n("max_tokens").ok_or_else(|| missing("max_tokens"))?,
            kv_bytes_per_token: n("kv_bytes_per_token").unwrap_or(0),
        })
    }
}

#[cfg(feature = "text")]
impl ModelMeta {
    /// The tokenizer of sub-model `name`, exactly as the firmware carries it
    /// (padding off: jobs take inputs of any length).
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let tok = dev.model_meta()?.tokenizer(m4npu::model::BACKBONE)?;
    /// let ids = tok.encode("Once upon a time", false).map_err(|e| m4npu::Error::Tokenizer(e.to_string()))?;
    /// println!("{:?}", ids.get_ids());
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn tokenizer(&self, name: &str) -> Result<Tokenizer> {
        let mut cache = self.tokenizers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.get(name) {
            return Ok(t.clone());
        }
        let tok = self.build_tokenizer(name)?;
        cache.insert(name.to_string(), tok.clone());
        Ok(tok)
    }

    fn build_tokenizer(&self, name: &str) -> Result<Tokenizer> {
        let t = &self.json["tokenizers"][name];
        if t.is_null() {
            return Err(Error::ModelMeta(format!("the foundation model has no tokenizer for {name:?}")));
        }
        let mut tok: Tokenizer =
            t.to_string().parse().map_err(|e| Error::Tokenizer(format!("{name} tokenizer from the firmware: {e}")))?;
        tok.with_padding(None);
        Ok(tok)
    }

    /// Checks that `tok` is the firmware's tokenizer for `name`: an app that
    /// brings its own must tokenize exactly as the model expects.
    ///
    /// ```no_run
    /// use tokenizers::Tokenizer;
    /// let dev = m4npu::Device::open()?;
    /// let mine = Tokenizer::from_file("tokenizer.json").map_err(|e| m4npu::Error::Tokenizer(e.to_string()))?;
    /// dev.model_meta()?.check_tokenizer(m4npu::model::TEXT_ENCODER, &mine)?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn check_tokenizer(&self, name: &str, tok: &Tokenizer) -> Result<()> {
        let ours = self.tokenizer(name)?;
        let canon = |t: &Tokenizer| t.to_string(false).map_err(|e| Error::Tokenizer(e.to_string()));
        if canon(&ours)? != canon(tok)? {
            return Err(Error::Tokenizer(format!("this tokenizer is not the {name} tokenizer of the loaded foundation model")));
        }
        Ok(())
    }
}
