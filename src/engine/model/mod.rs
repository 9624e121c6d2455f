//! The models: a decoder stack of attention and Gated DeltaNet blocks, built from a [`ModelSpec`]
//! and a [`VarBuilder`] whose paths spell the Hugging Face tensor names.
//!
//! Olmo 2/3 ([`olmo3`]) are stacks of post-norm attention blocks; Olmo Hybrid ([`olmo_hybrid`])
//! mixes in pre-norm GDN blocks ([`gated_deltanet`]); the pure-recurrent model is GDN blocks
//! only. One stack type serves all three, and OLMo-core's own configs map to the same spec.

pub mod config;
pub mod cpu_slice;
#[cfg(target_arch = "x86_64")]
pub mod dot_bf16;
pub mod fast_exp;
pub mod gated_deltanet;
pub mod host_attention;
pub mod host_norm;
pub mod layers;
pub mod nll;
pub mod olmo3;
pub mod olmo_hybrid;
pub mod path;
pub mod products;
pub mod spec;
pub mod tables;
pub mod twins;
pub mod widened;
pub mod widest;

use candle_core::{Result as CResult, Tensor};
use candle_nn::VarBuilder;

use gated_deltanet::GatedDeltaNet;
use layers::{pick, residual_add, Mlp, Projection, RmsNorm};
use nll::TokenScore;
use olmo3::Attention;
use path::ExecPath;
use spec::{LayerSpec, Mixer as MixerSpec, ModelSpec, NormPlacement};
use tables::Tables;

/// A checkpoint whose tensors do not fit together, found while building the model (a missing
/// or misshapen tensor is the weight source's own error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// Parts of a tensor saved separately that do not add up to the whole.
    #[error("tensors `{tensors}` concatenate to shape {got:?}, expected {expected:?}")]
    ConcatenatedShape {
        /// The parts, as a brace pattern.
        tensors: String,
        /// Shape of the concatenation.
        got: Vec<usize>,
        /// Shape the layer needs.
        expected: Vec<usize>,
    },
    /// A layer type without the dimensions it needs.
    #[error("a linear_attention layer without GDN dimensions")]
    NoGdnShape,
}

impl From<LoadError> for candle_core::Error {
    /// Carried through candle's error, to be recovered by type where loading is called.
    fn from(e: LoadError) -> Self {
        candle_core::Error::WrappedContext {
            wrapped: Box::new(e),
            context: String::new(),
        }
    }
}

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
        let count = |ps: &[&Projection]| ps.iter().map(|p| p.dims().0 * p.dims().1).sum::<usize>();
        let mlp = count(&[&self.mlp.gate, &self.mlp.up, &self.mlp.down]);
        let norms = 2 * self.mlp.down.dims().0;
        let mixer = match &self.mixer {
            Mixer::Attention(a) => count(&[&a.q, &a.k, &a.v, &a.o]) + a.q.dims().0 + a.k.dims().0,
            Mixer::GatedDeltaNet(g) => {
                count(&[&g.q, &g.k, &g.v, &g.a, &g.b, &g.g, &g.o])
                    + [&g.conv, &g.o_norm, &g.a_log, &g.dt_bias]
                        .iter()
                        .map(|t| t.elem_count())
                        .sum::<usize>()
            }
        };
        mlp + norms + mixer
    }

    /// Loads layer `layer` from `vb` (`model.layers.{i}`): MLP, mixer, then the two norms.
    fn new(spec: &ModelSpec, layer: &LayerSpec, tables: &Tables, vb: VarBuilder) -> CResult<Self> {
        let (h, eps) = (spec.hidden_size, spec.rms_norm_eps);
        let mlp = Mlp::new(h, spec.intermediate_size, vb.pp("mlp"))?;
        let mixer = match &layer.mixer {
            MixerSpec::Attention { window, rope } => Mixer::Attention(Attention::new(
                spec,
                *window,
                rope.clone(),
                tables.clone(),
                vb.pp("self_attn"),
            )?),
            MixerSpec::GatedDeltaNet => {
                let g = spec.gdn.as_ref().ok_or(LoadError::NoGdnShape)?;
                Mixer::GatedDeltaNet(GatedDeltaNet::new(
                    g,
                    h,
                    tables.clone(),
                    vb.pp("linear_attn"),
                )?)
            }
        };
        let (first, second) = norm_names(layer.norm);
        Ok(Self {
            mixer,
            mlp,
            mixer_norm: RmsNorm::load(h, eps, vb.pp(pick(&vb, first)))?,
            mlp_norm: RmsNorm::load(h, eps, vb.pp(pick(&vb, second)))?,
            placement: layer.norm,
        })
    }

    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        match self.placement {
            NormPlacement::Post => {
                let h = residual_add(x, &self.mixer_norm.forward(&self.mixer.forward(x)?)?)?;
                residual_add(&h, &self.mlp_norm.forward(&self.mlp.forward(&h)?)?)
            }
            NormPlacement::Pre => {
                let h = residual_add(x, &self.mixer.forward(&self.mixer_norm.forward(x)?)?)?;
                residual_add(&h, &self.mlp.forward(&self.mlp_norm.forward(&h)?)?)
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
    pub lm_head: Projection,
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
            let (vocab, hidden) = self.lm_head.dims();
            n += vocab * hidden;
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

    /// Loads every tensor `spec` needs from `vb`, which checks their shapes.
    pub fn new(spec: &ModelSpec, vb: VarBuilder) -> CResult<Self> {
        let (v, h) = (spec.vocab_size, spec.hidden_size);
        let path = ExecPath::for_device(vb.device());
        let tables = Tables::default();
        let m = vb.pp("model");
        // Requested in the order training initialises its parameters in (embedding, head, final
        // norm, then layer by layer), so that a seed gives the same model.
        let embed = m.get((v, h), "embed_tokens.weight")?;
        // A tied head stays the embedding, which the lookup needs as it is.
        let lm_head = if spec.tie_word_embeddings {
            Projection::Dense(embed.clone())
        } else {
            Projection::head(vb.get((v, h), "lm_head.weight")?)?
        };
        let norm = RmsNorm::load(h, spec.rms_norm_eps, m.pp("norm"))?;
        let layers = m.pp("layers");
        let blocks = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| Block::new(spec, layer, &tables, layers.pp(i)))
            .collect::<CResult<Vec<_>>>()?;
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
