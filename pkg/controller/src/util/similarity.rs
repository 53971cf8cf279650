//! MCM's string similarity: how alike two status descriptions are, so a cloud error
//! repeated with a new request ID does not rewrite the Machine's status every retry.

/// The Levenshtein distance over bytes, as MCM counts it (a multi-byte character that
/// differs counts once per differing byte).
pub fn levenshtein(a: &str, b: &str) -> usize {
    strsim::generic_levenshtein(&a.as_bytes().to_vec(), &b.as_bytes().to_vec())
}

/// `1 - distance / mean length`: 1 for equal strings, NaN for two empty ones (which
/// then never count as "similar" by ratio, as in MCM, but compare equal anyway).
pub fn similarity_ratio(a: &str, b: &str) -> f64 {
    let mean_len = (a.len() + b.len()) as f64 / 2.0;
    1.0 - levenshtein(a, b) as f64 / mean_len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("flaw", "lawn"), 2);
        assert_eq!(levenshtein("same", "same"), 0);
        // Bytes, not characters: "é" is two bytes, one of which differs from "è".
        assert_eq!(levenshtein("é", "è"), 1);
        assert_eq!(levenshtein("é", "e"), 2);
    }

    #[test]
    fn ratios() {
        assert_eq!(similarity_ratio("abcd", "abcd"), 1.0);
        assert_eq!(similarity_ratio("abcd", "abce"), 0.75);
        assert_eq!(similarity_ratio("abcd", "wxyz"), 0.0);
        assert!(similarity_ratio("", "").is_nan());
    }
}
