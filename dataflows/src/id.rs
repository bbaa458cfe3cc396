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

/// A string's first 16 bytes as a big-endian number, zero-padded. Where
/// two strings' prefixes differ, they order as the strings do (a string
/// shorter than another it begins is padded with the least byte), so a
/// sort compares prefixes first and reads the strings only on a tie.
#[inline]
pub fn order_prefix(text: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let head = &text.as_bytes()[..text.len().min(16)];
    bytes[..head.len()].copy_from_slice(head);
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
proptest::proptest! {
    /// Two prefixes are equal exactly when the strings' first 16 bytes
    /// are (up to trailing zero bytes, the padding), and where they differ
    /// they order as the strings do (strings over a three-byte alphabet,
    /// the least byte included, so prefixes often tie and short strings
    /// often begin long ones).
    #[test]
    fn prefixes_order_as_their_strings(a in "[ab\\x00]{0,20}", b in "[ab\\x00]{0,20}") {
        let head = |s: &str| {
            let mut head = s.as_bytes()[..s.len().min(16)].to_vec();
            while head.last() == Some(&0) {
                head.pop();
            }
            head
        };
        let (pa, pb) = (order_prefix(&a), order_prefix(&b));
        proptest::prop_assert_eq!(pa == pb, head(&a) == head(&b));
        if pa != pb {
            proptest::prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
        }
    }
}
