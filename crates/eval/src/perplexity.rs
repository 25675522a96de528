//! Perplexity through a log-likelihood trait.
//!
//! Perplexity over a corpus is `exp(-(sum of token log-probabilities) / tokens)`:
//! tokens are weighted equally, not texts.

use serde::{Deserialize, Serialize};

use crate::error::{BoxError, Error, Result};

/// A model that scores text.
pub trait LogLikelihood {
    /// The natural-log probability of each predicted token of `text`, in order.
    fn token_log_probs(&mut self, text: &str) -> Result<Vec<f64>, BoxError>;
}

/// Perplexity and the numbers behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Perplexity {
    /// `exp(mean negative log-likelihood)`.
    pub perplexity: f64,
    /// Mean negative log-likelihood per token (nats).
    pub mean_nll: f64,
    /// Number of scored tokens.
    pub tokens: usize,
}

/// Corpus perplexity of `model` on `texts`.
pub fn perplexity<M, S>(model: &mut M, texts: &[S]) -> Result<Perplexity>
where
    M: LogLikelihood + ?Sized,
    S: AsRef<str>,
{
    let mut all = Vec::new();
    for text in texts {
        let lp = model
            .token_log_probs(text.as_ref())
            .map_err(|source| Error::Model {
                during: "scoring",
                source,
            })?;
        all.extend(lp);
    }
    perplexity_from_log_probs(&all)
}

/// Perplexity from token log-probabilities, which must be finite and at most 0
/// (a tolerance of 1e-6 allows for rounding in the model's softmax).
pub fn perplexity_from_log_probs(log_probs: &[f64]) -> Result<Perplexity> {
    if log_probs.is_empty() {
        return Err(Error::Empty("token log-probabilities"));
    }
    if let Some(bad) = log_probs.iter().find(|&&lp| !lp.is_finite() || lp > 1e-6) {
        return Err(Error::InvalidConfig(format!(
            "token log-probability {bad} is not a finite value <= 0"
        )));
    }
    let mean_nll = -log_probs.iter().sum::<f64>() / log_probs.len() as f64;
    Ok(Perplexity {
        perplexity: mean_nll.exp(),
        mean_nll,
        tokens: log_probs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Uniform(usize);

    impl LogLikelihood for Uniform {
        fn token_log_probs(&mut self, text: &str) -> Result<Vec<f64>, BoxError> {
            Ok(vec![-(self.0 as f64).ln(); text.split_whitespace().count()])
        }
    }

    #[test]
    fn uniform_model_has_vocabulary_perplexity() {
        let p = perplexity(&mut Uniform(50), &["a b c", "d e"]).unwrap();
        assert!((p.perplexity - 50.0).abs() < 1e-9);
        assert_eq!(p.tokens, 5);
    }

    #[test]
    fn tokens_weigh_equally() {
        let p = perplexity_from_log_probs(&[0.0, 0.0, -2.0f64.ln() * 2.0]).unwrap();
        assert!((p.perplexity - 4f64.powf(1.0 / 3.0)).abs() < 1e-12);
        assert!(perplexity_from_log_probs(&[]).is_err());
        assert!(perplexity_from_log_probs(&[0.5]).is_err());
        assert!(perplexity_from_log_probs(&[f64::NAN]).is_err());
    }
}
