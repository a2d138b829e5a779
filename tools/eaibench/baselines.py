#!/usr/bin/env python3
"""Conventional task-specific baselines for the eaibench tasks.

    python3 tools/eaibench/baselines.py [--tasks a,b,...]

Reads what fetch.py wrote to ${M4NPU_CACHE:-~/.cache/m4npu}/eaibench/<task>/,
trains on the same train split, scores the test split, writes
eaibench/baselines.json and prints a Markdown table.

Candidates (all scikit-learn, fixed seeds):
  text      TF-IDF (word 1-2 grams, sublinear tf, vocabulary capped at
            20000 terms) + logistic regression, C in {1, 4, 16}
  features  flattened x (T*D), per-feature standardization, then
            logistic regression (C in {0.1, 1}) or an MLP (one hidden layer
            of 128 ReLU units, Adam, L2 1e-3); for sensor and audio tasks
            also logistic regression (C in {0.1, 1}) on 8 summary statistics
            per channel (mean, std, min, max, 25th/75th percentile, mean
            |diff|, std of diff; no parameters of its own)
  tabular   as features (x is [n, features, 1]): logistic regression or the MLP
  image+text (captionmatch) [standardized pixels, TF-IDF of the caption's
            words] -> MLP(128), or logistic regression (C in {0.1, 1}) on
            the outer product of the image's 16 whitened PCA components
            (plus a constant) and the caption's TF-IDF word vector (a
            bilinear image-caption score)
Model selection never looks at the test split: with >= 1000 training samples
a stratified 20% hold-out of train, otherwise stratified 5-fold
cross-validation on train; ties go to the earlier (smaller) candidate.
Only the chosen candidate is refit on the whole train split and scored,
once, on test. A task's "strong" entry (strong.py's CNN / 1-D CNN /
fine-tuned MiniLM) is kept when its classical entry is rewritten. BLAS/OpenMP run single-threaded (threadpoolctl): faster on
2 shared cores and bit-for-bit repeatable.

Size of the deployed model ("bytes"), float32 parameters x 4:
  logistic regression  4 * (K'*F + K')            K' = 1 if 2 classes else K
  MLP                  4 * sum over layers (in*out + out), last layer K' units
  standardization      4 * 2F                      (mean and scale per feature)
  TF-IDF               4 * V (idf weights) + sum over the V terms of
                       (UTF-8 length + 1) bytes   (the vocabulary strings)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch import TASKS, cache_root, read_jsonl, read_safetensors  # noqa: E402

import sklearn  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

SEED = 0
TFIDF_MAX_FEATURES = 20000
MLP_HIDDEN = 128


def text_candidates():
    def mk(C):
        return lambda: make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=TFIDF_MAX_FEATURES,
                            lowercase=True, strip_accents="unicode"),
            LogisticRegression(C=C, max_iter=2000))
    return [(f"tfidf(1-2gram,<= {TFIDF_MAX_FEATURES})+logreg(C={C})", mk(C)) for C in (1, 4, 16)]


def summary_stats(x, T, D):
    """[n, T*D] -> [n, 8*D]: per channel mean, std, min, max, 25th and 75th
    percentile, mean |first difference|, std of the first difference."""
    x = x.reshape(len(x), T, D)
    d = np.diff(x, axis=1)
    return np.concatenate([x.mean(1), x.std(1), x.min(1), x.max(1), np.percentile(x, 25, axis=1),
                           np.percentile(x, 75, axis=1), np.abs(d).mean(1), d.std(1)], axis=1)


def feature_candidates(modality, shape):
    def lr(C):
        return lambda: make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))

    def mlp():
        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(MLP_HIDDEN,), alpha=1e-3, max_iter=300, random_state=SEED))

    def stats_lr(C):
        return lambda: make_pipeline(
            FunctionTransformer(summary_stats, kw_args={"T": shape[0], "D": shape[1]}),
            StandardScaler(), LogisticRegression(C=C, max_iter=3000))
    c = [("logreg(C=0.1)", lr(0.1)), ("logreg(C=1)", lr(1.0)), (f"mlp({MLP_HIDDEN})", mlp)]
    if modality in ("sensor", "audio"):  # time series: also a bag of per-channel statistics
        c += [(f"stats(8x{shape[1]})+logreg(C={C})", stats_lr(C)) for C in (0.1, 1.0)]
    return c


class PairModel:
    """captionmatch (image + caption -> match?). X is a list of (pixels [784], caption).
    kind "concat": [standardized pixels, TF-IDF of the caption's words] -> MLP(128);
    kind "bilinear": outer product of [PCA(pixels) components, 1] and the caption's TF-IDF
    word vector -> logistic regression, i.e. score = [pca(img), 1]^T W tfidf(caption)."""

    def __init__(self, kind, C=1.0, n_pca=16):
        self.kind, self.C, self.n_pca = kind, C, n_pca

    def _parts(self, X, fit):
        img = np.stack([np.asarray(a, dtype=np.float64) for a, _ in X])
        txt = [t for _, t in X]
        if fit:
            self.tfidf = TfidfVectorizer(ngram_range=(1, 1), sublinear_tf=True, lowercase=True,
                                         strip_accents="unicode", token_pattern=r"(?u)\b[\w-]+\b")
            self.tfidf.fit(txt)
        return img, self.tfidf.transform(txt).toarray()

    def _features(self, X, fit=False):
        img, t = self._parts(X, fit)
        if self.kind == "concat":
            if fit:
                self.scaler = StandardScaler().fit(img)
            return np.concatenate([self.scaler.transform(img), t], axis=1)
        if fit:
            self.pca = PCA(n_components=self.n_pca, random_state=SEED).fit(img)
        z = self.pca.transform(img)
        z = np.concatenate([z / np.sqrt(self.pca.explained_variance_), np.ones((len(z), 1))], axis=1)
        return (z[:, :, None] * t[:, None, :]).reshape(len(z), -1)

    def fit(self, X, y):
        f = self._features(X, fit=True)
        if self.kind == "concat":
            self.clf = MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN,), alpha=1e-3, max_iter=300, random_state=SEED)
        else:
            self.clf = LogisticRegression(C=self.C, max_iter=3000)
        self.clf.fit(f, y)
        return self

    def predict(self, X):
        return self.clf.predict(self._features(X))

    def floats_and_extra(self):
        f, e = model_floats_and_bytes(make_pipeline(self.tfidf, self.clf))
        if self.kind == "concat":
            f += 2 * self.scaler.n_features_in_
        else:
            f += self.pca.components_.size + self.pca.mean_.size + self.n_pca  # + the whitening scales
        return f, e


def pair_candidates():
    return [("concat(pixels, tfidf words)+mlp(128)", lambda: PairModel("concat")),
            ("bilinear(pca16(pixels) x tfidf words)+logreg(C=0.1)", lambda: PairModel("bilinear", 0.1)),
            ("bilinear(pca16(pixels) x tfidf words)+logreg(C=1)", lambda: PairModel("bilinear", 1.0))]


def model_floats_and_bytes(pipe) -> tuple[int, int]:
    if isinstance(pipe, PairModel):
        f, e = pipe.floats_and_extra()
        return f, 4 * f + e
    floats, extra = 0, 0
    for _, step in pipe.steps:
        if isinstance(step, StandardScaler):
            floats += 2 * step.n_features_in_
        elif isinstance(step, FunctionTransformer):
            pass  # fixed feature extraction, no parameters
        elif isinstance(step, TfidfVectorizer):
            floats += len(step.idf_)
            extra += sum(len(t.encode("utf-8")) + 1 for t in step.vocabulary_)
        elif isinstance(step, LogisticRegression):
            floats += step.coef_.size + step.intercept_.size
        elif isinstance(step, MLPClassifier):
            floats += sum(w.size for w in step.coefs_) + sum(b.size for b in step.intercepts_)
        else:
            raise TypeError(type(step))
    return floats, 4 * floats + extra


def select_and_fit(cands, xtr, ytr):
    n = len(ytr)
    scores = {}
    if n >= 1000:
        idx = np.arange(n)
        a, b = train_test_split(idx, test_size=0.2, stratify=ytr, random_state=SEED)
        splits = [(a, b)]
        how = "stratified 20% hold-out of train"
    else:
        k = int(min(5, np.bincount(ytr).min()))
        splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=SEED).split(np.zeros(n), ytr))
        how = f"stratified {k}-fold CV on train"
    sub = lambda x, i: [x[j] for j in i] if isinstance(x, list) else x[i]
    for i, (name, mk) in enumerate(cands):
        accs = []
        for a, b in splits:
            m = mk().fit(sub(xtr, a), ytr[a])
            accs.append(float(np.mean(m.predict(sub(xtr, b)) == ytr[b])))
        scores[name] = float(np.mean(accs))
    # best validation accuracy; ties -> the earlier (smaller) candidate
    order = [n for n, _ in cands]
    best = max(order, key=lambda k: (round(scores[k], 6), -order.index(k)))
    model = dict(cands)[best]().fit(xtr, ytr)
    return best, scores, model, how


def run_task(task: str) -> dict:
    d = cache_root() / task
    meta = json.loads((d / "meta.json").read_text())
    if meta["input"] == "text":
        xtr, ytr = read_jsonl(d / "train.jsonl")
        xte, yte = read_jsonl(d / "test.jsonl")
        cands = text_candidates()
    elif meta["input"] == "features+text":  # captionmatch: (image, caption) pairs
        xtr, xte = [], []
        for split, xs in (("train", xtr), ("test", xte)):
            st = read_safetensors(d / f"{split}.safetensors")
            texts, y = read_jsonl(d / f"{split}.jsonl")
            assert np.array_equal(y, st["y"]), "jsonl labels differ from the safetensors ones"
            xs.extend(zip(st["x"].reshape(len(y), -1), texts))
            if split == "train":
                ytr = y
            else:
                yte = y
        cands = pair_candidates()
    else:
        tr, te = read_safetensors(d / "train.safetensors"), read_safetensors(d / "test.safetensors")
        xtr, ytr = tr["x"].reshape(len(tr["x"]), -1), tr["y"]
        xte, yte = te["x"].reshape(len(te["x"]), -1), te["y"]
        cands = feature_candidates(meta["modality"], meta["shape"])
    t0 = time.time()
    best, val, model, how = select_and_fit(cands, xtr, ytr)
    acc = float(np.mean(model.predict(xte) == yte))
    floats, nbytes = model_floats_and_bytes(model)
    return {
        "model": best,
        "accuracy": round(acc, 4),
        "bytes": int(nbytes),
        "float_params": int(floats),
        "n_train": int(len(ytr)),
        "n_test": int(len(yte)),
        "modality": meta["modality"],
        "shape": meta["shape"],
        "majority_accuracy": round(float(np.bincount(yte).max() / len(yte)), 4),
        "selection": how,
        "validation_accuracy": {k: round(v, 4) for k, v in val.items()},
        "sklearn": sklearn.__version__,
    }, time.time() - t0


def fmt_bytes(n: int) -> str:
    for unit, s in (("MB", 1e6), ("kB", 1e3)):
        if n >= s:
            return f"{n / s:.1f} {unit}"
    return f"{n} B"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=None, help="comma-separated subset (default: every task with data)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    if args.tasks is None:
        tasks = [t for t in TASKS if (cache_root() / t / "meta.json").exists()]
    else:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    out_path = cache_root() / "baselines.json"
    results = {}
    if out_path.exists():  # keep other tasks' entries when running a subset
        try:
            results = json.loads(out_path.read_text())
        except ValueError:
            results = {}
    for t in tasks:
        if not (cache_root() / t / "meta.json").exists():
            print(f"[eaibench] {t}: no data (run fetch.py first)", file=sys.stderr)
            return 1
        strong = results.get(t, {}).get("strong")  # strong.py's entry: kept
        with threadpool_limits(limits=1):
            results[t], secs = run_task(t)
        if strong is not None:
            results[t]["strong"] = strong
        print(f"[eaibench] baseline {t}: {results[t]['model']} acc {results[t]['accuracy']:.4f} "
              f"({secs:.1f}s)", file=sys.stderr, flush=True)
    # TASKS order first; entries of tasks this script does not know (a newer checkout's) are kept
    results = {**{t: results[t] for t in TASKS if t in results}, **{t: r for t, r in results.items() if t not in TASKS}}
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print("| task | modality | n_train | n_test | shape [T,D] | baseline | test acc | majority | bytes |")
    print("|---|---|---:|---:|---|---|---:|---:|---:|")
    for t, r in results.items():
        shape = "text" if r["shape"] is None else "x".join(map(str, r["shape"]))
        print(f"| {t} | {r['modality']} | {r['n_train']} | {r['n_test']} | {shape} | {r['model']} | "
              f"{r['accuracy']:.4f} | {r['majority_accuracy']:.2f} | {r['bytes']} ({fmt_bytes(r['bytes'])}) |")
    print(f"\n[eaibench] wrote {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
