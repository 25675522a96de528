//! Decoding one sequence on the CPU in f32, token by token, without libtorch.
//!
//! A decode step reads every weight once and does little else, so it is bound by memory
//! bandwidth; through libtorch it also pays ~1,500 op dispatches and allocations per token.
//! Here a step is a fixed sequence of `distill_kernels` calls over the model's own weight
//! storage (borrowed, not copied) and buffers allocated once, with the matrix-vector products
//! split across a small thread pool. The prompt's prefill stays on libtorch, whose matrix
//! products are the right tool there; its key/value cache is taken over when decoding starts.
//! Each architecture's step is in its own `decode` module.

use rayon::ThreadPool;
use tch::{Device, Kind, Tensor};

use super::KvCache;
use super::gpt2::Gpt2Decoder;
use super::llama::LlamaDecoder;

/// A single-sequence CPU decoder of either architecture.
pub(crate) enum CpuDecoder<'m> {
    /// Llama family.
    Llama(LlamaDecoder<'m>),
    /// GPT-2 family.
    Gpt2(Gpt2Decoder<'m>),
}

impl CpuDecoder<'_> {
    /// Appends `token` at the next position and returns the logits `[vocab]` that follow it.
    pub(crate) fn step(&mut self, token: i64) -> &[f32] {
        match self {
            CpuDecoder::Llama(d) => d.step(token),
            CpuDecoder::Gpt2(d) => d.step(token),
        }
    }
}

/// The elements of a contiguous f32 CPU tensor, borrowed for as long as the tensor.
pub(super) fn f32_elements(t: &Tensor) -> Option<&[f32]> {
    let plain = t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous();
    plain.then(|| raw_elements(t))
}

/// The elements of the transpose of an f32 CPU matrix `[rows, cols]` stored column-major,
/// that is of the row-major `[cols, rows]` matrix it is a transposed view of.
pub(super) fn f32_transposed_elements(t: &Tensor) -> Option<&[f32]> {
    let size = t.size();
    let column_major = size.len() == 2 && t.stride() == [1, size[0]];
    let plain = t.device() == Device::Cpu && t.kind() == Kind::Float && column_major;
    plain.then(|| raw_elements(t))
}

/// `numel` floats from the tensor's first element.
fn raw_elements(t: &Tensor) -> &[f32] {
    let len = t.numel();
    if len == 0 {
        return &[];
    }
    // SAFETY: callers checked that `t` is an f32 CPU tensor whose elements are dense from its
    // first one (contiguous, or the transpose of a contiguous matrix): `numel` initialised
    // floats from `data_ptr` (which includes the view's storage offset), in storage that lives
    // as long as the handle `t`. Decoders only read, and nothing writes the weights while a
    // model is borrowed to decode.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, len) }
}

/// A linear layer: a row-major `[rows, cols]` weight and a bias.
pub(super) struct Linear<'m> {
    pub(super) weight: &'m [f32],
    pub(super) bias: Option<&'m [f32]>,
    pub(super) rows: usize,
}

impl<'m> Linear<'m> {
    /// From a weight `[rows, cols]` (row-major elements) and an optional bias.
    pub(super) fn new(weight: &'m [f32], rows: i64, bias: Option<&'m Tensor>) -> Option<Self> {
        let bias = match bias {
            Some(b) => Some(f32_elements(b)?),
            None => None,
        };
        Some(Self {
            weight,
            bias,
            rows: usize::try_from(rows).ok()?,
        })
    }

    /// `y = W x + b`.
    pub(super) fn apply(&self, x: &[f32], y: &mut [f32]) {
        distill_kernels::matvec(self.weight, x, y);
        if let Some(bias) = self.bias {
            distill_kernels::add_assign(y, bias);
        }
    }
}

/// Linear layers that read the same input, their outputs written one after another (one fused
/// matrix, or the separate ones before fusing).
pub(super) struct Stacked<'m>(pub(super) Vec<Linear<'m>>);

impl Stacked<'_> {
    /// Applies each part, writing its rows of `y`.
    pub(super) fn apply(&self, x: &[f32], y: &mut [f32]) {
        let mut at = 0;
        for part in &self.0 {
            part.apply(x, &mut y[at..at + part.rows]);
            at += part.rows;
        }
    }
}

/// Each layer's cached keys and values, `[1, heads, len, head_dim]` tensors, as position-major
/// rows of `row = heads · head_dim` floats with room for `capacity` positions; `None` when the
/// cache holds more than one sequence.
pub(super) fn import_cache(
    cache: &KvCache,
    row: usize,
    capacity: usize,
) -> Option<Vec<(Vec<f32>, Vec<f32>)>> {
    let len = usize::try_from(cache.len()).ok()?;
    let rows = |t: &Tensor| -> Option<Vec<f32>> {
        let mut out = Vec::with_capacity(capacity.max(len) * row);
        if len > 0 {
            if t.size().first() != Some(&1) {
                return None;
            }
            let positions = t.squeeze_dim(0).transpose(0, 1).to_kind(Kind::Float).contiguous();
            out.extend_from_slice(f32_elements(&positions)?);
        }
        (out.len() == len * row).then_some(out)
    };
    cache
        .layers
        .iter()
        .map(|(k, v)| Some((rows(k)?, rows(v)?)))
        .collect()
}

/// The threads a decoder splits its products across: as many as libtorch's intra-op threads,
/// so that `set_num_threads` and `OMP_NUM_THREADS` govern both.
pub(super) fn thread_pool() -> Option<ThreadPool> {
    let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("distill-decode-{i}"))
        .build()
        .ok()
}
