//! What one statement may cost: how deep its expressions may nest (checked on the token
//! stream, before any tree exists) and how many bytes it may materialize.
//!
//! sqlparser builds a chain such as `1+1+…+1` as a left-deep tree without recursion, and
//! its own recursion limit only counts nesting (parentheses, unary operators). Everything
//! that walks the tree afterwards recurses over it — evaluation, type inference, `Clone`,
//! `Display`, even `Drop` of the boxed nodes — so a long enough chain overflows the stack
//! of the thread that holds it and aborts the process. [`expression_depth_bound`] bounds
//! the depth of every expression from the tokens, and a statement past
//! [`MAX_EXPRESSION_DEPTH`] is refused with 54001 before it is parsed.
//!
//! [`MemoryBudget`] follows CockroachDB's per-statement memory accounting: the rows a
//! statement reads, sorts, builds and writes are charged as they are materialized, and the
//! statement fails with 53200 once the budget (`--max-sql-memory-per-statement`) is spent.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

use crate::services::sql::error::SqlError;
use crate::services::sql::value::Value;

/// The deepest expression a statement may hold, counted in operators along one path from
/// the root (parentheses and function calls count one each). In a debug build each level
/// costs about 2.5 KiB of stack to evaluate and 4.5 KiB to clone (sqlparser's derived
/// `Clone`), so a tree this deep is parsed, evaluated, cloned, printed and dropped within
/// half of a tokio worker's 2 MiB stack (the test `evaluation_at_the_limit_fits_a_small_stack`
/// checks it); release builds need several times less. Hand-written queries stay well below:
/// a long `OR` of comparisons is better written as `IN (…)`, which does not add up.
pub const MAX_EXPRESSION_DEPTH: usize = 200;

/// The default of `--max-sql-memory-per-statement`.
pub const DEFAULT_MAX_STATEMENT_MEMORY: u64 = 64 * 1024 * 1024;

/// 54001: the statement nests deeper than [`MAX_EXPRESSION_DEPTH`].
pub fn too_complex() -> SqlError {
    SqlError::new(
        "54001",
        format!("statement too complex: expression nesting exceeds {MAX_EXPRESSION_DEPTH} (the limit of this server)"),
    )
}

/// Keywords that make an operator node (or, for CASE, a node whose branches sit one level
/// deeper).
fn is_operator_keyword(keyword: Keyword) -> bool {
    matches!(
        keyword,
        Keyword::AND
            | Keyword::OR
            | Keyword::XOR
            | Keyword::NOT
            | Keyword::IS
            | Keyword::LIKE
            | Keyword::ILIKE
            | Keyword::SIMILAR
            | Keyword::BETWEEN
            | Keyword::IN
            | Keyword::COLLATE
            | Keyword::AT
            | Keyword::CASE
            | Keyword::ANY
            | Keyword::ALL
            | Keyword::SOME
            | Keyword::EXISTS
            | Keyword::DIV
            | Keyword::OVERLAPS
    )
}

/// How much a token adds to the depth of the expression around it.
enum Step {
    /// Nothing: names, literals, whitespace, `.`.
    Leaf,
    /// One operator node.
    Operator,
    /// `(`, `[` or `{`: a nested level begins.
    Open,
    /// `)`, `]` or `}`: the nested level ends.
    Close,
    /// `,`: a new sibling expression begins at this level.
    Comma,
}

fn step(token: &Token) -> Step {
    match token {
        Token::LParen | Token::LBracket | Token::LBrace => Step::Open,
        Token::RParen | Token::RBracket | Token::RBrace => Step::Close,
        Token::Comma | Token::SemiColon => Step::Comma,
        Token::Word(word) if is_operator_keyword(word.keyword) => Step::Operator,
        Token::Word(_)
        | Token::Whitespace(_)
        | Token::EOF
        | Token::Period
        | Token::Number(..)
        | Token::Placeholder(_)
        | Token::Char(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => Step::Leaf,
        // Every other punctuation token is an operator in some dialect: count it.
        _ => Step::Operator,
    }
}

/// An upper bound on the depth of any expression in `tokens`: per nesting level, the
/// operators since the last comma at that level; a closing bracket adds its level's largest
/// such count, plus one, to the level around it. Commas reset the count because they
/// separate sibling expressions (select items, VALUES rows, IN-list items, arguments), so
/// many rows or a long IN list do not add up. It never undercounts a chain; it may
/// overcount (`a = 1 AND b = 2` counts 3 on a tree of depth 2), which only matters near the
/// limit.
pub fn expression_depth_bound(tokens: &[Token]) -> usize {
    struct Level {
        current: usize,
        largest: usize,
    }
    let mut levels = vec![Level { current: 0, largest: 0 }];
    let mut bound = 0;
    for token in tokens {
        let level = levels.last_mut().expect("the outermost level is never popped");
        match step(token) {
            Step::Leaf => {}
            Step::Operator => level.current += 1,
            Step::Comma => {
                level.largest = level.largest.max(level.current);
                level.current = 0;
            }
            Step::Open => levels.push(Level { current: 0, largest: 0 }),
            Step::Close => {
                if levels.len() > 1 {
                    let inner = levels.pop().expect("checked above");
                    let outer = levels.last_mut().expect("checked above");
                    outer.current += inner.largest.max(inner.current) + 1;
                }
                // An unbalanced `)` is left for the parser to report.
            }
        }
        let level = levels.last().expect("the outermost level is never popped");
        bound = bound.max(level.current);
    }
    // Unclosed levels (a syntax error the parser reports) still count as nested.
    let mut carried = 0;
    while let Some(level) = levels.pop() {
        carried = level.largest.max(level.current + carried) + usize::from(!levels.is_empty());
    }
    bound.max(carried)
}

/// Fails with 54001 when an expression in `tokens` may nest deeper than allowed.
pub fn check_depth(tokens: &[Token]) -> Result<(), SqlError> {
    if expression_depth_bound(tokens) > MAX_EXPRESSION_DEPTH { Err(too_complex()) } else { Ok(()) }
}

/// Bytes one statement holds, against its budget. Charged as rows are read, sorted, built or
/// written; what a statement holds only for a while (a page of a streamed scan) is released
/// once dropped, so the budget bounds what is held at once, not what passes through.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, nothing used.
    pub fn new(limit: u64) -> Self {
        Self { limit, used: AtomicU64::new(0) }
    }

    /// Bytes charged so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes`; fails with 53200 once the total passes the limit.
    pub fn charge(&self, bytes: usize) -> Result<(), SqlError> {
        let bytes = bytes as u64;
        let total = self.used.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        if total > self.limit {
            return Err(SqlError::new(
                "53200",
                format!("statement exceeded its memory budget of {}", human_bytes(self.limit)),
            ));
        }
        Ok(())
    }

    /// Releases `bytes` charged before and no longer held.
    pub fn release(&self, bytes: usize) {
        let bytes = bytes as u64;
        let _ = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| Some(used.saturating_sub(bytes)));
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Charges the bytes `row` holds.
    pub fn charge_row(&self, row: &[Value]) -> Result<(), SqlError> {
        self.charge(row_bytes(row))
    }
}

/// The bytes a row of values holds: the vector, each value, and what strings and byte
/// strings point to.
pub fn row_bytes(row: &[Value]) -> usize {
    std::mem::size_of::<Vec<Value>>()
        + row
            .iter()
            .map(|value| {
                std::mem::size_of::<Value>()
                    + match value {
                        Value::String(s) => s.len(),
                        Value::Bytes(b) => b.len(),
                        _ => 0,
                    }
            })
            .sum::<usize>()
}

/// `n` bytes as the largest whole unit that says it exactly (`64 MiB`, `1536 KiB`, `100 bytes`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    use super::*;

    fn bound(sql: &str) -> usize {
        expression_depth_bound(&Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().unwrap())
    }

    fn chain(terms: usize) -> String {
        format!("SELECT {}", vec!["1"; terms].join("+"))
    }

    #[test]
    fn chains_count_their_operators() {
        assert_eq!(bound("SELECT 1"), 0);
        assert_eq!(bound("SELECT 1+2*3"), 2);
        assert_eq!(bound(&chain(5000)), 4999);
        assert_eq!(bound("SELECT a = 1 AND b = 2 OR NOT c"), 5);
        assert_eq!(bound("SELECT x::INT || 'a'"), 2);
        assert_eq!(bound("SELECT a BETWEEN 1 AND 2"), 2);
    }

    #[test]
    fn brackets_add_their_deepest_part_and_commas_reset() {
        assert_eq!(bound("SELECT (1+1)+1"), 3);
        assert_eq!(bound("SELECT f(1+1+1, 2)"), 3);
        assert_eq!(bound("SELECT ((1+1))"), 3);
        assert_eq!(bound("SELECT 1+1, 1+1+1, 1"), 2);
        assert_eq!(bound("SELECT a[1+1]"), 2);
        // Unclosed brackets still count as nesting.
        assert_eq!(bound("SELECT ((1+1"), 3);
        // A stray `)` neither panics nor lowers the count.
        assert_eq!(bound("SELECT 1+1)+1"), 2);
    }

    #[test]
    fn many_rows_long_in_lists_and_negative_numbers_stay_small() {
        let rows: Vec<String> = (0..20_000).map(|i| format!("({i}, -{i}, 'v{i}')")).collect();
        assert_eq!(bound(&format!("UPSERT INTO t VALUES {}", rows.join(", "))), 2);
        let items: Vec<String> = (0..100_000).map(|i| format!("-{i}")).collect();
        // `*` counts as an operator here: the bound overcounts, never undercounts.
        assert_eq!(bound(&format!("SELECT * FROM t WHERE k IN ({})", items.join(","))), 4);
        assert!(
            check_depth(&Tokenizer::new(&PostgreSqlDialect {}, &chain(MAX_EXPRESSION_DEPTH + 1)).tokenize().unwrap())
                .is_ok()
        );
        let err =
            check_depth(&Tokenizer::new(&PostgreSqlDialect {}, &chain(MAX_EXPRESSION_DEPTH + 2)).tokenize().unwrap())
                .unwrap_err();
        assert_eq!(err.code, "54001");
        assert!(err.message.contains(&MAX_EXPRESSION_DEPTH.to_string()), "{}", err.message);
    }

    #[test]
    fn the_budget_fails_once_spent() {
        let budget = MemoryBudget::new(100);
        assert!(budget.charge(60).is_ok());
        assert!(budget.charge(40).is_ok());
        let err = budget.charge(1).unwrap_err();
        assert_eq!(err.code, "53200");
        assert_eq!(err.message, "statement exceeded its memory budget of 100 bytes");
        assert_eq!(budget.used(), 101);
        budget.release(51);
        assert!(budget.charge(50).is_ok());
        assert!(budget.charge(1).is_err());
        budget.release(1000);
        assert_eq!(budget.used(), 0);
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(1536 << 10), "1536 KiB");
        assert!(row_bytes(&[Value::String("x".repeat(1000))]) > 1000);
    }
}
