//! Statements over many rows at once, with a bounded number of shapes.
//!
//! A statement with one placeholder group per row would be a new prepared
//! statement for every batch size. Batches are cut into chunks of at most
//! [`CHUNK`] rows, and each chunk is padded to the next power of two by
//! repeating its last row, so a statement has at most nine shapes; the
//! statements that use this read or write the same row the same way
//! however often it is named.

/// The most rows one statement names.
pub(super) const CHUNK: usize = 256;

/// How many rows a statement for `n` rows names: the next power of two.
pub(super) fn width(n: usize) -> usize {
    n.next_power_of_two().min(CHUNK)
}

/// `rows` followed by copies of its last row, `width` in all.
pub(super) fn padded<T>(rows: &[T], width: usize) -> impl Iterator<Item = &T> {
    let last = rows.last();
    rows.iter()
        .chain(std::iter::repeat_n(last, width.saturating_sub(rows.len())).flatten())
}

/// `$first, $first+1, …` for a list of `n` bound values.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($first, …), (…), …`: `rows` groups of `columns` placeholders each.
pub(super) fn row_placeholders(first: usize, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(first + r * columns, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_are_powers_of_two_up_to_a_chunk() {
        assert_eq!(width(1), 1);
        assert_eq!(width(3), 4);
        assert_eq!(width(200), 256);
        assert_eq!(width(256), 256);
        let shapes: std::collections::HashSet<usize> = (1..=CHUNK).map(width).collect();
        assert_eq!(shapes.len(), 9);
    }

    #[test]
    fn padding_repeats_the_last_row() {
        let rows = [1, 2, 3];
        assert_eq!(padded(&rows, 4).copied().collect::<Vec<_>>(), [1, 2, 3, 3]);
        assert_eq!(padded(&rows, 3).count(), 3);
        assert_eq!(row_placeholders(2, 2, 2), "($2, $3), ($4, $5)");
    }
}
