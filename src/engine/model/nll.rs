//! Next-token NLL, top-1 and top-5 from final hidden states, computed in slices of positions so
//! that `[positions × vocab]` logits never exist at once: on the host ([`score`]) or with every
//! reduction on the device ([`score_on_device`]).

use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor, D};
use rayon::prelude::*;

use super::fast_exp::log_sum_exp_and_rank;
use super::layers::Projection;
use super::products::{product, Land, View};
use super::widened::widened_product;
use super::widest::round_to_bf16;

/// f32 logits held at once (per slice), in elements.
const LOGIT_BUDGET: usize = 16 << 20;

/// f32 logits held at once on a GPU, in elements (1 GiB; the slice's exp and comparison
/// temporaries take about as much again, twice).
const DEVICE_LOGIT_BUDGET: usize = 256 << 20;

/// Score of one target token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    /// −log p(target), nats.
    pub loss: f32,
    /// The target has the highest logit.
    pub top1: bool,
    /// Fewer than five logits beat the target.
    pub top5: bool,
}

/// Scores `targets[i]` given hidden state `hidden[i]` (`[n, hidden]`), LM head `[vocab, hidden]`.
pub fn score(hidden: &Tensor, lm_head: &Projection, targets: &[u32]) -> Result<Vec<TokenScore>> {
    let vocab = lm_head.dims().0;
    let n = targets.len();
    let rows = (LOGIT_BUDGET / vocab.max(1)).clamp(1, n.max(1));
    // One buffer for every slice: a fresh one per slice came from its own mmap, whose pages
    // the kernel faulted in and zeroed again each time (about 5% of CPU scoring time).
    let mut logits = vec![0f32; rows.min(n) * vocab];
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        let logits = &mut logits[..len * vocab];
        logits_into(&hidden.narrow(0, start, len)?, lm_head, logits)?;
        let slice = &targets[start..start + len];
        let scored: Vec<Result<TokenScore>> = logits
            .par_chunks(vocab)
            .zip(slice.par_iter())
            .map(|(row, &t)| score_row(row, t))
            .collect();
        for s in scored {
            out.push(s?);
        }
    }
    Ok(out)
}

/// `hidden · lm_headᵀ` (`[rows, vocab]`) into `out`, in f32: on f32 CPU tensors one `gemm`
/// writes it in place, on bf16 ones [`widened_product`] or the packed head's product (rounded
/// to bf16, as candle's product would be); otherwise candle's product, converted and copied.
fn logits_into(hidden: &Tensor, lm_head: &Projection, out: &mut [f32]) -> Result<()> {
    let (rows, width) = hidden.dims2()?;
    let (vocab, head_width) = lm_head.dims();
    if out.len() != rows * vocab || head_width != width {
        candle_core::bail!("logits: hidden states {rows}×{width} do not fit the LM head")
    }
    let lm_head = match lm_head {
        Projection::Dense(w) => w,
        #[cfg(target_arch = "x86_64")]
        Projection::Packed(w) => {
            let hidden = hidden.contiguous()?;
            let (h_storage, h_layout) = hidden.storage_and_layout();
            let Storage::Cpu(CpuStorage::BF16(h)) = &*h_storage else {
                candle_core::bail!(
                    "logits: a packed bf16 LM head takes bf16 hidden states on the CPU"
                )
            };
            super::dot_bf16::packed_product(&mut *out, View::over(h, h_layout), w, rows);
            // The reference's logits are bf16, widened for the loss.
            round_to_bf16(&mut out[..rows * vocab]);
            return Ok(());
        }
    };
    let (h_storage, h_layout) = hidden.storage_and_layout();
    let (w_storage, w_layout) = lm_head.storage_and_layout();
    let threads = rayon::current_num_threads();
    match (&*h_storage, &*w_storage) {
        (Storage::Cpu(CpuStorage::F32(h)), Storage::Cpu(CpuStorage::F32(w))) => {
            let (hidden, head) = (View::over(h, h_layout), View::over(w, w_layout));
            product(
                out,
                vocab,
                (rows, vocab, width),
                hidden,
                head.t(),
                Land::Set,
                threads,
            );
            return Ok(());
        }
        (Storage::Cpu(CpuStorage::BF16(h)), Storage::Cpu(CpuStorage::BF16(w))) => {
            let (hidden, head) = (View::over(h, h_layout), View::over(w, w_layout));
            widened_product(out, hidden, head, (rows, vocab, width), threads);
            // The reference's logits are bf16, widened for the loss.
            round_to_bf16(&mut out[..rows * vocab]);
            return Ok(());
        }
        _ => {}
    }
    drop((h_storage, w_storage));
    let logits = hidden.matmul(&lm_head.t()?)?.to_dtype(DType::F32)?;
    out.copy_from_slice(&logits.flatten_all()?.to_vec1::<f32>()?);
    Ok(())
}

/// As [`score`], but the log-sum-exp, the target's logit and its rank (the number of logits
/// above it) are tensor ops on the logits' device; only a slice's per-token loss and rank are
/// copied back.
pub fn score_on_device(
    hidden: &Tensor,
    lm_head: &Projection,
    targets: &[u32],
) -> Result<Vec<TokenScore>> {
    let lm_head = lm_head.weight()?;
    let vocab = lm_head.dim(0)?;
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}")
    }
    let n = targets.len();
    let device = hidden.device();
    let budget = match device {
        Device::Cpu => LOGIT_BUDGET,
        _ => DEVICE_LOGIT_BUDGET,
    };
    let rows = (budget / vocab.max(1)).clamp(1, n.max(1));
    let head_t = lm_head.t()?;
    let all_targets = Tensor::from_slice(targets, n, device)?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        let logits = hidden
            .narrow(0, start, len)?
            .matmul(&head_t)?
            .to_dtype(DType::F32)?;
        let max = logits.max_keepdim(D::Minus1)?;
        let lse = (logits
            .broadcast_sub(&max)?
            .exp()?
            .sum_keepdim(D::Minus1)?
            .log()?
            + &max)?;
        let target = all_targets.narrow(0, start, len)?.unsqueeze(1)?;
        let target_logit = logits.gather(&target, 1)?;
        // A count below 2^24 is exact in f32.
        let above = logits
            .broadcast_gt(&target_logit)?
            .to_dtype(DType::F32)?
            .sum_keepdim(D::Minus1)?;
        let rows: Vec<Vec<f32>> = Tensor::cat(&[(lse - target_logit)?, above], 1)?.to_vec2()?;
        out.extend(rows.iter().map(|r| TokenScore {
            loss: r[0],
            top1: r[1] == 0.0,
            top5: r[1] < 5.0,
        }));
    }
    Ok(out)
}

fn score_row(row: &[f32], target: u32) -> Result<TokenScore> {
    let Some(&target_logit) = row.get(target as usize) else {
        candle_core::bail!(
            "token id {target} is outside the vocabulary of {}",
            row.len()
        )
    };
    let (lse, above) = log_sum_exp_and_rank(row, target_logit);
    Ok(TokenScore {
        loss: (lse - f64::from(target_logit)) as f32,
        top1: above == 0,
        top5: above < 5,
    })
}
