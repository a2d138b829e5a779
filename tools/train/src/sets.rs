//! The two benchmark tasks that need no adapter, on small sets written for
//! the benchmark (tools/eaibench/sets): sentence retrieval with the text
//! encoder's embeddings (against TF-IDF), and short questions answered by
//! the backbone's own LM head. Both run as jobs through vnpud's code.

use std::collections::HashMap;
use std::path::Path;

use m4npu::Op;
use m4npu_format::job_io::{f32s, GenerateOutput, Input, HEADER_BYTES, STATE_KV_OFFSET};
use serde::Deserialize;
use vnpud::foundation::Foundation;

use crate::eval::FirmwareFile;

#[derive(Deserialize)]
struct Pairs {
    pairs: Vec<[String; 2]>,
}

#[derive(Deserialize)]
struct Qa {
    items: Vec<[String; 2]>,
}

fn read<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T, String> {
    serde_json::from_slice(&std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?).map_err(|e| format!("{}: {e}", p.display()))
}

/// Retrieval accuracy at 1: each sentence's nearest other sentence is its partner.
fn retrieval(vecs: &[Vec<f32>]) -> f64 {
    let cos = |a: &[f32], b: &[f32]| {
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (n(a) * n(b))
    };
    let hits = (0..vecs.len())
        .filter(|&i| {
            let best = (0..vecs.len()).filter(|&j| j != i).max_by(|&a, &b| cos(&vecs[i], &vecs[a]).total_cmp(&cos(&vecs[i], &vecs[b])));
            best == Some(i ^ 1)
        })
        .count();
    hits as f64 / vecs.len() as f64
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// TF-IDF vectors over the set's own vocabulary, and that model's bytes
/// (idf weights plus the vocabulary's strings, as baselines.py counts).
fn tfidf(texts: &[String]) -> (Vec<Vec<f32>>, u64) {
    let mut vocab: HashMap<String, usize> = HashMap::new();
    let docs: Vec<Vec<String>> = texts.iter().map(|t| words(t)).collect();
    let mut df: Vec<usize> = Vec::new();
    for d in &docs {
        let mut seen = std::collections::HashSet::new();
        for w in d {
            let n = vocab.len();
            let id = *vocab.entry(w.clone()).or_insert(n);
            if id == df.len() {
                df.push(0);
            }
            if seen.insert(id) {
                df[id] += 1;
            }
        }
    }
    let n = docs.len() as f32;
    let idf: Vec<f32> = df.iter().map(|&c| ((1.0 + n) / (1.0 + c as f32)).ln() + 1.0).collect();
    let vecs = docs
        .iter()
        .map(|d| {
            let mut v = vec![0f32; vocab.len()];
            d.iter().for_each(|w| v[vocab[w]] += idf[vocab[w]]);
            v
        })
        .collect();
    let bytes = 4 * vocab.len() as u64 + vocab.keys().map(|w| w.len() as u64 + 1).sum::<u64>();
    (vecs, bytes)
}

pub struct Similarity {
    pub m4: f64,
    pub tfidf: f64,
    pub tfidf_bytes: u64,
    pub sentences: usize,
}

pub fn similarity(fw: &FirmwareFile, model: &Foundation<'_>, sets: &Path) -> Result<Similarity, String> {
    let p: Pairs = read(&sets.join("paraphrases.json"))?;
    let texts: Vec<String> = p.pairs.into_iter().flatten().collect();
    let tok = fw.tokenizer("text_encoder")?;
    let mut vecs = Vec::new();
    for t in &texts {
        let input = Input::Tokens(tok.encode(t, true).map_err(|e| e.to_string())?).encode();
        let mut out = vec![0u8; 4096];
        let jb = m4npu_hw::JobBuffers { input: &input, output: &mut out, state: None, adapter: None };
        let n = vnpud::execute::run(model, Some(Op::Embed), jb).map_err(|e| format!("embedding {t:?}: {e}"))?;
        vecs.push(f32s(&out[..n]));
    }
    let (tv, tfidf_bytes) = tfidf(&texts);
    Ok(Similarity { m4: retrieval(&vecs), tfidf: retrieval(&tv), tfidf_bytes, sentences: texts.len() })
}

/// Exact match of greedy answers (at most `max_new` tokens) to the set's questions.
pub fn qa(fw: &FirmwareFile, model: &Foundation<'_>, sets: &Path, max_new: usize) -> Result<(usize, usize, Vec<String>), String> {
    let set: Qa = read(&sets.join("qa.json"))?;
    let tok = fw.tokenizer("backbone")?;
    let llama = model.backbone.as_ref().ok_or("the firmware has no backbone")?;
    let stops: Vec<u32> = ["<|im_end|>", "<|endoftext|>"]
        .iter()
        .filter_map(|s| tok.encode(s, false).ok().filter(|ids| ids.len() == 1).map(|ids| ids[0]))
        .collect();
    let mut right = 0;
    let mut answers = Vec::new();
    for [q, want] in &set.items {
        let prompt = format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n");
        let mut next = tok.encode(&prompt, false).map_err(|e| e.to_string())?;
        let mut state = vec![0u8; STATE_KV_OFFSET + llama.cfg.kv_bytes(next.len() + max_new)];
        let mut out = vec![0u8; HEADER_BYTES];
        let mut generated = Vec::new();
        for _ in 0..max_new {
            let input = Input::Tokens(std::mem::take(&mut next)).encode();
            let jb = m4npu_hw::JobBuffers { input: &input, output: &mut out, state: Some(&mut state), adapter: None };
            let n = vnpud::execute::run(model, Some(Op::Generate), jb).map_err(|e| format!("{q}: {e}"))?;
            let t = GenerateOutput::decode(&out[..n]).map_err(|e| e.to_string())?.next_token;
            if stops.contains(&t) {
                break;
            }
            generated.push(t);
            next = vec![t];
        }
        let answer = tok.decode(&generated).map_err(|e| e.to_string())?;
        let lower = answer.to_lowercase();
        if want.split('|').any(|w| lower.contains(&w.to_lowercase())) {
            right += 1;
        }
        answers.push(format!("{q} -> {}", answer.trim()));
    }
    Ok((right, set.items.len(), answers))
}
