#!/usr/bin/env python3
"""The steps of scripts/gpu-check.sh (which sets up the environment and calls this).

Standard library only: torch is used in subprocesses (bench_torch.py,
make_random_checkpoint.py), so a broken torch fails those steps, not this script.
Writes OUT/gpu-check.json after every step (a run cut short still leaves the steps
done so far) and prints it at the end; logs go to OUT/logs/{setup,parity,bench,watch}.log
and OUT/logs/watch-samples.csv. At most 6 files under OUT.

Environment (defaults for GPU_CHECK_DEVICE=cuda / cpu):
  GPU_CHECK_DEVICE        cuda | cpu                      [cuda]
  GPU_CHECK_BUDGET_S      seconds for everything, counted from GPU_CHECK_T0 [450]
  GPU_CHECK_STEPS         steps, in order                 ["parity watch bench"]
  GPU_CHECK_BENCH_ARCHS   archs benchmarked, in order     ["transformer hybrid gdn"]
  GPU_CHECK_BENCH_BATCH   bench --batch                   [32 / 2]
  GPU_CHECK_BENCH_WINDOWS bench --windows (timed)         [64 / 2]
  GPU_CHECK_BENCH_SHAPE   "layers hidden vocab window"    ["16 2048 100352 2048" / "2 256 4096 256"]
  GPU_CHECK_BENCH_DTYPE   bench --dtype                   [bf16 / f32]
  GPU_CHECK_WATCH_ARCH    twin of the watched checkpoint  [transformer]
  GPU_CHECK_WATCH_SHAPE   "layers hidden vocab"           ["16 2048 100352" / "2 256 4096"]
  GPU_CHECK_WATCH_DTYPE   watch config dtype              [bf16 / f32]
  GPU_CHECK_WATCH_BATCH   watch config batch              [32 / 2]
  GPU_CHECK_WATCH_TIMEOUT seconds from daemon start until the checkpoint must be scored [150]
  GPU_CHECK_IDLE_S        seconds sampled after the job   [10]
  GPU_CHECK_RESAMPLES     watch config resamples          [1000 / 200]
  GPU_CHECK_EVAL_BYTES    text put into the evalset       [260000 / 60000] (~1.3 bytes/token)
  GPU_CHECK_WORK          scratch folder                  [/tmp/filtermon-gpu-check/work]
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import glob
import json
import os
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHS = ("transformer", "hybrid", "gdn")


def env(name: str, cuda_default, cpu_default=None, cuda: bool = True) -> str:
    v = os.environ.get(name)
    if v is not None and v != "":
        return v
    return str(cuda_default if cuda or cpu_default is None else cpu_default)


class Check:
    def __init__(self, args: argparse.Namespace):
        self.bin = args.bin
        self.out = Path(args.out)
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.python = args.python
        self.device_kind = env("GPU_CHECK_DEVICE", "cuda")
        self.cuda = self.device_kind != "cpu"
        self.device = "cuda:0" if self.cuda else "cpu"
        self.t0 = float(os.environ.get("GPU_CHECK_T0") or time.time())
        self.deadline = self.t0 + float(env("GPU_CHECK_BUDGET_S", 450))
        self.work = Path(env("GPU_CHECK_WORK", "/tmp/filtermon-gpu-check/work"))
        self.summary: dict = {
            "gpu": None,
            "gpu_memory_total": None,
            "driver": None,
            "binary_version": None,
            "device": self.device,
            "python": None,
            "parity": {"f32": [], "bf16": []},
            "bench": [],
            "watch": {},
            "errors": [e for e in os.environ.get("GPU_CHECK_SETUP_ERRORS", "").splitlines() if e.strip()],
            "steps": {},
            "seconds_total": None,
        }

    # ---- helpers --------------------------------------------------------------------
    def left(self) -> float:
        return self.deadline - time.time()

    def error(self, msg: str) -> None:
        self.summary["errors"].append(msg)
        print(f"gpu-check: {msg}", file=sys.stderr, flush=True)

    def save(self) -> None:
        self.summary["seconds_total"] = round(time.time() - self.t0, 1)
        tmp = self.out / "gpu-check.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=1) + "\n")
        os.replace(tmp, self.out / "gpu-check.json")

    def run(self, cmd: list[str], log: Path, timeout: float, env_extra: dict | None = None) -> tuple[int, str, float]:
        """Runs cmd; stdout is returned and logged, stderr logged. rc 124 on timeout."""
        timeout = max(1.0, timeout)
        e = dict(os.environ)
        if env_extra:
            e.update(env_extra)
        with open(log, "a") as f:
            f.write(f"\n$ {shlex.join(str(c) for c in cmd)}   (timeout {timeout:.0f} s)\n")
            f.flush()
            t = time.time()
            try:
                p = subprocess.Popen(
                    [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=f, text=True, cwd=ROOT, env=e,
                    start_new_session=True,
                )
            except OSError as ex:
                f.write(f"cannot start: {ex}\n")
                return 127, "", 0.0
            try:
                out, _ = p.communicate(timeout=timeout)
                rc = p.returncode
            except subprocess.TimeoutExpired:
                stop_group(p)
                out, _ = p.communicate()
                rc = 124
            secs = time.time() - t
            f.write(out)
            f.write(f"[exit {rc} after {secs:.1f} s]\n")
        return rc, out, secs

    @staticmethod
    def tail(log: Path, n: int = 1) -> str:
        """The last n non-empty lines of a log, without the [exit ...] marks."""
        try:
            lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip() and not l.startswith("[exit")]
        except OSError:
            return ""
        return " | ".join(l.strip()[:300] for l in lines[-n:])

    def last_line(self, log: Path) -> str:
        """The last line that reads like an error, else the last line."""
        text = self.tail(log, 6).split(" | ")
        for line in reversed(text):
            if line.lower().startswith(("error", "traceback")) or "error" in line.lower():
                return line
        return text[-1] if text else ""

    def step(self, name: str, fn) -> None:
        t = time.time()
        print(f"gpu-check: {name} ({self.left():.0f} s left)", file=sys.stderr, flush=True)
        try:
            fn()
        except Exception as ex:  # noqa: BLE001 - one failing step must not stop the others
            self.error(f"{name}: {type(ex).__name__}: {ex}")
        self.summary["steps"][name] = {"seconds": round(time.time() - t, 1)}
        self.save()

    # ---- setup ----------------------------------------------------------------------
    def setup(self) -> None:
        log = self.logs / "setup.log"
        if self.cuda:
            rc, out, _ = self.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], log, 30
            )
            if rc == 0 and out.strip():
                parts = [p.strip() for p in out.strip().splitlines()[0].split(",")]
                if len(parts) >= 3:
                    self.summary.update(gpu=parts[0], gpu_memory_total=parts[1], driver=parts[2])
            else:
                self.error(f"setup: nvidia-smi failed (exit {rc})")
        rc, out, _ = self.run([self.bin, "--version"], log, 30)
        if rc == 0:
            self.summary["binary_version"] = out.strip()
        else:
            self.error(f"setup: {self.bin} --version failed (exit {rc}): {self.last_line(log)}")
        probe = (
            "import json, sys\n"
            "d = {'python': sys.version.split()[0]}\n"
            "try:\n"
            "    import torch; d['torch'] = torch.__version__; d['cuda_available'] = torch.cuda.is_available()\n"
            "    d['torch_cuda'] = torch.version.cuda\n"
            "except Exception as e: d['torch_error'] = repr(e)[:300]\n"
            "try:\n"
            "    import transformers; d['transformers'] = transformers.__version__\n"
            "    d['transformers_path'] = transformers.__file__\n"
            "    from transformers import OlmoHybridForCausalLM; d['olmo_hybrid'] = True\n"
            "except Exception as e: d['transformers_error'] = repr(e)[:300]\n"
            "for m in ('triton', 'fla', 'tokenizers', 'safetensors', 'huggingface_hub'):\n"
            "    try: d[m] = __import__(m).__version__\n"
            "    except Exception as e: d[m + '_error'] = repr(e)[:200]\n"
            "print(json.dumps(d))\n"
        )
        rc, out, _ = self.run([self.python, "-c", probe], log, 90)
        try:
            found = self.summary["python"] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.error(f"setup: python probe failed (exit {rc}): {self.last_line(log)}")
            return
        if self.cuda and not found.get("cuda_available"):
            self.error(f"setup: torch sees no CUDA device: {found.get('torch_error', found.get('torch'))}")
        if not found.get("olmo_hybrid"):
            self.error(f"setup: no transformers with olmo_hybrid: {found.get('transformers_error')}")

    # ---- (a) parity -----------------------------------------------------------------
    def parity(self) -> None:
        log = self.logs / "parity.log"
        results = self.summary["parity"]
        exits = results.setdefault("exit", {})
        for dtype, folder in (("f32", "tests/fixtures/hf"), ("bf16", "tests/fixtures/hf_bf16")):
            fixtures = sorted(p for p in glob.glob(str(ROOT / folder / "*")) if os.path.isdir(p))
            if not fixtures:
                self.error(f"parity {dtype}: no fixtures under {folder}")
                continue
            timeout = min(60.0, self.left() - 30)
            rc, out, secs = self.run(
                [self.bin, "parity", *fixtures, "--device", self.device, "--dtype", dtype, "--json"], log, timeout
            )
            rows = json_lines(out)
            results[dtype] = rows
            exits[dtype] = rc
            failed = [r.get("fixture") for r in rows if r.get("pass") is False]
            if rc == 124:
                self.error(f"parity {dtype}: timed out after {secs:.0f} s ({len(rows)} fixtures done)")
            elif rc != 0 or failed:
                why = f"failed: {', '.join(map(str, failed))}" if failed else self.last_line(log)
                self.error(f"parity {dtype}: exit {rc}: {why}")
        results["pass"] = bool(results["f32"] or results["bf16"]) and all(
            r.get("pass") is True for r in results["f32"] + results["bf16"]
        ) and all(v == 0 for v in exits.values())

    # ---- (b) bench ------------------------------------------------------------------
    def bench(self) -> None:
        log = self.logs / "bench.log"
        shape = env("GPU_CHECK_BENCH_SHAPE", "16 2048 100352 2048", "2 256 4096 256", self.cuda).split()
        layers, hidden, vocab, window = shape
        batch = env("GPU_CHECK_BENCH_BATCH", 32, 2, self.cuda)
        windows = env("GPU_CHECK_BENCH_WINDOWS", 64, 2, self.cuda)
        dtype = env("GPU_CHECK_BENCH_DTYPE", "bf16", "f32", self.cuda)
        archs = [a for a in env("GPU_CHECK_BENCH_ARCHS", " ".join(ARCHS)).split() if a in ARCHS]
        self.summary["bench_settings"] = {
            "layers": int(layers), "hidden": int(hidden), "vocab": int(vocab), "window": int(window),
            "batch": int(batch), "windows": int(windows), "dtype": dtype, "device": self.device,
        }
        # bench runs `--torch PYTHON bench_torch.py ...` after its own measurement of each twin.
        # This stand-in for PYTHON keeps a copy of bench_torch.py's JSON rows (GDN kernel, peak
        # GPU memory) and its stderr, and gives up at GPU_CHECK_TORCH_DEADLINE (epoch seconds),
        # so that a slow transformers run leaves time to measure filtermon alone.
        self.work.mkdir(parents=True, exist_ok=True)
        rows_file = self.work / "torch-rows.jsonl"
        rows_file.write_text("")
        wrapper = self.work / "torch-python"
        wrapper.write_text(
            "#!/usr/bin/env bash\n"
            "left=$(( ${GPU_CHECK_TORCH_DEADLINE:-0} - $(date +%s) ))\n"
            'if [ "${GPU_CHECK_TORCH_DEADLINE:-0}" = 0 ] || ! command -v timeout >/dev/null; then\n'
            '    run=("$GPU_CHECK_REAL_PYTHON")\n'
            "elif [ $left -lt 10 ]; then\n"
            '    echo "gpu-check: no time left for bench_torch.py" >&2; exit 124\n'
            "else\n"
            '    run=(timeout --kill-after=5 "$left" "$GPU_CHECK_REAL_PYTHON")\n'
            "fi\n"
            '"${run[@]}" "$@" 2>>"$GPU_CHECK_TORCH_LOG" | tee -a "$GPU_CHECK_TORCH_ROWS"\n'
            "rc=${PIPESTATUS[0]}\n"
            '[ $rc = 124 ] && echo "gpu-check: bench_torch.py stopped at its deadline" >&2\n'
            "exit $rc\n"
        )
        wrapper.chmod(0o755)
        wrapper_env = {
            "GPU_CHECK_REAL_PYTHON": self.python,
            "GPU_CHECK_TORCH_LOG": str(log),
            "GPU_CHECK_TORCH_ROWS": str(rows_file),
        }
        with_batch = True
        # The hybrid pays for fla's first-use autotuning; the pure-GDN twin then reuses its cache.
        weights = {"transformer": 1.0, "hybrid": 3.0, "gdn": 1.0}
        reserve = 10.0
        for i, arch in enumerate(archs):
            share = weights[arch] / sum(weights[a] for a in archs[i:])
            timeout = (self.left() - reserve) * share
            if timeout < 20:
                self.error(f"bench {arch}: skipped, {self.left():.0f} s left")
                continue
            t = time.time()
            wrapper_env["GPU_CHECK_TORCH_DEADLINE"] = str(int(t + 0.75 * timeout))

            def cmd(torch: bool) -> list:
                c = [self.bin, "bench", "--device", self.device, "--dtype", dtype, "--layers", layers,
                     "--hidden", hidden, "--vocab", vocab, "--window", window, "--windows", windows,
                     "--arch", arch, "--json"]
                if with_batch:
                    c += ["--batch", batch]
                if torch:
                    c += ["--torch", str(wrapper), "--torch-script", str(ROOT / "scripts" / "bench_torch.py")]
                return c

            rc, out, secs = self.run(cmd(True), log, timeout, wrapper_env)
            if rc == 2 and with_batch and "'--batch'" in self.tail(log, 6):
                self.error("bench: this binary has no --batch; benchmarking one window per pass")
                with_batch = False
                rc, out, secs = self.run(cmd(True), log, timeout - (time.time() - t), wrapper_env)
            rows = [r for r in json_lines(out) if r.get("arch") == arch]
            if rc != 0 or not rows:
                self.error(f"bench {arch}: exit {rc} after {secs:.0f} s: {self.last_line(log)}")
                if not rows and self.left() - reserve > 20:
                    # filtermon alone, so that its number is not lost with transformers'
                    fallback = max(20.0, min(120.0, timeout - (time.time() - t)))
                    rc2, out2, _ = self.run(cmd(False), log, min(fallback, self.left() - reserve), wrapper_env)
                    rows = [r for r in json_lines(out2) if r.get("arch") == arch]
                    for r in rows:
                        r["torch_failed"] = f"exit {rc}"
                    if rc2 != 0 or not rows:
                        self.error(f"bench {arch} without --torch: exit {rc2}: {self.last_line(log)}")
                elif not rows:
                    self.error(f"bench {arch}: no time left ({self.left():.0f} s) to measure filtermon alone")
            torch_rows = [r for r in json_lines(rows_file.read_text()) if r.get("arch") == arch]
            for row in rows:
                tps = row.get("tokens_per_s")
                ttps = row.get("torch_tokens_per_s")
                if not ttps and torch_rows:
                    ttps = row["torch_tokens_per_s"] = torch_rows[-1].get("tokens_per_s")
                if tps and ttps and "ratio" not in row:
                    row["ratio"] = tps / ttps
                row["seconds_per_1M_tokens"] = 1e6 / tps if tps else None
                row["torch_seconds_per_1M_tokens"] = 1e6 / ttps if ttps else None
                if torch_rows and not isinstance(row.get("torch"), dict):
                    row["torch"] = torch_rows[-1]
                row["bench_seconds"] = round(time.time() - t, 1)
                self.summary["bench"].append(row)
            if not rows and torch_rows:  # transformers' number at least
                self.summary["bench"].append({"arch": arch, "tokens_per_s": None, "torch_tokens_per_s":
                                              torch_rows[-1].get("tokens_per_s"), "torch": torch_rows[-1]})
            self.save()

    # ---- (c) watch ------------------------------------------------------------------
    def watch(self) -> None:
        log = self.logs / "watch.log"
        w = self.summary["watch"]
        start = time.time()
        budget = min(float(env("GPU_CHECK_WATCH_TIMEOUT", 150)) + 120, self.left() - 20)
        step_deadline = start + budget
        wdir = self.work / "watch"
        if wdir.exists():
            subprocess.run(["rm", "-rf", str(wdir)], check=False)
        wdir.mkdir(parents=True)
        tokenizer = ROOT / "tests" / "fixtures" / "tokenizer.json"
        layers, hidden, vocab = env("GPU_CHECK_WATCH_SHAPE", "16 2048 100352", "2 256 4096", self.cuda).split()
        arch = env("GPU_CHECK_WATCH_ARCH", "transformer")
        dtype = env("GPU_CHECK_WATCH_DTYPE", "bf16", "f32", self.cuda)
        batch = int(env("GPU_CHECK_WATCH_BATCH", 32, 2, self.cuda))
        w.update(arch=arch, layers=int(layers), hidden=int(hidden), vocab=int(vocab), dtype=dtype, batch=batch,
                 device=self.device)

        # The evalset is prepared (CPU) while the checkpoint is written (GPU, disk).
        docs = wdir / "docs.jsonl"
        w["eval_documents"], w["eval_bytes"] = write_documents(docs, int(env("GPU_CHECK_EVAL_BYTES", 260000, 60000,
                                                                             self.cuda)))
        evalset = wdir / "evalset"
        prep_log = open(log, "a")
        prep_cmd = [self.bin, "prepare", "--input", str(docs), "--tokenizer", str(tokenizer), "--out", str(evalset),
                    "--window", "2048"]
        prep_log.write(f"\n$ {shlex.join(prep_cmd)}   (in the background)\n")
        prep_log.flush()
        t_prep = time.time()
        prep = subprocess.Popen(prep_cmd, stdout=prep_log, stderr=prep_log, cwd=ROOT, start_new_session=True)

        ckpt = wdir / "runs" / arch / "step1000"
        rc, out, secs = self.run(
            [self.python, ROOT / "scripts" / "make_random_checkpoint.py", "--arch", arch, "--layers", layers,
             "--hidden", hidden, "--vocab", vocab, "--dtype", "bf16", "--device", "cuda" if self.cuda else "cpu",
             "--out", ckpt, "--tokenizer", tokenizer],
            log, min(120.0, step_deadline - time.time()),
        )
        made = json_lines(out)
        if rc != 0 or not made:
            stop_group(prep)
            prep_log.close()
            raise RuntimeError(f"make_random_checkpoint.py exit {rc}: {self.last_line(log)}")
        w["checkpoint"] = made[-1]
        w["weights_bytes"] = made[-1].get("safetensors_bytes")
        try:
            prep_rc = prep.wait(timeout=max(1.0, min(120.0, step_deadline - time.time())))
        except subprocess.TimeoutExpired:
            stop_group(prep)
            prep_rc = 124
        prep_log.write(f"[prepare exit {prep_rc} after {time.time() - t_prep:.1f} s]\n")
        prep_log.close()
        w["prepare_seconds"] = round(time.time() - t_prep, 1)
        if prep_rc != 0:
            raise RuntimeError(f"prepare exit {prep_rc}: {self.last_line(log)}")
        try:
            manifest = json.loads((evalset / "manifest.json").read_text())
            w["eval_manifest"] = {k: v for k, v in manifest.items() if isinstance(v, (int, float, str))}
        except (OSError, ValueError):
            pass

        db = wdir / "filtermon.db"
        config = wdir / "watch.toml"
        config.write_text(
            "# written by scripts/gpu_check.py\n"
            f"db = {json.dumps(str(db))}\n"
            f"charts = {json.dumps(str(wdir / 'charts'))}\n"
            f"device = {json.dumps(self.device)}\n"
            f"dtype = {json.dumps(dtype)}\n"
            f"batch = {batch}\n"
            f"resamples = {int(env('GPU_CHECK_RESAMPLES', 1000, 200, self.cuda))}\n"
            "\n[daemon]\nsettle_secs = 1\nrescan_secs = 2\ngrace_secs = 30\nlease_secs = 120\n"
            "max_attempts = 1\nretry_secs = 60\n"
            f"\n[[evalsets]]\nname = \"repo\"\ndir = {json.dumps(str(evalset))}\n"
            f"\n[[runs]]\nname = {json.dumps(arch)}\narch = {json.dumps(arch)}\n"
            f"dir = {json.dumps(str(ckpt.parent))}\ntokens_per_step = 1000\n"
        )
        with open(log, "a") as f:
            f.write(f"\n--- {config}\n{config.read_text()}")

        sampler = Sampler(self.cuda, self.logs / "watch-samples.csv")
        sampler.start()
        time.sleep(0.5)  # a few samples before the daemon starts
        daemon_log = open(log, "a")
        cmd = [self.bin, "watch", "--config", str(config)]
        daemon_log.write(f"\n$ RUST_LOG=info {shlex.join(cmd)}   (in the background)\n")
        daemon_log.flush()
        t_daemon = time.time()
        daemon = subprocess.Popen(cmd, stdout=daemon_log, stderr=daemon_log, cwd=ROOT, start_new_session=True,
                                  env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        sampler.pid = daemon.pid
        sampler.phase = "job"
        w["daemon_pid"] = daemon.pid
        job_deadline = min(t_daemon + float(env("GPU_CHECK_WATCH_TIMEOUT", 150)), step_deadline - 25)
        jobs: list[dict] = []
        scored = False
        try:
            while time.time() < job_deadline:
                if daemon.poll() is not None:
                    self.error(f"watch: the daemon exited early (exit {daemon.returncode})")
                    break
                jobs = read_jobs(db)
                if jobs and all(j["state"] in ("done", "failed") for j in jobs):
                    scored = True
                    break
                time.sleep(0.25)
            t_done = time.time()
            w["seconds_to_scored"] = round(t_done - t_daemon, 1)
            if not scored:
                if daemon.poll() is None:
                    self.error(f"watch: not scored {t_done - t_daemon:.0f} s after the daemon started")
            elif any(j["state"] == "failed" for j in jobs):
                self.error(f"watch: job failed: {next(j['error'] for j in jobs if j['state'] == 'failed')}")
            # Idle: what the daemon keeps holding after the job.
            if daemon.poll() is None:
                sampler.phase = "idle"
                idle_end = min(time.time() + float(env("GPU_CHECK_IDLE_S", 10)), step_deadline - 15)
                while time.time() < idle_end and daemon.poll() is None:
                    time.sleep(0.2)
            sampler.phase = "stopping"
            t_term = time.time()
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=max(5.0, min(45.0, self.deadline - time.time() - 5)))
                except subprocess.TimeoutExpired:
                    self.error("watch: the daemon did not exit within 45 s of SIGTERM; killed")
                    stop_group(daemon, first=signal.SIGKILL)
            w["exit_code"] = daemon.returncode
            w["stop_seconds"] = round(time.time() - t_term, 1)
        finally:
            if daemon.poll() is None:
                stop_group(daemon, first=signal.SIGKILL)
            sampler.stop()
            daemon_log.close()

        jobs = read_jobs(db) or jobs
        w["jobs"] = jobs
        for j in jobs:
            if j.get("score_secs") and j.get("evalset_tokens"):
                j["tokens_per_s"] = j["evalset_tokens"] / j["score_secs"]
            if j.get("started_at"):
                j["started_after_daemon_s"] = round(j["started_at"] - t_daemon, 2)
        w["memory"] = sampler.summary()
        rc, out, _ = self.run([self.bin, "status", "--db", str(db), "--json"], log, 30)
        try:
            st = json.loads(out)
            w["status"] = {
                "runs": [
                    {"name": r.get("name"), "checkpoints": r.get("checkpoints"),
                     "latest": [x for x in r.get("latest", []) if x.get("filter") in ("all", "content", "copy5")]}
                    for r in st.get("runs", [])
                ],
                "failures": st.get("failures"),
            }
        except ValueError:
            self.error(f"watch: status --json gave no JSON (exit {rc})")


# ---- helpers outside the class -------------------------------------------------------
def json_lines(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if isinstance(v, dict):
                rows.append(v)
    return rows


def stop_group(p: subprocess.Popen, first: int = signal.SIGTERM) -> None:
    """Stops a child started with start_new_session=True, and what it started."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, first)
        p.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired, PermissionError):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()


def write_documents(path: Path, max_bytes: int) -> tuple[int, int]:
    """JSONL documents from text in the repository: data/eval first (by folder), then the
    README, the Python scripts and Rust sources, until max_bytes."""
    sources: list[tuple[str, Path]] = []
    for p in sorted((ROOT / "data" / "eval").glob("*/*")):
        if p.is_file():
            sources.append((p.parent.name, p))
    sources.append(("markdown", ROOT / "README.md"))
    sources += [("python", p) for p in sorted((ROOT / "scripts").glob("*.py"))]
    sources += [("rust", p) for p in sorted((ROOT / "src").rglob("*.rs"))]
    n, total = 0, 0
    with open(path, "w") as f:
        for domain, p in sources:
            if total >= max_bytes:
                break
            try:
                text = p.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            if not text.strip():
                continue
            text = text[: max(1000, max_bytes - total)]
            f.write(json.dumps({"id": str(p.relative_to(ROOT)), "domain": domain, "text": text}) + "\n")
            n += 1
            total += len(text.encode())
    return n, total


def read_jobs(db: Path) -> list[dict]:
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            con.row_factory = sqlite3.Row
            rows = con.execute(
                "SELECT j.state, j.attempts, j.error, j.queued_at, j.started_at, j.finished_at, j.score_secs, "
                "c.name AS checkpoint, e.name AS evalset, e.tokens AS evalset_tokens "
                "FROM jobs j JOIN checkpoints c ON c.id = j.checkpoint_id JOIN evalsets e ON e.id = j.evalset_id"
            ).fetchall()
            return [dict(r) for r in rows]
        finally:
            con.close()
    except sqlite3.Error:
        return []


class Nvml:
    """Device memory in use from NVML via ctypes (microseconds a call, unlike nvidia-smi)."""

    class _Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

    def __init__(self, index: int = 0):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        init = getattr(self.lib, "nvmlInit_v2", None) or self.lib.nvmlInit
        if init() != 0:
            raise OSError("nvmlInit failed")
        self.handle = ctypes.c_void_p()
        get = getattr(self.lib, "nvmlDeviceGetHandleByIndex_v2", None) or self.lib.nvmlDeviceGetHandleByIndex
        if get(ctypes.c_uint(index), ctypes.byref(self.handle)) != 0:
            raise OSError("nvmlDeviceGetHandleByIndex failed")

    def used_mib(self) -> float | None:
        m = self._Memory()
        if self.lib.nvmlDeviceGetMemoryInfo(self.handle, ctypes.byref(m)) != 0:
            return None
        return m.used / 2**20


class Sampler:
    """Samples the daemon's GPU memory every 0.2 s, tagged by phase: its own use as
    `nvidia-smi --query-compute-apps` lists it, the device's memory in use (NVML, else
    nvidia-smi every fifth sample), and its RSS."""

    def __init__(self, cuda: bool, csv_path: Path):
        self.cuda = cuda
        self.csv_path = csv_path
        self.pid: int | None = None
        self.phase = "before"
        self.samples: list[dict] = []
        self.pid_seen = False
        self.apps_seen = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.time()
        self.smi_errors = 0
        self.nvml: Nvml | None = None
        self.nvml_error: str | None = None
        if cuda:
            try:
                self.nvml = Nvml()
            except Exception as e:  # noqa: BLE001 - nvidia-smi remains
                self.nvml_error = f"{type(e).__name__}: {e}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with open(self.csv_path, "w", newline="") as f:
            cols = ["t", "phase", "gpu_mib_pid", "gpu_mib_all_apps", "gpu_used_mib", "rss_mib"]
            wr = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            wr.writeheader()
            wr.writerows(self.samples)

    def _smi(self, query: str) -> list[list[str]] | None:
        try:
            out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.smi_errors += 1
            return None
        if out.returncode != 0:
            self.smi_errors += 1
            return None
        return [[x.strip() for x in l.split(",")] for l in out.stdout.splitlines() if l.strip()]

    def _loop(self) -> None:
        i = 0
        while not self._stop.is_set():
            t = time.time()
            s: dict = {"t": round(t - self.t0, 2), "phase": self.phase}
            if self.cuda:
                apps = self._smi("--query-compute-apps=pid,used_memory")
                if apps is not None:
                    mib = {}
                    for a in apps:
                        try:
                            mib[int(a[0])] = float(a[1])
                        except (ValueError, IndexError):
                            continue
                    s["gpu_mib_all_apps"] = sum(mib.values())
                    self.apps_seen |= bool(mib)
                    if self.pid in mib:
                        self.pid_seen = True
                        s["gpu_mib_pid"] = mib[self.pid]
                used = None
                if self.nvml is not None:
                    try:
                        used = self.nvml.used_mib()
                    except Exception:  # noqa: BLE001
                        used = None
                elif i % 5 == 0:
                    rows = self._smi("--query-gpu=memory.used")
                    try:
                        used = float(rows[0][0]) if rows else None
                    except (ValueError, IndexError):
                        used = None
                if used is not None:
                    s["gpu_used_mib"] = round(used, 1)
            if self.pid:
                try:
                    with open(f"/proc/{self.pid}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                s["rss_mib"] = round(int(line.split()[1]) / 1024, 1)
                except OSError:
                    pass
            self.samples.append(s)
            i += 1
            self._stop.wait(max(0.0, 0.2 - (time.time() - t)))

    def stats(self, phase: str, key: str, minus: float = 0.0) -> dict | None:
        v = [s[key] - minus for s in self.samples if s["phase"] == phase and key in s]
        if not v:
            return None
        return {"max": max(v), "median": statistics.median(v), "last": v[-1], "samples": len(v)}

    def summary(self) -> dict:
        out: dict = {"samples": len(self.samples), "rss_mib_job": self.stats("job", "rss_mib"),
                     "rss_mib_idle": self.stats("idle", "rss_mib")}
        if not self.cuda:
            return out
        # nvidia-smi may list host pids (another pid namespace), or no process at all in a
        # container: then all listed apps (the daemon is the only GPU process in this step), or
        # the device's memory in use less what was in use before the daemon started.
        before = self.stats("before", "gpu_used_mib")
        if self.pid_seen:
            source, key, minus = "nvidia-smi compute-apps, daemon pid", "gpu_mib_pid", 0.0
        elif self.apps_seen:
            source, key, minus = "nvidia-smi compute-apps, all (pid not listed)", "gpu_mib_all_apps", 0.0
        else:
            source, key, minus = "device memory used minus before (no compute apps listed)", "gpu_used_mib", (
                before["median"] if before else 0.0)
        job, idle = self.stats("job", key, minus), self.stats("idle", key, minus)
        out.update(
            source=source,
            pid_matched=self.pid_seen,
            nvml=self.nvml is not None,
            nvml_error=self.nvml_error,
            nvidia_smi_errors=self.smi_errors,
            peak_mib_job=job["max"] if job else None,
            idle_mib=idle["last"] if idle else None,
            idle_mib_max=idle["max"] if idle else None,
            gpu_mib_job=job,
            gpu_mib_idle=idle,
            device_used_mib_before=before,
            device_used_mib_job=self.stats("job", "gpu_used_mib"),
            device_used_mib_idle=self.stats("idle", "gpu_used_mib"),
            device_used_mib_stopping=self.stats("stopping", "gpu_used_mib"),
        )
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the filtermon binary")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "gpu-check-out"))
    ap.add_argument("--python", default=sys.executable, help="interpreter with torch for the Python steps")
    args = ap.parse_args()
    check = Check(args)
    check.step("setup", check.setup)
    steps = {"parity": check.parity, "bench": check.bench, "watch": check.watch}
    for name in env("GPU_CHECK_STEPS", "parity watch bench").split():
        if name == "none":
            continue
        if name not in steps:
            check.error(f"unknown step {name!r}")
            continue
        if check.left() < 15:
            check.error(f"{name}: skipped, {check.left():.0f} s left of GPU_CHECK_BUDGET_S")
            continue
        check.step(name, steps[name])
    check.save()
    print((check.out / "gpu-check.json").read_text(), end="")
    return 0 if not check.summary["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
