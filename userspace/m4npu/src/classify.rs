//! Classification through an app's adapter: text (tokenized for the
//! sub-model the adapter was trained on) or feature vectors (image patches,
//! audio frames, sensor samples) mapped in by the adapter's input
//! projection. One job per call; the answer is every label with its score.

use m4npu_format::adapter_meta::AdapterTask;
#[cfg(feature = "text")]
use m4npu_format::adapter_meta::SubModel;
use m4npu_format::job_io::{f32s, Input};

#[cfg(feature = "text")]
use crate::model::{BACKBONE, TEXT_ENCODER};
#[cfg(feature = "text")]
use crate::tasks::encode;
use crate::tasks::input_buffer;
use crate::{Adapter, Device, Error, JobDesc, Op, Result};

/// One label of a classification, best first in [`Device::classify`]'s answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    /// Position in the adapter's head.
    pub index: usize,
    /// The adapter's name for it (`"#<index>"` if it names none).
    pub name: String,
    /// Softmax probability.
    pub score: f32,
    /// The head's raw output.
    pub logit: f32,
}

/// Labels with softmax scores, best first: what [`Device::classify`] makes
/// of a CLASSIFY job's output (one logit per label), for apps that run the
/// job themselves.
///
/// ```
/// let names = ["negative".to_string(), "positive".to_string()];
/// let labels = m4npu::labels_from_logits(&[-1.0, 2.0], &names);
/// assert_eq!(labels[0].name, "positive");
/// assert_eq!(labels[0].index, 1);
/// assert!(labels[0].score > 0.95);
/// ```
pub fn labels_from_logits(logits: &[f32], names: &[String]) -> Vec<Label> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut out: Vec<Label> = logits
        .iter()
        .zip(&exp)
        .enumerate()
        .map(|(index, (&logit, e))| Label {
            index,
            name: names.get(index).cloned().unwrap_or_else(|| format!("#{index}")),
            score: e / sum,
            logit,
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    out
}

impl Device {
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
        let meta = self.classifier(adapter)?;
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
        self.classify_input(adapter, &meta.labels, &Input::Features { dim, data: features.to_vec() })
    }

    fn classifier<'a>(&self, adapter: &'a Adapter<'_>) -> Result<&'a m4npu_format::adapter_meta::AdapterMeta> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_softmaxed_and_sorted() {
        let names = vec!["neg".to_string(), "pos".to_string()];
        let l = labels_from_logits(&[0.0, 2.0, 1.0], &names);
        assert_eq!(l.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["pos", "#2", "neg"]);
        assert!((l.iter().map(|l| l.score).sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(l[0].score > l[1].score && l[1].score > l[2].score);
        assert_eq!((l[0].index, l[0].logit), (1, 2.0));
    }
}
