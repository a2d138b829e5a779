//! Task calls: text embeddings and text generation on the foundation model
//! alone (cargo feature `text`; embeddings of token ids without it), and
//! classification through an app's adapter, of text (tokenized for the
//! sub-model the adapter was trained on), of feature vectors (image
//! patches, audio frames, sensor samples) mapped in by the adapter's input
//! projection, or of both at once (an image and its caption). Text is tokenized with the firmware's own tokenizers; each
//! call is one job (generation: a prefill job, then one job per token with
//! the session's KV cache in a context buffer).

#[cfg(feature = "text")]
use m4npu_format::adapter_meta::SubModel;
use m4npu_format::adapter_meta::{AdapterMeta, AdapterTask};
use m4npu_format::job_io::{f32s, rows_with_embedding, Input};
#[cfg(feature = "text")]
use m4npu_format::job_io::{GenerateOutput, HEADER_BYTES, STATE_KV_OFFSET};
#[cfg(feature = "text")]
use tokenizers::Tokenizer;

use crate::classify::{labels_from_logits, Label};
#[cfg(feature = "text")]
use crate::model::{BACKBONE, TEXT_ENCODER};
use crate::{Adapter, Buffer, Device, Error, JobDesc, Op, Result};

fn input_buffer<'d>(dev: &'d Device, input: &Input) -> Result<(Buffer<'d>, usize)> {
    let len = input.encoded_len();
    let mut buf = dev.alloc(len)?;
    input.encode_into(buf.as_mut_slice()).map_err(|e| Error::InvalidJob(e.to_string()))?;
    Ok((buf, len))
}

#[cfg(feature = "text")]
fn encode(tok: &Tokenizer, text: &str, special: bool) -> Result<Vec<u32>> {
    let enc = tok.encode(text, special).map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

// The task calls, apart from device.rs: they are built on the device's
// own calls (alloc, run) and the model's tokenizers, where those map onto
// the driver's ioctls one to one.
impl Device {
    #[cfg(feature = "text")]
    /// Sentence embedding of `text` by the foundation model's text encoder
    /// (mean-pooled and L2-normalised).
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let v = dev.embed("The cat sits on the mat.")?;
    /// println!("{} dimensions", v.len());
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let meta = self.model_meta()?;
        let shape = meta.shape(TEXT_ENCODER)?;
        let mut ids = encode(&meta.tokenizer(TEXT_ENCODER)?, text, true)?;
        ids.truncate(shape.max_tokens);
        self.embed_tokens(&ids, shape.d_model)
    }

    /// [`Device::embed`] on token ids of the text encoder's tokenizer, for
    /// apps that tokenize themselves; `d_model` is the encoder's width.
    ///
    /// ```no_run
    /// use m4npu::model::TEXT_ENCODER;
    /// let dev = m4npu::Device::open()?;
    /// let meta = dev.model_meta()?;
    /// let enc = meta.tokenizer(TEXT_ENCODER)?.encode("hello world", true).unwrap();
    /// let v = dev.embed_tokens(enc.get_ids(), meta.shape(TEXT_ENCODER)?.d_model)?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn embed_tokens(&self, ids: &[u32], d_model: usize) -> Result<Vec<f32>> {
        let (input, len) = input_buffer(self, &Input::Tokens(ids.to_vec()))?;
        let output = self.alloc(d_model * 4)?;
        let n = self.run(&JobDesc::new(Op::Embed).input(&input, 0, len).output(&output, 0, d_model * 4))?;
        Ok(f32s(&output.as_slice()[..n]))
    }

    #[cfg(feature = "text")]
    /// Starts a generation session on the backbone with room for
    /// `max_tokens` tokens (prompt and generated).
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let mut s = dev.generate("The capital of France is", 32)?;
    /// let text: String = s.by_ref().take(8).collect::<m4npu::Result<_>>()?;
    /// println!("{text}");
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn generate(&self, prompt: &str, max_tokens: usize) -> Result<Session<'_>> {
        self.start_session(None, prompt, max_tokens)
    }

    #[cfg(feature = "text")]
    /// [`Device::generate`] with an adapter's LoRA on the backbone.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let style = dev.load_adapter_file("style.m4a")?;
    /// for piece in dev.generate_with(&style, "Once upon a time", 48)? {
    ///     print!("{}", piece?);
    /// }
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn generate_with<'d>(&'d self, adapter: &'d Adapter<'d>, prompt: &str, max_tokens: usize) -> Result<Session<'d>> {
        self.start_session(Some(adapter), prompt, max_tokens)
    }

    #[cfg(feature = "text")]
    fn start_session<'d>(&'d self, adapter: Option<&'d Adapter<'d>>, prompt: &str, max_tokens: usize) -> Result<Session<'d>> {
        let meta = self.model_meta()?;
        let shape = meta.shape(BACKBONE)?;
        let tok = meta.tokenizer(BACKBONE)?;
        let prompt = encode(&tok, prompt, false)?;
        let mut s = Session::new(self, tok, shape.vocab, shape.kv_bytes_per_token, max_tokens.min(shape.max_tokens), prompt)?;
        s.adapter = adapter;
        Ok(s)
    }

    #[cfg(feature = "text")]
    /// Classifies `text` with a classify adapter.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let sentiment = dev.load_adapter_file("sentiment.m4a")?;
    /// let best = &dev.classify(&sentiment, "A triumph of a film.")?[0];
    /// println!("{} ({:.2})", best.name, best.score);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn classify(&self, adapter: &Adapter<'_>, text: &str) -> Result<Vec<Label>> {
        let meta = self.classifier(adapter)?;
        if meta.text_embedding.is_some() {
            return Err(Error::InvalidJob(format!(
                "adapter {} needs feature vectors as well as the text (classify_features_and_text)",
                adapter.name()
            )));
        }
        if meta.feature_dim.is_some() {
            return Err(Error::InvalidJob(format!("adapter {} takes feature vectors, not text", adapter.name())));
        }
        let model = self.model_meta()?;
        let (sub, special) = match meta.submodel {
            SubModel::TextEncoder => (TEXT_ENCODER, true),
            SubModel::Backbone => (BACKBONE, false),
        };
        let mut ids = encode(&model.tokenizer(sub)?, text, special)?;
        ids.truncate(model.shape(sub)?.max_tokens);
        self.classify_input(adapter, &meta.labels, &Input::Tokens(ids))
    }

    /// Classifies a sequence of feature vectors, `features.len() / dim`
    /// rows of `dim` values each, with an adapter that has an input
    /// projection for them.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let digits = dev.load_adapter_file("digits.m4a")?;
    /// let image = [0.0f32; 64]; // 8 rows of 8 pixels
    /// let best = &dev.classify_features(&digits, &image, 8)?[0];
    /// println!("digit {}", best.name);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn classify_features(&self, adapter: &Adapter<'_>, features: &[f32], dim: usize) -> Result<Vec<Label>> {
        let meta = self.feature_classifier(adapter, features, dim)?;
        self.classify_input(adapter, &meta.labels, &Input::Features { dim, data: features.to_vec() })
    }

    /// Classifies feature vectors followed by token ids of the backbone's
    /// tokenizer, one sequence (an image, then its caption), with a
    /// backbone adapter that has an input projection for the vectors; for
    /// apps that tokenize themselves. No tokens: [`Device::classify_features`].
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// // An adapter trained with `m4-train train <task> --text tokens`.
    /// let captions = dev.load_adapter_file("captions-in-tokens.m4a")?;
    /// let image = [0.0f32; 784]; // one row: the whole image
    /// let best = &dev.classify_features_and_tokens(&captions, &image, 784, &[504, 5765])?[0];
    /// println!("{}", best.name);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn classify_features_and_tokens(&self, adapter: &Adapter<'_>, features: &[f32], dim: usize, tokens: &[u32]) -> Result<Vec<Label>> {
        let meta = self.feature_classifier(adapter, features, dim)?;
        if meta.submodel != m4npu_format::adapter_meta::SubModel::Backbone {
            return Err(Error::InvalidJob(format!("adapter {} is not on the backbone, whose tokens these are", adapter.name())));
        }
        let input = match tokens {
            [] => Input::Features { dim, data: features.to_vec() },
            _ => Input::Mixed { dim, data: features.to_vec(), tokens: tokens.to_vec() },
        };
        self.classify_input(adapter, &meta.labels, &input)
    }

    /// Classifies feature vectors together with a text's sentence
    /// embedding from the text encoder ([`Device::embed`] or
    /// [`Device::embed_tokens`]), with an adapter whose metadata sets
    /// `text_embedding`: the rows and the embedding as
    /// [`m4npu_format::job_io::rows_with_embedding`] lays them out, one
    /// CLASSIFY job.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let captions = dev.load_adapter_file("captionmatch.m4a")?;
    /// let image = [0.0f32; 784];
    /// let caption = dev.embed("a pair of sneakers")?;
    /// let best = &dev.classify_features_and_embedding(&captions, &image, 784, &caption)?[0];
    /// println!("{}", best.name);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn classify_features_and_embedding(&self, adapter: &Adapter<'_>, features: &[f32], dim: usize, embedding: &[f32]) -> Result<Vec<Label>> {
        let (meta, w) = self.embedding_classifier(adapter, features, dim)?;
        if embedding.len() != w as usize {
            return Err(Error::InvalidJob(format!("a text embedding of {} values, not the adapter's {w}", embedding.len())));
        }
        let data = rows_with_embedding(features, dim, embedding);
        self.classify_input(adapter, &meta.labels, &Input::Features { dim: dim + embedding.len(), data })
    }

    /// A classifier that takes `features` as rows of `dim` and a text
    /// embedding, and the embedding's width.
    fn embedding_classifier<'a>(&self, adapter: &'a Adapter<'_>, features: &[f32], dim: usize) -> Result<(&'a AdapterMeta, u32)> {
        let meta = self.classifier(adapter)?;
        let Some(w) = meta.text_embedding else {
            return Err(Error::InvalidJob(format!("adapter {} takes no text embedding", adapter.name())));
        };
        let Some(rows) = meta.row_dim() else {
            return Err(Error::InvalidJob(format!(
                "adapter {}: its text_embedding ({w}) leaves no feature columns in feature_dim {:?}",
                adapter.name(),
                meta.feature_dim
            )));
        };
        if u32::try_from(dim) != Ok(rows) {
            return Err(Error::InvalidJob(format!(
                "adapter {} takes {rows}-wide feature vectors and a {w}-wide text embedding, not {dim}-wide vectors",
                adapter.name()
            )));
        }
        if features.is_empty() || !features.len().is_multiple_of(dim) {
            return Err(Error::InvalidJob(format!("{} values are not rows of {dim}", features.len())));
        }
        Ok((meta, w))
    }

    #[cfg(feature = "text")]
    /// Classifies feature vectors and a text, one input (an image and its
    /// caption), as the adapter takes the text:
    /// - as the text encoder's sentence embedding if its metadata sets
    ///   `text_embedding`: an EMBED job, then
    ///   [`Device::classify_features_and_embedding`];
    /// - otherwise in the backbone's tokens (no special tokens, as
    ///   [`Device::classify`] does for the backbone), cut to what the
    ///   context holds after the rows: [`Device::classify_features_and_tokens`].
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let captions = dev.load_adapter_file("captionmatch.m4a")?;
    /// let image = [0.0f32; 784];
    /// let best = &dev.classify_features_and_text(&captions, &image, 784, "a pair of sneakers")?[0];
    /// println!("{}", best.name);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn classify_features_and_text(&self, adapter: &Adapter<'_>, features: &[f32], dim: usize, text: &str) -> Result<Vec<Label>> {
        if adapter.meta().is_some_and(|m| m.text_embedding.is_some()) {
            // The rows checked before the EMBED job, not after it.
            self.embedding_classifier(adapter, features, dim)?;
            return self.classify_features_and_embedding(adapter, features, dim, &self.embed(text)?);
        }
        let model = self.model_meta()?;
        let mut ids = encode(&model.tokenizer(BACKBONE)?, text, false)?;
        ids.truncate(model.shape(BACKBONE)?.max_tokens.saturating_sub(features.len() / dim.max(1)));
        self.classify_features_and_tokens(adapter, features, dim, &ids)
    }

    /// A classifier whose input projection takes `features` as rows of `dim`.
    fn feature_classifier<'a>(&self, adapter: &'a Adapter<'_>, features: &[f32], dim: usize) -> Result<&'a AdapterMeta> {
        let meta = self.classifier(adapter)?;
        if meta.text_embedding.is_some() {
            return Err(Error::InvalidJob(format!(
                "adapter {} needs a text as well as feature vectors (classify_features_and_text; \
                 `m4 run classify --features FILE TEXT`)",
                adapter.name()
            )));
        }
        match meta.feature_dim {
            Some(d) if d as usize == dim => {}
            Some(d) => {
                return Err(Error::InvalidJob(format!("adapter {} takes {d}-wide feature vectors, not {dim}", adapter.name())))
            }
            None => return Err(Error::InvalidJob(format!("adapter {} takes text, not feature vectors", adapter.name()))),
        }
        if dim == 0 || features.is_empty() || !features.len().is_multiple_of(dim) {
            return Err(Error::InvalidJob(format!("{} values are not rows of {dim}", features.len())));
        }
        Ok(meta)
    }

    fn classifier<'a>(&self, adapter: &'a Adapter<'_>) -> Result<&'a AdapterMeta> {
        let meta = adapter.require_meta("classify")?;
        if meta.task != AdapterTask::Classify {
            return Err(Error::InvalidJob(format!("adapter {} is a {:?} adapter, not a classifier", adapter.name(), meta.task)));
        }
        Ok(meta)
    }

    /// One CLASSIFY job on an encoded input; labels best first.
    fn classify_input(&self, adapter: &Adapter<'_>, names: &[String], input: &Input) -> Result<Vec<Label>> {
        let (inbuf, len) = input_buffer(self, input)?;
        // Room for the head's width even if the labels are unnamed.
        let out_len = 4 * names.len().max(1024);
        let output = self.alloc(out_len)?;
        let job = JobDesc::new(Op::Classify).adapter(adapter).input(&inbuf, 0, len).output(&output, 0, out_len);
        let n = self.run(&job)?;
        Ok(labels_from_logits(&f32s(&output.as_slice()[..n]), names))
    }
}

#[cfg(feature = "text")]
/// A generation session: an iterator over the generated text, a piece per
/// token, greedy. Its KV cache lives in a buffer of the context. It ends
/// at an end-of-text (or other special) token, when its room
/// ([`Device::generate`]'s `max_tokens`) is used up, or after a failed job.
///
/// ```no_run
/// use std::io::Write;
/// let dev = m4npu::Device::open()?;
/// let mut session = dev.generate("Once upon a time", 64)?;
/// for piece in session.by_ref() {
///     print!("{}", piece?);
///     std::io::stdout().flush().ok();
/// }
/// println!("\n{} tokens", session.tokens().len());
/// # Ok::<(), m4npu::Error>(())
/// ```
pub struct Session<'d> {
    dev: &'d Device,
    adapter: Option<&'d Adapter<'d>>,
    tok: Tokenizer,
    /// Sized for the prompt; each later step feeds one token through it.
    input: Buffer<'d>,
    state: Buffer<'d>,
    output: Buffer<'d>,
    /// Tokens to feed next: the prompt, then each generated token.
    next: Vec<u32>,
    generated: Vec<u32>,
    text_len: usize,
    left: usize,
}

#[cfg(feature = "text")]
impl<'d> Session<'d> {
    fn new(
        dev: &'d Device,
        tok: Tokenizer,
        vocab: usize,
        kv_per_token: usize,
        max_tokens: usize,
        prompt: Vec<u32>,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::InvalidJob("the prompt is empty".into()));
        }
        if prompt.len() >= max_tokens {
            return Err(Error::InvalidJob(format!("a {}-token prompt leaves no room in {max_tokens} tokens", prompt.len())));
        }
        let input = dev.alloc(Input::Tokens(prompt.clone()).encoded_len())?;
        let state = dev.alloc(STATE_KV_OFFSET + kv_per_token * max_tokens)?;
        let output = dev.alloc(HEADER_BYTES + 4 * vocab)?;
        let left = max_tokens - prompt.len();
        Ok(Session { dev, adapter: None, tok, input, state, output, next: prompt, generated: Vec::new(), text_len: 0, left })
    }

    /// One job: feeds the pending tokens, returns the greedy next token.
    fn step(&mut self) -> Result<u32> {
        let len = Input::Tokens(std::mem::take(&mut self.next))
            .encode_into(self.input.as_mut_slice())
            .map_err(|e| Error::InvalidJob(e.to_string()))?;
        let mut job = JobDesc::new(Op::Generate)
            .input(&self.input, 0, len)
            .output(&self.output, 0, self.output.len())
            .state(&self.state, 0, self.state.len());
        if let Some(a) = self.adapter {
            job = job.adapter(a);
        }
        let n = self.dev.run(&job)?;
        let out = GenerateOutput::decode(&self.output.as_slice()[..n]).map_err(|e| Error::InvalidJob(e.to_string()))?;
        Ok(out.next_token)
    }

    /// Token ids generated so far (the prompt's not included).
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let mut s = dev.generate("1, 2, 3,", 16)?;
    /// let first = s.next().transpose()?;
    /// assert_eq!(s.tokens().len(), first.is_some() as usize);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn tokens(&self) -> &[u32] {
        &self.generated
    }
}

#[cfg(feature = "text")]
impl Iterator for Session<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let token = match self.step() {
            Ok(t) => t,
            Err(e) => {
                self.left = 0;
                return Some(Err(e));
            }
        };
        if self.tok.get_added_vocabulary().simple_id_to_token(token).is_some() {
            // An end-of-text (or other special) token ends the session.
            self.left = 0;
            return None;
        }
        self.generated.push(token);
        self.next = vec![token];
        // Decode the whole text so that multi-token characters come out whole.
        let text = match self.tok.decode(&self.generated, true) {
            Ok(t) => t,
            Err(e) => return Some(Err(Error::Tokenizer(e.to_string()))),
        };
        let piece = text.get(self.text_len..).unwrap_or("").to_string();
        self.text_len = text.len();
        Some(Ok(piece))
    }
}
