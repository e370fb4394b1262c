//! What one statement may cost: how deep its expressions may nest (bounded on the token
//! stream, before any tree exists), what stack they run on, and how many bytes a statement
//! may materialize.
//!
//! sqlparser builds a chain such as `1+1+…+1` or `k = 1 OR k = 2 OR …` as a left-deep tree
//! without recursing, so a chain is as deep as it is long. Three kinds of code walk the tree:
//! - sqlparser's parser and `Display` of expressions recurse, but grow their stack onto the
//!   heap when little is left (its `recursive-protection`); its recursion counter, set to
//!   [`MAX_EXPRESSION_NESTING`], bounds true nesting (brackets, `NOT`, unary minus,
//!   subqueries): 54001 past it.
//! - Our walks (evaluation, types, placeholders, column checks) follow a chain's left spine
//!   in a loop, so a flat chain costs them no depth, and recurse only into operands, each
//!   step guarded by [`stack::guarded`](super::stack::guarded).
//! - sqlparser's derived `Drop`, `Clone`, `PartialEq` and `Debug` recurse with no protection.
//!   Dropping takes about 80 bytes of stack per level in a debug build (64 in release), so a
//!   30,000-deep chain needs 2.4 MiB: more than a tokio worker's 2 MiB stack. A statement
//!   whose depth bound passes [`SHALLOW_EXPRESSION_DEPTH`] is therefore parsed, run and
//!   dropped inside a future polled on a [`DEEP_STATEMENT_STACK`] stack
//!   ([`OnLargeStack`](super::stack::OnLargeStack)), at most [`DEEP_STATEMENTS_AT_ONCE`] per
//!   node, and is never kept in the parse cache (whose eviction runs on a worker's stack).
//!   Nothing clones a statement's expressions (a clone takes 4.2 KiB of stack per level in a
//!   debug build, 1.1 KiB in release).
//!
//! Why not the other ways: the recursion guard alone leaves `Drop` unprotected; flattening
//! alone leaves `Drop` and non-binary chains (`x::INT::INT…`, `IS NULL IS NULL…`) deep; a
//! pool of threads with large stacks would need each statement's future to be `'static` and
//! a runtime on each thread, for what growing the stack under the poll gives in place.
//! Shallow statements — nearly all — pay only the guard's check per level of recursion.
//!
//! [`expression_depth_bound`] bounds the depth of every expression from the tokens, and a
//! statement past [`MAX_EXPRESSION_DEPTH`] is refused with 54001 before it is parsed: the
//! limit bounds what a deep statement costs. Measured with `ranged demo` on 2 busy cores,
//! psql's connection subtracted: a 30,001-term `1+1+…` answers in about 60 ms (release;
//! 0.2 s debug), 1,000 nested brackets in about 5 ms (30 ms), and a 10,000-term `k = 1 OR …`
//! costs about 1.1 ms per row it is evaluated on (8 ms); tokens and tree take about 1 KiB
//! per operator while the statement runs. The release demo's RSS went from 29 to 73 MiB
//! after 15 such statements (allocator retention, as `BENCHMARKS.md` describes).
//!
//! [`MemoryBudget`] follows CockroachDB's per-statement memory accounting: the rows a
//! statement reads, sorts, builds and writes are charged as they are materialized, and the
//! statement fails with 53200 once the budget (`--max-sql-memory-per-statement`) is spent.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

use crate::services::sql::error::SqlError;
use crate::services::sql::value::Value;

/// The deepest expression a statement may hold, as [`expression_depth_bound`] counts it:
/// operators along one path from the root, brackets and function calls one each. A chain
/// counts all its operators: `1+1+…+1` with 30,001 terms is at the limit, and a 10,000-term
/// `k = 1 OR k = 2 OR …` counts 19,999.
pub const MAX_EXPRESSION_DEPTH: usize = 30_000;

/// How deeply expressions may nest: one level per bracket, `NOT`, unary minus or subquery
/// (sqlparser's recursion counter, which also takes a few levels for the statement around
/// the expression). Parsing costs about 30 KiB of (heap-grown) stack per level in a
/// debug build and 5 KiB in release, so 1,000 levels cost at most 30 MiB while parsed.
pub const MAX_EXPRESSION_NESTING: usize = 1_000;

/// Statements whose depth bound is at most this run on the stack of the task that received
/// them: everything done with such a tree fits in half of a 2 MiB worker stack in a debug
/// build, clones included (the test `shallow_statements_fit_a_small_stack` checks it).
pub const SHALLOW_EXPRESSION_DEPTH: usize = 200;

/// The stack deeper statements run on: reserved address space, of which a statement at the
/// limit touches a few MiB (dropping its tree). Sized with a margin of 25 over `Drop` at
/// [`MAX_EXPRESSION_DEPTH`] in a debug build, so an unprotected walk we did not foresee (a
/// release-build clone would need 33 MiB) still fits.
pub const DEEP_STATEMENT_STACK: usize = 64 * 1024 * 1024;

/// How many statements deeper than [`SHALLOW_EXPRESSION_DEPTH`] one node runs at once; the
/// others wait. Each holds its tokens and tree (tens of MiB at the limit) while it runs.
pub const DEEP_STATEMENTS_AT_ONCE: usize = 4;

/// The default of `--max-sql-memory-per-statement`.
pub const DEFAULT_MAX_STATEMENT_MEMORY: u64 = 64 * 1024 * 1024;

/// 54001: an expression of the statement may be deeper than [`MAX_EXPRESSION_DEPTH`].
pub fn too_complex() -> SqlError {
    SqlError::new(
        "54001",
        format!("statement too complex: expression depth exceeds {MAX_EXPRESSION_DEPTH} (the limit of this server)"),
    )
}

/// 54001: the statement nests deeper than [`MAX_EXPRESSION_NESTING`].
pub fn too_deeply_nested() -> SqlError {
    SqlError::new(
        "54001",
        format!(
            "statement too complex: expression nesting exceeds {MAX_EXPRESSION_NESTING} levels (the limit of this server)"
        ),
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

/// The depth bound of `tokens`; fails with 54001 when an expression may be deeper than
/// allowed.
pub fn check_depth(tokens: &[Token]) -> Result<usize, SqlError> {
    let bound = expression_depth_bound(tokens);
    if bound > MAX_EXPRESSION_DEPTH { Err(too_complex()) } else { Ok(bound) }
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
