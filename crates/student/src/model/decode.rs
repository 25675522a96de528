//! Decoding on the CPU in f32, token by token, without libtorch.
//!
//! A decode step reads every weight once and does little else, so it is bound by memory
//! bandwidth; through libtorch it also pays ~1,500 op dispatches and allocations per token.
//! Here a step is a fixed sequence of `distill_kernels` calls over the model's own weight
//! storage (borrowed, not copied) and buffers allocated once, with the matrix-vector products
//! split across a small thread pool. The prompt's prefill stays on libtorch, whose matrix
//! products are the right tool there; its key/value cache is taken over when decoding starts.
//! A batch of sequences (left-padded prompts) decodes together: each weight row is read once
//! for all of them, and each keeps its own cache without the padding. Each architecture's
//! step is in its own `decode` module.

use std::borrow::Cow;

use distill_kernels::quant::{self, Blocks, Q8Input};
use distill_kernels::{CacheLayout, Rows, attention};
use rayon::ThreadPool;
use tch::{Device, Kind, Tensor};

use super::KvCache;
use super::gpt2::Gpt2Decoder;
use super::llama::LlamaDecoder;

/// A CPU decoder of either architecture, for one sequence or a batch.
pub(crate) enum CpuDecoder<'m> {
    /// Llama family.
    Llama(LlamaDecoder<'m>),
    /// GPT-2 family.
    Gpt2(Gpt2Decoder<'m>),
}

impl CpuDecoder<'_> {
    /// Appends one token to each sequence and returns the logits that follow them,
    /// `[sequences, vocab]` row after row.
    pub(crate) fn step(&mut self, tokens: &[i64]) -> &[f32] {
        match self {
            CpuDecoder::Llama(d) => d.step(tokens),
            CpuDecoder::Gpt2(d) => d.step(tokens),
        }
    }

    /// Decode each sequence as it would be decoded alone (see
    /// [`crate::GenerationConfig::batch_invariant`]).
    pub(crate) fn set_batch_invariant(&mut self, on: bool) {
        match self {
            CpuDecoder::Llama(d) => d.set_batch_invariant(on),
            CpuDecoder::Gpt2(d) => d.set_batch_invariant(on),
        }
    }

    /// Keeps the sequences whose `keep` entry is true, in order, and forgets the others
    /// (finished ones), so that later steps spend nothing on them.
    pub(crate) fn retain(&mut self, keep: &[bool]) {
        let (sequences, mut buffers) = self.parts();
        let before = sequences.retain(keep);
        resize_rows(&mut buffers, before, sequences.count());
    }

    /// Adds a sequence at the end of the batch: the one prefilled in `cache` (a batch of one,
    /// `len` positions), with room for `room` more positions. `false` when the cache's shapes
    /// are not this model's.
    pub(crate) fn admit(&mut self, cache: &KvCache, len: usize, room: usize) -> bool {
        let (sequences, mut buffers) = self.parts();
        let before = sequences.count();
        if !sequences.admit(cache, len, room) {
            return false;
        }
        resize_rows(&mut buffers, before, sequences.count());
        true
    }

    fn parts(&mut self) -> (&mut Sequences, Vec<&mut Vec<f32>>) {
        match self {
            CpuDecoder::Llama(d) => d.parts(),
            CpuDecoder::Gpt2(d) => d.parts(),
        }
    }

    /// How many sequences are decoding.
    pub(crate) fn count(&self) -> usize {
        match self {
            CpuDecoder::Llama(d) => d.count(),
            CpuDecoder::Gpt2(d) => d.count(),
        }
    }
}

/// Keeps the items whose `keep` entry is true.
pub(crate) fn retain_rows<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut flags = keep.iter();
    items.retain(|_| *flags.next().unwrap_or(&false));
}

/// Resizes buffers holding one row per sequence from `before` sequences (at least one: the
/// rows' width comes from them) to `after`; new rows are zeros, which every step overwrites.
fn resize_rows(buffers: &mut [&mut Vec<f32>], before: usize, after: usize) {
    debug_assert!(before > 0, "rows of unknown width");
    for buffer in buffers {
        let width = buffer.len() / before.max(1);
        buffer.resize(width * after, 0.0);
    }
}

/// The elements of a contiguous f32 CPU tensor, borrowed for as long as the tensor.
pub(super) fn f32_elements(t: &Tensor) -> Option<&[f32]> {
    let plain = t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous();
    plain.then(|| raw_elements(t))
}

/// The elements of a contiguous CPU weight matrix in f32, f16 or bf16, as stored.
pub(super) fn weight_elements(t: &Tensor) -> Option<Rows<'_>> {
    if t.device() != Device::Cpu || !t.is_contiguous() {
        return None;
    }
    let len = t.numel();
    let ptr = t.data_ptr();
    // SAFETY: a contiguous CPU tensor of the matched kind holds `numel` initialised elements
    // of that type from `data_ptr`, in storage that lives as long as the handle `t`;
    // decoders only read (see `raw_elements`). f16 and bf16 are 16-bit `repr(transparent)`
    // types, like libtorch's Half and BFloat16.
    match t.kind() {
        Kind::Float => f32_elements(t).map(Rows::F32),
        Kind::Half if len > 0 => Some(Rows::F16(unsafe {
            std::slice::from_raw_parts(ptr as *const half::f16, len)
        })),
        Kind::BFloat16 if len > 0 => Some(Rows::Bf16(unsafe {
            std::slice::from_raw_parts(ptr as *const half::bf16, len)
        })),
        Kind::Half => Some(Rows::F16(&[])),
        Kind::BFloat16 => Some(Rows::Bf16(&[])),
        _ => None,
    }
}

/// A small CPU vector (a norm's weight, a bias) in f32: borrowed when stored in f32, widened
/// into a copy when stored in 16 bits.
pub(super) fn f32_vector(t: &Tensor) -> Option<Cow<'_, [f32]>> {
    match t.kind() {
        Kind::Float => f32_elements(t).map(Cow::Borrowed),
        Kind::Half | Kind::BFloat16 if t.device() == Device::Cpu => {
            Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))
                .ok()
                .map(Cow::Owned)
        }
        _ => None,
    }
}

/// A weight matrix as the decoder reads it: dense (f32, f16 or bf16) or in ggml's blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Matrix<'m> {
    /// Row-major elements.
    Dense(Rows<'m>),
    /// Rows of quantized blocks.
    Blocks(Blocks<'m>),
}

impl<'m> From<Rows<'m>> for Matrix<'m> {
    fn from(rows: Rows<'m>) -> Self {
        Matrix::Dense(rows)
    }
}

impl<'m> From<Blocks<'m>> for Matrix<'m> {
    fn from(blocks: Blocks<'m>) -> Self {
        Matrix::Blocks(blocks)
    }
}

/// Row `r` of a `[rows, width]` matrix, widened (or dequantized) into `out` (`width` floats).
pub(super) fn copy_row(matrix: Matrix<'_>, r: usize, out: &mut [f32]) {
    let width = out.len();
    let range = r * width..(r + 1) * width;
    match matrix {
        Matrix::Dense(Rows::F32(w)) => out.copy_from_slice(&w[range]),
        Matrix::Dense(Rows::F16(w)) => out.iter_mut().zip(&w[range]).for_each(|(o, v)| *o = v.to_f32()),
        Matrix::Dense(Rows::Bf16(w)) => out.iter_mut().zip(&w[range]).for_each(|(o, v)| *o = v.to_f32()),
        Matrix::Blocks(blocks) => blocks.dequantize_row(r, out),
    }
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

/// Scratch for batched products, and whether a batch of one takes the batched kernel too.
///
/// The batched kernel sums each input's products in one order whatever the batch size; the
/// single-sequence one in another (faster for one sequence). Decoding batch-invariantly keeps
/// the batched order for a lone sequence, so a sequence's logits do not depend on how many
/// others share its steps.
///
/// Products over quantized blocks quantize their inputs first, into `quantized`.
#[derive(Debug, Default)]
pub(super) struct BatchProducts {
    tmp: Vec<f32>,
    quantized: Q8Input,
    pub(super) batch_invariant: bool,
}

/// A linear layer: a row-major `[rows, cols]` weight and a bias.
pub(super) struct Linear<'m> {
    pub(super) weight: Matrix<'m>,
    pub(super) bias: Option<Cow<'m, [f32]>>,
    pub(super) rows: usize,
}

impl<'m> Linear<'m> {
    /// From a weight `[rows, cols]` (row-major elements) and an optional bias.
    pub(super) fn new(weight: impl Into<Matrix<'m>>, rows: i64, bias: Option<&'m Tensor>) -> Option<Self> {
        let bias = match bias {
            Some(b) => Some(f32_vector(b)?),
            None => None,
        };
        Some(Self {
            weight: weight.into(),
            bias,
            rows: usize::try_from(rows).ok()?,
        })
    }

    /// `y = W x + b`.
    pub(super) fn apply(&self, x: &[f32], y: &mut [f32], products: &mut BatchProducts) {
        match self.weight {
            Matrix::Dense(Rows::F32(w)) => distill_kernels::matvec(w, x, y),
            Matrix::Dense(Rows::F16(w)) => distill_kernels::matvec(w, x, y),
            Matrix::Dense(Rows::Bf16(w)) => distill_kernels::matvec(w, x, y),
            Matrix::Blocks(w) => {
                products.quantized.quantize(x, 1);
                quant::matvec(w, &products.quantized, y);
            }
        }
        if let Some(bias) = &self.bias {
            distill_kernels::add_assign(y, bias);
        }
    }

    /// `W x + b` for each of the `batch` inputs in `xs`, written to columns `offset..offset +
    /// rows` of the rows of `ys` (each `ys.len() / batch` wide).
    pub(super) fn apply_batch(
        &self,
        xs: &[f32],
        batch: usize,
        ys: &mut [f32],
        offset: usize,
        products: &mut BatchProducts,
    ) {
        let width = ys.len() / batch;
        if batch == 1 && !products.batch_invariant {
            return self.apply(xs, &mut ys[offset..offset + self.rows], products);
        }
        let tmp = &mut products.tmp;
        tmp.resize(self.rows * batch, 0.0);
        match self.weight {
            Matrix::Dense(Rows::F32(w)) => distill_kernels::matmat(w, xs, batch, tmp),
            Matrix::Dense(Rows::F16(w)) => distill_kernels::matmat(w, xs, batch, tmp),
            Matrix::Dense(Rows::Bf16(w)) => distill_kernels::matmat(w, xs, batch, tmp),
            Matrix::Blocks(w) => {
                products.quantized.quantize(xs, batch);
                quant::matmat(w, &products.quantized, tmp);
            }
        }
        for (b, y) in ys.chunks_exact_mut(width).enumerate() {
            let y = &mut y[offset..offset + self.rows];
            for (r, out) in y.iter_mut().enumerate() {
                *out = tmp[r * batch + b];
            }
            if let Some(bias) = &self.bias {
                distill_kernels::add_assign(y, bias);
            }
        }
    }
}

/// Linear layers that read the same input, their outputs written one after another (one fused
/// matrix, or the separate ones before fusing).
pub(super) struct Stacked<'m>(pub(super) Vec<Linear<'m>>);

impl Stacked<'_> {
    /// Applies each part to each of the `batch` inputs in `xs`, writing its columns of `ys`.
    pub(super) fn apply_batch(&self, xs: &[f32], batch: usize, ys: &mut [f32], products: &mut BatchProducts) {
        let mut at = 0;
        for part in &self.0 {
            part.apply_batch(xs, batch, ys, at, products);
            at += part.rows;
        }
    }
}

/// One sequence's cached keys and values, position after position.
pub(super) type RowCache = (Vec<f32>, Vec<f32>);

/// Each layer's cached keys and values, `[batch, heads, width, head_dim]` tensors holding
/// left-padded sequences, as each sequence's position-major rows (`row = heads · head_dim`
/// floats) without the padding: sequence `b` keeps its last `lens[b]` positions. Each has room
/// for `capacity` more positions. `None` when the shapes disagree.
fn import_cache(cache: &KvCache, lens: &[usize], row: usize, capacity: usize) -> Option<Vec<Vec<RowCache>>> {
    let width = cache.len();
    let rows = |t: &Tensor, b: usize, len: usize| -> Option<Vec<f32>> {
        let mut out = Vec::with_capacity((len + capacity) * row);
        if len > 0 {
            let b = i64::try_from(b).ok()?;
            let len = i64::try_from(len).ok()?;
            let positions = t.get(b).narrow(1, width - len, len).transpose(0, 1);
            let positions = positions.to_kind(Kind::Float).contiguous();
            out.extend_from_slice(f32_elements(&positions)?);
        }
        (out.len() == len * row).then_some(out)
    };
    cache
        .layers
        .iter()
        .map(|(k, v)| {
            if width > 0 && k.size().first() != Some(&i64::try_from(lens.len()).ok()?) {
                return None;
            }
            lens.iter()
                .enumerate()
                .map(|(b, &len)| Some((rows(k, b, len)?, rows(v, b, len)?)))
                .collect()
        })
        .collect()
}

/// The sequences a decoder continues: their caches, their next positions, and the threads
/// that decode them.
pub(super) struct Sequences {
    /// Per layer, per sequence, keys and values position after position.
    cache: Vec<Vec<RowCache>>,
    /// Floats per cached position.
    row: usize,
    /// Each sequence's next position.
    positions: Vec<usize>,
    /// As many threads as libtorch's intra-op threads, so that `set_num_threads` and
    /// `OMP_NUM_THREADS` govern both.
    pool: ThreadPool,
}

impl Sequences {
    /// The left-padded sequences whose prefixes `cache` holds (`lens[b]` real tokens in row
    /// `b`), each cached position `row` floats wide, with room for `room` more positions.
    pub(super) fn new(cache: &KvCache, lens: &[usize], row: usize, room: usize) -> Option<Self> {
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("distill-decode-{i}"))
            .build()
            .ok()?;
        Some(Self {
            cache: import_cache(cache, lens, row, room)?,
            row,
            positions: lens.to_vec(),
            pool,
        })
    }

    /// Adds the sequence prefilled alone in `cache` (`len` positions) after the others, with
    /// room for `room` more positions; `false` when the cache does not fit.
    pub(super) fn admit(&mut self, cache: &KvCache, len: usize, room: usize) -> bool {
        let Some(layers) = import_cache(cache, &[len], self.row, room) else {
            return false;
        };
        if layers.len() != self.cache.len() {
            return false;
        }
        for (rows, mut new) in self.cache.iter_mut().zip(layers) {
            rows.append(&mut new);
        }
        self.positions.push(len);
        true
    }

    /// How many sequences are decoding.
    pub(super) fn count(&self) -> usize {
        self.positions.len()
    }

    /// Keeps the sequences whose `keep` entry is true; returns how many there were before.
    pub(super) fn retain(&mut self, keep: &[bool]) -> usize {
        let before = self.count();
        retain_rows(&mut self.positions, keep);
        for rows in &mut self.cache {
            retain_rows(rows, keep);
        }
        before
    }

    /// One step on the pool: `decode(rows, caches)` with each sequence's new token (checked
    /// against `vocab`), position and index, and each layer's caches; then every sequence
    /// moves on one position.
    ///
    /// # Panics
    /// If a token is outside the vocabulary, or there is not one per sequence.
    pub(super) fn step(
        &mut self,
        tokens: &[i64],
        vocab: usize,
        decode: impl FnOnce(StepRows<'_>, &mut [Vec<RowCache>]) + Send,
    ) {
        assert_eq!(tokens.len(), self.count(), "one token per sequence");
        let tokens = checked_tokens(tokens, vocab);
        let owners: Vec<usize> = (0..tokens.len()).collect();
        let positions = self.positions.clone();
        self.run(
            StepRows {
                tokens: &tokens,
                positions: &positions,
                owners: &owners,
            },
            decode,
        );
        for p in &mut self.positions {
            *p += 1;
        }
    }

    /// Appends `tokens` to sequence `seq` in one pass on the pool (a prefill): `decode(rows,
    /// caches)` with the tokens as rows of that sequence at successive positions, each of
    /// which attends to the ones before it.
    ///
    /// # Panics
    /// If a token is outside the vocabulary, or `seq` is not a sequence.
    pub(super) fn extend(
        &mut self,
        seq: usize,
        tokens: &[i64],
        vocab: usize,
        decode: impl FnOnce(StepRows<'_>, &mut [Vec<RowCache>]) + Send,
    ) {
        let tokens = checked_tokens(tokens, vocab);
        let start = self.positions[seq];
        let positions: Vec<usize> = (start..start + tokens.len()).collect();
        let owners = vec![seq; tokens.len()];
        self.run(
            StepRows {
                tokens: &tokens,
                positions: &positions,
                owners: &owners,
            },
            decode,
        );
        self.positions[seq] += tokens.len();
    }

    fn run(&mut self, rows: StepRows<'_>, decode: impl FnOnce(StepRows<'_>, &mut [Vec<RowCache>]) + Send) {
        let Self { cache, pool, .. } = self;
        pool.install(|| decode(rows, cache));
    }

    /// Sequence `seq`'s cache as libtorch tensors, one `[1, heads, positions, head_dim]` key
    /// and value pair per layer, with `pad` zero positions on the left.
    pub(super) fn export(&self, seq: usize, head_dim: usize, pad: usize) -> Vec<(Tensor, Tensor)> {
        let as_tensor = |rows: &[f32]| {
            let heads = (self.row / head_dim) as i64;
            let t = Tensor::from_slice(rows)
                .view([-1, heads, head_dim as i64])
                .transpose(0, 1);
            let zeros = Tensor::zeros([heads, pad as i64, head_dim as i64], (Kind::Float, Device::Cpu));
            Tensor::cat(&[&zeros, &t], 1).unsqueeze(0)
        };
        self.cache
            .iter()
            .map(|layer| {
                let (keys, values) = &layer[seq];
                (as_tensor(keys), as_tensor(values))
            })
            .collect()
    }
}

/// The rows of one pass of a decoder: each row's token, position, and the sequence it extends.
#[derive(Clone, Copy)]
pub(super) struct StepRows<'a> {
    pub(super) tokens: &'a [usize],
    pub(super) positions: &'a [usize],
    pub(super) owners: &'a [usize],
}

/// The tokens as indices, checked against the vocabulary.
///
/// # Panics
/// If a token is outside the vocabulary.
fn checked_tokens(tokens: &[i64], vocab: usize) -> Vec<usize> {
    tokens
        .iter()
        .map(|&t| match usize::try_from(t) {
            Ok(t) if t < vocab => t,
            _ => panic!("token {t} is outside the vocabulary"),
        })
        .collect()
}

/// Attention of each row's new position: appends its key and value (from its row of `qkv`,
/// laid out `[q (q_width) | k (kv_width) | v (kv_width)]`) to the cache of the sequence it
/// extends (`owners`), and writes its output to its `q_width` floats of `out`. Rows of one
/// sequence come in order, so each attends to the ones before it. `scores` is scratch.
pub(super) fn attend_rows(
    caches: &mut [RowCache],
    owners: &[usize],
    qkv: &[f32],
    (q_width, kv_width, head_dim): (usize, usize, usize),
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let row_width = q_width + 2 * kv_width;
    let per_row = qkv.chunks_exact(row_width).zip(out.chunks_exact_mut(q_width));
    for (&owner, (qkv, out)) in owners.iter().zip(per_row) {
        let (keys, values) = &mut caches[owner];
        let (q, kv) = qkv.split_at(q_width);
        let (k, v) = kv.split_at(kv_width);
        keys.extend_from_slice(k);
        values.extend_from_slice(v);
        let layout = CacheLayout {
            len: keys.len() / kv_width,
            stride: kv_width,
            head_dim,
        };
        scores.resize(q_width / head_dim * layout.len, 0.0);
        attention(q, keys, values, layout, scores, out);
    }
}

/// What the architectures' decoder tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use tch::{Kind, Tensor};

    use crate::checkpoint::LoadedModel;
    use crate::model::{ForwardInput, KvCache, Precision};

    /// The decoder's logits against libtorch's cached, masked forward over the same tokens:
    /// one sequence, and a batch of two left-padded ones, after a libtorch prefill; for `name`
    /// as prepared for generation, and as loaded when `as_loaded_too`.
    pub(crate) fn check_against_libtorch(name: &str, as_loaded_too: bool) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/model")
            .join(name);
        let steps = [[90i64, 3], [64, 1], [0, 88], [88, 88], [12, 7], [33, 33]];
        let _guard = tch::no_grad_guard();
        for prepared in [!as_loaded_too, true] {
            let mut model = LoadedModel::load(&dir, tch::Device::Cpu).unwrap();
            if prepared {
                model.prepare_for_generation(Precision::F32);
            }
            let batches: [(&[i64], &[i64], &[usize]); 2] = [
                (&[5, 17, 42, 8], &[1, 1, 1, 1], &[4]),
                (&[5, 17, 42, 8, 0, 0, 9, 3], &[1, 1, 1, 1, 0, 0, 1, 1], &[4, 2]),
            ];
            for (ids, mask, lens) in batches {
                let n = lens.len() as i64;
                let mut mask = Tensor::from_slice(mask).reshape([n, -1]);
                let input = ForwardInput {
                    input_ids: &Tensor::from_slice(ids).reshape([n, -1]),
                    attention_mask: Some(&mask),
                };
                let mut cache = KvCache::new(model.model.layer_count());
                let _ = model.model.forward(&input, Some(&mut cache));
                let mut decoder = model
                    .model
                    .cpu_decoder(&cache, lens, 8)
                    .expect("an f32 CPU model decodes");
                for step in &steps {
                    let tokens = &step[..lens.len()];
                    let ours = Tensor::from_slice(decoder.step(tokens));
                    mask = Tensor::cat(&[&mask, &mask.ones_like().narrow(1, 0, 1)], 1);
                    let input = ForwardInput {
                        input_ids: &Tensor::from_slice(tokens).reshape([n, 1]),
                        attention_mask: Some(&mask),
                    };
                    let reference = model.model.forward(&input, Some(&mut cache)).to_kind(Kind::Float);
                    let diff = (ours - reference.flatten(0, -1)).abs().max().double_value(&[]);
                    assert!(
                        diff <= 1e-5,
                        "{name} (prepared: {prepared}, {n} sequences): logits differ by {diff}"
                    );
                }
            }
        }
    }

    /// A sequence's decoder logits are the same bits alone and in batches of other sequences
    /// (each prefilled alone, the caches stacked left-padded), step after step, also after a
    /// batch-mate leaves it: what makes a resumed generation repeat an uninterrupted one.
    pub(crate) fn check_batch_invariance(name: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/model")
            .join(name);
        let _guard = tch::no_grad_guard();
        let mut model = LoadedModel::load(&dir, tch::Device::Cpu).unwrap();
        model.prepare_for_generation(Precision::F32);
        let prompts: [&[i64]; 4] = [&[5, 17, 42, 8, 60], &[3, 9], &[70, 71, 72], &[11; 7]];
        let prefill = |prompt: &[i64]| {
            let mut cache = KvCache::new(model.model.layer_count());
            let input = ForwardInput {
                input_ids: &Tensor::from_slice(prompt).unsqueeze(0),
                attention_mask: None,
            };
            let _ = model.model.forward(&input, Some(&mut cache));
            cache
        };
        let steps: [i64; 5] = [90, 64, 0, 88, 12];
        let decode = |members: &[usize], leave_after: Option<usize>| -> Vec<Vec<Vec<u32>>> {
            let cache = KvCache::left_padded(members.iter().map(|&m| prefill(prompts[m])).collect());
            let lens: Vec<usize> = members.iter().map(|&m| prompts[m].len()).collect();
            let mut decoder = model
                .model
                .cpu_decoder(&cache, &lens, 8)
                .expect("an f32 CPU model decodes");
            decoder.set_batch_invariant(true);
            let mut rows: Vec<usize> = (0..members.len()).collect();
            let mut logits = vec![Vec::new(); members.len()];
            for (step, &token) in steps.iter().enumerate() {
                let out = decoder.step(&vec![token; rows.len()]).to_vec();
                let vocab = out.len() / rows.len();
                for (i, &row) in rows.iter().enumerate() {
                    logits[row].push(
                        out[i * vocab..(i + 1) * vocab]
                            .iter()
                            .map(|v| v.to_bits())
                            .collect(),
                    );
                }
                if leave_after == Some(step) && rows.len() > 1 {
                    decoder.retain(
                        &[false]
                            .into_iter()
                            .chain(std::iter::repeat(true))
                            .take(rows.len())
                            .collect::<Vec<_>>(),
                    );
                    rows.remove(0);
                }
            }
            logits
        };
        let alone: Vec<Vec<Vec<u32>>> = (0..prompts.len()).map(|m| decode(&[m], None).remove(0)).collect();
        for (members, leave_after) in [
            (&[0, 1][..], None),
            (&[2, 0, 3, 1][..], Some(1)),
            (&[3, 2, 1][..], Some(0)),
        ] {
            let together = decode(members, leave_after);
            for (&m, got) in members.iter().zip(&together) {
                // A row that left stops early; the steps it took must match.
                assert!(
                    got[..] == alone[m][..got.len()],
                    "{name}: prompt {m} in batch {members:?} decodes other bits than alone"
                );
            }
        }
    }
}
