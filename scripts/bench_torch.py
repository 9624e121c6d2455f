#!/usr/bin/env python3
"""Scoring throughput of Hugging Face transformers for filtermon's three twins.

Builds randomly initialised models (no download) for

  transformer  olmo3: every layer full attention
  hybrid       olmo_hybrid: 3:1 Gated DeltaNet : attention (linear,linear,linear,full)
  gdn          olmo_hybrid with every layer linear_attention (pure recurrent)

and scores windows of random token ids the way a scorer does: one forward pass
per batch of --batch windows (default 1) under torch.inference_mode(), logits ->
log_softmax (f32) -> gather of the next token's log-probability. The first
batch is a warm-up and is not timed. Prints tokens/s per arch (JSON lines with
--json).

--device cuda builds each model directly on the GPU in the requested dtype,
times with torch.cuda.synchronize() around each batch, computes the logits in
slices of --logits-slice positions (so [batch*window, vocab] f32 logits never
exist at once) and reports peak_gpu_bytes. The GDN layers of hybrid/gdn use
flash-linear-attention's kernels when `import fla` works on cuda (transformers'
olmo_hybrid picks them up), else transformers' torch fallback; rows say which
("gdn_kernel": "fla" | "torch"). If the fla kernels fail, that arch is rerun
with the torch fallback and the row carries "fla_error".

OlmoHybrid is imported only when hybrid/gdn run, so the transformer twin also
runs with a transformers that has no olmo_hybrid (it needs >= 5.24).

twin_configs() is the single source of the shapes; filtermon's Rust benchmark
mirrors it. Examples:

    ../venv/bin/python scripts/bench_torch.py --arch all --threads 2 --windows 2
    ../venv/bin/python scripts/bench_torch.py --arch hybrid --dtype bf16 --json
    python3 scripts/bench_torch.py --device cuda --dtype bf16 --batch 8 --window 2048 \
        --layers 16 --hidden 2048 --vocab 100352 --windows 16 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import Olmo3Config, Olmo3ForCausalLM  # noqa: E402

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


def hybrid_classes():
    """(OlmoHybridConfig, OlmoHybridForCausalLM), imported on first use."""
    try:
        from transformers import OlmoHybridConfig, OlmoHybridForCausalLM
    except ImportError as e:
        raise SystemExit(
            f"transformers {transformers.__version__} has no olmo_hybrid (needs >= 5.24): {e}"
        ) from None
    return OlmoHybridConfig, OlmoHybridForCausalLM


def block_fla() -> None:
    """Make `import fla` fail, so that transformers' olmo_hybrid uses its torch fallback.

    Must run before olmo_hybrid's modeling module is first imported (it picks the
    kernels when it is imported)."""
    sys.modules["fla"] = None  # type: ignore[assignment]


def gdn_kernel() -> str:
    """Which gated-delta-rule implementation transformers' olmo_hybrid calls: fla or torch."""
    import importlib

    mod = importlib.import_module("transformers.models.olmo_hybrid.modeling_olmo_hybrid")
    f = getattr(mod, "torch_chunk_gated_delta_rule", None)
    code, cells = getattr(f, "__code__", None), getattr(f, "__closure__", None)
    if code is not None and cells:
        free = dict(zip(code.co_freevars, cells))
        if "is_new_implementation" in free:
            if not free["is_new_implementation"].cell_contents:
                return "torch"
            impl = free["implementation"].cell_contents if "implementation" in free else None
            module = getattr(impl, "__module__", "") or ""
            return "fla" if module.split(".")[0] == "fla" else module or "other"
    try:  # another transformers layout: ask fla itself
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule  # noqa: F401
    except Exception:
        return "torch"
    return "fla"


@contextlib.contextmanager
def allow_all_linear_hybrid():
    """OlmoHybridConfig refuses configs without attention layers (pure GDN)."""
    OlmoHybridConfig, _ = hybrid_classes()
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


def build(c: dict, attn: str, dtype: torch.dtype, device: torch.device | None = None):
    """The random-weight model of config c, in dtype, on device (default CPU).

    On a GPU the parameters are created there (random init of a 1B model on the
    CPU takes minutes), then cast."""
    kw = {k: v for k, v in c.items() if k != "model_type"}
    if c["model_type"] == "olmo3":
        cfg, cls, relax = Olmo3Config(**kw), Olmo3ForCausalLM, contextlib.nullcontext
    else:
        OlmoHybridConfig, OlmoHybridForCausalLM = hybrid_classes()
        with allow_all_linear_hybrid():
            cfg = OlmoHybridConfig(**kw)
        cls, relax = OlmoHybridForCausalLM, allow_all_linear_hybrid
    cfg._attn_implementation = attn
    if device is None or device.type == "cpu":
        with relax():
            model = cls(cfg)
        return model.to(dtype).eval()
    with relax(), torch.device(device):
        model = cls(cfg)
    return model.to(device=device, dtype=dtype).eval()


@torch.inference_mode()
def score_window(model, ids: torch.Tensor) -> torch.Tensor:
    """Per-token NLL of ids[1:] given the prefix (what filtermon's scorer computes)."""
    logits = model(input_ids=ids[None], use_cache=False).logits[0, :-1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, ids[1:, None])[:, 0]


@torch.inference_mode()
def score_batch(model, ids: torch.Tensor, logits_slice: int = 0) -> torch.Tensor:
    """Per-token NLL [B, L-1] of ids[:, 1:] given the prefixes, for ids [B, L].

    logits_slice = 0: one forward pass with all logits at once (as score_window).
    logits_slice = N > 0: the decoder's hidden states, then lm_head, f32 log_softmax
    and gather over at most N positions at a time (as filtermon's scorer does), so
    that [B*(L-1), vocab] logits never exist at once."""
    b, length = ids.shape
    n = b * (length - 1)
    if logits_slice <= 0 or logits_slice >= n:
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        return -logp.gather(-1, ids[:, 1:, None])[..., 0]
    hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
    hidden = hidden.reshape(n, hidden.shape[-1])
    targets = ids[:, 1:].reshape(n, 1)
    nll = torch.empty(n, dtype=torch.float32, device=ids.device)
    for s in range(0, n, logits_slice):
        e = min(n, s + logits_slice)
        logp = torch.log_softmax(model.lm_head(hidden[s:e]).float(), dim=-1)
        nll[s:e] = -logp.gather(-1, targets[s:e])[:, 0]
    return nll.view(b, length - 1)


def parse_device(text: str) -> torch.device:
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {text}: torch {torch.__version__} sees no CUDA device")
        dev = torch.device(text)
        return torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    raise SystemExit(f"--device {text}: expected cpu, cuda or cuda:N")


def rerun_with_torch_gdn(arch: str, error: BaseException) -> list[dict]:
    """Run this script again for one arch with the torch GDN fallback; its JSON rows."""
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a in ("--arch", "--gdn-kernel"):
            skip = True
            continue
        if a.startswith(("--arch=", "--gdn-kernel=")) or a == "--json":
            continue
        argv.append(a)
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--arch", arch, "--gdn-kernel", "torch", "--json"]
    print(f"{arch}: fla kernels failed ({type(error).__name__}: {error}); rerunning with the torch fallback",
          file=sys.stderr, flush=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    rows = []
    for line in out.stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    if out.returncode != 0 or not any(r.get("arch") == arch for r in rows):
        raise SystemExit(f"{arch}: the torch fallback failed too (exit {out.returncode})")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=(*ARCHS, "all"), default="all")
    ap.add_argument("--window", type=int, default=1024, help="tokens per window")
    ap.add_argument("--windows", type=int, default=4, help="timed windows (plus one untimed warm-up batch)")
    ap.add_argument("--batch", type=int, default=1, help="windows per forward pass (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--attn", default="sdpa", help="attention implementation: sdpa (default) or eager")
    ap.add_argument(
        "--logits-slice",
        type=int,
        default=None,
        help="positions per lm_head/log_softmax slice; 0 = all at once "
        "(default: 0 on cpu, 4096 on cuda)",
    )
    ap.add_argument(
        "--gdn-kernel",
        choices=("auto", "torch"),
        default="auto",
        help="auto: fla's kernels on cuda when `import fla` works, else torch; torch: always transformers' fallback",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object per line")
    args = ap.parse_args()
    if args.batch < 1 or args.windows < 1 or args.window < 2:
        ap.error("--batch and --windows must be >= 1, --window >= 2")

    device = parse_device(args.device)
    cuda = device.type == "cuda"
    if args.gdn_kernel == "torch" or not cuda:
        block_fla()  # fla's triton kernels need a GPU
    if cuda:
        torch.cuda.set_device(device)
    logits_slice = args.logits_slice if args.logits_slice is not None else (4096 if cuda else 0)

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    archs = ARCHS if args.arch == "all" else (args.arch,)
    configs = twin_configs(args.layers, args.hidden, args.vocab)

    def emit(obj: dict, text: str) -> None:
        print(json.dumps(obj) if args.json else text, flush=True)

    header = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": threads}
    where = f"{threads} threads"
    if cuda:
        header.update(device=str(device), gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
        where = f"{header['gpu']} (CUDA {torch.version.cuda})"
    emit(
        header,
        f"torch {torch.__version__}, transformers {transformers.__version__}, {where}, "
        f"{args.dtype}, window {args.window}, {args.windows} timed windows in batches of {args.batch} "
        f"(+1 warm-up batch), attn {args.attn}",
    )
    gen = torch.Generator().manual_seed(args.seed)
    # The warm-up batch first, then the timed windows (with --batch 1: windows[0] is the warm-up).
    windows = [
        torch.randint(0, args.vocab, (args.window,), generator=gen) for _ in range(args.batch + args.windows)
    ]
    warmup = torch.stack(windows[: args.batch]).to(device)
    timed = windows[args.batch :]
    batches = [torch.stack(timed[i : i + args.batch]).to(device) for i in range(0, len(timed), args.batch)]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def run(arch: str) -> dict:
        c = configs[arch]
        kernel = None
        if c["model_type"] == "olmo_hybrid":
            hybrid_classes()
            kernel = gdn_kernel()
        torch.manual_seed(args.seed)
        model = build(c, args.attn, dtype, device)
        n_params = sum(p.numel() for p in model.parameters())
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        attn_impl = getattr(model.config, "_attn_implementation", None) or args.attn
        d = describe(arch, c)
        d["params"] = n_params
        emit({"config": d}, "config " + json.dumps(d))
        if cuda:
            sync()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

        score_batch(model, warmup, logits_slice)  # warm-up, not timed
        sync()
        elapsed, cpu, tokens = 0.0, 0.0, 0
        sums = []
        for ids in batches:
            t0, c0 = time.perf_counter(), time.process_time()
            nll = score_batch(model, ids, logits_slice)
            sync()
            elapsed += time.perf_counter() - t0
            cpu += time.process_time() - c0
            tokens += nll.numel()
            sums.append(nll.double().sum())
        mean_nll = float(torch.stack(sums).sum().item()) / tokens
        tps = tokens / elapsed
        row = {
            "arch": arch,
            "tokens_per_s": tps,
            "threads": threads,
            "dtype": args.dtype,
            "window": args.window,
            "windows": args.windows,
            "seconds": elapsed,
            "cpu_seconds": cpu,  # all threads; cpu/seconds well below threads => contended machine
            "params": n_params,
            "mean_nll": mean_nll,
            "device": str(device),
            "batch": args.batch,
            "attn_impl": attn_impl,
            "gdn_kernel": kernel,
            "logits_slice": logits_slice,
        }
        if cuda:
            row["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)
            row["weight_bytes"] = weight_bytes
            row["gpu"] = torch.cuda.get_device_name(device)
        kern = f", GDN {kernel}" if kernel else ""
        mem = f", peak {row['peak_gpu_bytes'] / 2**30:.1f} GiB" if cuda else ""
        emit(
            row,
            f"{arch:12s} {tps:9.1f} tokens/s  ({tokens} tokens in {elapsed:.2f} s wall, {cpu:.2f} s CPU, "
            f"{n_params / 1e6:.1f}M params, mean NLL {mean_nll:.3f}{kern}{mem})",
        )
        del model
        if cuda:
            torch.cuda.empty_cache()
        return row

    for arch in archs:
        try:
            run(arch)
        except Exception as e:  # fla's kernels failing on this GPU / triton: retry with torch's
            if not (cuda and configs[arch]["model_type"] == "olmo_hybrid" and gdn_kernel() == "fla"):
                raise
            if cuda:
                torch.cuda.empty_cache()
            for row in rerun_with_torch_gdn(arch, e):
                if row.get("arch") == arch:
                    row["fla_error"] = f"{type(e).__name__}: {e}"[:500]
                    emit(row, f"{arch:12s} {row['tokens_per_s']:9.1f} tokens/s  (torch GDN fallback: fla failed)")
                elif "config" in row:
                    emit(row, "config " + json.dumps(row["config"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
