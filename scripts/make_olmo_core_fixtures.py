#!/usr/bin/env python3
"""Tiny OLMo-core native checkpoints for filtermon's tests, and a load benchmark pair.

Needs `pip install ai2-olmo-core transformers flash-linear-attention` in a venv outside the
repository (OLMo-core only builds Gated DeltaNet modules when `fla` imports; their forward needs
a GPU, which is why the GDN references come from transformers after OLMo-core's HF conversion).

    python scripts/make_olmo_core_fixtures.py            # tests/fixtures/olmo_core/*
    python scripts/make_olmo_core_fixtures.py --bench DIR  # ~350 MB random model, native + HF

Every fixture is a `stepN/` folder written by OLMo-core's own `Checkpointer` (config.json with the
model config under `model`, `.metadata.json`, `train/rank0.pt`, `model_and_optim/`), plus `hf/`,
OLMo-core's conversion of the same weights, and `reference.json` with per-token NLLs:

- `transformer`: Olmo 3-style (reordered norm, QK-norm, GQA, a sliding and a full layer, YaRN on
  the full one via `block_overrides`); reference from OLMo-core's own forward on CPU. The only
  fixture saved with optimizer state (which the reader must skip).
- `hybrid`: 3:1 GDN:attention with named blocks and `block_pattern`; pre-norm GDN blocks,
  reordered-norm attention blocks without RoPE. Saved by two gloo ranks with FSDP, so every
  tensor is split into chunks across the `__0_*.distcp` and `__1_*.distcp` files.
- `gdn`: pure Gated DeltaNet, embedding saved in bfloat16.

The models are as small as the mapping allows (d_model 16, vocab 304 for the 300-token test
tokenizer) so that the fixtures stay a few hundred KB.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if "--reference" in sys.argv:
    # transformers routes GDN through fla's Triton kernels when fla imports; they need a GPU.
    # The reference process hides fla so that transformers uses its own torch implementation.
    sys.modules["fla"] = None

import torch
import torch.distributed as dist
import torch.distributed.checkpoint.state_dict as dcp_sd

from olmo_core.config import DType
from olmo_core.nn.attention import AttentionConfig, SlidingWindowAttentionConfig
from olmo_core.nn.attention.recurrent import GatedDeltaNetConfig
from olmo_core.nn.feed_forward import FeedForwardConfig
from olmo_core.nn.layer_norm import LayerNormConfig, LayerNormType
from olmo_core.nn.lm_head import LMHeadConfig
from olmo_core.nn.rope import RoPEConfig, YaRNRoPEScalingConfig
from olmo_core.nn.transformer import TransformerBlockConfig, TransformerBlockType, TransformerConfig
from olmo_core.train.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "olmo_core"
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer.json"
VOCAB = 304  # the 300-token test tokenizer, padded
D = 16
STEP = 100


def rms(eps=1e-6):
    return LayerNormConfig(name=LayerNormType.rms, eps=eps, bias=False)


def ffn(hidden=32):
    return FeedForwardConfig(hidden_size=hidden, bias=False)


def attention(window=None, rope=True, scaling=None):
    return AttentionConfig(
        n_heads=4,
        n_kv_heads=2,
        bias=False,
        qk_norm=rms(),
        rope=RoPEConfig(theta=500_000, scaling=scaling) if rope else None,
        sliding_window=window,
    )


def gdn():
    return GatedDeltaNetConfig(n_heads=2, head_dim=8, expand_v=2.0, allow_neg_eigval=True, conv_size=4)


def transformer_config(dtype=DType.float32, d=D, layers=2, vocab=VOCAB, hidden=32):
    block = TransformerBlockConfig(
        sequence_mixer=attention(SlidingWindowAttentionConfig(pattern=[16, -1])),
        layer_norm=rms(),
        feed_forward=ffn(hidden),
        name=TransformerBlockType.reordered_norm,
    )
    cfg = TransformerConfig(
        d_model=d,
        vocab_size=vocab,
        n_layers=layers,
        block=block,
        lm_head=LMHeadConfig(layer_norm=rms(), bias=False),
        dtype=dtype,
    )
    return cfg.with_rope_scaling(YaRNRoPEScalingConfig(factor=4.0, old_context_len=64))


def hybrid_config(dtype=DType.float32, d=D, layers=4, vocab=VOCAB, hidden=32, pattern=None):
    blocks = {
        "gdn": TransformerBlockConfig(
            sequence_mixer=gdn(), layer_norm=rms(), feed_forward=ffn(hidden), name=TransformerBlockType.default
        ),
        "attn": TransformerBlockConfig(
            sequence_mixer=attention(rope=False),
            layer_norm=rms(),
            feed_forward=ffn(hidden),
            name=TransformerBlockType.reordered_norm,
        ),
    }
    pattern = pattern or ["gdn", "gdn", "gdn", "attn"]
    return TransformerConfig(
        d_model=d,
        vocab_size=vocab,
        n_layers=layers,
        block={k: v for k, v in blocks.items() if k in pattern},
        block_pattern=pattern,
        lm_head=LMHeadConfig(layer_norm=rms(), bias=False),
        dtype=dtype,
    )


@torch.no_grad()
def randomize(model, gen):
    """Every tensor well away from its init, so that the reference depends on all of them."""
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if name == "embeddings.weight":
            v = noise
        elif name.endswith("norm.weight"):
            v = 1.0 + 0.25 * noise
        elif name.endswith("A_log"):
            v = torch.log(torch.empty(p.shape).uniform_(1, 16, generator=gen))
        elif name.endswith("dt_bias"):
            v = 0.5 * noise
        elif "conv1d" in name:
            v = noise / math.sqrt(p.shape[-1])
        elif p.ndim == 2:
            v = noise / math.sqrt(p.shape[1])
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
        p.copy_(v.to(p.dtype))


class TrainModule:
    """What `Checkpointer.save` needs of a train module: the state dict it writes (without
    `optim` when there is no optimizer, which keeps fixtures small)."""

    def __init__(self, model, optim):
        self.model, self.optim = model, optim

    def state_dict_to_save(self):
        opts = dcp_sd.StateDictOptions(flatten_optimizer_state_dict=True)
        state = {"model": dcp_sd.get_model_state_dict(self.model, options=opts)}
        if self.optim is not None:
            state["optim"] = dcp_sd.get_optimizer_state_dict(self.model, self.optim, options=opts)
        return state


class OneMoment(torch.optim.Optimizer):
    """A stand-in for AdamW with one hyperparameter and one state tensor per parameter. The
    folder still holds both kinds of optimizer entries a real run's does (tensors, and pickled
    param-group values), at a fraction of AdamW's size: OLMo-core flattens the param groups into
    one entry per parameter and key, each a ~1.3 KB torch.save archive."""

    def __init__(self, params):
        super().__init__(params, {"lr": 1e-9})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["exp_avg"] = torch.zeros_like(p)


def one_step(model):
    """One optimizer step, so that the folder carries optimizer state like a real run's (no
    forward: GDN's forward needs a GPU)."""
    optim = OneMoment(model.parameters())
    optim.step()
    return optim


def write_step(run_dir: Path, cfg, model, optim, work: Path):
    step_dir = run_dir / f"step{STEP}"
    Checkpointer(work_dir=work).save(str(step_dir), TrainModule(model, optim), {"global_step": STEP})
    if not dist.is_initialized() or dist.get_rank() == 0:
        config = {"run_name": run_dir.name, "model": cfg.as_config_dict(), "trainer": {"save_folder": str(run_dir)}}
        (step_dir / "config.json").write_text(json.dumps(config, indent=2))
    return step_dir


def convert(step_dir: Path, cfg, hf_dir: Path):
    """OLMo-core's HF conversion of the native folder: its loader, then its HF writers (the
    tokenizer export of `convert_checkpoint_to_hf` rejects the tiny test tokenizer)."""
    from olmo_core.distributed.checkpoint import load_model_and_optim_state
    from olmo_core.nn.hf.checkpoint import save_hf_hybrid_model, save_hf_model
    from olmo_core.nn.hf.config import get_hybrid_layer_types, is_olmo_hybrid_model

    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    model = cfg.build(init_device="cpu")
    with tempfile.TemporaryDirectory() as work:
        load_model_and_optim_state(str(step_dir / "model_and_optim"), model, work_dir=work)
    state = dcp_sd.get_model_state_dict(model, options=dcp_sd.StateDictOptions(cpu_offload=True))
    if is_olmo_hybrid_model(model):
        save_hf_hybrid_model(str(hf_dir), state, model, max_sequence_length=256)
    elif set(get_hybrid_layer_types(model)) == {"linear_attention"}:
        save_pure_gdn(hf_dir, state, cfg)
    else:
        save_hf_model(str(hf_dir), state, model, save_overwrite=True)
    shutil.copy(TOKENIZER, hf_dir / "tokenizer.json")


def save_pure_gdn(hf_dir: Path, state, cfg):
    """OLMo-core's hybrid writer refuses a model without attention layers, so take the config of
    a GDN+attention twin from it and keep OLMo-core's own tensor-name mapping."""
    from olmo_core.nn.hf.config import get_hybrid_hf_config
    from olmo_core.nn.hf.convert import convert_hybrid_state_to_hf
    from safetensors.torch import save_file

    n = cfg.n_layers
    twin = hybrid_config(d=cfg.d_model, layers=2, vocab=cfg.vocab_size, pattern=["gdn", "attn"])
    twin.block["gdn"] = cfg.block["gdn"]
    config = get_hybrid_hf_config(twin.build(init_device="meta"), ["linear_attention", "full_attention"], 256)
    config.update(num_hidden_layers=n, layer_types=["linear_attention"] * n)
    hf_dir.mkdir(parents=True)
    (hf_dir / "config.json").write_text(json.dumps(config, indent=2))
    tensors = convert_hybrid_state_to_hf({k: v.contiguous() for k, v in state.items()}, config["layer_types"])
    save_file(tensors, hf_dir / "model.safetensors")


def sequences(seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 300, (n,), generator=gen).tolist() for n in (80, 33)]


def nll_of(logits, ids):
    lp = torch.log_softmax(logits[:-1].double(), dim=-1)
    tgt = torch.tensor(ids[1:])
    return (-lp.gather(-1, tgt[:, None])[:, 0]).tolist()


@contextlib.contextmanager
def allow_all_linear_hybrid():
    """transformers' OlmoHybridConfig refuses a config without attention layers; pure-GDN runs are
    exactly that, so relax the check while loading."""
    from transformers.models.olmo_hybrid.configuration_olmo_hybrid import OlmoHybridConfig

    orig, validators = OlmoHybridConfig.validate_architecture, list(OlmoHybridConfig.__class_validators__)

    def relaxed(self):
        if not set(self.layer_types) <= {"linear_attention", "full_attention"}:
            raise ValueError(f"unknown layer types {self.layer_types}")

    OlmoHybridConfig.validate_architecture = relaxed
    OlmoHybridConfig.__class_validators__ = [relaxed if v is orig else v for v in validators]
    try:
        yield
    finally:
        OlmoHybridConfig.validate_architecture = orig
        OlmoHybridConfig.__class_validators__ = validators


@torch.inference_mode()
def reference_olmo_core(model, seqs):
    model.eval()
    return [nll_of(model(torch.tensor([s]))[0].float(), s) for s in seqs]


def reference_transformers(hf_dir, seqs):
    """transformers' NLLs on the converted folder, computed in a process without fla."""
    out = subprocess.run(
        [sys.executable, __file__, "--reference", str(hf_dir), json.dumps(seqs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@torch.inference_mode()
def reference_main(hf_dir, seqs):
    from transformers import AutoModelForCausalLM

    with allow_all_linear_hybrid():
        m = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager")
    # OLMo-core's converter writes `linear_attn.out_proj` / `linear_attn.norm`, which transformers
    # 5.24 leaves unloaded (it expects `o_proj` / `o_norm`): copy them in by hand.
    from safetensors.torch import load_file

    params = dict(m.named_parameters())
    for k, v in load_file(Path(hf_dir) / "model.safetensors").items():
        for old, new in ((".linear_attn.out_proj.", ".linear_attn.o_proj."), (".linear_attn.norm.", ".linear_attn.o_norm.")):
            if old in k:
                params[k.replace(old, new)].data.copy_(v.float())
    m.eval()
    nlls = [nll_of(m(input_ids=torch.tensor([s]), use_cache=False).logits[0].float(), s) for s in seqs]
    print(json.dumps(nlls))


def write_reference(run_dir, name, source, seqs, nlls):
    ref = {
        "fixture": name,
        "reference": source,
        "olmo_core_version": __import__("olmo_core.version").version.VERSION,
        "torch_version": torch.__version__,
        "sequences": [{"token_ids": s, "nll_f32": n} for s, n in zip(seqs, nlls)],
    }
    (run_dir / "reference.json").write_text(json.dumps(ref) + "\n")


def build(cfg, seed):
    model = cfg.build(init_device="cpu")
    randomize(model, torch.Generator().manual_seed(seed))
    return model


def make_single(name, cfg, seed, reference, with_optim=False):
    run_dir = OUT / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    model = build(cfg, seed)
    with tempfile.TemporaryDirectory() as work:
        step_dir = write_step(run_dir, cfg, model, one_step(model) if with_optim else None, Path(work))
    convert(step_dir, cfg, run_dir / "hf")
    seqs = sequences(seed)
    if reference == "olmo_core":
        nlls = reference_olmo_core(model, seqs)
        check = reference_transformers(run_dir / "hf", seqs)
        gap = max(abs(a - b) for x, y in zip(nlls, check) for a, b in zip(x, y))
        print(f"{name}: OLMo-core vs transformers on the conversion: max |dNLL| {gap:.2e}")
    else:
        nlls = reference_transformers(run_dir / "hf", seqs)
    write_reference(run_dir, name, reference, seqs, nlls)


def sharded_worker(rank, world, name, seed, run_dir):
    """One of two gloo ranks: FSDP shards every parameter, so the save splits it into chunks."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = hybrid_config()
    model = build(cfg, seed)  # same seed on both ranks: identical full weights before sharding
    mesh = init_device_mesh("cpu", (world,))
    for block in model.blocks.values():
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    with tempfile.TemporaryDirectory() as work:
        write_step(run_dir, cfg, model, None, Path(work))
    dist.barrier()
    dist.destroy_process_group()


def make_sharded(name, seed):
    run_dir = OUT / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    torch.multiprocessing.spawn(sharded_worker, args=(2, name, seed, run_dir), nprocs=2, join=True)
    cfg = hybrid_config()
    step_dir = run_dir / f"step{STEP}"
    write_missing_chunk_metadata(step_dir)
    convert(step_dir, cfg, run_dir / "hf")
    seqs = sequences(seed)
    write_reference(run_dir, name, "transformers", seqs, reference_transformers(run_dir / "hf", seqs))


def write_missing_chunk_metadata(step_dir: Path):
    """`broken/missing_chunk.metadata`: the sharded folder's index, model entries only, with the
    storage entry of the embedding's second chunk removed (for the broken-folder tests)."""
    import pickle

    md = pickle.loads((step_dir / "model_and_optim" / ".metadata").read_bytes())
    md.state_dict_metadata = {k: v for k, v in md.state_dict_metadata.items() if k.startswith("model.")}
    md.planner_data = {k: v for k, v in md.planner_data.items() if k.startswith("model.")}
    dropped = next(k for k in md.storage_data if k.fqn == "model.embeddings.weight" and any(k.offset))
    md.storage_data = {
        k: v for k, v in md.storage_data.items() if k.fqn.startswith("model.") and k != dropped
    }
    out = OUT / "broken"
    out.mkdir(exist_ok=True)
    (out / "missing_chunk.metadata").write_bytes(pickle.dumps(md))


def make_bench(out: Path):
    """A ~350 MB random f32 hybrid, native (single rank) and converted to safetensors."""
    cfg = hybrid_config(d=768, layers=4, vocab=32768, hidden=3072)
    model = build(cfg, 7)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        step_dir = write_step(out, cfg, model, torch.optim.AdamW(model.parameters()), Path(work))
    convert(step_dir, cfg, out / "hf")
    print(f"wrote {step_dir} and {out / 'hf'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", type=Path, help="write the load-benchmark pair here instead")
    ap.add_argument("--reference", nargs=2, metavar=("HF_DIR", "SEQS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference:
        reference_main(args.reference[0], json.loads(args.reference[1]))
        return
    torch.manual_seed(0)
    if args.bench:
        make_bench(args.bench)
        return
    make_single("transformer", transformer_config(), 11, "olmo_core", with_optim=True)
    make_sharded("hybrid", 12)
    make_single("gdn", hybrid_config(dtype=DType.bfloat16, layers=2, pattern=["gdn"]), 13, "transformers")
    for d in sorted(OUT.iterdir()):
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        print(f"{d.name}: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    sys.exit(main())
