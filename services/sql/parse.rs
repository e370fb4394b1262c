//! Statement text to sqlparser's AST, with the CockroachDB spellings mapped first.
//!
//! Three CockroachDB spellings that sqlparser's PostgreSQL dialect does not know are mapped
//! onto forms it does know before parsing: `UPSERT INTO` (parsed as INSERT), `CREATE USER`
//! (parsed as CREATE ROLE, with LOGIN by default) and `ALTER TABLE t SPLIT AT <query>` (the
//! query part parsed by sqlparser).

use sqlparser::ast::{self, ObjectName, ObjectNamePart, Query, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

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
/// the CockroachDB-only forms first.
pub(super) fn parse(sql: &str) -> Result<Vec<Parsed>, SqlError> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens =
        Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().map_err(|err| SqlError::syntax(err.to_string()))?;
    // Before any tree exists: a deep one cannot even be dropped safely.
    limits::check_depth(&tokens)?;
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

/// Parses one statement (no `;` at top level).
fn parse_one(sql: &str) -> Result<Vec<Parsed>, SqlError> {
    let dialect = PostgreSqlDialect {};
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
            let mut parser = Parser::new(&dialect).try_with_sql(table_text).map_err(syntax)?;
            let table = parser.parse_object_name(false).map_err(syntax)?;
            let query_text = trimmed[at + " SPLIT AT ".len()..].trim();
            let mut parser = Parser::new(&dialect).try_with_sql(query_text).map_err(syntax)?;
            let rows = parser.parse_query().map_err(syntax)?;
            return Ok(vec![Parsed::Split { table, rows }]);
        }
    }
    parse_with(sql, Flavor::Plain)
}

fn parse_with(sql: &str, flavor: Flavor) -> Result<Vec<Parsed>, SqlError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(syntax)?;
    Ok(statements.into_iter().map(|s| Parsed::Statement(Box::new(s), flavor)).collect())
}

fn syntax(err: sqlparser::parser::ParserError) -> SqlError {
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
    fn long_chains_are_refused_before_parsing() {
        let sql = format!("SELECT 1; SELECT {}", vec!["1"; 500_000].join("+"));
        assert_eq!(parse(&sql).err().unwrap().code, "54001");
    }
}
