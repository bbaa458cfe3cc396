//! [`Id`]: the string type of ids and position keys inside the dataflow.

/// An id (trade, account, book, security, currency, correlation) or a
/// position key. Up to 24 bytes it is stored inline in the 24 bytes a
/// `String` header takes, so the ids of every realistic feed, and most
/// position keys, cost no heap allocation to create, clone or drop.
/// Longer ones (ids may have 64 characters, keys 194) go to the heap.
/// Equality, order (byte-wise), hashing and the serde form are those of
/// `str`, so outputs, worker routing and persisted state are unchanged.
pub type Id = compact_str::CompactString;

pub use compact_str::format_compact as format_id;
