//! Statement text to sqlparser's AST, with the CockroachDB spellings mapped first.
//!
//! Three CockroachDB spellings that sqlparser's PostgreSQL dialect does not know are mapped
//! onto forms it does know before parsing: `UPSERT INTO` (parsed as INSERT), `CREATE USER`
//! (parsed as CREATE ROLE, with LOGIN by default) and `ALTER TABLE t SPLIT AT <query>` (the
//! query part parsed by sqlparser).

use sqlparser::ast::{self, ObjectName, ObjectNamePart, Query, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::services::sql::error::SqlError;
use crate::services::sql::limits;

/// One parsed statement, ready to run.
#[derive(Clone)]
pub(super) enum Parsed {
    /// A statement sqlparser knows, with the spelling it was written in.
    Statement(Box<Statement>, Flavor),
    /// `ALTER TABLE table SPLIT AT rows`, which sqlparser does not know.
    Split { table: ObjectName, rows: Box<Query> },
}

/// Which spelling a statement was written in, where it changes what the statement does.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Flavor {
    /// As parsed.
    Plain,
    /// `UPSERT INTO`, parsed as INSERT: writes overwrite existing rows.
    Upsert,
    /// `CREATE USER`, parsed as CREATE ROLE: LOGIN unless said otherwise.
    CreateUser,
}

/// An identifier's name: unquoted identifiers fold to lower case, quoted ones keep their case.
pub(super) fn ident(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

/// The parts of a dotted name, each folded as [`ident`] does.
pub(super) fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(id) => ident(id),
            other => other.to_string(),
        })
        .collect()
}

/// Splits a SQL string into statements with sqlparser's tokenizer and parses each, mapping
/// the CockroachDB-only forms first; 54001 when an expression may be too deep. (The engine
/// does the same in two steps, to choose the stack between them.)
#[cfg(test)]
pub(super) fn parse(sql: &str) -> Result<Vec<Parsed>, SqlError> {
    let tokens = tokenize(sql)?;
    // Before any tree exists: a deep one cannot even be dropped safely on a small stack.
    limits::check_depth(&tokens)?;
    parse_tokens(sql, tokens)
}

/// The tokens of `sql`.
pub(super) fn tokenize(sql: &str) -> Result<Vec<Token>, SqlError> {
    Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().map_err(|err| SqlError::syntax(err.to_string()))
}

/// [`parse`] of `sql`, already split into `tokens` and checked with
/// [`limits::check_depth`]. The tree is as deep as the check allowed: the caller provides the
/// stack for it.
pub(super) fn parse_tokens(sql: &str, tokens: Vec<Token>) -> Result<Vec<Parsed>, SqlError> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for token in tokens {
        if token == Token::SemiColon {
            statements.push(std::mem::take(&mut current));
        } else {
            current.push_str(&token.to_string());
        }
    }
    statements.push(current);
    let mut parsed = Vec::new();
    for statement in statements.iter().filter(|s| !s.trim().is_empty()) {
        parsed.extend(parse_one(statement)?);
    }
    if parsed.is_empty() {
        // Let sqlparser report what an empty statement is.
        return parse_with(sql, Flavor::Plain);
    }
    Ok(parsed)
}

/// Levels of sqlparser's recursion counter a statement takes before its expressions nest
/// (statement, query, select, expression: 4, measured; the rest is margin).
const PARSER_LEVELS_OF_A_STATEMENT: usize = 8;

/// A parser of `sql` whose recursion stops past [`limits::MAX_EXPRESSION_NESTING`] levels of
/// brackets, `NOT`s or unary minus signs.
fn parser(sql: &str) -> Result<Parser<'static>, SqlError> {
    Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(limits::MAX_EXPRESSION_NESTING + PARSER_LEVELS_OF_A_STATEMENT)
        .try_with_sql(sql)
        .map_err(syntax)
}

/// Parses one statement (no `;` at top level).
fn parse_one(sql: &str) -> Result<Vec<Parsed>, SqlError> {
    let trimmed = sql.trim_start();
    let words: Vec<String> = trimmed.split_whitespace().take(2).map(|w| w.to_ascii_uppercase()).collect();
    if words.first().map(String::as_str) == Some("UPSERT") {
        let rest = &trimmed["UPSERT".len()..];
        return parse_with(&format!("INSERT{rest}"), Flavor::Upsert);
    }
    if words == ["CREATE", "USER"] {
        let rest = &trimmed["CREATE".len()..].trim_start()["USER".len()..];
        return parse_with(&format!("CREATE ROLE{rest}"), Flavor::CreateUser);
    }
    if words == ["ALTER", "TABLE"] {
        let upper = trimmed.to_ascii_uppercase();
        if let Some(at) = upper.find(" SPLIT AT ") {
            let table_text = trimmed["ALTER".len()..at].trim_start()["TABLE".len()..].trim();
            let table = parser(table_text)?.parse_object_name(false).map_err(syntax)?;
            let query_text = trimmed[at + " SPLIT AT ".len()..].trim();
            let rows = parser(query_text)?.parse_query().map_err(syntax)?;
            return Ok(vec![Parsed::Split { table, rows }]);
        }
    }
    parse_with(sql, Flavor::Plain)
}

fn parse_with(sql: &str, flavor: Flavor) -> Result<Vec<Parsed>, SqlError> {
    let statements = parser(sql)?.parse_statements().map_err(syntax)?;
    Ok(statements.into_iter().map(|s| Parsed::Statement(Box::new(s), flavor)).collect())
}

fn syntax(err: sqlparser::parser::ParserError) -> SqlError {
    if err == sqlparser::parser::ParserError::RecursionLimitExceeded {
        return limits::too_deeply_nested();
    }
    SqlError::syntax(format!("at or near: {err}").replace("sql parser error: ", ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cockroach_spellings_parse() {
        assert!(matches!(&parse("UPSERT INTO t VALUES (1)").unwrap()[0], Parsed::Statement(_, Flavor::Upsert)));
        assert!(matches!(
            &parse("create user alice WITH PASSWORD 'x'").unwrap()[0],
            Parsed::Statement(_, Flavor::CreateUser)
        ));
        assert!(matches!(&parse("ALTER TABLE kv SPLIT AT VALUES (5), (10)").unwrap()[0], Parsed::Split { .. }));
        let both = parse("CREATE USER a WITH PASSWORD 'x;y'; UPSERT INTO t VALUES (1); SELECT 1").unwrap();
        assert_eq!(both.len(), 3);
        assert!(matches!(&both[0], Parsed::Statement(_, Flavor::CreateUser)));
        assert!(matches!(&both[1], Parsed::Statement(_, Flavor::Upsert)));
        assert_eq!(parse("SELEC 1").err().unwrap().code, "42601");
    }

    #[test]
    fn nesting_stops_at_its_limit() {
        let nested = |levels: usize| format!("SELECT {}7{}", "(".repeat(levels), ")".repeat(levels));
        let nots = |levels: usize| format!("SELECT * FROM t WHERE {}k = 1", "NOT ".repeat(levels));
        for at_limit in [nested(limits::MAX_EXPRESSION_NESTING), nots(limits::MAX_EXPRESSION_NESTING)] {
            assert!(parse(&at_limit).is_ok());
        }
        let too_deep = limits::MAX_EXPRESSION_NESTING + PARSER_LEVELS_OF_A_STATEMENT + 1;
        let minus = |levels: usize| format!("SELECT {}7", "- ".repeat(levels));
        for over in [nested(too_deep), minus(too_deep)] {
            let err = parse(&over).err().unwrap();
            assert_eq!(err.code, "54001", "{}", err.message);
            assert!(err.message.contains("nesting exceeds 1000 levels"), "{}", err.message);
        }
        // sqlparser retries a prefix `NOT` as something else when its operand fails, so its
        // recursion limit surfaces as a syntax error there: refused all the same.
        assert_eq!(parse(&nots(too_deep)).err().unwrap().code, "42601");
    }

    #[test]
    fn long_chains_are_refused_before_parsing() {
        let sql = format!("SELECT 1; SELECT {}", vec!["1"; 500_000].join("+"));
        assert_eq!(parse(&sql).err().unwrap().code, "54001");
    }
}
