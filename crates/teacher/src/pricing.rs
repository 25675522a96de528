//! Token prices and cost accounting.
//!
//! The built-in table is OpenAI's list prices in US dollars per million tokens **as of
//! [`DEFAULT_PRICES_AS_OF`]**. Prices change: check them, and override any entry from the
//! configuration file (`[prices."model"]`). Azure OpenAI prices differ by region and contract;
//! give them in the configuration. Unknown models have no cost (reported as unknown), never a
//! made-up zero.

use std::collections::BTreeMap;

use distill_data::Usage;
use serde::{Deserialize, Serialize};

/// The date the built-in prices were taken from OpenAI's pricing page.
pub const DEFAULT_PRICES_AS_OF: &str = "2025-06-01";

/// The price of one model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Per million prompt (input) tokens.
    pub input_per_mtok: f64,
    /// Per million completion (output) tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of `usage` at this price, in US dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_mtok
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1e6
    }
}

/// Prices by model name. Lookup is exact first, then by the longest known prefix, so
/// `gpt-4o-2024-08-06` prices as `gpt-4o` and `gpt-4o-mini-2024-07-18` as `gpt-4o-mini`.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
    /// Where the prices came from, for reports.
    pub as_of: String,
}

impl Default for PriceTable {
    fn default() -> Self {
        let p = |i, o| Price {
            input_per_mtok: i,
            output_per_mtok: o,
        };
        let prices = [
            ("gpt-4o", p(2.50, 10.00)),
            ("gpt-4o-mini", p(0.15, 0.60)),
            ("gpt-4.1", p(2.00, 8.00)),
            ("gpt-4.1-mini", p(0.40, 1.60)),
            ("gpt-4.1-nano", p(0.10, 0.40)),
            ("gpt-4-turbo", p(10.00, 30.00)),
            ("gpt-4", p(30.00, 60.00)),
            ("gpt-3.5-turbo", p(0.50, 1.50)),
            ("o1", p(15.00, 60.00)),
            ("o3", p(2.00, 8.00)),
            ("o3-mini", p(1.10, 4.40)),
            ("o4-mini", p(1.10, 4.40)),
        ];
        PriceTable {
            prices: prices.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            as_of: format!("OpenAI list prices as of {DEFAULT_PRICES_AS_OF}"),
        }
    }
}

impl PriceTable {
    /// A table with no prices.
    pub fn empty() -> Self {
        PriceTable {
            prices: BTreeMap::new(),
            as_of: "no prices".into(),
        }
    }

    /// Sets (or replaces) a model's price.
    pub fn insert(&mut self, model: impl Into<String>, price: Price) {
        self.prices.insert(model.into(), price);
    }

    /// The price for `model`, exact or by longest prefix.
    pub fn get(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        self.prices
            .iter()
            .filter(|(k, _)| model.starts_with(k.as_str()) && model[k.len()..].starts_with('-'))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| *p)
    }

    /// The cost of `usage` on `model` with a discount factor (1.0 for live requests, 0.5 for
    /// the Batch API); `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage, factor: f64) -> Option<f64> {
        self.get(model).map(|p| p.cost(usage) * factor)
    }
}

/// Running totals of usage and cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accounting {
    /// Prompt tokens billed.
    pub prompt_tokens: u64,
    /// Completion tokens billed.
    pub completion_tokens: u64,
    /// Cost in US dollars of the requests with a known price.
    pub cost_usd: f64,
    /// Requests whose cost is unknown (no price, or no usage reported).
    pub unpriced_requests: u64,
}

impl Accounting {
    /// Adds one request's usage and cost.
    pub fn add(&mut self, usage: Option<&Usage>, cost: Option<f64>) {
        if let Some(u) = usage {
            self.prompt_tokens += u.prompt_tokens;
            self.completion_tokens += u.completion_tokens;
        }
        match cost {
            Some(c) if usage.is_some() => self.cost_usd += c,
            _ => self.unpriced_requests += 1,
        }
    }

    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lookup_prefers_the_longest_match() {
        let t = PriceTable::default();
        assert_eq!(t.get("gpt-4o").unwrap().input_per_mtok, 2.50);
        assert_eq!(t.get("gpt-4o-2024-08-06").unwrap().input_per_mtok, 2.50);
        assert_eq!(t.get("gpt-4o-mini-2024-07-18").unwrap().input_per_mtok, 0.15);
        assert_eq!(t.get("gpt-4.1-nano").unwrap().output_per_mtok, 0.40);
        assert!(t.get("gpt-4ox").is_none(), "a prefix must end at a dash");
        assert!(t.get("SmolLM2-135M-Instruct").is_none());
    }

    #[test]
    fn cost_and_batch_discount() {
        let t = PriceTable::default();
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 100_000,
        };
        assert!((t.cost("gpt-4o-mini", &u, 1.0).unwrap() - 0.21).abs() < 1e-12);
        assert!((t.cost("gpt-4o-mini", &u, 0.5).unwrap() - 0.105).abs() < 1e-12);
        let mut acc = Accounting::default();
        acc.add(Some(&u), t.cost("gpt-4o-mini", &u, 1.0));
        acc.add(Some(&u), t.cost("local", &u, 1.0));
        assert_eq!(acc.total_tokens(), 2_200_000);
        assert_eq!(acc.unpriced_requests, 1);
        assert!((acc.cost_usd - 0.21).abs() < 1e-12);
    }
}
