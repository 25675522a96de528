//! Batching: a seeded order per epoch, length bucketing so that padding does not eat compute,
//! a resumable position, and collation into tensors.
//!
//! Each epoch's plan is a pure function of `(seed, epoch, lengths, settings)`: the examples are
//! shuffled with SplitMix64, sorted by length within windows of `bucket_window` batches, cut into
//! batches (at most `batch_size` examples and `max_batch_tokens` padded tokens), and the batches
//! are shuffled again. A [`DataPosition`] (epoch, batch) is therefore all a checkpoint needs.

use distill_data::prompts::SplitMix64;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::data::{IGNORE, Sequence};

/// How examples are grouped into micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Examples per batch (at most).
    pub batch_size: usize,
    /// Padded tokens per batch (at most).
    pub max_batch_tokens: Option<usize>,
    /// Sort by length within windows of this many batches (0 = no sorting).
    pub bucket_window: usize,
}

/// Where the data stream stands: the next batch to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// The epoch (0-based).
    pub epoch: u64,
    /// The batch within the epoch's plan.
    pub batch: u64,
}

/// A seed for one purpose of one epoch, so that the streams do not overlap.
fn derive_seed(seed: u64, epoch: u64, purpose: u64) -> u64 {
    let mut rng = SplitMix64::new(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ purpose.rotate_left(32));
    rng.next_u64()
}

/// The batches of one epoch, as indices into `lengths`.
pub fn plan_epoch(lengths: &[usize], seed: u64, epoch: u64, settings: &BatchSettings) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    distill_data::shuffle(&mut order, derive_seed(seed, epoch, 1));
    let mut batches = Vec::new();
    let window = if settings.bucket_window == 0 {
        order.len().max(1)
    } else {
        settings.bucket_window.saturating_mul(settings.batch_size)
    };
    for chunk in order.chunks_mut(window) {
        if settings.bucket_window > 0 {
            // Stable, so equal lengths keep their shuffled order.
            chunk.sort_by_key(|&i| lengths[i]);
        }
        cut(chunk, lengths, settings, &mut batches);
    }
    if settings.bucket_window > 0 {
        distill_data::shuffle(&mut batches, derive_seed(seed, epoch, 2));
    }
    batches
}

/// Cuts an ordered run of examples into batches that respect both limits.
fn cut(run: &[usize], lengths: &[usize], settings: &BatchSettings, out: &mut Vec<Vec<usize>>) {
    let mut current: Vec<usize> = Vec::with_capacity(settings.batch_size);
    let mut widest = 0;
    for &i in run {
        let width = widest.max(lengths[i]);
        let fits_tokens = settings
            .max_batch_tokens
            .is_none_or(|budget| (current.len() + 1) * width <= budget);
        if !current.is_empty() && (current.len() == settings.batch_size || !fits_tokens) {
            out.push(std::mem::take(&mut current));
            widest = 0;
        }
        widest = widest.max(lengths[i]);
        current.push(i);
    }
    if !current.is_empty() {
        out.push(current);
    }
}

/// Soft targets of a batch, one row per trained position: up to `k` student ids and teacher
/// log-probabilities each; unused slots have `valid == false`. Positions without a teacher
/// distribution (the closing eos) hold a placeholder and weigh 0.
#[derive(Debug)]
pub struct SparseTargets {
    /// Token ids, `[n, k]` i64.
    pub ids: Tensor,
    /// Teacher log-probabilities, `[n, k]` f32 (0 in unused slots).
    pub logprobs: Tensor,
    /// Used slots, `[n, k]` bool; slot 0 is always used.
    pub valid: Tensor,
    /// 1 for positions with a teacher distribution, else 0, `[n]` f32.
    pub weights: Tensor,
    /// Positions with a teacher distribution.
    pub count: usize,
}

/// Span targets of a batch, for the vocabulary-free losses ([`super::data::SpanTarget`]).
#[derive(Debug)]
pub struct SpanTargets {
    /// The span of each trained position, `[n]` i64; positions outside every span point at
    /// one extra span, `count`, whose sum is discarded.
    pub span_of_row: Tensor,
    /// The teacher's log-probability of each span, `[count]` f32.
    pub teacher_logprob: Tensor,
    /// Trained positions in one-to-one spans (one token on each side), `[m]` i64.
    pub one_to_one_rows: Tensor,
    /// The teacher's probabilities at those positions, most likely first, 0-padded, `[m, k]` f32.
    pub one_to_one_top: Tensor,
    /// Spans.
    pub count: usize,
    /// One-to-one spans (`m`).
    pub one_to_one: usize,
}

/// A padded micro-batch on its device.
#[derive(Debug)]
pub struct Batch {
    /// Token ids, `[b, width]` i64, right-padded.
    pub input_ids: Tensor,
    /// Flat indices (into `b * width`) of the trained positions, `[n]` i64, row-major.
    pub positions: Tensor,
    /// Their targets, `[n]` i64.
    pub targets: Tensor,
    /// Soft targets from the dataset, when there are any.
    pub soft: Option<SparseTargets>,
    /// Span targets from the dataset, when there are any.
    pub spans: Option<SpanTargets>,
    /// Real (unpadded) input tokens.
    pub tokens: usize,
    /// Input tokens including padding (`b * width`).
    pub padded_tokens: usize,
    /// Trained positions (`n`).
    pub targets_count: usize,
    /// Whether the student sampled the answers (on-policy distillation): soft labels only.
    pub on_policy: bool,
}

/// Pads the sequences `indices` into one batch on `device`. Padding sits on the right: under
/// causal attention it cannot affect real positions, and it is never a target.
pub fn collate(sequences: &[Sequence], indices: &[usize], pad: i64, device: Device) -> Batch {
    let width = indices.iter().map(|&i| sequences[i].len()).max().unwrap_or(0);
    let rows = indices.len();
    let mut ids = Vec::with_capacity(rows * width);
    let mut positions = Vec::new();
    let mut targets: Vec<i64> = Vec::new();
    let mut soft: Vec<Option<&[(u32, f32)]>> = Vec::new();
    let mut spans = SpanRows::default();
    let mut tokens = 0;
    for (r, &i) in indices.iter().enumerate() {
        let seq = &sequences[i];
        tokens += seq.len();
        spans.add(seq, targets.len());
        ids.extend_from_slice(&seq.input_ids);
        ids.extend(std::iter::repeat_n(pad, width - seq.len()));
        for (t, &target) in seq.targets.iter().enumerate().skip(seq.first_target) {
            debug_assert_ne!(target, IGNORE);
            soft.push(
                seq.soft
                    .get(t - seq.first_target)
                    .filter(|e| !e.is_empty())
                    .map(Vec::as_slice),
            );
            positions.push((r * width + t) as i64);
            targets.push(target);
        }
    }
    let with_soft = soft.iter().filter(|e| e.is_some()).count();
    let soft = (with_soft > 0).then(|| {
        let k = soft.iter().flatten().map(|e| e.len()).max().unwrap_or(1);
        let n = soft.len();
        let mut sids = vec![0i64; n * k];
        let mut slps = vec![0f32; n * k];
        let mut valid = vec![false; n * k];
        let mut weights = vec![0f32; n];
        for (row, entries) in soft.iter().enumerate() {
            match entries {
                Some(entries) => {
                    weights[row] = 1.0;
                    for (j, &(id, lp)) in entries.iter().enumerate() {
                        sids[row * k + j] = i64::from(id);
                        slps[row * k + j] = lp;
                        valid[row * k + j] = true;
                    }
                }
                // A placeholder (certainty on the target) keeps every row well-formed.
                None => {
                    sids[row * k] = targets[row];
                    valid[row * k] = true;
                }
            }
        }
        let shape = [n as i64, k as i64];
        SparseTargets {
            ids: Tensor::from_slice(&sids).reshape(shape).to_device(device),
            logprobs: Tensor::from_slice(&slps).reshape(shape).to_device(device),
            valid: Tensor::from_slice(&valid).reshape(shape).to_device(device),
            weights: Tensor::from_slice(&weights).to_device(device),
            count: with_soft,
        }
    });
    let count = targets.len();
    let spans = spans.into_tensors(count, device);
    Batch {
        input_ids: Tensor::from_slice(&ids)
            .reshape([rows as i64, width as i64])
            .to_device(device),
        positions: Tensor::from_slice(&positions).to_device(device),
        targets: Tensor::from_slice(&targets)
            .to_kind(Kind::Int64)
            .to_device(device),
        soft,
        spans,
        tokens,
        padded_tokens: rows * width,
        targets_count: count,
        on_policy: false,
    }
}

/// Span targets gathered row by row before they become tensors.
#[derive(Default)]
struct SpanRows<'a> {
    /// `(first trained row, rows)` of each span in the batch.
    rows: Vec<(usize, usize)>,
    teacher_logprob: Vec<f32>,
    one_to_one: Vec<(i64, &'a [f32])>,
}

impl<'a> SpanRows<'a> {
    /// Adds the spans of `seq`, whose first trained position is batch row `first_row`.
    fn add(&mut self, seq: &'a Sequence, first_row: usize) {
        for span in &seq.spans {
            let start = first_row + span.start;
            self.rows.push((start, span.len));
            self.teacher_logprob.push(span.teacher_logprob);
            if !span.teacher_top.is_empty() {
                self.one_to_one.push((start as i64, &span.teacher_top));
            }
        }
    }

    /// The batch's [`SpanTargets`] over `n` trained rows, or `None` without spans.
    fn into_tensors(self, n: usize, device: Device) -> Option<SpanTargets> {
        if self.rows.is_empty() {
            return None;
        }
        let count = self.rows.len();
        let mut span_of_row = vec![count as i64; n];
        for (span, &(start, len)) in self.rows.iter().enumerate() {
            span_of_row[start..start + len].fill(span as i64);
        }
        let k = self
            .one_to_one
            .iter()
            .map(|(_, top)| top.len())
            .max()
            .unwrap_or(1);
        let m = self.one_to_one.len();
        let mut top = vec![0f32; m * k];
        for (row, (_, probs)) in self.one_to_one.iter().enumerate() {
            top[row * k..row * k + probs.len()].copy_from_slice(probs);
        }
        let rows: Vec<i64> = self.one_to_one.iter().map(|&(r, _)| r).collect();
        Some(SpanTargets {
            span_of_row: Tensor::from_slice(&span_of_row).to_device(device),
            teacher_logprob: Tensor::from_slice(&self.teacher_logprob).to_device(device),
            one_to_one_rows: Tensor::from_slice(&rows).to_device(device),
            one_to_one_top: Tensor::from_slice(&top)
                .reshape([m as i64, k as i64])
                .to_device(device),
            count,
            one_to_one: m,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(batch_size: usize, max_batch_tokens: Option<usize>, bucket_window: usize) -> BatchSettings {
        BatchSettings {
            batch_size,
            max_batch_tokens,
            bucket_window,
        }
    }

    #[test]
    fn plans_are_deterministic_cover_every_example_once_and_differ_by_epoch() {
        let lengths: Vec<usize> = (0..103).map(|i| 5 + (i * 37) % 200).collect();
        let s = settings(8, None, 4);
        let a = plan_epoch(&lengths, 7, 0, &s);
        assert_eq!(a, plan_epoch(&lengths, 7, 0, &s));
        assert_ne!(a, plan_epoch(&lengths, 7, 1, &s));
        assert_ne!(a, plan_epoch(&lengths, 8, 0, &s));
        let mut all: Vec<usize> = a.concat();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert!(a.iter().all(|b| !b.is_empty() && b.len() <= 8));
    }

    #[test]
    fn bucketing_cuts_padding() {
        let lengths: Vec<usize> = (0..512).map(|i| 10 + (i * 7919) % 240).collect();
        let padded = |plan: &[Vec<usize>]| -> usize {
            plan.iter()
                .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap())
                .sum()
        };
        let random = padded(&plan_epoch(&lengths, 1, 0, &settings(8, None, 0)));
        let bucketed = padded(&plan_epoch(&lengths, 1, 0, &settings(8, None, 16)));
        let real: usize = lengths.iter().sum();
        assert!(bucketed < random, "{bucketed} vs {random}");
        assert!(
            (bucketed as f64) < 1.1 * real as f64,
            "{bucketed} padded for {real} real"
        );
    }

    #[test]
    fn token_budget_limits_padded_size() {
        let lengths = vec![100, 10, 10, 10, 10, 10, 90, 95];
        let plan = plan_epoch(&lengths, 3, 0, &settings(8, Some(200), 1));
        for b in &plan {
            let width = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() * width <= 200, "{b:?}");
        }
        assert_eq!(plan.concat().len(), 8);
    }

    #[test]
    fn collate_pads_right_and_lists_trained_positions() {
        let seq = |ids: Vec<i64>, first: usize, soft: Vec<Vec<(u32, f32)>>| {
            let mut targets: Vec<i64> = ids[1..].to_vec();
            targets.push(99);
            targets[..first].fill(IGNORE);
            Sequence {
                id: String::new(),
                input_ids: ids,
                targets,
                first_target: first,
                soft,
                spans: Vec::new(),
                truncated: false,
            }
        };
        let seqs = vec![
            seq(vec![1, 2, 3, 4], 2, vec![vec![(4, -0.1), (5, -2.0)]]),
            seq(vec![7, 8], 1, vec![]),
        ];
        let b = collate(&seqs, &[0, 1], 0, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(b.input_ids.view(-1)).unwrap(),
            [1, 2, 3, 4, 7, 8, 0, 0]
        );
        assert_eq!(Vec::<i64>::try_from(&b.positions).unwrap(), [2, 3, 5]);
        assert_eq!(Vec::<i64>::try_from(&b.targets).unwrap(), [4, 99, 99]);
        assert_eq!((b.tokens, b.padded_tokens, b.targets_count), (6, 8, 3));
        let soft = b.soft.unwrap();
        assert_eq!(soft.count, 1);
        assert_eq!(Vec::<f32>::try_from(&soft.weights).unwrap(), [1.0, 0.0, 0.0]);
        // Rows without a teacher distribution hold their target, with weight 0.
        assert_eq!(
            Vec::<i64>::try_from(soft.ids.view(-1)).unwrap(),
            [4, 5, 99, 0, 99, 0]
        );
        assert_eq!(
            Vec::<bool>::try_from(soft.valid.view(-1)).unwrap(),
            [true, true, true, false, true, false]
        );
    }

    #[test]
    fn collate_numbers_spans_across_the_batch() {
        use super::super::data::SpanTarget;
        let span = |start, len, lp: f32, top: Vec<f32>| SpanTarget {
            start,
            len,
            teacher_logprob: lp,
            teacher_top: top,
        };
        let seq = |ids: Vec<i64>, first: usize, spans: Vec<SpanTarget>| Sequence {
            id: String::new(),
            targets: ids.iter().map(|_| 1).collect(),
            input_ids: ids,
            first_target: first,
            soft: Vec::new(),
            spans,
            truncated: false,
        };
        // Row 0 trains 3 targets (a two-token span, then the eos outside every span); row 1
        // trains 2 one-token spans.
        let seqs = vec![
            seq(vec![1, 2, 3, 4], 1, vec![span(0, 2, -0.5, vec![])]),
            seq(
                vec![7, 8, 9],
                1,
                vec![span(0, 1, -0.1, vec![0.9, 0.05]), span(1, 1, -2.0, vec![0.4])],
            ),
        ];
        let b = collate(&seqs, &[0, 1], 0, Device::Cpu);
        let spans = b.spans.unwrap();
        assert_eq!((spans.count, spans.one_to_one), (3, 2));
        assert_eq!(Vec::<i64>::try_from(&spans.span_of_row).unwrap(), [0, 0, 3, 1, 2]);
        assert_eq!(
            Vec::<f32>::try_from(&spans.teacher_logprob).unwrap(),
            [-0.5, -0.1, -2.0]
        );
        assert_eq!(Vec::<i64>::try_from(&spans.one_to_one_rows).unwrap(), [3, 4]);
        assert_eq!(
            Vec::<f32>::try_from(spans.one_to_one_top.view(-1)).unwrap(),
            [0.9, 0.05, 0.4, 0.0]
        );
    }
}
