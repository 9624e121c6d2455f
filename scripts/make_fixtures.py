#!/usr/bin/env python3
"""Generate the tiny Hugging Face reference checkpoints under tests/fixtures/.

Every fixture folder tests/fixtures/hf/<name>/ holds what a real checkpoint
folder holds (config.json, model.safetensors or shards + index, tokenizer.json)
plus reference.json: per-token NLL / top-1 / top-5 computed by Hugging Face
transformers (the numerical reference for filtermon, DESIGN.md section 4).

tests/fixtures/hf_bf16/<name>/ holds well-conditioned checkpoints stored in
bf16 for the bf16 parity test (the hf/ fixtures are tuned for f32 sensitivity
and amplify bf16 rounding far beyond what real checkpoints do).

Deterministic: the same transformers/torch/tokenizers versions give the same
bytes (the script pins torch to one thread). Run:

    ../venv/bin/python scripts/make_fixtures.py     # writes <repo>/tests/fixtures

Options: --out DIR (default tests/fixtures), --no-checks (skip the slow
sensitivity check).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    Olmo2Config,
    Olmo2ForCausalLM,
    Olmo3Config,
    Olmo3ForCausalLM,
    OlmoHybridConfig,
    OlmoHybridForCausalLM,
)
from transformers.models.olmo_hybrid import modeling_olmo_hybrid as hybrid_mod  # noqa: E402

transformers.logging.set_verbosity_error()
try:  # progress bars of save_pretrained
    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

torch.use_deterministic_algorithms(True)

# ----------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------

TOKENIZER_VOCAB = 300  # 256 byte symbols + 1 special + 43 merges
MODEL_VOCAB = 304  # model vocab_size >= tokenizer vocab (as in real Olmo checkpoints)
HIDDEN = 24
INTERMEDIATE = 24
SEQ_LENGTHS = (5, 70, 160)  # 160 > 2 GDN chunks of 64, > 10 sliding windows of 16

TRAINING_TEXT = r'''
The quick brown fox jumps over the lazy dog. There is a house on the hill, and
there are three old trees in the garden behind it. The children walked slowly
to the river, where they found a small boat that had been left on the bank.
In the morning the market opens early; farmers bring fresh bread, cheese, and
apples from the valley. She said that the weather would change by the evening.
The results of the experiment were surprisingly clear: the model that was
trained for longer performed better on every task, especially on the harder ones.
Scientists measured the temperature of the water at the surface and at the bottom
of the lake. They recorded the data in a notebook and compared it with last year.

def tokenize(text: str) -> list[str]:
    """Split the text into words."""
    words = []
    for word in text.split():
        if word.startswith("#"):
            continue
        words.append(word.lower())
    return words


class Counter:
    def __init__(self, start=0):
        self.value = start

    def increment(self, step=1):
        self.value += step
        return self.value


if __name__ == "__main__":
    counts = {}
    for line in open("data.txt"):
        for w in tokenize(line):
            counts[w] = counts.get(w, 0) + 1
    print(sorted(counts.items(), key=lambda kv: -kv[1])[:10])

<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>The garden</title>
</head>
<body>
  <div class="main">
    <h1>Welcome to the garden</h1>
    <p>There are <b>three</b> old trees and a <a href="/river.html">river</a>.</p>
    <ul>
      <li>Apples</li>
      <li>Bread</li>
    </ul>
  </div>
</body>
</html>

\begin{equation}
  \mathcal{L}(\theta) = -\sum_{t=1}^{T} \log p_\theta(x_t \mid x_{<t})
\end{equation}
'''

TOKENIZER_CHECK_TEXT = (
    "There are three old trees in the garden.\n"
    "def increment(self, step=1):\n    return self.value + step  # <b>bold</b> {x}"
)


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        min_frequency=2,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus so that merge counts are well separated (ties are
    # resolved deterministically by the trainer anyway).
    tok.train_from_iterator([TRAINING_TEXT] * 3, trainer=trainer)
    assert tok.get_vocab_size() == TOKENIZER_VOCAB, tok.get_vocab_size()
    return tok


# ----------------------------------------------------------------------------
# Fixture specifications
# ----------------------------------------------------------------------------

COMMON = dict(
    vocab_size=MODEL_VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=INTERMEDIATE,
    pad_token_id=None,
    bos_token_id=None,
    eos_token_id=0,
)


@contextlib.contextmanager
def allow_all_linear_hybrid():
    """transformers' OlmoHybridConfig refuses a config without attention layers;
    the pure-GDN runs are exactly that. Disable the check while we build/load."""
    orig_method = OlmoHybridConfig.validate_architecture
    orig_list = list(OlmoHybridConfig.__class_validators__)  # collected by @strict at class creation

    def relaxed(self):
        if not set(self.layer_types) <= {"linear_attention", "full_attention"}:
            raise ValueError(f"unknown layer types {self.layer_types}")

    OlmoHybridConfig.validate_architecture = relaxed
    OlmoHybridConfig.__class_validators__ = [relaxed if v is orig_method else v for v in orig_list]
    assert relaxed in OlmoHybridConfig.__class_validators__
    try:
        yield
    finally:
        OlmoHybridConfig.validate_architecture = orig_method
        OlmoHybridConfig.__class_validators__ = orig_list


def make_olmo2():
    cfg = Olmo2Config(
        **COMMON,
        num_hidden_layers=2,
        num_attention_heads=3,  # MHA, head_dim 8
        num_key_value_heads=3,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return cfg, Olmo2ForCausalLM


def make_olmo3_gqa_swa():
    # new (transformers 5) spelling: per-layer-type rope_parameters; different
    # theta for sliding and full layers so that mixing them up is caught.
    cfg = Olmo3Config(
        **COMMON,
        num_hidden_layers=3,
        num_attention_heads=4,  # head_dim 6
        num_key_value_heads=2,  # GQA: 2 query heads per kv head
        rms_norm_eps=1e-5,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 50000.0},
        },
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    return cfg, Olmo3ForCausalLM


YARN_LEGACY = {
    # what the public Olmo 3 config.json files contain (scaled down):
    # rope_theta at top level + rope_scaling applying to full-attention layers.
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "yarn",
        "factor": 8.0,
        "original_max_position_embeddings": 32,
        "attention_factor": 1.2079441541679836,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    },
}


def make_olmo3_yarn():
    cfg = Olmo3Config(
        **COMMON,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 12
        num_key_value_heads=1,  # MQA
        rms_norm_eps=1e-6,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,  # = factor * original_max_position_embeddings
        tie_word_embeddings=True,
        rope_theta=YARN_LEGACY["rope_theta"],
        rope_scaling=dict(YARN_LEGACY["rope_scaling"]),
    )
    return cfg, Olmo3ForCausalLM


def make_hybrid_rope():
    cfg = OlmoHybridConfig(
        **COMMON,
        num_hidden_layers=4,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        num_attention_heads=4,  # head_dim 6
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=512,
        linear_num_key_heads=2,
        linear_num_value_heads=4,  # each q/k head serves 2 value heads
        linear_key_head_dim=8,
        linear_value_head_dim=6,  # key_dim 16, value_dim 24, conv_dim 56 (not a multiple of 3)
        linear_conv_kernel_dim=4,
        linear_allow_neg_eigval=True,
        tie_word_embeddings=False,
    )
    return cfg, OlmoHybridForCausalLM


def make_hybrid_norope():
    cfg = OlmoHybridConfig(
        **COMMON,
        num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"],
        num_attention_heads=3,  # head_dim 8
        num_key_value_heads=3,
        rms_norm_eps=1e-5,
        # the released Olmo Hybrid checkpoints: no RoPE ("NoPE") in attention layers
        rope_parameters={"rope_type": "default", "rope_theta": None},
        max_position_embeddings=512,
        linear_num_key_heads=3,
        linear_num_value_heads=3,
        linear_key_head_dim=8,
        linear_value_head_dim=8,  # key_dim 24, value_dim 24, conv_dim 72 (3 equal chunks = q|k|v)
        linear_conv_kernel_dim=3,
        linear_allow_neg_eigval=False,
        tie_word_embeddings=True,
    )
    return cfg, OlmoHybridForCausalLM


def make_gdn_only():
    with allow_all_linear_hybrid():
        cfg = OlmoHybridConfig(
            **COMMON,
            num_hidden_layers=2,
            layer_types=["linear_attention", "linear_attention"],
            num_attention_heads=3,  # unused: no attention layer
            rms_norm_eps=1e-6,
            max_position_embeddings=512,
            linear_num_key_heads=2,
            linear_num_value_heads=2,
            linear_key_head_dim=8,
            linear_value_head_dim=16,  # key_dim 16, value_dim 32, conv_dim 64 (3 chunks 22/21/21)
            linear_conv_kernel_dim=4,
            linear_allow_neg_eigval=True,
            tie_word_embeddings=True,
        )
    assert all(t == "linear_attention" for t in cfg.layer_types)
    return cfg, OlmoHybridForCausalLM


FIXTURES = [
    # name, builder, seed
    ("olmo2", make_olmo2, 1001),
    ("olmo3_gqa_swa", make_olmo3_gqa_swa, 1002),
    ("olmo3_yarn", make_olmo3_yarn, 1003),
    ("hybrid_rope", make_hybrid_rope, 1004),
    ("hybrid_norope", make_hybrid_norope, 1005),
    ("gdn_only", make_gdn_only, 1006),
]
SHARDED = {"hybrid_norope_sharded": "hybrid_norope"}
SHARD_SIZE = "12KB"


# bf16 fixtures: numerically well-conditioned like real checkpoints (head dims 32,
# fan-in scaled init, norms near 1, moderate logits), saved in bf16. Their purpose
# is a meaningful bf16 tolerance: transformers' own bf16 eager vs sdpa attention
# agree to ~0.01 nats on them (on the hf/ fixtures: 0.17).
BF16_HIDDEN = 64
BF16_INTERMEDIATE = 48  # small so that each folder stays under ~150 KB
BF16_COMMON = dict(COMMON, hidden_size=BF16_HIDDEN, intermediate_size=BF16_INTERMEDIATE)
BF16_EMBED_STD = 0.5  # token identity clearly present in the residual stream (tied embeddings)
BF16_FINAL_NORM = 0.1  # final norm weight scale: logits with std ~1, NLL within ~[3.5, 7.5]
BF16_QK_NORM = 0.5  # q/k norm weight scale: attention logits with std ~0.5
BF16_NORM_JITTER = 0.1  # every norm weight is scale * (1 + 0.1 N(0, 1)), so none is exactly 1


def make_olmo3_bf16():
    cfg = Olmo3Config(
        **BF16_COMMON,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32
        num_key_value_heads=1,
        rms_norm_eps=1e-6,
        sliding_window=32,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 500000.0},
        },
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return cfg, Olmo3ForCausalLM


def make_hybrid_bf16():
    cfg = OlmoHybridConfig(
        **BF16_COMMON,
        num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"],
        num_attention_heads=2,  # head_dim 32
        num_key_value_heads=1,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=512,
        linear_num_key_heads=1,
        linear_num_value_heads=2,  # the key head serves both value heads
        linear_key_head_dim=32,
        linear_value_head_dim=32,
        linear_conv_kernel_dim=4,
        linear_allow_neg_eigval=True,
        tie_word_embeddings=True,
    )
    return cfg, OlmoHybridForCausalLM


def make_gdn_only_bf16():
    with allow_all_linear_hybrid():
        cfg = OlmoHybridConfig(
            **BF16_COMMON,
            num_hidden_layers=2,
            layer_types=["linear_attention", "linear_attention"],
            num_attention_heads=2,  # unused: no attention layer
            rms_norm_eps=1e-6,
            max_position_embeddings=512,
            linear_num_key_heads=1,
            linear_num_value_heads=1,
            linear_key_head_dim=32,
            linear_value_head_dim=32,
            linear_conv_kernel_dim=4,
            linear_allow_neg_eigval=False,
            tie_word_embeddings=True,
        )
    assert all(t == "linear_attention" for t in cfg.layer_types)
    return cfg, OlmoHybridForCausalLM


BF16_FIXTURES = [
    # The maxima below are set by a few outlier tokens (the means are ~0.003); seeds
    # picked among 2001..2008 so that every fixture meets them.
    ("olmo3_bf16", make_olmo3_bf16, 2005),
    ("hybrid_bf16", make_hybrid_bf16, 2002),
    ("gdn_only_bf16", make_gdn_only_bf16, 2004),
]
BF16_MAX_EAGER_VS_SDPA = 0.01  # nats, transformers bf16 eager vs bf16 sdpa, max over tokens
BF16_MAX_VS_F32 = 0.03  # nats, transformers bf16 vs f32 on the same (bf16) weights, max over tokens


# ----------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------


@torch.no_grad()
def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter well away from its (mostly trivial) init so that the
    reference is sensitive to every tensor: norms away from 1, projections at
    ~1/sqrt(fan_in), conv taps, A_log and dt_bias jittered."""
    tied = model.config.tie_word_embeddings
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if name.endswith("embed_tokens.weight"):
            p.copy_(noise * (0.25 if tied else 1.0))
        elif name == "lm_head.weight":
            p.copy_(noise * 0.25)
        elif "norm" in name:  # all RMSNorm weights incl. q/k norm and GDN o_norm
            p.add_(noise * 0.25)
        elif name.endswith("A_log"):
            p.add_(noise * 0.5)
        elif name.endswith("dt_bias"):
            p.add_(noise * 0.5)
        elif "conv1d" in name:  # [conv_dim, 1, kernel]
            p.add_(noise * 0.4)
        elif p.ndim == 2:  # Linear [out, in]
            p.add_(noise / math.sqrt(p.shape[1]))
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")


@torch.no_grad()
def init_well_conditioned(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Initialisation for the bf16 fixtures: projections N(0, 1/fan_in), norms near
    their scale, A_log and dt_bias as transformers initialises them."""
    assert model.config.tie_word_embeddings
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        jittered = 1.0 + noise * BF16_NORM_JITTER
        if name.endswith("embed_tokens.weight"):
            p.copy_(noise * BF16_EMBED_STD)
        elif name == "model.norm.weight":
            p.copy_(jittered * BF16_FINAL_NORM)
        elif name.endswith(("q_norm.weight", "k_norm.weight")):
            p.copy_(jittered * BF16_QK_NORM)
        elif "norm" in name:  # layer norms and the GDN o_norm
            p.copy_(jittered)
        elif name.endswith(("A_log", "dt_bias")):
            pass  # transformers' init: decay rates spread over [0, 16] x softplus(dt)
        elif "conv1d" in name:  # [conv_dim, 1, kernel]
            p.copy_(noise / math.sqrt(p.shape[-1]))
        elif p.ndim == 2:  # Linear [out, in]
            p.copy_(noise / math.sqrt(p.shape[1]))
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")


# ----------------------------------------------------------------------------
# Reference computation
# ----------------------------------------------------------------------------


@torch.inference_mode()
def logits_of(model, ids: list[int]) -> torch.Tensor:
    x = torch.tensor([ids], dtype=torch.long)
    return model(input_ids=x, use_cache=False).logits[0].float()


def score(logits: torch.Tensor, ids: list[int]):
    """nll[i] = -log p(ids[i+1] | ids[..=i]); top1/top5 of ids[i+1] at position i."""
    lp = torch.log_softmax(logits[:-1].double(), dim=-1)  # f64 log-softmax of the f32 logits
    tgt = torch.tensor(ids[1:], dtype=torch.long)
    nll = -lp.gather(-1, tgt[:, None])[:, 0]
    top5 = logits[:-1].topk(5, dim=-1).indices
    top1 = top5[:, 0] == tgt
    in5 = (top5 == tgt[:, None]).any(-1)
    return nll.tolist(), top1.tolist(), in5.tolist()


@torch.inference_mode()
def sample_from(model, prefix: list[int], length: int, gen: torch.Generator, temperature: float = 0.5):
    ids = list(prefix)
    while len(ids) < length:
        lg = logits_of(model, ids)[-1, :TOKENIZER_VOCAB] / temperature
        ids.append(int(torch.multinomial(torch.softmax(lg, -1), 1, generator=gen)))
    return ids


def topk_margin(logits: torch.Tensor, ids: list[int]) -> float:
    """Smallest distance between a target's logit and the top-1 / top-5 cut-offs:
    top1/top5 booleans are only robust when this is far above f32 noise."""
    lg = logits[:-1]
    tgt = torch.tensor(ids[1:])
    t = lg.gather(-1, tgt[:, None])[:, 0]
    others = lg.scatter(-1, tgt[:, None], float("-inf")).topk(5, dim=-1).values
    # top1 flips iff t crosses the best other logit; top5 iff t crosses the 5th best other
    return min((t - others[:, 0]).abs().min().item(), (t - others[:, 4]).abs().min().item())


def load(path: Path, cls, dtype=torch.float32):
    m = cls.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    m.eval()
    return m


@contextlib.contextmanager
def recurrent_gdn():
    """Route the chunked GDN fallback to transformers' token-by-token fallback."""
    orig = hybrid_mod.torch_chunk_gated_delta_rule
    calls = {"n": 0}

    def via_recurrent(query, key, value, g, beta, chunk_size=64, **kw):
        calls["n"] += 1
        return hybrid_mod.torch_recurrent_gated_delta_rule(query, key, value, g=g, beta=beta, **kw)

    hybrid_mod.torch_chunk_gated_delta_rule = via_recurrent
    try:
        yield calls
    finally:
        hybrid_mod.torch_chunk_gated_delta_rule = orig


def sensitivity(model, seqs) -> tuple[str, float]:
    """Smallest (over tensors) max |dNLL| when one tensor gets ~2% relative noise."""
    gen = torch.Generator().manual_seed(7)
    base = [score(logits_of(model, s), s)[0] for s in seqs]
    worst = ("", float("inf"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            saved = p.detach().clone()
            scale = saved.abs().mean().clamp_min(1e-3)
            p.add_(torch.randn(p.shape, generator=gen) * 0.02 * scale)
            d = 0.0
            for s, b in zip(seqs, base):
                n = score(logits_of(model, s), s)[0]
                d = max(d, max(abs(x - y) for x, y in zip(n, b)))
            p.copy_(saved)
            if d < worst[1]:
                worst = (name, d)
    return worst


def tensor_names(folder: Path) -> list[str]:
    from safetensors import safe_open

    names = []
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as h:
            names += list(h.keys())
    return sorted(names)


def tensor_dtypes(folder: Path) -> set[str]:
    from safetensors import safe_open

    dtypes = set()
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as h:
            dtypes |= {str(h.get_slice(k).get_dtype()) for k in h.keys()}
    return dtypes


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def reference_entries(m32, m16, seqs) -> list[dict]:
    """Per sequence: f32 NLL / top-1 / top-5 from `m32`, bf16 NLL from `m16`."""
    entries = []
    for s in seqs:
        lg = logits_of(m32, s)
        nll, t1, t5 = score(lg, s)
        nll16, _, _ = score(logits_of(m16, s), s)
        entries.append(
            {
                "token_ids": s,
                # 8 decimals: far below the 1e-4 nats tolerance, halves the file size
                "nll_f32": [round(x, 8) for x in nll],
                "top1_f32": t1,
                "top5_f32": t5,
                "nll_bf16": [round(x, 8) for x in nll16],
            }
        )
    return entries


def check_gdn_chunk_vs_recurrent(name: str, m32, entries, notes: dict) -> None:
    """transformers' chunked GDN fallback (the reference) agrees with its token-by-token one."""
    diff = 0.0
    with recurrent_gdn() as calls:
        for e in entries:
            s = e["token_ids"]
            nll_r = score(logits_of(m32, s), s)[0]
            diff = max(diff, max(abs(a - b) for a, b in zip(nll_r, e["nll_f32"])))
    assert calls["n"] > 0, "monkeypatch did not reach the GDN layers"
    notes["gdn_chunk_vs_recurrent_max_abs_nll_diff"] = diff
    assert diff < 1e-4, (name, diff)


def write_reference(folder: Path, name, seed, versions, notes, check_ids, entries, **extra) -> dict:
    """Writes reference.json (`extra` keys go after `attn_implementation`) and prints a summary."""
    all_nll = [x for e in entries for x in e["nll_f32"]]
    all_16 = [x for e in entries for x in e["nll_bf16"]]
    bf16_gap = max(abs(a - b) for a, b in zip(all_nll, all_16))
    bf16_mean_gap = sum(abs(a - b) for a, b in zip(all_nll, all_16)) / len(all_nll)
    assert all(math.isfinite(x) for x in all_nll + all_16)
    ref = {
        **versions,
        "fixture": name,
        "seed": seed,
        "tokenizer_vocab_size": TOKENIZER_VOCAB,
        "attn_implementation": "eager",
        **extra,
        "mean_nll_f32": sum(all_nll) / len(all_nll),
        "max_abs_f32_bf16_nll_diff": bf16_gap,
        "mean_abs_f32_bf16_nll_diff": bf16_mean_gap,
        "mean_nll_bf16": sum(all_16) / len(all_16),
        "checks": notes,
        "tokenizer_check": {"text": TOKENIZER_CHECK_TEXT, "ids": check_ids},
        "sequences": entries,
    }
    (folder / "reference.json").write_text(json.dumps(ref) + "\n")
    print(
        f"{name:20s} mean NLL {ref['mean_nll_f32']:.4f} "
        f"(min {min(all_nll):.3f}, max {max(all_nll):.3f}) bf16 gap max {bf16_gap:.4f} mean {bf16_mean_gap:.4f} "
        f"top1 {sum(t for e in entries for t in e['top1_f32'])} top5 {sum(t for e in entries for t in e['top5_f32'])} "
        f"of {len(all_nll)} {notes}"
    )
    return ref


def make_bf16_fixture(out: Path, tok_path: Path, name, builder, seed, versions, check_ids, checks: bool) -> None:
    """A well-conditioned checkpoint saved in bf16. `nll_bf16` is transformers' bf16 eager
    forward; `nll_f32` the same bf16 weights upcast to f32 (for information)."""
    torch.manual_seed(seed)
    cfg, cls = builder()
    cfg._attn_implementation = "eager"
    with allow_all_linear_hybrid():
        model = cls(cfg)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    init_well_conditioned(model, gen)
    model = model.to(torch.bfloat16)

    folder = out / name
    with allow_all_linear_hybrid():
        model.save_pretrained(folder)  # bf16 safetensors
        m32 = load(folder, cls)  # upcast to f32 on load
        m16 = load(folder, cls, torch.bfloat16)
        sdpa = cls.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    shutil.copy(tok_path, folder / "tokenizer.json")
    assert all(d == "BF16" for d in tensor_dtypes(folder)), tensor_dtypes(folder)
    assert m32.dtype == torch.float32 and m16.dtype == torch.bfloat16

    rng = np.random.default_rng(seed)
    seqs = [rng.integers(0, TOKENIZER_VOCAB, size=n).tolist() for n in SEQ_LENGTHS]
    seqs[1] = sample_from(m32, seqs[1][:8], SEQ_LENGTHS[1], gen)
    entries = reference_entries(m32, m16, seqs)

    notes = {}
    eager_vs_sdpa = 0.0
    for e in entries:
        s = e["token_ids"]
        nll_sdpa = score(logits_of(sdpa, s), s)[0]
        eager_vs_sdpa = max(eager_vs_sdpa, max(abs(a - b) for a, b in zip(nll_sdpa, e["nll_bf16"])))
    bf16_vs_f32 = max(abs(a - b) for e in entries for a, b in zip(e["nll_f32"], e["nll_bf16"]))
    notes["bf16_eager_vs_sdpa_max_abs_nll_diff"] = eager_vs_sdpa
    notes["bf16_vs_f32_max_abs_nll_diff"] = bf16_vs_f32
    assert eager_vs_sdpa <= BF16_MAX_EAGER_VS_SDPA, (name, eager_vs_sdpa)
    assert bf16_vs_f32 <= BF16_MAX_VS_F32, (name, bf16_vs_f32)
    notes["min_topk_logit_margin"] = margin = min(topk_margin(logits_of(m32, s), s) for s in seqs)
    assert margin > 1e-4, (name, margin)
    if cls is OlmoHybridForCausalLM:
        check_gdn_chunk_vs_recurrent(name, m32, entries, notes)
    if checks:
        worst_name, worst = sensitivity(m32, seqs)
        notes["least_sensitive_tensor"] = worst_name
        notes["least_sensitive_max_abs_dnll"] = worst
        assert worst > 1e-3, (name, worst_name, worst)
    write_reference(folder, name, seed, versions, notes, check_ids, entries, weights_dtype="bfloat16")


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
    ap.add_argument("--no-checks", action="store_true", help="skip the per-tensor sensitivity check")
    args = ap.parse_args()

    torch.set_num_threads(1)  # bitwise-stable f32 reductions
    out = Path(args.out)
    hf = out / "hf"
    hf_bf16 = out / "hf_bf16"
    for d in (hf, hf_bf16):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)

    tok = train_tokenizer()
    tok_path = out / "tokenizer.json"
    tok.save(str(tok_path), pretty=False)
    tok = Tokenizer.from_file(str(tok_path))
    check_ids = tok.encode(TOKENIZER_CHECK_TEXT, add_special_tokens=False).ids
    assert tok.decode(check_ids) == TOKENIZER_CHECK_TEXT

    versions = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
    }
    print(json.dumps(versions))

    for name, builder, seed in FIXTURES:
        torch.manual_seed(seed)
        cfg, cls = builder()
        cfg._attn_implementation = "eager"
        with allow_all_linear_hybrid():
            model = cls(cfg)
        assert model.config._attn_implementation == "eager"
        model.eval()
        gen = torch.Generator().manual_seed(seed)
        perturb(model, gen)

        folder = hf / name
        with allow_all_linear_hybrid():
            model.save_pretrained(folder)  # f32 safetensors
        shutil.copy(tok_path, folder / "tokenizer.json")

        rng = np.random.default_rng(seed)
        seqs = [rng.integers(0, TOKENIZER_VOCAB, size=n).tolist() for n in SEQ_LENGTHS]
        # Uniformly random targets are almost never the argmax; so that top-1/top-5
        # get exercised, the middle sequence continues a random prefix by sampling
        # from the model itself (ids restricted to the tokenizer vocab).
        seqs[1] = sample_from(model, seqs[1][:8], SEQ_LENGTHS[1], gen)

        # the reference is computed on the checkpoint as loaded back from disk
        with allow_all_linear_hybrid():
            m32 = load(folder, cls)
            m16 = load(folder, cls).to(torch.bfloat16)
        notes = {}
        for s in seqs:  # round trip through save/load is exact
            assert torch.equal(logits_of(model, s), logits_of(m32, s)), name

        entries = reference_entries(m32, m16, seqs)

        if cls is OlmoHybridForCausalLM:  # RoPE on hybrid attention iff rope_parameters.rope_theta is set
            has_rope = m32.config.rope_parameters.get("rope_theta") is not None
            assert (m32.model.rotary_emb is not None) == has_rope
            assert has_rope == (name in ("hybrid_rope", "gdn_only")), name
        if name == "olmo3_yarn":
            re = m32.model.rotary_emb
            assert re.rope_type == {"full_attention": "yarn", "sliding_attention": "default"}, re.rope_type
            assert abs(re.full_attention_attention_scaling - 1.2079441541679836) < 1e-12

        margin = min(topk_margin(logits_of(m32, s), s) for s in seqs)
        notes["min_topk_logit_margin"] = margin
        assert margin > 1e-4, (name, margin)

        if cls is OlmoHybridForCausalLM:
            check_gdn_chunk_vs_recurrent(name, m32, entries, notes)

        # olmo3_yarn: also ship the legacy (rope_theta + rope_scaling) spelling,
        # as found in the public Olmo 3 config.json files, and prove it equivalent.
        if name == "olmo3_yarn":
            saved = json.loads((folder / "config.json").read_text())
            legacy = {k: v for k, v in saved.items() if k != "rope_parameters"}
            legacy.update(YARN_LEGACY)
            (folder / "config.legacy.json").write_text(json.dumps(legacy, indent=2, sort_keys=True) + "\n")
            tmp = out / "_tmp_legacy"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(folder, tmp)
            shutil.copy(folder / "config.legacy.json", tmp / "config.json")
            m_leg = load(tmp, cls)
            assert m_leg.config.rope_parameters == m32.config.rope_parameters, (
                m_leg.config.rope_parameters,
                m32.config.rope_parameters,
            )
            for s in seqs:
                assert torch.equal(logits_of(m_leg, s), logits_of(m32, s))
            shutil.rmtree(tmp)
            notes["config_legacy_json_equivalent"] = True

        if not args.no_checks:
            worst_name, worst = sensitivity(m32, seqs)
            notes["least_sensitive_tensor"] = worst_name
            notes["least_sensitive_max_abs_dnll"] = worst
            assert worst > 1e-3, (name, worst_name, worst)

        write_reference(folder, name, seed, versions, notes, check_ids, entries)

    # Same weights, sharded into several files + model.safetensors.index.json.
    for name, src in SHARDED.items():
        builder = dict((n, b) for n, b, _ in FIXTURES)[src]
        cls = builder()[1]
        folder = hf / name
        m = load(hf / src, cls)
        m.save_pretrained(folder, max_shard_size=SHARD_SIZE)
        shutil.copy(hf / src / "tokenizer.json", folder / "tokenizer.json")
        ref = json.loads((hf / src / "reference.json").read_text())
        ref.update(fixture=name, sharded_copy_of=src)
        (folder / "reference.json").write_text(json.dumps(ref) + "\n")
        shards = sorted(folder.glob("model-*.safetensors"))
        assert (folder / "model.safetensors.index.json").exists() and len(shards) >= 3, shards
        assert not (folder / "model.safetensors").exists()
        assert tensor_names(folder) == tensor_names(hf / src)
        m2 = load(folder, cls)
        ref = json.loads((folder / "reference.json").read_text())
        for e in ref["sequences"]:
            assert torch.equal(logits_of(m, e["token_ids"]), logits_of(m2, e["token_ids"]))
        print(f"{name:20s} {len(shards)} shards of {src}")

    for name, builder, seed in BF16_FIXTURES:
        make_bf16_fixture(hf_bf16, tok_path, name, builder, seed, versions, check_ids, not args.no_checks)

    print("\nsizes:")
    total = 0
    for f in sorted(out.iterdir()):
        size = dir_size(f) if f.is_dir() else f.stat().st_size
        print(f"  {f.name:24s} {size / 1024:8.1f} KiB")
    for d in sorted(hf.iterdir()):
        print(f"  hf/{d.name:21s} {dir_size(d) / 1024:8.1f} KiB")
    for d in sorted(hf_bf16.iterdir()):
        print(f"  hf_bf16/{d.name:16s} {dir_size(d) / 1024:8.1f} KiB")
    total = dir_size(out)
    print(f"  total tests/fixtures     {total / 1024:8.1f} KiB")
    # Two digests: tokenizer.json + hf/ (unchanged since hf_bf16/ was added), and hf_bf16/.
    for label, bf16_part in (("content", False), ("hf_bf16 content", True)):
        digest = hashlib.sha256()
        for f in sorted(out.rglob("*")):
            rel = f.relative_to(out)
            if f.is_file() and (rel.parts[0] == "hf_bf16") == bf16_part:
                digest.update(str(rel).encode())
                digest.update(f.read_bytes())
        print(f"  {label} sha256 {digest.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
