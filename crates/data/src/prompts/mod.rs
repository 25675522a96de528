//! Prompt sources: where the prompts that the teacher answers come from.
//!
//! A [`PromptSource`] loads [`Prompt`]s (chat messages plus metadata, with a stable id).
//! [`pick`] chooses N of them deterministically from a seed, with the shuffle described in
//! [`SplitMix64`].

use crate::error::Result;
use crate::example::{Example, Message, Metadata, Split};

mod sources;

pub use sources::{CsvColumn, JsonlField, LabPrompts, MultipleChoice, MultipleChoiceTemplate, TextLines};
pub use sources::{DEFAULT_MC_SYSTEM_PROMPT, extract_choice};

/// A prompt ready for the teacher.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// [`Example::id_for`] of `messages`; the example made from this prompt keeps it.
    pub id: String,
    /// The chat messages sent to the teacher (system and user).
    pub messages: Vec<Message>,
    /// Metadata carried into the example, e.g. `category` or `answer_key`.
    pub metadata: Metadata,
    /// The split the example made from this prompt belongs to, when the caller has assigned one.
    pub split: Option<Split>,
}

impl Prompt {
    /// A prompt of `messages`, with its content-hash id and no metadata.
    pub fn new(messages: Vec<Message>) -> Self {
        Prompt {
            id: Example::id_for(&messages),
            messages,
            metadata: Metadata::new(),
            split: None,
        }
    }

    /// A prompt of an optional system message and one user message.
    pub fn from_text(system: Option<&str>, user: impl Into<String>) -> Self {
        let mut messages = Vec::with_capacity(2);
        if let Some(s) = system {
            messages.push(Message::system(s));
        }
        messages.push(Message::user(user));
        Self::new(messages)
    }

    /// The example this prompt becomes once answered: same id, messages, metadata and split.
    pub fn into_example(self, response: impl Into<String>) -> Example {
        Example {
            id: self.id,
            messages: self.messages,
            response: response.into(),
            teacher: None,
            logprobs: None,
            split: self.split,
            metadata: self.metadata,
        }
    }
}

/// Anything that can produce prompts: a file in one of the supported shapes, or a user's own
/// type.
pub trait PromptSource {
    /// A short description for logs and errors, usually the path.
    fn describe(&self) -> String;

    /// Loads every prompt, in source order. Errors name the file and line.
    fn load(&self) -> Result<Vec<Prompt>>;
}

/// SplitMix64 (Steele, Lea and Flood, 2014; the generator used to seed xoshiro): a 64-bit
/// state advanced by the golden-ratio constant and mixed by two multiply-xorshift rounds.
/// Tiny, fast, and fully determined by its seed, which is all a reproducible shuffle needs.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n > 0`), by rejection sampling so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        // Reject the top partial block of 2^64 so every residue is equally likely.
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// Shuffles `items` in place with Fisher–Yates driven by [`SplitMix64`] seeded with `seed`:
/// for `i` from `len - 1` down to 1, swap `items[i]` with `items[below(i + 1)]`. The same seed
/// and input always give the same order, on every platform.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Picks `n` prompts (all of them if there are fewer) deterministically from `seed`: the
/// first `n` after [`shuffle`]. The chosen prompts keep their shuffled order.
pub fn pick(mut prompts: Vec<Prompt>, n: usize, seed: u64) -> Vec<Prompt> {
    shuffle(&mut prompts, seed);
    prompts.truncate(n);
    prompts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_values() {
        // Reference outputs of SplitMix64 seeded with 1234567 (from the C reference code).
        let mut r = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            vec![6457827717110365317, 3203168211198807973, 9817491932198370423]
        );
    }

    #[test]
    fn shuffle_is_deterministic_and_a_permutation() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        shuffle(&mut a, 42);
        shuffle(&mut b, 42);
        assert_eq!(a, b);
        let mut c: Vec<u32> = (0..100).collect();
        shuffle(&mut c, 43);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, sorted);
    }

    #[test]
    fn shuffle_is_roughly_uniform() {
        // Position of element 0 after shuffling 4 items, over many seeds: each of the 4
        // positions should get about a quarter.
        let mut counts = [0u32; 4];
        for seed in 0..4000 {
            let mut v = [0, 1, 2, 3];
            shuffle(&mut v, seed);
            counts[v.iter().position(|&x| x == 0).unwrap()] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn pick_takes_n() {
        let prompts: Vec<Prompt> = (0..10)
            .map(|i| Prompt::from_text(None, format!("p{i}")))
            .collect();
        let a = pick(prompts.clone(), 3, 7);
        assert_eq!(a.len(), 3);
        assert_eq!(a, pick(prompts.clone(), 3, 7));
        assert_eq!(pick(prompts.clone(), 30, 7).len(), 10);
        // Picking more from the same seed extends the smaller pick.
        assert_eq!(&pick(prompts, 5, 7)[..3], &a[..]);
    }

    #[test]
    fn prompt_becomes_example_with_same_id() {
        let mut p = Prompt::from_text(Some("sys"), "q");
        p.metadata.insert("category".into(), "math".into());
        let id = p.id.clone();
        let e = p.into_example("a");
        assert_eq!(e.id, id);
        assert_eq!(e.id, Example::id_for(&e.messages));
        assert_eq!(e.metadata["category"], "math");
    }
}
