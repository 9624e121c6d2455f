//! The models: a decoder stack of attention and Gated DeltaNet blocks, built from a [`ModelSpec`].
//!
//! Olmo 2/3 are stacks of post-norm attention blocks; Olmo Hybrid mixes in pre-norm GDN blocks;
//! the pure-recurrent model is GDN blocks only. One stack type serves all three.

pub mod delta_rule_ops;
pub mod gated_deltanet;
pub mod layers;
pub mod nll;
pub mod olmo3;
pub mod path;
pub mod spec;
pub mod tables;

use candle_core::{DType, Result as CResult, Tensor};

use crate::engine::checkpoint::weights::Weights;
use crate::error::input_error;
use gated_deltanet::GatedDeltaNet;
use layers::{Mlp, RmsNorm};
use nll::TokenScore;
use olmo3::Attention;
use path::ExecPath;
use spec::{Mixer as MixerSpec, ModelSpec, NormPlacement};
use tables::Tables;

/// A block's token mixer.
#[derive(Debug, Clone)]
pub enum Mixer {
    /// Softmax attention.
    Attention(Attention),
    /// Gated DeltaNet.
    GatedDeltaNet(GatedDeltaNet),
}

impl Mixer {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        match self {
            Mixer::Attention(a) => a.forward(x),
            Mixer::GatedDeltaNet(g) => g.forward(x),
        }
    }
}

/// One decoder block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Token mixer.
    pub mixer: Mixer,
    /// SwiGLU MLP.
    pub mlp: Mlp,
    /// Norm around the mixer.
    pub mixer_norm: RmsNorm,
    /// Norm around the MLP.
    pub mlp_norm: RmsNorm,
    /// Pre- or post-norm.
    pub placement: NormPlacement,
}

impl Block {
    fn parameter_count(&self) -> usize {
        let mlp =
            self.mlp.gate.elem_count() + self.mlp.up.elem_count() + self.mlp.down.elem_count();
        let norms = 2 * self.mlp.down.dim(0).unwrap_or(0);
        let mixer = match &self.mixer {
            Mixer::Attention(a) => {
                [&a.q, &a.k, &a.v, &a.o]
                    .iter()
                    .map(|t| t.elem_count())
                    .sum::<usize>()
                    + a.q.dim(0).unwrap_or(0)
                    + a.k.dim(0).unwrap_or(0)
            }
            Mixer::GatedDeltaNet(g) => {
                [&g.q, &g.k, &g.v, &g.a, &g.b, &g.g, &g.o, &g.conv, &g.o_norm]
                    .iter()
                    .map(|t| t.elem_count())
                    .sum::<usize>()
                    + g.a_log.elem_count()
                    + g.dt_bias.elem_count()
            }
        };
        mlp + norms + mixer
    }

    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        match self.placement {
            NormPlacement::Post => {
                let h = (x + self.mixer_norm.forward(&self.mixer.forward(x)?)?)?;
                &h + self.mlp_norm.forward(&self.mlp.forward(&h)?)?
            }
            NormPlacement::Pre => {
                let h = (x + self.mixer.forward(&self.mixer_norm.forward(x)?)?)?;
                &h + self.mlp.forward(&self.mlp_norm.forward(&h)?)?
            }
        }
    }
}

/// A causal language model: embeddings, blocks, final norm, LM head.
#[derive(Debug, Clone)]
pub struct CausalLm {
    /// `[vocab, hidden]`
    pub embed: Tensor,
    /// The decoder blocks, bottom to top.
    pub blocks: Vec<Block>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
    /// `[vocab, hidden]` (the embedding itself when tied).
    pub lm_head: Tensor,
    /// The architecture.
    pub spec: ModelSpec,
    /// Host or device kernels.
    pub path: ExecPath,
}

impl CausalLm {
    /// Final-norm hidden states `[batch, seq, hidden]` for token ids `[batch, seq]` (u32).
    pub fn hidden_states(&self, ids: &Tensor) -> CResult<Tensor> {
        let (b, t) = ids.dims2()?;
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            t,
            self.spec.hidden_size,
        ))?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.norm.forward(&x)
    }

    /// Next-token scores of `targets[i]` from final hidden states `hidden[i]` (`[n, hidden]`),
    /// on the model's path.
    pub fn score_tokens(&self, hidden: &Tensor, targets: &[u32]) -> CResult<Vec<TokenScore>> {
        match self.path {
            ExecPath::Host => nll::score(hidden, &self.lm_head, targets),
            ExecPath::Device => nll::score_on_device(hidden, &self.lm_head, targets),
        }
    }

    /// Runs every kernel on `path` (loading picks [`ExecPath::for_device`]).
    pub fn set_path(&mut self, path: ExecPath) {
        self.path = path;
        self.norm.path = path;
        for b in &mut self.blocks {
            b.mixer_norm.path = path;
            b.mlp_norm.path = path;
            match &mut b.mixer {
                Mixer::Attention(a) => {
                    a.path = path;
                    a.q_norm.path = path;
                    a.k_norm.path = path;
                }
                Mixer::GatedDeltaNet(g) => g.path = path,
            }
        }
    }

    /// Sets the chunk length of every Gated DeltaNet layer's kernel.
    pub fn set_gdn_chunk(&mut self, chunk: usize) {
        for b in &mut self.blocks {
            if let Mixer::GatedDeltaNet(g) = &mut b.mixer {
                g.chunk = chunk.max(1);
            }
        }
    }

    /// Number of parameters (the tied head counted once).
    pub fn parameter_count(&self) -> usize {
        let mut n = self.embed.elem_count() + self.norm_len();
        if !self.spec.tie_word_embeddings {
            n += self.lm_head.elem_count();
        }
        n + self
            .blocks
            .iter()
            .map(Block::parameter_count)
            .sum::<usize>()
    }

    fn norm_len(&self) -> usize {
        self.spec.hidden_size
    }

    /// Loads every tensor named by `spec`, checking shapes.
    pub fn load(spec: &ModelSpec, w: &Weights) -> anyhow::Result<Self> {
        let (v, h) = (spec.vocab_size, spec.hidden_size);
        let eps = spec.rms_norm_eps;
        let path = ExecPath::for_device(w.device());
        let tables = Tables::default();
        let embed = w.get(&["model.embed_tokens.weight"], &[v, h])?;
        let lm_head = if spec.tie_word_embeddings {
            embed.clone()
        } else {
            w.get(&["lm_head.weight"], &[v, h])?
        };
        let norm = RmsNorm::new(w.get(&["model.norm.weight"], &[h])?, eps)?;
        let mut blocks = Vec::with_capacity(spec.layers.len());
        for (i, layer) in spec.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let n = |s: &str| format!("{p}.{s}");
            let mlp = Mlp {
                gate: w.get(&[&n("mlp.gate_proj.weight")], &[spec.intermediate_size, h])?,
                up: w.get(&[&n("mlp.up_proj.weight")], &[spec.intermediate_size, h])?,
                down: w.get(&[&n("mlp.down_proj.weight")], &[h, spec.intermediate_size])?,
            };
            let (mixer, mixer_norm, mlp_norm) = match &layer.mixer {
                MixerSpec::Attention { window, rope } => {
                    let a = &spec.attention;
                    let (qd, kvd) = (a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim);
                    let attn = Attention {
                        q: w.get(&[&n("self_attn.q_proj.weight")], &[qd, h])?,
                        k: w.get(&[&n("self_attn.k_proj.weight")], &[kvd, h])?,
                        v: w.get(&[&n("self_attn.v_proj.weight")], &[kvd, h])?,
                        o: w.get(&[&n("self_attn.o_proj.weight")], &[h, qd])?,
                        q_norm: RmsNorm::new(w.get(&[&n("self_attn.q_norm.weight")], &[qd])?, eps)?,
                        k_norm: RmsNorm::new(
                            w.get(&[&n("self_attn.k_norm.weight")], &[kvd])?,
                            eps,
                        )?,
                        spec: a.clone(),
                        window: *window,
                        rope: rope.clone(),
                        tables: tables.clone(),
                        path,
                    };
                    let (first, second) = norm_names(layer.norm);
                    (
                        Mixer::Attention(attn),
                        RmsNorm::new(w.get(&name_list(&p, first), &[h])?, eps)?,
                        RmsNorm::new(w.get(&name_list(&p, second), &[h])?, eps)?,
                    )
                }
                MixerSpec::GatedDeltaNet => {
                    let g = spec.gdn.as_ref().ok_or_else(|| {
                        input_error("a linear_attention layer without GDN dimensions")
                    })?;
                    if g.conv_kernel == 0 {
                        return Err(input_error("`linear_conv_kernel_dim` must be at least 1"));
                    }
                    let (kd, vd, nv) = (g.key_dim(), g.value_dim(), g.num_v_heads);
                    let la = |s: &str| n(&format!("linear_attn.{s}"));
                    // transformers keeps `A_log` in f32 whatever the load dtype, but `dt_bias` and
                    // the o_norm weight in the model dtype: round those through it.
                    let model_dtype_as_f32 =
                        |names: &[&str], len: usize| -> anyhow::Result<Tensor> {
                            Ok(w.get(names, &[len])?.to_dtype(DType::F32)?)
                        };
                    let gdn = GatedDeltaNet {
                        q: w.get(&[&la("q_proj.weight")], &[kd, h])?,
                        k: w.get(&[&la("k_proj.weight")], &[kd, h])?,
                        v: w.get(&[&la("v_proj.weight")], &[vd, h])?,
                        a: w.get(&[&la("a_proj.weight")], &[nv, h])?,
                        b: w.get(&[&la("b_proj.weight")], &[nv, h])?,
                        g: w.get(&[&la("g_proj.weight")], &[vd, h])?,
                        o: w.get(&[&la("o_proj.weight"), &la("out_proj.weight")], &[h, vd])?,
                        conv: conv_weight(w, &la, 2 * kd + vd, g.conv_kernel)?,
                        a_log: w.get_as(&[&la("A_log")], &[nv], DType::F32)?,
                        dt_bias: model_dtype_as_f32(&[&la("dt_bias")], nv)?,
                        o_norm: model_dtype_as_f32(
                            &[&la("o_norm.weight"), &la("norm.weight")],
                            g.head_v_dim,
                        )?,
                        spec: g.clone(),
                        chunk: gated_deltanet::CHUNK,
                        path,
                        tables: tables.clone(),
                    };
                    let (first, second) = norm_names(layer.norm);
                    (
                        Mixer::GatedDeltaNet(gdn),
                        RmsNorm::new(w.get(&name_list(&p, first), &[h])?, eps)?,
                        RmsNorm::new(w.get(&name_list(&p, second), &[h])?, eps)?,
                    )
                }
            };
            blocks.push(Block {
                mixer,
                mlp,
                mixer_norm,
                mlp_norm,
                placement: layer.norm,
            });
        }
        let mut model = Self {
            embed,
            blocks,
            norm,
            lm_head,
            spec: spec.clone(),
            path,
        };
        model.set_path(path);
        Ok(model)
    }
}

/// HF names of a block's two norms. transformers saves `post_attention_layernorm` as
/// `feedforward_layer_norm` and `input_layernorm` as `attention_layer_norm`, on every layer.
fn norm_names(placement: NormPlacement) -> (&'static [&'static str], &'static [&'static str]) {
    const INPUT: &[&str] = &["input_layernorm", "attention_layer_norm"];
    const POST_ATTN: &[&str] = &["post_attention_layernorm", "feedforward_layer_norm"];
    match placement {
        NormPlacement::Post => (POST_ATTN, &["post_feedforward_layernorm"]),
        NormPlacement::Pre => (INPUT, POST_ATTN),
    }
}

fn name_list(prefix: &str, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|s| format!("{prefix}.{s}.weight"))
        .collect()
}

/// The depthwise conv weight as `[conv_dim, kernel]`, from the fused tensor or from
/// `q_conv1d`/`k_conv1d`/`v_conv1d` concatenated (whatever their individual row counts).
fn conv_weight(
    w: &Weights,
    la: &dyn Fn(&str) -> String,
    conv_dim: usize,
    kernel: usize,
) -> anyhow::Result<Tensor> {
    let fused = la("conv1d.weight");
    if w.contains(&[&fused]) {
        let t = w.get(&[&fused], &[conv_dim, 1, kernel])?;
        return Ok(t.reshape((conv_dim, kernel))?);
    }
    let t = {
        let parts = ["q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight"]
            .iter()
            .map(|p| w.get_raw(&[&la(p)]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Tensor::cat(&parts, 0)?
    };
    if t.dims() != [conv_dim, 1, kernel] {
        return Err(input_error(format!(
            "{}: tensors `{}` concatenate to shape {:?}, expected [{conv_dim}, 1, {kernel}]",
            w.origin().display(),
            la("{q,k,v}_conv1d.weight"),
            t.dims()
        )));
    }
    Ok(t.reshape((conv_dim, kernel))?
        .to_dtype(w.dtype())?
        .to_device(w.device())?)
}
