//! What a classification answers: every label of the adapter's head with
//! its score, from a CLASSIFY job's logits ([`Device::classify`],
//! [`Device::classify_features`] and [`Device::classify_features_and_text`]
//! run the job).

#[cfg(doc)]
use crate::Device;

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
