#!/usr/bin/env python3
"""CPU scoring throughput of Hugging Face transformers for filtermon's three twins.

Builds randomly initialised models (no download) for

  transformer  olmo3: every layer full attention
  hybrid       olmo_hybrid: 3:1 Gated DeltaNet : attention (linear,linear,linear,full)
  gdn          olmo_hybrid with every layer linear_attention (pure recurrent)

and scores windows of random token ids the way a scorer does: one forward pass
per window under torch.inference_mode(), logits -> log_softmax (f32) -> gather
of the next token's log-probability. The first window is a warm-up and is not
timed. Prints tokens/s per arch (JSON lines with --json).

twin_configs() is the single source of the shapes; filtermon's Rust benchmark
mirrors it. Examples:

    ../venv/bin/python scripts/bench_torch.py --arch all --threads 2 --windows 2
    ../venv/bin/python scripts/bench_torch.py --arch hybrid --dtype bf16 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import Olmo3Config, Olmo3ForCausalLM, OlmoHybridConfig, OlmoHybridForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()

ARCHS = ("transformer", "hybrid", "gdn")


def twin_configs(layers: int = 12, hidden: int = 768, vocab: int = 50_000) -> dict[str, dict]:
    """The exact shapes of the three twins (Hugging Face config fields).

    Attention: head_dim 64, MHA, SwiGLU intermediate 4*hidden.
    Gated DeltaNet: hidden/128 heads (as many key as value heads), key head dim 64,
    value head dim 128, i.e. key_dim = hidden/2 and value_dim = hidden, so that a
    GDN layer's q,k,v,g,o projections (2*h*h/2 + 3*h*h = 4*h^2) match an attention
    layer's q,k,v,o (4*h^2); a_proj/b_proj/conv/A_log/dt_bias add < 1%.
    The hybrid's attention layers use no RoPE, like the released Olmo Hybrid.
    """
    heads = max(1, hidden // 64)
    gdn_heads = max(1, hidden // 128)
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    gdn = dict(
        linear_num_key_heads=gdn_heads,
        linear_num_value_heads=gdn_heads,
        linear_key_head_dim=64,
        linear_value_head_dim=128,
        linear_conv_kernel_dim=4,
        linear_allow_neg_eigval=True,
    )
    pattern = ["linear_attention", "linear_attention", "linear_attention", "full_attention"]
    hybrid_layers = [pattern[i % 4] for i in range(layers)]
    if "full_attention" not in hybrid_layers:  # as transformers does for < 4 layers
        hybrid_layers[-1] = "full_attention"
    return {
        "transformer": dict(
            model_type="olmo3",
            **common,
            layer_types=["full_attention"] * layers,
            sliding_window=4096,  # unused: no sliding layer
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 500000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 500000.0},
            },
        ),
        "hybrid": dict(
            model_type="olmo_hybrid",
            **common,
            **gdn,
            layer_types=hybrid_layers,
            rope_parameters={"rope_type": "default", "rope_theta": None},
        ),
        "gdn": dict(
            model_type="olmo_hybrid",
            **common,
            **gdn,
            layer_types=["linear_attention"] * layers,
            rope_parameters={"rope_type": "default", "rope_theta": None},
        ),
    }


def describe(arch: str, c: dict) -> dict:
    d = {
        "arch": arch,
        "model_type": c["model_type"],
        "layers": c["num_hidden_layers"],
        "attention_layers": sum(t != "linear_attention" for t in c["layer_types"]),
        "gdn_layers": sum(t == "linear_attention" for t in c["layer_types"]),
        "hidden": c["hidden_size"],
        "heads": c["num_attention_heads"],
        "kv_heads": c["num_key_value_heads"],
        "head_dim": c["hidden_size"] // c["num_attention_heads"],
        "intermediate": c["intermediate_size"],
        "vocab": c["vocab_size"],
        "tie_word_embeddings": c["tie_word_embeddings"],
        "layer_types": c["layer_types"],
    }
    if c["model_type"] == "olmo_hybrid":
        d.update(
            gdn_key_heads=c["linear_num_key_heads"],
            gdn_value_heads=c["linear_num_value_heads"],
            gdn_key_head_dim=c["linear_key_head_dim"],
            gdn_value_head_dim=c["linear_value_head_dim"],
            gdn_conv_kernel=c["linear_conv_kernel_dim"],
            gdn_allow_neg_eigval=c["linear_allow_neg_eigval"],
        )
    return d


@contextlib.contextmanager
def allow_all_linear_hybrid():
    """OlmoHybridConfig refuses configs without attention layers (pure GDN)."""
    orig_method = OlmoHybridConfig.validate_architecture
    orig_list = list(OlmoHybridConfig.__class_validators__)

    def relaxed(self):
        pass

    OlmoHybridConfig.validate_architecture = relaxed
    OlmoHybridConfig.__class_validators__ = [relaxed if v is orig_method else v for v in orig_list]
    try:
        yield
    finally:
        OlmoHybridConfig.validate_architecture = orig_method
        OlmoHybridConfig.__class_validators__ = orig_list


def build(c: dict, attn: str, dtype: torch.dtype):
    kw = {k: v for k, v in c.items() if k != "model_type"}
    if c["model_type"] == "olmo3":
        cfg, cls = Olmo3Config(**kw), Olmo3ForCausalLM
    else:
        with allow_all_linear_hybrid():
            cfg, cls = OlmoHybridConfig(**kw), OlmoHybridForCausalLM
    cfg._attn_implementation = attn
    with allow_all_linear_hybrid():
        model = cls(cfg)
    return model.to(dtype).eval()


@torch.inference_mode()
def score_window(model, ids: torch.Tensor) -> torch.Tensor:
    """Per-token NLL of ids[1:] given the prefix (what filtermon's scorer computes)."""
    logits = model(input_ids=ids[None], use_cache=False).logits[0, :-1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, ids[1:, None])[:, 0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=(*ARCHS, "all"), default="all")
    ap.add_argument("--window", type=int, default=1024, help="tokens per window")
    ap.add_argument("--windows", type=int, default=4, help="timed windows (plus one untimed warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--attn", default="sdpa", help="attention implementation: sdpa (default) or eager")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object per line")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    archs = ARCHS if args.arch == "all" else (args.arch,)
    configs = twin_configs(args.layers, args.hidden, args.vocab)

    def emit(obj: dict, text: str) -> None:
        print(json.dumps(obj) if args.json else text, flush=True)

    emit(
        {"torch": torch.__version__, "transformers": transformers.__version__, "threads": threads},
        f"torch {torch.__version__}, transformers {transformers.__version__}, {threads} threads, "
        f"{args.dtype}, window {args.window}, {args.windows} timed windows (+1 warm-up), attn {args.attn}",
    )
    gen = torch.Generator().manual_seed(args.seed)
    windows = [torch.randint(0, args.vocab, (args.window,), generator=gen) for _ in range(args.windows + 1)]

    for arch in archs:
        c = configs[arch]
        torch.manual_seed(args.seed)
        model = build(c, args.attn, dtype)
        n_params = sum(p.numel() for p in model.parameters())
        d = describe(arch, c)
        d["params"] = n_params
        emit({"config": d}, "config " + json.dumps(d))

        score_window(model, windows[0])  # warm-up, not timed
        elapsed, cpu, tokens, mean_nll = 0.0, 0.0, 0, 0.0
        for ids in windows[1:]:
            t0, c0 = time.perf_counter(), time.process_time()
            nll = score_window(model, ids)
            elapsed += time.perf_counter() - t0
            cpu += time.process_time() - c0
            tokens += nll.numel()
            mean_nll += nll.sum().item()
        tps = tokens / elapsed
        emit(
            {
                "arch": arch,
                "tokens_per_s": tps,
                "threads": threads,
                "dtype": args.dtype,
                "window": args.window,
                "windows": args.windows,
                "seconds": elapsed,
                "cpu_seconds": cpu,  # all threads; cpu/seconds well below threads => contended machine
                "params": n_params,
                "mean_nll": mean_nll / tokens,
            },
            f"{arch:12s} {tps:9.1f} tokens/s  ({tokens} tokens in {elapsed:.2f} s wall, {cpu:.2f} s CPU, "
            f"{n_params / 1e6:.1f}M params, mean NLL {mean_nll / tokens:.3f})",
        )
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
