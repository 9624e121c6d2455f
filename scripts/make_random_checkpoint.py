#!/usr/bin/env python3
"""Write a randomly initialised Hugging Face checkpoint folder of one of filtermon's twins.

The shapes come from bench_torch.twin_configs() (the one definition of the twins):

  transformer  olmo3, every layer full attention
  hybrid       olmo_hybrid, 3:1 Gated DeltaNet : attention
  gdn          olmo_hybrid, every layer linear_attention (pure recurrent)

The folder gets config.json, model.safetensors (or shards + model.safetensors.index.json,
as save_pretrained writes them) in --dtype, and the tokenizer copied in as tokenizer.json.
With --device cuda the weights are initialised on the GPU (a 1B model initialised on the
CPU takes minutes). The folder is written as OUT-tmp and renamed to OUT when complete, so a
watcher never sees half a checkpoint. Prints one JSON line: out, arch, params, bytes, seconds.

    python3 scripts/make_random_checkpoint.py --arch transformer --layers 16 --hidden 2048 \\
        --vocab 100352 --dtype bf16 --device cuda --out /tmp/runs/tf/step1000 \\
        --tokenizer tests/fixtures/tokenizer.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import bench_torch  # noqa: E402  (torch, transformers; the twins' shapes)

try:  # progress bars of save_pretrained
    bench_torch.transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=bench_torch.ARCHS, required=True)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--dtype", choices=("bf16", "f32"), default="bf16")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where the weights are initialised")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint folder to create (must not exist)")
    ap.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.json copied into the folder")
    ap.add_argument("--max-shard-size", default="5GB", help="save_pretrained's max_shard_size (default 5GB)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.out.exists():
        ap.error(f"{args.out} exists")
    if not args.tokenizer.is_file():
        ap.error(f"{args.tokenizer}: no such file")
    device = bench_torch.parse_device(args.device)
    if device.type == "cpu":
        bench_torch.block_fla()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    config = bench_torch.twin_configs(args.layers, args.hidden, args.vocab)[args.arch]

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    model = bench_torch.build(config, "sdpa", dtype, device)
    params = sum(p.numel() for p in model.parameters())
    relax = bench_torch.allow_all_linear_hybrid if config["model_type"] == "olmo_hybrid" else contextlib.nullcontext

    tmp = args.out.with_name(args.out.name + "-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with relax():
        model.save_pretrained(tmp, max_shard_size=args.max_shard_size)
    shutil.copyfile(args.tokenizer, tmp / "tokenizer.json")
    del model
    os.replace(tmp, args.out)
    weights = sorted(args.out.glob("*.safetensors"))
    print(
        json.dumps(
            {
                "out": str(args.out),
                "arch": args.arch,
                "model_type": config["model_type"],
                "params": params,
                "dtype": args.dtype,
                "device": str(device),
                "safetensors_files": len(weights),
                "safetensors_bytes": sum(p.stat().st_size for p in weights),
                "seconds": time.perf_counter() - started,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
