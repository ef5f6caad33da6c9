//! The CSV grammar of a job submission: the shape published as the schema's `pattern`
//! ([`CSV_PATTERN`]) and the parser that enforces the same text, then reads the rows
//! with the `csv` crate into items (a malformed row is an item that fails alone).

use crate::bulk::ItemInput;

use super::MAX_ITEMS;

/// What a CSV submission must look like, published as the `pattern` of its schema and
/// enforced by [`parse_csv`] with the very same text (ECMA, Python and Rust regex alike):
/// a header row of cells (quoted without line breaks, or unquoted), one of them `email`
/// or `domain` (any case, spaces around), then rows with at least one character that is
/// not white space, a comma or a quote (so at least one item). The rows themselves are
/// read by the `csv` crate, which reads anything (quotes, line breaks in quotes).
pub const CSV_PATTERN: &str = concat!(
    r#"^\uFEFF?(?:(?:"(?:[^"\r\n]|"")*"|[^\r\n",]*),)*"#,
    r#"(?:"[ \t]*(?:[Ee][Mm][Aa][Ii][Ll]|[Dd][Oo][Mm][Aa][Ii][Nn])[ \t]*"|[ \t]*(?:[Ee][Mm][Aa][Ii][Ll]|[Dd][Oo][Mm][Aa][Ii][Nn])[ \t]*)"#,
    r#"(?:,(?:"(?:[^"\r\n]|"")*"|[^\r\n",]*))*(?:\r\n|\n|\r)[\s\S]*[^\s,"][\s\S]*$"#
);

static CSV_SHAPE: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(CSV_PATTERN).expect("CSV_PATTERN compiles"));

/// A CSV submission's problem, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblem {
    pub message: String,
}

/// The items of a CSV document: a header row naming `email` and/or `domain` (and
/// optionally `reference`; other columns are ignored, names are case-insensitive), then
/// one row per item (an empty cell is a field left out). At most [`MAX_ITEMS`] rows.
pub fn parse_csv(text: &str) -> Result<Vec<ItemInput>, CsvProblem> {
    let problem = |message: String| CsvProblem { message };
    if !CSV_SHAPE.is_match(text) {
        return Err(problem("must be CSV: a header row naming an `email` or a `domain` column, then at least one row".into()));
    }
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| problem(format!("the header row cannot be read: {e}")))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name));
    let (email, domain, reference) = (column("email"), column("domain"), column("reference"));
    if email.is_none() && domain.is_none() {
        return Err(problem("the header row must name an `email` or a `domain` column".into()));
    }
    let mut items = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| problem(format!("row {} cannot be read: {e}", n + 2)))?;
        if record.iter().all(str::is_empty) {
            continue; // a blank line
        }
        if items.len() == MAX_ITEMS {
            return Err(problem(format!("at most {MAX_ITEMS} rows")));
        }
        let cell = |at: Option<usize>| at.and_then(|i| record.get(i)).filter(|v| !v.is_empty()).map(str::to_string);
        items.push(ItemInput { email: cell(email), domain: cell(domain), include: None, reference: cell(reference) });
    }
    if items.is_empty() {
        return Err(problem("no row after the header".into()));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_pattern_takes_the_reader_takes_and_the_rest_is_refused() {
        for ok in [
            "email\njane@acme.com\n",
            "\u{feff}Name,\"E-mail\",Domain\r\nJane,,acme.com",
            "\"a,b\", email ,reference\n\"x\ny\",jane@acme.com,\"crm, 1\"\n",
            "DOMAIN\r acme.com",
        ] {
            let items = parse_csv(ok).unwrap_or_else(|p| panic!("{ok:?}: {p:?}"));
            assert!(!items.is_empty(), "{ok:?}");
        }
        for bad in ["", "email", "email\n\n  ,\n", "name\nJane\n", " \"email\"\nx\n", "e-mail\nx\n"] {
            assert!(parse_csv(bad).is_err(), "{bad:?}");
        }
        let items = parse_csv("\"a,b\", email ,reference\n\"x\ny\",jane@acme.com,\"crm, 1\"\n").unwrap();
        assert_eq!((items[0].email.as_deref(), items[0].reference.as_deref()), (Some("jane@acme.com"), Some("crm, 1")));
    }

    /// Every string the published pattern allows is a submission the server takes (what
    /// Schemathesis sends as valid must be accepted).
    #[test]
    fn the_reader_takes_everything_the_pattern_generates() {
        use rand::{Rng, SeedableRng};
        let body = CSV_PATTERN.strip_prefix('^').and_then(|p| p.strip_suffix('$')).expect("anchored");
        let generator = rand_regex::Regex::compile(body, 8).expect("the pattern compiles for the generator");
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261203);
        for _ in 0..5_000 {
            let text: String = rng.sample(&generator);
            parse_csv(&text).unwrap_or_else(|p| panic!("{text:?} matches CSV_PATTERN but was refused: {p:?}"));
        }
    }
}
