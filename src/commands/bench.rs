//! `filtermon bench`: scoring throughput of random-weight transformer, hybrid and pure-GDN
//! twins, in the shapes `scripts/bench_torch.py` gives transformers.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::commands::cli::{BenchArch, BenchArgs};
use crate::engine::checkpoint::sources::{self, Random};
use crate::engine::checkpoint::Checkpoint;
use crate::engine::device;
use crate::engine::device::DTypeArg;
use crate::engine::model::layers::Projection;
use crate::engine::model::twins::{self, Twin, TwinShape};
use crate::engine::score::{score_windows, Window};
use crate::error::input_error;

/// The twin benchmarked as `arch`.
fn twin(arch: BenchArch) -> Twin {
    match arch {
        BenchArch::Transformer => Twin::Transformer,
        BenchArch::Hybrid | BenchArch::All => Twin::Hybrid,
        BenchArch::Gdn => Twin::Recurrent,
    }
}

/// Runs the command.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if !args.load.is_empty() {
        return bench_load(args);
    }
    if args.window < 2
        || args.windows == 0
        || args.batch == 0
        || args.layers == 0
        || args.hidden < 128
    {
        return Err(input_error(
            "bench needs --window ≥ 2, --windows ≥ 1, --batch ≥ 1, --layers ≥ 1 and --hidden ≥ 128",
        ));
    }
    let device = device::parse(&args.device)?;
    let archs = match args.arch {
        BenchArch::All => vec![BenchArch::Transformer, BenchArch::Hybrid, BenchArch::Gdn],
        one => vec![one],
    };
    let threads = rayon::current_num_threads();
    if args.torch.is_some() && args.dtype == DTypeArg::F16 {
        return Err(input_error(
            "--torch compares f32 or bf16 (bench_torch.py has no f16)",
        ));
    }
    let cpu = cpu_description();
    if !args.json {
        writeln!(stdout, "cpu: {cpu}")?;
    }
    let peak = if args.peak {
        Some(print_peak(&mut stdout, args, &device, threads)?)
    } else {
        None
    };
    if !args.json {
        let reference = if args.torch.is_some() {
            "  transformers   ratio"
        } else {
            ""
        };
        let share = if peak.is_some() {
            "  GFLOP/s  of peak"
        } else {
            ""
        };
        writeln!(
            stdout,
            "arch         params    tokens/s{share}{reference}  (window {}, {} windows, batch {}, {threads} threads, {}, {})",
            args.window,
            args.windows,
            args.batch,
            args.dtype.name(),
            args.device
        )?;
    }
    for arch in archs {
        let shape = TwinShape::bench(args.layers, args.hidden, args.vocab);
        let spec = twins::config(twin(arch), &shape)
            .spec()
            .map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
        let vb = sources::var_builder(Random, args.dtype.dtype(), &device);
        let model = sources::build(&spec, vb, Path::new("<random>"))?;
        let params = model.parameter_count();
        let flops_per_token = spec.flops_per_token(args.window);
        let path = model.path;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut windows = |count: usize| -> Vec<Window> {
            (0..count)
                .map(|index| Window {
                    doc: 0,
                    index,
                    tokens: (0..args.window)
                        .map(|_| rng.random_range(0..args.vocab as u32))
                        .collect(),
                })
                .collect()
        };
        // One untimed batch first: kernels load, tables and allocator pools fill.
        score_windows(&model, &windows(args.batch), args.batch, &device)?;
        let (_, speed) = score_windows(&model, &windows(args.windows), args.batch, &device)?;
        let tps = speed.tokens as f64 / speed.seconds;
        let gflops = tps * flops_per_token / 1e9;
        let name = match arch {
            BenchArch::Transformer => "transformer",
            BenchArch::Hybrid => "hybrid",
            BenchArch::Gdn | BenchArch::All => "gdn",
        };
        // Freed before the reference runs, so the two never share the memory.
        drop(model);
        device::release_cached_memory(&device)?;
        let reference = match &args.torch {
            Some(python) => Some(torch_tokens_per_s(python, args, name, threads)?),
            None => None,
        };
        if args.json {
            let mut row = json!({"arch": name, "params": params, "tokens_per_s": tps,
                "seconds_per_1m_tokens": 1e6 / tps, "threads": threads, "window": args.window,
                "windows": args.windows, "batch": args.batch, "device": args.device,
                "path": path.name(), "dtype": args.dtype.name(), "engine": "filtermon",
                "cpu": cpu});
            if let Some(r) = &reference {
                row["torch_tokens_per_s"] = json!(r.tokens_per_s);
                row["torch_seconds_per_1m_tokens"] = json!(1e6 / r.tokens_per_s);
                row["torch"] = r.row.clone();
                row["ratio"] = json!(tps / r.tokens_per_s);
            }
            row["gflops_per_token"] = json!(flops_per_token / 1e9);
            row["gflops_per_s"] = json!(gflops);
            if let Some(p) = peak {
                row["share_of_peak"] = json!(gflops / p);
            }
            writeln!(stdout, "{row}")?;
        } else {
            let reference = reference
                .map(|r| format!(" {:>13.0} {:>6.2}x", r.tokens_per_s, tps / r.tokens_per_s))
                .unwrap_or_default();
            let share = peak
                .map(|p| format!(" {gflops:>8.1} {:>8.0}%", 100.0 * gflops / p))
                .unwrap_or_default();
            writeln!(
                stdout,
                "{name:<12} {:>6.1}M {tps:>10.0}{share}{reference}",
                params as f64 / 1e6
            )?;
        }
    }
    Ok(())
}

/// What this machine's scoring speed depends on, in one line: the CPU, the matrix-product
/// kernels `gemm` picks for it at run time (AVX-512 where the CPU has AVX-512F, else AVX2 + FMA,
/// else SSE), whether it has AVX512-BF16, the caches, and the clock now. Ratios against another
/// machine of the "same kind" move with exactly these.
fn cpu_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let mut parts = vec![model];
    #[cfg(target_arch = "x86_64")]
    {
        let kernels = if is_x86_feature_detected!("avx512f") {
            "AVX-512 (x86-64-v4)"
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            "AVX2+FMA (x86-64-v3)"
        } else {
            "SSE (baseline)"
        };
        parts.push(format!("gemm kernels {kernels}"));
        let bf16 = if is_x86_feature_detected!("avx512bf16") {
            "yes"
        } else {
            "no"
        };
        parts.push(format!("AVX512-BF16 {bf16}"));
    }
    let caches: Vec<String> = (0..8)
        .filter_map(|i| {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
            let (level, kind, size) = (read("level")?, read("type")?, read("size")?);
            let kind = match kind.trim() {
                "Data" => "d",
                "Instruction" => return None,
                _ => "",
            };
            Some(format!("L{}{kind} {}", level.trim(), size.trim()))
        })
        .collect();
    if !caches.is_empty() {
        parts.push(caches.join(" "));
    }
    if let Some(mhz) = field("cpu MHz") {
        parts.push(format!("{mhz} MHz now"));
    }
    parts.join(", ")
}

/// Measures and prints the matrix-product peak ([`matmul_peak`]); returns its GFLOP/s.
fn print_peak(
    stdout: &mut impl Write,
    args: &BenchArgs,
    device: &candle_core::Device,
    threads: usize,
) -> anyhow::Result<f64> {
    let gflops = matmul_peak(args.dtype.dtype(), device)?;
    // What one core's instructions allow, beside what the matrix product reaches: on a CPU
    // whose bf16 dot product is no faster than its f32 FMA, bf16 weights cannot speed scoring up.
    let core = device
        .is_cpu()
        .then(crate::engine::core_rate::measure)
        .flatten();
    if args.json {
        writeln!(
            stdout,
            "{}",
            json!({"peak_gflops_per_s": gflops, "matmul": PEAK_N, "dtype": args.dtype.name(),
                   "device": args.device, "threads": threads,
                   "core_f32_fma_gflops_per_s": core.map(|c| c.f32_fma),
                   "core_bf16_dot_gflops_per_s": core.and_then(|c| c.bf16_dot)})
        )?;
    } else {
        if let Some(c) = core {
            let bf16 = c.bf16_dot.map_or("no AVX512-BF16".to_string(), |b| {
                format!(
                    "bf16 dot (vdpbf16ps) {b:.1} GFLOP/s, {:.2}× the f32 rate",
                    b / c.f32_fma
                )
            });
            writeln!(
                stdout,
                "core: f32 FMA {:.1} GFLOP/s, {bf16} (one core, instructions alone)",
                c.f32_fma
            )?;
        }
        writeln!(
            stdout,
            "peak: {gflops:.1} GFLOP/s, one {PEAK_N}×{PEAK_N}×{PEAK_N} matrix product ({}, {}, {threads} threads)",
            args.dtype.name(),
            args.device
        )?;
    }
    Ok(gflops)
}

/// Side of the square matrices of the peak measurement: large enough that the product is
/// compute-bound on a CPU and a GPU alike.
const PEAK_N: usize = 2048;

/// GFLOP/s of the best of five `PEAK_N`³ products (after one untimed), in `dtype` on `device`,
/// as the models' projections multiply (bf16 on the CPU through the bf16 kernels).
fn matmul_peak(dtype: candle_core::DType, device: &candle_core::Device) -> anyhow::Result<f64> {
    let a = candle_core::Tensor::randn(0f32, 1.0, (PEAK_N, PEAK_N), device)?.to_dtype(dtype)?;
    let b = candle_core::Tensor::randn(0f32, 1.0, (PEAK_N, PEAK_N), device)?.to_dtype(dtype)?;
    let b = Projection::head(b)?;
    b.forward(&a)?;
    device.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        b.forward(&a)?;
        device.synchronize()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (PEAK_N as f64).powi(3) / best / 1e9)
}

/// transformers' figures for one twin: its throughput and the whole row it printed (attention
/// and GDN kernels, peak memory).
struct TorchFigures {
    tokens_per_s: f64,
    row: Value,
}

/// transformers on the same twin and device, from `bench_torch.py --json`.
fn torch_tokens_per_s(
    python: &Path,
    args: &BenchArgs,
    arch: &str,
    threads: usize,
) -> anyhow::Result<TorchFigures> {
    if !args.torch_script.is_file() {
        return Err(input_error(format!(
            "{}: no such script (--torch-script)",
            args.torch_script.display()
        )));
    }
    let out = Command::new(python)
        .arg(&args.torch_script)
        .args(["--arch", arch, "--json", "--dtype", args.dtype.name()])
        .args(["--threads", &threads.to_string()])
        .args(["--layers", &args.layers.to_string()])
        .args(["--hidden", &args.hidden.to_string()])
        .args(["--vocab", &args.vocab.to_string()])
        .args(["--window", &args.window.to_string()])
        .args(["--windows", &args.windows.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--device", torch_device(&args.device)])
        .output()
        .map_err(|e| input_error(format!("{}: cannot run: {e}", python.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(input_error(format!(
            "{} failed ({}): {}",
            args.torch_script.display(),
            out.status,
            last.unwrap_or("no message")
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["arch"] == arch)
        .and_then(|row| {
            let tokens_per_s = row["tokens_per_s"].as_f64()?;
            Some(TorchFigures { tokens_per_s, row })
        })
        .ok_or_else(|| {
            input_error(format!(
                "{}: no tokens_per_s for {arch} in its output",
                args.torch_script.display()
            ))
        })
}

/// torch's name of the device filtermon benchmarks on.
fn torch_device(device: &str) -> &'static str {
    if device.starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    }
}

/// Median wall time of opening each folder and building its model, in interleaved rounds so
/// that the page cache treats every folder alike; ratios are against the first folder.
fn bench_load(args: &BenchArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if args.repeats == 0 {
        return Err(input_error("--repeats must be at least 1"));
    }
    let device = device::parse(&args.device)?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); args.load.len()];
    let mut params = vec![0usize; args.load.len()];
    // One untimed round first, so that every folder starts from a warm page cache.
    for round in 0..=args.repeats {
        for (i, dir) in args.load.iter().enumerate() {
            let start = Instant::now();
            let model = Checkpoint::open(dir)?.load_model(args.dtype.dtype(), &device)?;
            let secs = start.elapsed().as_secs_f64();
            params[i] = model.parameter_count();
            if round > 0 {
                times[i].push(secs);
            }
        }
    }
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    for (i, dir) in args.load.iter().enumerate() {
        let ratio = medians[i] / medians[0];
        if args.json {
            writeln!(
                stdout,
                "{}",
                json!({"checkpoint": dir.display().to_string(), "params": params[i],
                       "load_s": medians[i], "ratio_to_first": ratio, "repeats": args.repeats})
            )?;
        } else {
            writeln!(
                stdout,
                "{:>8.1}M params  {:>8.3} s  {ratio:>5.2}x  {}",
                params[i] as f64 / 1e6,
                medians[i],
                dir.display()
            )?;
        }
    }
    Ok(())
}
