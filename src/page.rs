//! Cursor pages: a page is read one row past its size, and that extra row, when there is
//! one, says that another page follows. Knows nothing of HTTP or of any table.

/// The first `limit` of `rows` (read with `LIMIT limit + 1`) and, when there were more,
/// the cursor of the last row kept.
pub fn split<T, C>(mut rows: Vec<T>, limit: u64, cursor: impl FnOnce(&T) -> C) -> (Vec<T>, Option<C>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(cursor);
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn the_extra_row_says_that_a_page_follows() {
        assert_eq!(split(vec![1, 2, 3], 2, |n| *n), (vec![1, 2], Some(2)));
        assert_eq!(split(vec![1, 2], 2, |n| *n), (vec![1, 2], None));
        assert_eq!(split(Vec::<i32>::new(), 2, |n| *n), (vec![], None));
    }
}
