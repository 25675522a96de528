//! Distillation losses on `[n, vocab]` student logits (one row per trained position).
//!
//! * Hard labels: cross-entropy on the teacher's response tokens ([`cross_entropy_sum`]).
//! * Soft labels: a divergence between the teacher's distribution p and the student's q, both at
//!   temperature T and scaled by T² so that gradients keep their size as T changes (Hinton et
//!   al., 2015): forward KL, reverse KL, generalized JSD(β) and the skew KLs ([`Divergence`]).
//!   The teacher comes either as full-vocabulary logits ([`full_vocab`]) or as stored top-k
//!   log-probabilities ([`sparse`], see [`TopKMode`]).
//! * Vocabulary-free soft labels, for a teacher with another tokenizer: the L1 distance between
//!   sorted probabilities ([`uld_sum`]) and the binary KL of span likelihoods
//!   ([`span_likelihood_sum`]).
//!
//! Every function returns sums over rows; the trainer divides by the token counts of the whole
//! optimizer step, so that gradient accumulation gives the same update as one large batch.

use tch::{Kind, Tensor};

use super::config::{LossConfig, LossKind, TopKMode};

/// Smallest teacher mass given to the "rest" bucket, so that reverse-direction divergences stay
/// finite when the stored top-k already sum to (rounded) 1.
pub const REST_FLOOR: f64 = 1e-6;

/// A divergence D(p ‖ q) between teacher p and student q.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Divergence {
    /// KL(p ‖ q).
    ForwardKl,
    /// KL(q ‖ p).
    ReverseKl,
    /// β·KL(p ‖ m) + (1−β)·KL(q ‖ m), m = β·p + (1−β)·q (GKD's generalized JSD).
    Jsd {
        /// β.
        beta: f64,
    },
    /// KL(p ‖ a·p + (1−a)·q) (DistiLLM's skew KL).
    SkewKl {
        /// a.
        skew: f64,
    },
    /// KL(q ‖ a·q + (1−a)·p) (DistiLLM's skew reverse KL).
    SkewReverseKl {
        /// a.
        skew: f64,
    },
}

impl Divergence {
    /// The divergence a loss configuration asks for (`None` for hard labels only).
    pub fn from_config(config: &LossConfig) -> Option<Self> {
        Some(match config.kind {
            LossKind::Ce | LossKind::Uld | LossKind::Alm => return None,
            LossKind::Kl => Divergence::ForwardKl,
            LossKind::Rkl => Divergence::ReverseKl,
            LossKind::Jsd => Divergence::Jsd {
                beta: config.jsd_beta,
            },
            LossKind::Skl => Divergence::SkewKl { skew: config.skew },
            LossKind::Srkl => Divergence::SkewReverseKl { skew: config.skew },
        })
    }
}

/// What the soft term of the loss is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SoftObjective {
    /// A divergence between teacher and student distributions over the same tokens.
    Divergence(Divergence),
    /// [`uld_sum`] at one-to-one positions.
    Uld,
    /// [`span_likelihood_sum`] over every span.
    SpanLikelihood,
}

impl SoftObjective {
    /// The soft term a loss configuration asks for (`None` for hard labels only).
    pub fn from_config(config: &LossConfig) -> Option<Self> {
        match config.kind {
            LossKind::Uld => Some(SoftObjective::Uld),
            LossKind::Alm => Some(SoftObjective::SpanLikelihood),
            _ => Divergence::from_config(config).map(SoftObjective::Divergence),
        }
    }
}

/// Teacher and student log-probabilities over the same buckets, `[n, m]`, and which buckets are
/// used (`None`: all). Unused buckets hold 0 on both sides.
#[derive(Debug)]
pub struct Distributions {
    /// log p.
    pub teacher: Tensor,
    /// log q.
    pub student: Tensor,
    /// Used buckets, `[n, m]` bool.
    pub mask: Option<Tensor>,
}

/// The float kind computations run in: f64 stays f64 (tests), everything else becomes f32.
fn float_kind(t: &Tensor) -> Kind {
    if t.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// Sum over rows of −log q(target) at temperature 1.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Tensor {
    nll_sum(&logits.log_softmax(-1, float_kind(logits)), targets)
}

/// Sum over rows of −log q(target), from log-probabilities `[n, vocab]` (shared with the soft loss).
pub fn nll_sum(logq: &Tensor, targets: &Tensor) -> Tensor {
    -logq.gather(1, &targets.unsqueeze(1), false).sum(logq.kind())
}

/// Both sides from full-vocabulary logits, at temperature `t`.
pub fn full_vocab(student_logits: &Tensor, teacher_logits: &Tensor, t: f64) -> Distributions {
    let kind = float_kind(student_logits);
    let student = (student_logits.to_kind(kind) / t).log_softmax(-1, kind);
    full_vocab_with(student, teacher_logits, t)
}

/// [`full_vocab`] with the student's log-probabilities at temperature `t` already computed
/// (at T = 1 they are the ones the cross-entropy uses).
pub fn full_vocab_with(student_logq: Tensor, teacher_logits: &Tensor, t: f64) -> Distributions {
    let kind = student_logq.kind();
    Distributions {
        teacher: (teacher_logits.to_kind(kind) / t).log_softmax(-1, kind).detach(),
        student: student_logq,
        mask: None,
    }
}

/// Log-softmax over the used entries only; unused entries become 0.
fn masked_log_softmax(x: &Tensor, mask: &Tensor) -> Tensor {
    let not = mask.logical_not();
    x.masked_fill(&not, f64::NEG_INFINITY)
        .log_softmax(-1, x.kind())
        .masked_fill(&not, 0.0)
}

/// Both sides from stored top-k targets: `ids` `[n, k]` (student ids), `teacher_logprobs` `[n, k]`
/// (natural log, temperature 1), `valid` `[n, k]` (used slots; each row needs at least one).
///
/// The student's temperature-1 log-probabilities are gathered at the ids (and, for
/// [`TopKMode::RestBucket`], its exact mass outside them is added as one more bucket). Both
/// bucket distributions are then tempered the same way, `softmax(log b / T)`, so that D is a
/// divergence between two proper distributions at every temperature. (Stored top-k cannot give
/// the teacher's true tempered tail, so the tail is tempered as one bucket on both sides.)
pub fn sparse(
    student_logits: &Tensor,
    ids: &Tensor,
    teacher_logprobs: &Tensor,
    valid: &Tensor,
    mode: TopKMode,
    t: f64,
) -> Distributions {
    let kind = float_kind(student_logits);
    let logits = student_logits.to_kind(kind);
    let logq = logits.log_softmax(-1, kind);
    sparse_with(&logits, &logq, ids, teacher_logprobs, valid, mode, t)
}

/// [`sparse`] with the student's temperature-1 log-probabilities `logq` already computed (the
/// cross-entropy needs them too), so the vocabulary-wide work is one extra pass for the rest
/// bucket and none for [`TopKMode::Renormalize`]. Slot 0 of every row must be used.
pub fn sparse_with(
    logits: &Tensor,
    logq: &Tensor,
    ids: &Tensor,
    teacher_logprobs: &Tensor,
    valid: &Tensor,
    mode: TopKMode,
    t: f64,
) -> Distributions {
    let kind = logq.kind();
    // Unused slots point at the row's first token, so that they gather and scatter harmlessly.
    let first = ids.narrow(1, 0, 1);
    let ids = ids.where_self(valid, &first.expand_as(ids));
    let student_k = logq.gather(1, &ids, false);
    let teacher_k = teacher_logprobs.to_kind(kind);
    let (teacher, student, mask) = match mode {
        TopKMode::Renormalize => (teacher_k, student_k, valid.shallow_clone()),
        TopKMode::RestBucket => {
            let validf = valid.to_kind(kind);
            let teacher_mass = (teacher_k.exp() * &validf).sum_dim_intlist(-1, true, kind);
            let teacher_rest = (-teacher_mass + 1.0).clamp_min(REST_FLOOR).log();
            // The student's exact tail: log-sum-exp over the tokens outside the support, minus the
            // row's log-normaliser (logit − log-probability of any token). A finite fill (not
            // -inf) keeps the gradient free of NaN even if a row covers the whole vocabulary.
            let all = logits.gather(1, &first, false) - logq.gather(1, &first, false);
            let tail = logits.scatter_value(1, &ids, -1e9).logsumexp(-1, true) - all;
            let student_rest = tail.clamp_min(-1e4);
            let ones = valid.ones_like().narrow(1, 0, 1);
            (
                Tensor::cat(&[&teacher_k, &teacher_rest], 1),
                Tensor::cat(&[&student_k, &student_rest], 1),
                Tensor::cat(&[valid, &ones], 1),
            )
        }
    };
    // Renormalising is exact for the renormalised mode and fixes the floor and rounding of the
    // teacher's rest bucket; the student's buckets already sum to 1 at temperature 1.
    let teacher = masked_log_softmax(&(teacher / t), &mask).detach();
    let student = if mode == TopKMode::RestBucket && t == 1.0 {
        student.masked_fill(&mask.logical_not(), 0.0)
    } else {
        masked_log_softmax(&(student / t), &mask)
    };
    Distributions {
        teacher,
        student,
        mask: Some(mask),
    }
}

/// D(p ‖ q) per row, `[n]`.
pub fn divergence(d: &Distributions, kind: Divergence) -> Tensor {
    let (lp, lq) = (&d.teacher, &d.student);
    let weight = |log: &Tensor| match &d.mask {
        Some(m) => log.exp() * m.to_kind(log.kind()),
        None => log.exp(),
    };
    let kl = |la: &Tensor, lb: &Tensor| (weight(la) * (la - lb)).sum_dim_intlist(-1, false, la.kind());
    let mix = |a: f64, la: &Tensor, lb: &Tensor| (la + a.ln()).logaddexp(&(lb + (1.0 - a).ln()));
    match kind {
        Divergence::ForwardKl => kl(lp, lq),
        Divergence::ReverseKl => kl(lq, lp),
        Divergence::Jsd { beta } => {
            let lm = mix(beta, lp, lq);
            kl(lp, &lm) * beta + kl(lq, &lm) * (1.0 - beta)
        }
        Divergence::SkewKl { skew: 0.0 } => kl(lp, lq),
        Divergence::SkewKl { skew } => kl(lp, &mix(skew, lp, lq)),
        Divergence::SkewReverseKl { skew: 0.0 } => kl(lq, lp),
        Divergence::SkewReverseKl { skew } => kl(lq, &mix(skew, lq, lp)),
    }
}

/// Sum over rows of T²·D(p ‖ q).
pub fn soft_sum(d: &Distributions, kind: Divergence, t: f64) -> Tensor {
    let per_row = divergence(d, kind);
    per_row.sum(per_row.kind()) * (t * t)
}

/// Sum over rows of `weight`·T²·D(p ‖ q) (weights `[n]`, 0 for rows without a teacher distribution).
pub fn soft_sum_weighted(d: &Distributions, kind: Divergence, t: f64, weights: &Tensor) -> Tensor {
    let per_row = divergence(d, kind) * weights.to_kind(d.student.kind());
    per_row.sum(per_row.kind()) * (t * t)
}

/// Sum over `rows` of ULD's distance (Boizard et al., 2024, "Towards Cross-Tokenizer
/// Distillation: the Universal Logit Distillation Loss"): Σᵢ |p₍ᵢ₎ − q₍ᵢ₎| between the teacher's
/// and the student's probabilities sorted in decreasing order, which needs no shared vocabulary.
///
/// `logq` `[n, vocab]` are the student's log-probabilities, `rows` `[m]` the positions compared,
/// `teacher` `[m, k]` the teacher's stored probabilities, most likely first, 0-padded. A row
/// with c stored probabilities compares the student's c largest with them, and one bucket for
/// the rest of the mass on each side, so that padding never counts.
pub fn uld_sum(logq: &Tensor, rows: &Tensor, teacher: &Tensor) -> Tensor {
    let kind = logq.kind();
    let k = teacher.size()[1];
    let teacher = teacher.to_kind(kind);
    let stored = teacher.gt(0.0).to_kind(kind);
    let (student_top, _) = logq.index_select(0, rows).topk(k, -1, true, true);
    let student_top = student_top.exp() * &stored;
    let rest = |top: &Tensor| (-top.sum_dim_intlist(-1, false, kind) + 1.0).clamp_min(0.0);
    let head = (&student_top - &teacher).abs().sum(kind);
    head + (rest(&student_top) - rest(&teacher)).abs().sum(kind)
}

/// Largest probability a span may have in [`span_likelihood_sum`], so that log(1 − p) stays finite.
pub const SPAN_CEILING: f64 = 1.0 - 1e-6;

/// Sum over spans of the binary KL between the teacher's probability p of each span and the
/// student's q: p·log(p/q) + (1−p)·log((1−p)/(1−q)), as in approximate likelihood matching
/// (Minixhofer et al., 2025). A span is where both tokenizations cut the text, so both sides
/// give it a probability (the product over its tokens) whatever their vocabularies.
///
/// `logq` `[n, vocab]`, `targets` `[n]`: the student's log-probabilities and tokens;
/// `span_of_row` `[n]`: each row's span, or `spans` for rows in none; `teacher_logprob`
/// `[spans]`: log p.
pub fn span_likelihood_sum(
    logq: &Tensor,
    targets: &Tensor,
    span_of_row: &Tensor,
    teacher_logprob: &Tensor,
) -> Tensor {
    let kind = logq.kind();
    let spans = teacher_logprob.size()[0];
    let token = logq.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1);
    let student = Tensor::zeros([spans + 1], (kind, logq.device()))
        .index_add(0, span_of_row, &token)
        .narrow(0, 0, spans);
    let ceiling = SPAN_CEILING.ln();
    // Clamped in value only: the gradient passes as if unclamped, so an overconfident student
    // is still pushed back.
    let lq = &student - (&student - ceiling).clamp_min(0.0).detach();
    let lp = teacher_logprob.to_kind(kind).clamp_max(ceiling).detach();
    let p = lp.exp();
    let kl = &p * (&lp - &lq) + (-&p + 1.0) * (log1mexp(&lp) - log1mexp(&lq));
    kl.sum(kind)
}

/// log(1 − eˣ) for x < 0, accurate at both ends (Mächler, 2012).
fn log1mexp(x: &Tensor) -> Tensor {
    let near_zero = x.gt(-std::f64::consts::LN_2);
    (-x.expm1()).log().where_self(&near_zero, &(-x.exp()).log1p())
}

#[cfg(test)]
mod tests {
    //! Each loss against an independent f64 computation on probabilities, and each gradient
    //! against a closed form or central differences of that computation.

    use super::*;

    fn softmax(z: &[f64], t: f64) -> Vec<f64> {
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| ((v - m) / t).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    fn kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter()
            .zip(q)
            .map(|(a, b)| if *a == 0.0 { 0.0 } else { a * (a / b).ln() })
            .sum()
    }

    fn mixture(a: f64, p: &[f64], q: &[f64]) -> Vec<f64> {
        p.iter().zip(q).map(|(x, y)| a * x + (1.0 - a) * y).collect()
    }

    fn reference(kind: Divergence, p: &[f64], q: &[f64]) -> f64 {
        match kind {
            Divergence::ForwardKl => kl(p, q),
            Divergence::ReverseKl => kl(q, p),
            Divergence::Jsd { beta } => {
                let m = mixture(beta, p, q);
                beta * kl(p, &m) + (1.0 - beta) * kl(q, &m)
            }
            Divergence::SkewKl { skew } => kl(p, &mixture(skew, p, q)),
            Divergence::SkewReverseKl { skew } => kl(q, &mixture(skew, q, p)),
        }
    }

    const KINDS: [Divergence; 6] = [
        Divergence::ForwardKl,
        Divergence::ReverseKl,
        Divergence::Jsd { beta: 0.3 },
        Divergence::SkewKl { skew: 0.1 },
        Divergence::SkewReverseKl { skew: 0.1 },
        Divergence::SkewKl { skew: 0.0 },
    ];

    const STUDENT: [[f64; 5]; 2] = [[0.3, -1.2, 2.0, 0.5, -0.4], [1.5, 0.2, -0.7, 0.0, 0.9]];
    const TEACHER: [[f64; 5]; 2] = [[1.0, -0.5, 2.5, -1.0, 0.1], [0.4, 0.4, -2.0, 1.1, 0.3]];

    fn tensor(rows: &[[f64; 5]]) -> Tensor {
        Tensor::from_slice(&rows.concat()).reshape([rows.len() as i64, 5])
    }

    fn leaf(rows: &[[f64; 5]]) -> Tensor {
        tensor(rows).set_requires_grad(true)
    }

    fn grad_rows(x: &Tensor) -> Vec<Vec<f64>> {
        let g = x.grad();
        (0..g.size()[0])
            .map(|r| Vec::<f64>::try_from(g.get(r)).unwrap())
            .collect()
    }

    /// Central differences of `f` at `z` (row-major over `rows`).
    fn numeric_grad(z: &[[f64; 5]; 2], f: &dyn Fn(&[[f64; 5]; 2]) -> f64) -> Vec<Vec<f64>> {
        let h = 1e-6;
        (0..2)
            .map(|r| {
                (0..5)
                    .map(|c| {
                        let (mut up, mut down) = (*z, *z);
                        up[r][c] += h;
                        down[r][c] -= h;
                        (f(&up) - f(&down)) / (2.0 * h)
                    })
                    .collect()
            })
            .collect()
    }

    fn assert_close(a: &[Vec<f64>], b: &[Vec<f64>], tol: f64, what: &str) {
        for (ra, rb) in a.iter().zip(b) {
            for (x, y) in ra.iter().zip(rb) {
                assert!((x - y).abs() <= tol, "{what}: {x} vs {y}\n{a:?}\n{b:?}");
            }
        }
    }

    #[test]
    fn cross_entropy_and_its_gradient_match_a_hand_computation() {
        let z = leaf(&STUDENT);
        let targets = Tensor::from_slice(&[2i64, 4]);
        let loss = cross_entropy_sum(&z, &targets);
        let want: f64 = STUDENT
            .iter()
            .zip([2usize, 4])
            .map(|(row, y)| -softmax(row, 1.0)[y].ln())
            .sum();
        assert!((loss.double_value(&[]) - want).abs() < 1e-12);
        loss.backward();
        // d/dz of −log softmax(z)_y = softmax(z) − onehot(y).
        let closed: Vec<Vec<f64>> = STUDENT
            .iter()
            .zip([2usize, 4])
            .map(|(row, y)| {
                let mut q = softmax(row, 1.0);
                q[y] -= 1.0;
                q
            })
            .collect();
        assert_close(&grad_rows(&z), &closed, 1e-12, "ce gradient");
    }

    #[test]
    fn full_vocabulary_divergences_and_gradients_match_hand_computations() {
        for t in [1.0, 2.0] {
            for kind in KINDS {
                let value = |zs: &[[f64; 5]; 2]| -> f64 {
                    zs.iter()
                        .zip(&TEACHER)
                        .map(|(s, te)| t * t * reference(kind, &softmax(te, t), &softmax(s, t)))
                        .sum()
                };
                let z = leaf(&STUDENT);
                let loss = soft_sum(&full_vocab(&z, &tensor(&TEACHER), t), kind, t);
                let what = format!("{kind:?} at T={t}");
                assert!((loss.double_value(&[]) - value(&STUDENT)).abs() < 1e-12, "{what}");
                loss.backward();
                assert_close(&grad_rows(&z), &numeric_grad(&STUDENT, &value), 1e-6, &what);
            }
        }
    }

    #[test]
    fn forward_and_reverse_kl_gradients_have_their_closed_forms() {
        let t = 2.0;
        // FKL: d/dz T²·KL(p ‖ softmax(z/T)) = T·(q − p).
        let z = leaf(&STUDENT);
        soft_sum(&full_vocab(&z, &tensor(&TEACHER), t), Divergence::ForwardKl, t).backward();
        let closed: Vec<Vec<f64>> = STUDENT
            .iter()
            .zip(&TEACHER)
            .map(|(s, te)| {
                let (p, q) = (softmax(te, t), softmax(s, t));
                q.iter().zip(&p).map(|(a, b)| t * (a - b)).collect()
            })
            .collect();
        assert_close(&grad_rows(&z), &closed, 1e-12, "forward KL");
        // RKL: d/dz_j T²·KL(q ‖ p) = T·q_j·(log q_j − log p_j − KL(q ‖ p)).
        let z = leaf(&STUDENT);
        soft_sum(&full_vocab(&z, &tensor(&TEACHER), t), Divergence::ReverseKl, t).backward();
        let closed: Vec<Vec<f64>> = STUDENT
            .iter()
            .zip(&TEACHER)
            .map(|(s, te)| {
                let (p, q) = (softmax(te, t), softmax(s, t));
                let d = kl(&q, &p);
                q.iter()
                    .zip(&p)
                    .map(|(a, b)| t * a * ((a / b).ln() - d))
                    .collect()
            })
            .collect();
        assert_close(&grad_rows(&z), &closed, 1e-12, "reverse KL");
    }

    /// Stored top-k: row 0 keeps tokens 2 and 0, row 1 keeps tokens 3, 0, 4 (its third slot is
    /// padding in the two-slot case below).
    fn topk() -> (Tensor, Tensor, Tensor, Vec<Vec<usize>>) {
        let support = [[2usize, 0, 0], [3usize, 0, 4]];
        let valid = [[true, true, false], [true, true, true]];
        let ids = Tensor::from_slice(&[2i64, 0, 0, 3, 0, 4]).reshape([2, 3]);
        let mut lps = Vec::new();
        for (r, row) in support.iter().enumerate() {
            let p = softmax(&TEACHER[r], 1.0);
            for (j, &id) in row.iter().enumerate() {
                lps.push(if valid[r][j] { p[id].ln() } else { 0.0 });
            }
        }
        let valid_t = Tensor::from_slice(&valid.concat()).reshape([2, 3]);
        let support = vec![vec![2, 0], vec![3, 0, 4]];
        (ids, Tensor::from_slice(&lps).reshape([2, 3]), valid_t, support)
    }

    /// The bucket distributions by hand: k tokens (+ rest), tempered as `b^(1/T)` renormalised.
    fn buckets(probs: &[f64], support: &[usize], mode: TopKMode, t: f64) -> Vec<f64> {
        let mut b: Vec<f64> = support.iter().map(|&i| probs[i]).collect();
        if mode == TopKMode::RestBucket {
            b.push((1.0 - b.iter().sum::<f64>()).max(REST_FLOOR));
        }
        let powered: Vec<f64> = b.iter().map(|x| x.powf(1.0 / t)).collect();
        let s: f64 = powered.iter().sum();
        powered.iter().map(|x| x / s).collect()
    }

    #[test]
    fn sparse_top_k_divergences_and_gradients_match_hand_computations() {
        let (ids, lps, valid, support) = topk();
        for mode in [TopKMode::RestBucket, TopKMode::Renormalize] {
            for t in [1.0, 2.0] {
                for kind in KINDS {
                    let value = |zs: &[[f64; 5]; 2]| -> f64 {
                        (0..2)
                            .map(|r| {
                                let p = buckets(&softmax(&TEACHER[r], 1.0), &support[r], mode, t);
                                let q = buckets(&softmax(&zs[r], 1.0), &support[r], mode, t);
                                t * t * reference(kind, &p, &q)
                            })
                            .sum()
                    };
                    let z = leaf(&STUDENT);
                    let d = sparse(&z, &ids, &lps, &valid, mode, t);
                    let loss = soft_sum(&d, kind, t);
                    let what = format!("{kind:?} {mode:?} T={t}");
                    assert!((loss.double_value(&[]) - value(&STUDENT)).abs() < 1e-12, "{what}");
                    loss.backward();
                    assert_close(&grad_rows(&z), &numeric_grad(&STUDENT, &value), 1e-6, &what);
                }
            }
        }
    }

    #[test]
    fn divergences_vanish_when_the_student_equals_the_teacher() {
        let (ids, lps, valid, _) = topk();
        for kind in KINDS {
            let z = tensor(&TEACHER);
            let full = soft_sum(&full_vocab(&z, &tensor(&TEACHER), 2.0), kind, 2.0);
            assert!(full.double_value(&[]).abs() < 1e-14, "{kind:?}");
            for mode in [TopKMode::RestBucket, TopKMode::Renormalize] {
                let s = soft_sum(&sparse(&z, &ids, &lps, &valid, mode, 1.0), kind, 1.0);
                assert!(s.double_value(&[]).abs() < 1e-14, "{kind:?} {mode:?}");
            }
        }
    }

    #[test]
    fn the_rest_bucket_sees_tail_mass_that_renormalising_ignores() {
        // Two students agree with the teacher's top-2 proportions, but put different mass in the tail.
        let ids = Tensor::from_slice(&[0i64, 1]).reshape([1, 2]);
        let teacher = [0.5f64, 0.3];
        let lps = Tensor::from_slice(&[teacher[0].ln(), teacher[1].ln()]).reshape([1, 2]);
        let valid = Tensor::from_slice(&[true, true]).reshape([1, 2]);
        let student = |head: f64| {
            // Proportions 5:3 on the top-2, the remaining mass spread over three tail tokens.
            let tail = (1.0 - head) / 3.0;
            let probs = [head * 5.0 / 8.0, head * 3.0 / 8.0, tail, tail, tail];
            Tensor::from_slice(&probs.map(f64::ln)).reshape([1, 5])
        };
        let loss = |z: &Tensor, mode| {
            soft_sum(
                &sparse(z, &ids, &lps, &valid, mode, 1.0),
                Divergence::ForwardKl,
                1.0,
            )
            .double_value(&[])
        };
        let (calibrated, overconfident) = (student(0.8), student(0.99));
        assert!(loss(&calibrated, TopKMode::Renormalize).abs() < 1e-12);
        assert!(loss(&overconfident, TopKMode::Renormalize).abs() < 1e-12);
        assert!(loss(&calibrated, TopKMode::RestBucket).abs() < 1e-12);
        assert!(loss(&overconfident, TopKMode::RestBucket) > 0.1);
    }

    #[test]
    fn zero_weight_rows_add_nothing_and_get_no_gradient() {
        let (ids, lps, valid, _) = topk();
        let z = leaf(&STUDENT);
        let d = sparse(&z, &ids, &lps, &valid, TopKMode::RestBucket, 2.0);
        let weights = Tensor::from_slice(&[0.0f64, 1.0]);
        let weighted = soft_sum_weighted(&d, Divergence::Jsd { beta: 0.5 }, 2.0, &weights);
        let row1 = divergence(&d, Divergence::Jsd { beta: 0.5 }).get(1) * 4.0;
        assert!((weighted.double_value(&[]) - row1.double_value(&[])).abs() < 1e-12);
        weighted.backward();
        let g = grad_rows(&z);
        assert!(g[0].iter().all(|&v| v == 0.0), "{g:?}");
        assert!(g[1].iter().any(|&v| v != 0.0));
    }

    #[test]
    fn padding_slots_change_nothing() {
        let (ids, lps, valid, _) = topk();
        let z = tensor(&STUDENT);
        let a = soft_sum(
            &sparse(&z, &ids, &lps, &valid, TopKMode::RestBucket, 1.0),
            Divergence::ReverseKl,
            1.0,
        );
        // Different junk in the padded slot (row 0, slot 2).
        let ids2 = ids.copy();
        let _ = ids2.get(0).get(2).fill_(4);
        let lps2 = lps.copy();
        let _ = lps2.get(0).get(2).fill_(-0.01);
        let b = soft_sum(
            &sparse(&z, &ids2, &lps2, &valid, TopKMode::RestBucket, 1.0),
            Divergence::ReverseKl,
            1.0,
        );
        assert_eq!(a.double_value(&[]), b.double_value(&[]));
    }

    #[test]
    fn uld_and_its_gradient_match_a_hand_computation() {
        // Row 1 only, then both rows; k = 3 with the second teacher padded (its rest is 0.2).
        let teacher = [[0.5f64, 0.3, 0.1], [0.6, 0.2, 0.0]];
        for rows in [vec![1i64], vec![0, 1]] {
            let value = |zs: &[[f64; 5]; 2]| -> f64 {
                rows.iter()
                    .enumerate()
                    .map(|(j, &r)| {
                        let mut q = softmax(&zs[r as usize], 1.0);
                        q.sort_by(|a, b| b.total_cmp(a));
                        let p = &teacher[if rows.len() == 1 { 1 } else { j }];
                        // Padding (a 0) is no slot: the student's probability there is rest.
                        let c = p.iter().filter(|&&x| x > 0.0).count();
                        let head: f64 = (0..c).map(|i| (q[i] - p[i]).abs()).sum();
                        let rest = |v: &[f64]| (1.0 - v[..c].iter().sum::<f64>()).max(0.0);
                        head + (rest(&q) - rest(p)).abs()
                    })
                    .sum()
            };
            let picked: Vec<f64> = if rows.len() == 1 {
                teacher[1].to_vec()
            } else {
                teacher.concat()
            };
            let top = Tensor::from_slice(&picked).reshape([rows.len() as i64, 3]);
            let z = leaf(&STUDENT);
            let logq = z.log_softmax(-1, Kind::Double);
            let loss = uld_sum(&logq, &Tensor::from_slice(&rows), &top);
            let what = format!("ULD on rows {rows:?}");
            assert!((loss.double_value(&[]) - value(&STUDENT)).abs() < 1e-12, "{what}");
            loss.backward();
            assert_close(&grad_rows(&z), &numeric_grad(&STUDENT, &value), 1e-6, &what);
        }
    }

    #[test]
    fn uld_vanishes_when_the_sorted_probabilities_agree_whatever_the_tokens_and_padding() {
        // The teacher's top-2 are the student's, but on other tokens: ULD cannot tell. A row
        // padded to the batch's width compares the same.
        let mut q = softmax(&STUDENT[0], 1.0);
        q.sort_by(|a, b| b.total_cmp(a));
        let logq = tensor(&STUDENT).log_softmax(-1, Kind::Double);
        for top in [vec![q[0], q[1]], vec![q[0], q[1], 0.0, 0.0]] {
            let width = top.len() as i64;
            let top = Tensor::from_slice(&top).reshape([1, width]);
            let loss = uld_sum(&logq, &Tensor::from_slice(&[0i64]), &top);
            assert!(loss.double_value(&[]).abs() < 1e-12, "width {width}");
        }
    }

    #[test]
    fn span_likelihood_and_its_gradient_match_a_hand_computation() {
        let targets = [2usize, 4];
        let binary_kl = |p: f64, q: f64| p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln();
        // One span over both rows; one span per row; row 0 outside every span.
        let cases: [(&[i64], &[f64]); 3] = [(&[0, 0], &[0.3]), (&[0, 1], &[0.2, 0.9]), (&[1, 0], &[0.05])];
        for (span_of_row, teacher) in cases {
            let value = |zs: &[[f64; 5]; 2]| -> f64 {
                let mut q = vec![1.0; teacher.len() + 1];
                for (r, &s) in span_of_row.iter().enumerate() {
                    q[s as usize] *= softmax(&zs[r], 1.0)[targets[r]];
                }
                teacher.iter().zip(&q).map(|(&p, &q)| binary_kl(p, q)).sum()
            };
            let z = leaf(&STUDENT);
            let logq = z.log_softmax(-1, Kind::Double);
            let lp = Tensor::from_slice(&teacher.iter().map(|p| p.ln()).collect::<Vec<_>>());
            let loss = span_likelihood_sum(
                &logq,
                &Tensor::from_slice(&[2i64, 4]),
                &Tensor::from_slice(span_of_row),
                &lp,
            );
            let what = format!("spans {span_of_row:?}");
            assert!((loss.double_value(&[]) - value(&STUDENT)).abs() < 1e-12, "{what}");
            loss.backward();
            assert_close(&grad_rows(&z), &numeric_grad(&STUDENT, &value), 1e-6, &what);
        }
    }

    /// The span loss of one one-token span, a student with logits `[top, 0, 0]` on token 0 and a
    /// teacher giving the span probability `teacher`; and the gradient on the logits.
    fn one_token_span(top: f64, teacher: f64) -> (f64, Vec<f64>) {
        let logits = Tensor::from_slice(&[top, 0.0, 0.0])
            .reshape([1, 3])
            .set_requires_grad(true);
        let logq = logits.log_softmax(-1, Kind::Double);
        let zero = Tensor::from_slice(&[0i64]);
        let loss = span_likelihood_sum(&logq, &zero, &zero, &Tensor::from_slice(&[teacher.ln()]));
        loss.backward();
        (
            loss.double_value(&[]),
            Vec::<f64>::try_from(logits.grad().view(-1)).unwrap(),
        )
    }

    #[test]
    fn span_likelihood_pushes_back_a_student_surer_than_the_ceiling() {
        // The teacher gives the span 0.9; the student is surer than 1 − 1e-6: still a gradient
        // lowering the span's logit.
        let (_, g) = one_token_span(30.0, 0.9);
        assert!(g[0] > 0.0 && g.iter().all(|v| v.is_finite()), "{g:?}");
    }

    #[test]
    fn span_likelihood_stays_finite_for_certain_spans() {
        // A teacher certain of a span, and a student that is certain too: finite, about 0.
        let (loss, g) = one_token_span(60.0, 1.0);
        assert!(loss.abs() < 1e-5, "{loss}");
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }
}
