#!/usr/bin/env python3
"""transformers' side of a whole-process timing: what `filtermon score --input` does, in Python.

Loads a Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json), encodes every
document of a JSONL file (`text` field) without special tokens, cuts each into windows of at most
`--window` tokens as `filtermon prepare` does (a window never spans two documents), and scores
each window's next-token predictions: NLL, top-1 and top-5. Prints one JSON line with the token
count, the mean NLL and the seconds spent (import, load, scoring), so that

    time filtermon score CKPT --input docs.jsonl --evalset /tmp/e --window 1024
    time python scripts/score_torch.py CKPT --input docs.jsonl --window 1024

compare the whole processes, start-up included, and their mean NLLs agree.
Threads: torch's default, or RAYON_NUM_THREADS when it is set (as filtermon reads it).
"""

import argparse
import json
import os
import time

START = time.perf_counter()

import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

IMPORTED = time.perf_counter()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--input", required=True, help="JSONL documents with a `text` field")
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    args = ap.parse_args()
    if "RAYON_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["RAYON_NUM_THREADS"]))

    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    tok = Tokenizer.from_file(os.path.join(args.checkpoint, "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=dtype).eval()
    loaded = time.perf_counter()

    nll_sum, scored, top1, top5 = 0.0, 0, 0, 0
    with open(args.input, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    with torch.inference_mode():
        for text in docs:
            ids = tok.encode(text, add_special_tokens=False).ids
            for s in range(0, len(ids), args.window):
                window = torch.tensor([ids[s : s + args.window]])
                if window.shape[1] < 2:
                    continue
                logits = model(window).logits[0, :-1].float()
                targets = window[0, 1:]
                nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
                rank = (logits > logits.gather(1, targets[:, None])).sum(1)
                nll_sum += nll.sum().item()
                scored += targets.numel()
                top1 += (rank < 1).sum().item()
                top5 += (rank < 5).sum().item()
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "tokens_scored": scored,
                "mean_nll": nll_sum / max(scored, 1),
                "top1": top1 / max(scored, 1),
                "top5": top5 / max(scored, 1),
                "threads": torch.get_num_threads(),
                "import_s": IMPORTED - START,
                "load_s": loaded - IMPORTED,
                "score_s": done - loaded,
            }
        )
    )


if __name__ == "__main__":
    main()
