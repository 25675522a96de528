//! Dataset operations: dedup, split, filter, stats, and file-level convert, merge and split.

pub mod dedup;
pub mod files;
pub mod filter;
pub mod split;
pub mod stats;
