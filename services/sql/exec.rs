//! Statement execution: sqlparser's AST → catalog lookups and KV batches through the node.
//!
//! Every statement is its own (implicit) transaction and is atomic: its writes go to the KV
//! layer as one batch. Statements that read then write (UPDATE, DELETE) guard each row they
//! change with a conditional put of the value they read, so a concurrent change aborts the
//! batch and the statement is retried on fresh data.
//!
//! Three CockroachDB spellings that sqlparser's PostgreSQL dialect does not know are mapped
//! onto forms it does know before parsing: `UPSERT INTO` (parsed as INSERT), `CREATE USER`
//! (parsed as CREATE ROLE, with LOGIN by default) and `ALTER TABLE t SPLIT AT <query>` (the
//! query part parsed by sqlparser).

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlparser::ast::{
    self, AlterRoleOperation, BinaryOperator, ColumnOption, Expr, FromTable, ObjectName, ObjectNamePart, ObjectType,
    OnConflictAction, OnInsert, Query, RoleOption, SelectItem, SetExpr, Statement, TableConstraint, TableFactor,
    TableObject, UnaryOperator,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::services::error::Error;
use crate::services::keys;
use crate::services::kv::{Op, OpResult};
use crate::services::sql::SqlHost;
use crate::services::sql::catalog::{Catalog, Column, PUBLIC_SCHEMA, TableDescriptor};
use crate::services::sql::error::SqlError;
use crate::services::sql::session::SessionHandle;
use crate::services::sql::users::{self, ADMIN_ROLE, ScramVerifier, UserRecord, Users};
use crate::services::sql::value::{SqlType, Value, pretty_any, pretty_any_end};

/// How many times a statement whose guarded rows changed underneath is retried.
const STATEMENT_RETRIES: usize = 5;
/// The longest `pg_sleep` allowed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// The server version clients see (PostgreSQL 13 wire semantics, as CockroachDB reports).
pub const SERVER_VERSION: &str = "13.0.0";

/// One result column.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Column name.
    pub name: String,
    /// Column type.
    pub ty: SqlType,
}

/// What a statement produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Rows.
    Rows {
        /// The columns.
        fields: Vec<Field>,
        /// The rows.
        rows: Vec<Vec<Value>>,
    },
    /// A command tag such as `INSERT 0 3` (`rows` appended when present).
    Command {
        /// The tag's verb.
        tag: &'static str,
        /// Rows affected.
        rows: Option<usize>,
    },
}

/// What the extended protocol needs to describe a statement before running it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Description {
    /// Types of `$1..$n` (`None`: unknown, sent as text).
    pub params: Vec<Option<SqlType>>,
    /// Result columns (empty for commands).
    pub fields: Vec<Field>,
}

/// Executes SQL for the sessions of one node.
pub struct SqlEngine {
    host: Arc<dyn SqlHost>,
    catalog: Arc<Catalog>,
    parsed: std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<Parsed>>>>,
}

/// Most statement texts whose parse is kept. Clients repeat a few texts (prepared statements,
/// ORMs), and the extended protocol asks to describe and to execute the same text: parsing
/// each once took a tenth of a point read's CPU time (issue #6). Full: forget them all.
const PARSE_CACHE_ENTRIES: usize = 1024;

#[derive(Clone)]
enum Parsed {
    Statement(Box<Statement>, Flavor),
    Split { table: ObjectName, rows: Box<Query> },
}

#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    Plain,
    Upsert,
    CreateUser,
}

fn ident(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

fn name_parts(name: &ObjectName) -> Vec<String> {
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
fn parse(sql: &str) -> Result<Vec<Parsed>, SqlError> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens =
        Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().map_err(|err| SqlError::syntax(err.to_string()))?;
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

/// The values a statement's expressions are evaluated against.
struct Ctx<'a> {
    table: Option<&'a TableDescriptor>,
    row: Option<&'a [Value]>,
    params: &'a [Value],
    session: Option<&'a SessionHandle>,
}

impl<'a> Ctx<'a> {
    fn constant(params: &'a [Value]) -> Self {
        Ctx { table: None, row: None, params, session: None }
    }

    fn column(&self, name: &str) -> Result<Value, SqlError> {
        let (Some(table), Some(row)) = (self.table, self.row) else {
            return Err(SqlError::undefined_column(name));
        };
        let index = table.column(name).ok_or_else(|| SqlError::undefined_column(name))?;
        Ok(row[index].clone())
    }
}

fn literal(value: &ast::Value, params: &[Value]) -> Result<Value, SqlError> {
    Ok(match value {
        ast::Value::Number(text, _) => match text.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(text.parse().map_err(|_| SqlError::new("22P02", format!("invalid number {text}")))?),
        },
        ast::Value::SingleQuotedString(s) | ast::Value::EscapedStringLiteral(s) | ast::Value::DoubleQuotedString(s) => {
            Value::String(s.clone())
        }
        ast::Value::Boolean(b) => Value::Bool(*b),
        ast::Value::Null => Value::Null,
        ast::Value::Placeholder(name) => {
            let index: usize = name
                .trim_start_matches('$')
                .parse()
                .map_err(|_| SqlError::syntax(format!("invalid placeholder {name}")))?;
            params
                .get(index.wrapping_sub(1))
                .cloned()
                .ok_or_else(|| SqlError::new("08P01", format!("no value for placeholder {name}")))?
        }
        ast::Value::HexStringLiteral(hex) => {
            Value::Bytes(crate::services::sql::value::parse_bytes_literal(&format!("\\x{hex}")))
        }
        other => return Err(SqlError::unsupported(format!("literal {other} is not supported"))),
    })
}

fn truthy(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn arithmetic(op: &BinaryOperator, left: Value, right: Value) -> Result<Value, SqlError> {
    use Value::*;
    if left.is_null() || right.is_null() {
        return Ok(Null);
    }
    let division_by_zero = || SqlError::new("22012", "division by zero");
    Ok(match (left, right) {
        (Int(a), Int(b)) => {
            let overflow = || SqlError::new("22003", "integer out of range");
            Int(match op {
                BinaryOperator::Plus => a.checked_add(b).ok_or_else(overflow)?,
                BinaryOperator::Minus => a.checked_sub(b).ok_or_else(overflow)?,
                BinaryOperator::Multiply => a.checked_mul(b).ok_or_else(overflow)?,
                BinaryOperator::Divide => a.checked_div(b).ok_or_else(division_by_zero)?,
                BinaryOperator::Modulo => a.checked_rem(b).ok_or_else(division_by_zero)?,
                _ => unreachable!("arithmetic operators only"),
            })
        }
        (a @ (Int(_) | Float(_)), b @ (Int(_) | Float(_))) => {
            let as_f = |v: Value| {
                if let Int(i) = v {
                    i as f64
                } else if let Float(f) = v {
                    f
                } else {
                    0.0
                }
            };
            let (a, b) = (as_f(a), as_f(b));
            Float(match op {
                BinaryOperator::Plus => a + b,
                BinaryOperator::Minus => a - b,
                BinaryOperator::Multiply => a * b,
                BinaryOperator::Divide if b == 0.0 => return Err(division_by_zero()),
                BinaryOperator::Divide => a / b,
                BinaryOperator::Modulo => a % b,
                _ => unreachable!("arithmetic operators only"),
            })
        }
        (a, b) => {
            return Err(SqlError::new(
                "42883",
                format!("unsupported binary operator: {} {op} {}", a.display(), b.display()),
            ));
        }
    })
}

fn compare(op: &BinaryOperator, left: &Value, right: &Value) -> Result<Value, SqlError> {
    if left.is_null() || right.is_null() {
        return Ok(Value::Null);
    }
    let ordering = left
        .compare(right)
        .ok_or_else(|| SqlError::new("42883", format!("cannot compare {} with {}", left.display(), right.display())))?;
    Ok(Value::Bool(match op {
        BinaryOperator::Eq => ordering == Ordering::Equal,
        BinaryOperator::NotEq => ordering != Ordering::Equal,
        BinaryOperator::Lt => ordering == Ordering::Less,
        BinaryOperator::LtEq => ordering != Ordering::Greater,
        BinaryOperator::Gt => ordering == Ordering::Greater,
        BinaryOperator::GtEq => ordering != Ordering::Less,
        _ => unreachable!("comparison operators only"),
    }))
}

fn eval(expr: &Expr, ctx: &Ctx) -> Result<Value, SqlError> {
    Ok(match expr {
        Expr::Identifier(id) => ctx.column(&ident(id))?,
        Expr::CompoundIdentifier(parts) => ctx.column(&parts.last().map(ident).unwrap_or_default())?,
        Expr::Value(v) => literal(&v.value, ctx.params)?,
        Expr::Nested(inner) => eval(inner, ctx)?,
        Expr::IsNull(inner) => Value::Bool(eval(inner, ctx)?.is_null()),
        Expr::IsNotNull(inner) => Value::Bool(!eval(inner, ctx)?.is_null()),
        Expr::UnaryOp { op, expr } => {
            let v = eval(expr, ctx)?;
            match (op, v) {
                (_, Value::Null) => Value::Null,
                (UnaryOperator::Not, Value::Bool(b)) => Value::Bool(!b),
                (UnaryOperator::Minus, Value::Int(i)) => Value::Int(-i),
                (UnaryOperator::Minus, Value::Float(f)) => Value::Float(-f),
                (UnaryOperator::Plus, v @ (Value::Int(_) | Value::Float(_))) => v,
                (op, v) => {
                    return Err(SqlError::new("42883", format!("unsupported unary operator {op} {}", v.display())));
                }
            }
        }
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And => {
                let l = truthy(&eval(left, ctx)?);
                if l == Some(false) {
                    return Ok(Value::Bool(false));
                }
                let r = truthy(&eval(right, ctx)?);
                match (l, r) {
                    (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Null,
                }
            }
            BinaryOperator::Or => {
                let l = truthy(&eval(left, ctx)?);
                if l == Some(true) {
                    return Ok(Value::Bool(true));
                }
                let r = truthy(&eval(right, ctx)?);
                match (l, r) {
                    (_, Some(true)) => Value::Bool(true),
                    (Some(false), Some(false)) => Value::Bool(false),
                    _ => Value::Null,
                }
            }
            BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => compare(op, &eval(left, ctx)?, &eval(right, ctx)?)?,
            BinaryOperator::Plus
            | BinaryOperator::Minus
            | BinaryOperator::Multiply
            | BinaryOperator::Divide
            | BinaryOperator::Modulo => arithmetic(op, eval(left, ctx)?, eval(right, ctx)?)?,
            BinaryOperator::StringConcat => match (eval(left, ctx)?, eval(right, ctx)?) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (a, b) => Value::String(format!("{}{}", a.display(), b.display())),
            },
            other => return Err(SqlError::unsupported(format!("operator {other} is not supported"))),
        },
        Expr::In { expr, target: ast::InTarget::List(list), negated, .. } => {
            let v = eval(expr, ctx)?;
            if v.is_null() {
                return Ok(Value::Null);
            }
            let mut found = false;
            for item in list {
                if compare(&BinaryOperator::Eq, &v, &eval(item, ctx)?)? == Value::Bool(true) {
                    found = true;
                    break;
                }
            }
            Value::Bool(found != *negated)
        }
        Expr::Between { expr, negated, low, high } => {
            let v = eval(expr, ctx)?;
            let lo = compare(&BinaryOperator::GtEq, &v, &eval(low, ctx)?)?;
            let hi = compare(&BinaryOperator::LtEq, &v, &eval(high, ctx)?)?;
            match (truthy(&lo), truthy(&hi)) {
                (Some(a), Some(b)) => Value::Bool((a && b) != *negated),
                _ => Value::Null,
            }
        }
        Expr::Cast { expr, data_type, .. } => eval(expr, ctx)?.coerce(SqlType::parse(&data_type.to_string())?)?,
        Expr::TypedString(typed) => Value::String(typed.value.value.clone().into_string().unwrap_or_default())
            .coerce(SqlType::parse(&typed.data_type.to_string())?)?,
        Expr::Function(function) => {
            let name = function.name.to_string().to_lowercase();
            match name.as_str() {
                "now" | "current_timestamp" | "statement_timestamp" | "transaction_timestamp" => now(),
                "version" => {
                    Value::String(format!("ranged {} (PostgreSQL {SERVER_VERSION} compatible)", crate::BUILD_TAG))
                }
                "current_database" => Value::String(ctx.session.map(SessionHandle::database).unwrap_or_default()),
                "current_user" | "session_user" => {
                    Value::String(ctx.session.map(SessionHandle::username).unwrap_or_default())
                }
                other => return Err(SqlError::new("42883", format!("unknown function: {other}()"))),
            }
        }
        other => return Err(SqlError::unsupported(format!("expression {other} is not supported"))),
    })
}

fn now() -> Value {
    let micros = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    Value::Timestamp(micros)
}

/// The type an expression produces, for describing results before running them.
fn expr_type(expr: &Expr, table: Option<&TableDescriptor>) -> SqlType {
    match expr {
        Expr::Identifier(id) => column_type(table, &ident(id)),
        Expr::CompoundIdentifier(parts) => column_type(table, &parts.last().map(ident).unwrap_or_default()),
        Expr::Value(v) => match &v.value {
            ast::Value::Number(text, _) if text.parse::<i64>().is_ok() => SqlType::Int,
            ast::Value::Number(..) => SqlType::Float,
            ast::Value::Boolean(_) => SqlType::Bool,
            _ => SqlType::String,
        },
        Expr::Nested(inner) | Expr::UnaryOp { expr: inner, .. } => expr_type(inner, table),
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Plus
            | BinaryOperator::Minus
            | BinaryOperator::Multiply
            | BinaryOperator::Divide
            | BinaryOperator::Modulo => match (expr_type(left, table), expr_type(right, table)) {
                (SqlType::Int, SqlType::Int) => SqlType::Int,
                _ => SqlType::Float,
            },
            BinaryOperator::StringConcat => SqlType::String,
            _ => SqlType::Bool,
        },
        Expr::IsNull(_) | Expr::IsNotNull(_) | Expr::In { .. } | Expr::Between { .. } => SqlType::Bool,
        Expr::Cast { data_type, .. } => SqlType::parse(&data_type.to_string()).unwrap_or(SqlType::String),
        Expr::Function(f) => match f.name.to_string().to_lowercase().as_str() {
            "now" | "current_timestamp" | "statement_timestamp" | "transaction_timestamp" => SqlType::Timestamp,
            "count" => SqlType::Int,
            "pg_sleep" => SqlType::Bool,
            _ => SqlType::String,
        },
        _ => SqlType::String,
    }
}

fn column_type(table: Option<&TableDescriptor>, name: &str) -> SqlType {
    table.and_then(|t| t.column(name).map(|i| t.columns[i].ty)).unwrap_or(SqlType::String)
}

/// Infers the types of `$n` placeholders from the columns they are compared with or assigned to.
fn infer_params(expr: &Expr, table: Option<&TableDescriptor>, out: &mut Vec<Option<SqlType>>) {
    let mut note = |placeholder: &Expr, ty: SqlType| {
        if let Expr::Value(v) = placeholder
            && let ast::Value::Placeholder(name) = &v.value
            && let Ok(index) = name.trim_start_matches('$').parse::<usize>()
            && (1..=65535).contains(&index)
        {
            if out.len() < index {
                out.resize(index, None);
            }
            out[index - 1].get_or_insert(ty);
        }
    };
    match expr {
        Expr::BinaryOp { left, right, .. } => {
            note(right, expr_type(left, table));
            note(left, expr_type(right, table));
            infer_params(left, table, out);
            infer_params(right, table, out);
        }
        Expr::In { expr, target: ast::InTarget::List(list), .. } => {
            let ty = expr_type(expr, table);
            for item in list {
                note(item, ty);
            }
        }
        Expr::Between { expr, low, high, .. } => {
            let ty = expr_type(expr, table);
            note(low, ty);
            note(high, ty);
        }
        Expr::Nested(inner) | Expr::UnaryOp { expr: inner, .. } | Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
            infer_params(inner, table, out)
        }
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("pg_sleep") => {
            if let ast::FunctionArguments::List(list) = &f.args {
                for arg in &list.args {
                    if let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) = arg {
                        note(e, SqlType::Float);
                    }
                }
            }
        }
        Expr::Value(v) => {
            if let ast::Value::Placeholder(_) = &v.value {
                note(expr, SqlType::String);
            }
        }
        _ => {}
    }
}

/// Fails with 42703 if `expr` names a column `table` does not have, so a bad name is an error
/// even when no row is read (as PostgreSQL checks at plan time).
fn check_columns(expr: &Expr, table: &TableDescriptor) -> Result<(), SqlError> {
    let check = |e: &Expr| check_columns(e, table);
    match expr {
        Expr::Identifier(id) => {
            let name = ident(id);
            table.column(&name).map(drop).ok_or_else(|| SqlError::undefined_column(&name))
        }
        Expr::CompoundIdentifier(parts) => {
            let name = parts.last().map(ident).unwrap_or_default();
            table.column(&name).map(drop).ok_or_else(|| SqlError::undefined_column(&name))
        }
        Expr::BinaryOp { left, right, .. } => check(left).and(check(right)),
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) | Expr::IsNull(expr) | Expr::IsNotNull(expr) => check(expr),
        Expr::Cast { expr, .. } => check(expr),
        Expr::In { expr, target: ast::InTarget::List(list), .. } => {
            check(expr)?;
            list.iter().try_for_each(check)
        }
        Expr::Between { expr, low, high, .. } => check(expr).and(check(low)).and(check(high)),
        Expr::Function(f) => match &f.args {
            ast::FunctionArguments::List(list) => list.args.iter().try_for_each(|arg| match arg {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => check(e),
                _ => Ok(()),
            }),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

fn count_star(item: &SelectItem) -> bool {
    match item {
        SelectItem::UnnamedExpr(Expr::Function(f)) | SelectItem::ExprWithAlias { expr: Expr::Function(f), .. } => {
            f.name.to_string().eq_ignore_ascii_case("count")
        }
        _ => false,
    }
}

fn limit_of(query: &Query, params: &[Value]) -> Result<(Option<usize>, usize), SqlError> {
    let as_count = |expr: &Expr| -> Result<usize, SqlError> {
        match eval(expr, &Ctx::constant(params))? {
            Value::Int(n) if n >= 0 => Ok(n as usize),
            other => Err(SqlError::new("22023", format!("invalid LIMIT/OFFSET {}", other.display()))),
        }
    };
    match &query.limit_clause {
        None => Ok((None, 0)),
        Some(ast::LimitClause::LimitOffset { limit, offset, .. }) => Ok((
            limit.as_ref().map(as_count).transpose()?,
            offset.as_ref().map(|o| as_count(&o.value)).transpose()?.unwrap_or(0),
        )),
        Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => Ok((Some(as_count(limit)?), as_count(offset)?)),
    }
}

/// How rows are found: point gets on full primary keys, or one bounded scan.
#[derive(Debug, PartialEq)]
enum Access {
    Keys(Vec<Vec<u8>>),
    Scan { start: Vec<u8>, end: Vec<u8> },
}

fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            let mut out = conjuncts(left);
            out.extend(conjuncts(right));
            out
        }
        Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

fn is_column(expr: &Expr, name: &str) -> bool {
    match expr {
        Expr::Identifier(id) => ident(id) == name,
        Expr::CompoundIdentifier(parts) => parts.last().map(ident).as_deref() == Some(name),
        Expr::Nested(inner) => is_column(inner, name),
        _ => false,
    }
}

fn constant(expr: &Expr, params: &[Value], ty: SqlType) -> Option<Value> {
    eval(expr, &Ctx::constant(params)).ok().and_then(|v| v.coerce(ty).ok()).filter(|v| !v.is_null())
}

/// Plans the access of a WHERE clause on `table`: equality on the whole primary key (or `IN`
/// on a single-column key) becomes point gets; equality on a key prefix plus a range on the
/// next key column becomes a bounded scan; anything else scans the table. The full WHERE is
/// applied to the rows found either way.
fn plan_access(table: &TableDescriptor, selection: Option<&Expr>, params: &[Value]) -> Access {
    let (table_start, table_end) = table.index_span();
    let full = Access::Scan { start: table_start.clone(), end: table_end };
    let Some(selection) = selection else { return full };
    let parts = conjuncts(selection);
    let mut prefix: Vec<Value> = Vec::new();
    for &col in &table.primary_key {
        let column = &table.columns[col];
        let eq = parts.iter().find_map(|part| match part {
            Expr::BinaryOp { left, op: BinaryOperator::Eq, right } if is_column(left, &column.name) => {
                constant(right, params, column.ty)
            }
            Expr::BinaryOp { left, op: BinaryOperator::Eq, right } if is_column(right, &column.name) => {
                constant(left, params, column.ty)
            }
            _ => None,
        });
        match eq {
            Some(v) => prefix.push(v),
            None => break,
        }
    }
    if prefix.len() == table.primary_key.len() {
        return Access::Keys(vec![table.key_for_pk(&prefix)]);
    }
    let next = &table.columns[table.primary_key[prefix.len()]];
    if prefix.is_empty() && table.primary_key.len() == 1 {
        for part in &parts {
            if let Expr::In { expr, target: ast::InTarget::List(list), negated: false, .. } = part
                && is_column(expr, &next.name)
            {
                let values: Option<Vec<Value>> = list.iter().map(|e| constant(e, params, next.ty)).collect();
                if let Some(mut values) = values {
                    values.sort_by(|a, b| a.compare(b).unwrap_or(Ordering::Equal));
                    values.dedup();
                    return Access::Keys(values.iter().map(|v| table.key_for_pk(std::slice::from_ref(v))).collect());
                }
            }
        }
    }
    let base = table.key_for_pk(&prefix);
    let mut start = base.clone();
    let mut end = keys::prefix_end(&base);
    let encoded = |v: &Value| {
        let mut key = base.clone();
        crate::services::sql::value::encode_key_value(&mut key, v);
        key
    };
    for part in &parts {
        let (op, value) = match part {
            Expr::BinaryOp { left, op, right } if is_column(left, &next.name) => {
                (op.clone(), constant(right, params, next.ty))
            }
            Expr::BinaryOp { left, op, right } if is_column(right, &next.name) => {
                let flipped = match op {
                    BinaryOperator::Lt => BinaryOperator::Gt,
                    BinaryOperator::LtEq => BinaryOperator::GtEq,
                    BinaryOperator::Gt => BinaryOperator::Lt,
                    BinaryOperator::GtEq => BinaryOperator::LtEq,
                    other => other.clone(),
                };
                (flipped, constant(left, params, next.ty))
            }
            Expr::Between { expr, negated: false, low, high } if is_column(expr, &next.name) => {
                if let (Some(lo), Some(hi)) = (constant(low, params, next.ty), constant(high, params, next.ty)) {
                    start = start.max(encoded(&lo));
                    end = end.min(keys::prefix_end(&encoded(&hi)));
                }
                continue;
            }
            _ => continue,
        };
        let Some(value) = value else { continue };
        match op {
            BinaryOperator::Gt => start = start.max(keys::prefix_end(&encoded(&value))),
            BinaryOperator::GtEq => start = start.max(encoded(&value)),
            BinaryOperator::Lt => end = end.min(encoded(&value)),
            BinaryOperator::LtEq => end = end.min(keys::prefix_end(&encoded(&value))),
            _ => {}
        }
    }
    if start >= end {
        return Access::Keys(Vec::new());
    }
    Access::Scan { start, end }
}

impl SqlEngine {
    /// An engine running statements on `host`, reading the catalog through `catalog`.
    pub fn new(host: Arc<dyn SqlHost>, catalog: Arc<Catalog>) -> Self {
        Self { host, catalog, parsed: Default::default() }
    }

    /// [`parse`], remembered by statement text (parsing is a pure function of the text).
    fn parse(&self, sql: &str) -> Result<Arc<Vec<Parsed>>, SqlError> {
        if let Some(parsed) = self.parsed.lock().unwrap_or_else(|p| p.into_inner()).get(sql) {
            return Ok(parsed.clone());
        }
        let parsed = Arc::new(parse(sql)?);
        let mut cache = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= PARSE_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(sql.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// The node this engine runs on.
    pub fn host(&self) -> &Arc<dyn SqlHost> {
        &self.host
    }

    fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn users(&self) -> Users<'_> {
        Users::new(self.catalog.kv().as_ref())
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, Error> {
        self.host.batch(ops).await
    }

    /// Resolves a table name against the session's database.
    async fn table(&self, session: &SessionHandle, name: &ObjectName) -> Result<TableDescriptor, SqlError> {
        let (database, table) = self.resolve_name(session, name)?;
        match self.catalog().table(&database, &table).await? {
            Some(table) => Ok(table),
            None => {
                if self.catalog().database(&database).await?.is_none() {
                    return Err(SqlError::new("3D000", format!("database \"{database}\" does not exist")));
                }
                Err(SqlError::undefined_table(&table))
            }
        }
    }

    fn resolve_name(&self, session: &SessionHandle, name: &ObjectName) -> Result<(String, String), SqlError> {
        let parts = name_parts(name);
        match parts.as_slice() {
            [table] => Ok((session.database(), table.clone())),
            [schema, table] if schema == PUBLIC_SCHEMA => Ok((session.database(), table.clone())),
            [database, table] => Ok((database.clone(), table.clone())),
            [database, schema, table] if schema == PUBLIC_SCHEMA => Ok((database.clone(), table.clone())),
            _ => Err(SqlError::new("42602", format!("invalid name {name}"))),
        }
    }

    async fn fetch(&self, table: &TableDescriptor, access: &Access) -> Result<Vec<Vec<Value>>, SqlError> {
        let ops: Vec<Op> = match access {
            Access::Keys(keys) if keys.is_empty() => return Ok(Vec::new()),
            Access::Keys(keys) => keys.iter().map(|key| Op::Get { key: key.clone() }).collect(),
            Access::Scan { start, end } => vec![Op::Scan { start: start.clone(), end: end.clone(), limit: 0 }],
        };
        let results = self.batch(ops).await?;
        let mut rows = Vec::new();
        for result in results {
            if let Some(value) = result.value {
                rows.push(table.decode_row(&value)?);
            }
            for (_, value) in result.rows {
                rows.push(table.decode_row(&value)?);
            }
        }
        Ok(rows)
    }

    async fn matching_rows(
        &self,
        session: &SessionHandle,
        table: &TableDescriptor,
        selection: Option<&Expr>,
        params: &[Value],
    ) -> Result<Vec<Vec<Value>>, SqlError> {
        let access = plan_access(table, selection, params);
        let mut rows = self.fetch(table, &access).await?;
        if let Some(selection) = selection {
            let mut kept = Vec::with_capacity(rows.len());
            for row in rows {
                let ctx = Ctx { table: Some(table), row: Some(&row), params, session: Some(session) };
                if eval(selection, &ctx)? == Value::Bool(true) {
                    kept.push(row);
                }
            }
            rows = kept;
        }
        Ok(rows)
    }

    /// Runs every statement of `sql` (simple protocol); stops at the first error.
    pub async fn execute(&self, session: &SessionHandle, sql: &str, params: &[Value]) -> Vec<Result<Output, SqlError>> {
        let parsed = match self.parse(sql) {
            Ok(parsed) => parsed,
            Err(err) => return vec![Err(err)],
        };
        let mut outputs = Vec::new();
        for statement in parsed.iter() {
            let result = self.run(session, statement, params).await;
            let failed = result.is_err();
            outputs.push(result);
            if failed {
                break;
            }
        }
        outputs
    }

    /// Describes a single statement for the extended protocol.
    pub async fn describe(&self, session: &SessionHandle, sql: &str) -> Result<Description, SqlError> {
        let parsed = self.parse(sql)?;
        let mut description = Description::default();
        let statement = match parsed.first() {
            Some(Parsed::Statement(statement, _)) => statement,
            Some(Parsed::Split { .. }) => {
                description.fields = split_fields();
                return Ok(description);
            }
            None => return Ok(description),
        };
        match &**statement {
            // SHOW statements only read, so running one is the simplest way to learn its columns.
            show
            @ (Statement::ShowVariable { .. } | Statement::ShowDatabases { .. } | Statement::ShowTables { .. }) => {
                if let Output::Rows { fields, .. } =
                    self.run(session, &Parsed::Statement(Box::new(show.clone()), Flavor::Plain), &[]).await?
                {
                    description.fields = fields;
                }
            }
            Statement::Query(query) => {
                let SetExpr::Select(select) = query.body.as_ref() else { return Ok(description) };
                let table = match select.from.first().map(|f| &f.relation) {
                    Some(TableFactor::Table { name, .. }) => Some(self.table(session, name).await?),
                    _ => None,
                };
                if let Some(selection) = &select.selection {
                    infer_params(selection, table.as_ref(), &mut description.params);
                }
                for item in &select.projection {
                    if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                        infer_params(e, table.as_ref(), &mut description.params);
                    }
                }
                if let Some(ast::LimitClause::LimitOffset { limit: Some(limit), .. }) = &query.limit_clause {
                    infer_params(
                        &Expr::BinaryOp {
                            left: Box::new(Expr::Value(ast::Value::Number("0".into(), false).into())),
                            op: BinaryOperator::Eq,
                            right: Box::new(limit.clone()),
                        },
                        None,
                        &mut description.params,
                    );
                }
                description.fields = self.projection_fields(select, table.as_ref())?;
            }
            Statement::Insert(insert) => {
                let TableObject::TableName(name) = &insert.table else { return Ok(description) };
                let table = self.table(session, name).await?;
                let columns = self.insert_columns(&table, &insert.columns)?;
                if let Some(source) = &insert.source
                    && let SetExpr::Values(values) = source.body.as_ref()
                {
                    for row in &values.rows {
                        for (expr, &col) in row.iter().zip(&columns) {
                            let column_ref = Expr::Identifier(ast::Ident::new(table.columns[col].name.clone()));
                            infer_params(
                                &Expr::BinaryOp {
                                    left: Box::new(column_ref),
                                    op: BinaryOperator::Eq,
                                    right: Box::new(expr.clone()),
                                },
                                Some(&table),
                                &mut description.params,
                            );
                        }
                    }
                }
            }
            Statement::Update(update) => {
                if let TableFactor::Table { name, .. } = &update.table.relation {
                    let table = self.table(session, name).await?;
                    for assignment in &update.assignments {
                        let target = Expr::Identifier(ast::Ident::new(assignment.target.to_string()));
                        infer_params(
                            &Expr::BinaryOp {
                                left: Box::new(target),
                                op: BinaryOperator::Eq,
                                right: Box::new(assignment.value.clone()),
                            },
                            Some(&table),
                            &mut description.params,
                        );
                    }
                    if let Some(selection) = &update.selection {
                        infer_params(selection, Some(&table), &mut description.params);
                    }
                }
            }
            Statement::Delete(delete) => {
                if let Some(name) = delete_table_name(delete) {
                    let table = self.table(session, &name).await?;
                    if let Some(selection) = &delete.selection {
                        infer_params(selection, Some(&table), &mut description.params);
                    }
                }
            }
            _ => {}
        }
        Ok(description)
    }

    fn projection_fields(&self, select: &ast::Select, table: Option<&TableDescriptor>) -> Result<Vec<Field>, SqlError> {
        let mut fields = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    let table =
                        table.ok_or_else(|| SqlError::syntax("SELECT * with no tables specified is not valid"))?;
                    fields.extend(table.columns.iter().map(|c| Field { name: c.name.clone(), ty: c.ty }));
                }
                SelectItem::UnnamedExpr(expr) => {
                    fields.push(Field { name: output_name(expr), ty: expr_type(expr, table) })
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    fields.push(Field { name: ident(alias), ty: expr_type(expr, table) })
                }
                other => return Err(SqlError::unsupported(format!("select item {other} is not supported"))),
            }
        }
        Ok(fields)
    }

    fn insert_columns(&self, table: &TableDescriptor, columns: &[ObjectName]) -> Result<Vec<usize>, SqlError> {
        if columns.is_empty() {
            return Ok((0..table.columns.len()).collect());
        }
        columns
            .iter()
            .map(|c| {
                let name = name_parts(c).pop().unwrap_or_default();
                table.column(&name).ok_or_else(|| SqlError::undefined_column(&name))
            })
            .collect()
    }

    async fn run(&self, session: &SessionHandle, parsed: &Parsed, params: &[Value]) -> Result<Output, SqlError> {
        let (statement, flavor) = match parsed {
            Parsed::Split { table, rows } => return self.split_at(session, table, rows, params).await,
            Parsed::Statement(statement, flavor) => (statement, *flavor),
        };
        match &**statement {
            Statement::Query(query) => self.select(session, query, params).await,
            Statement::Insert(insert) => {
                for attempt in 0.. {
                    match self.insert(session, insert, flavor, params).await {
                        Err(err) if err.code == "40001" && attempt < STATEMENT_RETRIES => continue,
                        other => return other,
                    }
                }
                unreachable!("the loop returns")
            }
            Statement::Update(update) => {
                for attempt in 0.. {
                    match self.update(session, update, params).await {
                        Err(err) if err.code == "40001" && attempt < STATEMENT_RETRIES => continue,
                        other => return other,
                    }
                }
                unreachable!("the loop returns")
            }
            Statement::Delete(delete) => {
                for attempt in 0.. {
                    match self.delete(session, delete, params).await {
                        Err(err) if err.code == "40001" && attempt < STATEMENT_RETRIES => continue,
                        other => return other,
                    }
                }
                unreachable!("the loop returns")
            }
            Statement::CreateTable(create) => self.create_table(session, create).await,
            Statement::CreateDatabase { db_name, if_not_exists, .. } => {
                let name = name_parts(db_name).pop().unwrap_or_default();
                self.catalog().create_database(&name, *if_not_exists).await?;
                Ok(Output::Command { tag: "CREATE DATABASE", rows: None })
            }
            Statement::Drop { object_type, if_exists, names, .. } => {
                self.drop(session, *object_type, *if_exists, names).await
            }
            Statement::Use(ast::Use::Object(name)) | Statement::Use(ast::Use::Database(name)) => {
                let database = name_parts(name).pop().unwrap_or_default();
                self.use_database(session, &database).await?;
                Ok(Output::Command { tag: "SET", rows: None })
            }
            Statement::Set(set) => self.set(session, set.clone(), params).await,
            Statement::ShowVariable { variable } => self.show(session, variable).await,
            Statement::ShowDatabases { .. } => {
                let rows = self
                    .catalog()
                    .databases()
                    .await?
                    .into_iter()
                    .map(|db| vec![Value::String(db.name), Value::String(users::ROOT_USER.into())])
                    .collect();
                Ok(rows_output(&[("database_name", SqlType::String), ("owner", SqlType::String)], rows))
            }
            Statement::ShowTables { .. } => {
                let mut rows = Vec::new();
                for table in self.catalog().tables(&session.database()).await? {
                    let size = self.table_size(&table).await.unwrap_or(0);
                    rows.push(vec![
                        Value::String(table.schema),
                        Value::String(table.name),
                        Value::String("table".into()),
                        Value::String(users::ROOT_USER.into()),
                        Value::Int(size as i64),
                    ]);
                }
                Ok(rows_output(
                    &[
                        ("schema_name", SqlType::String),
                        ("table_name", SqlType::String),
                        ("type", SqlType::String),
                        ("owner", SqlType::String),
                        ("estimated_row_count", SqlType::Int),
                    ],
                    rows,
                ))
            }
            Statement::CreateRole(create) => self.create_role(session, create, flavor).await,
            Statement::AlterRole { name, operation } => self.alter_role(session, name, operation).await,
            Statement::GrantRole(grant) => {
                self.set_admin(session, &grant.roles, grant.grantees.iter().map(|g| g.to_string()).collect(), true)
                    .await
            }
            Statement::RevokeRole(revoke) => {
                self.set_admin(session, &revoke.roles, revoke.grantees.iter().map(|g| g.to_string()).collect(), false)
                    .await
            }
            Statement::StartTransaction { .. } | Statement::Commit { .. } | Statement::Rollback { .. } => {
                Err(SqlError::unsupported(
                    "explicit transactions are not supported: every statement is its own transaction",
                ))
            }
            other => {
                let text = other.to_string();
                let verb: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                Err(SqlError::unsupported(format!("unimplemented: {verb} is not supported")))
            }
        }
    }

    async fn table_size(&self, table: &TableDescriptor) -> Result<u64, SqlError> {
        let (start, end) = table.index_span();
        let ranges = self.host.replicas().await?;
        Ok(ranges.iter().filter(|r| r.descriptor.overlaps(&start, &end)).map(|r| r.size.keys).sum())
    }

    async fn use_database(&self, session: &SessionHandle, database: &str) -> Result<(), SqlError> {
        if self.catalog().database(database).await?.is_none() {
            return Err(SqlError::new("3D000", format!("database \"{database}\" does not exist")));
        }
        session.set_database(database);
        Ok(())
    }

    async fn select(&self, session: &SessionHandle, query: &Query, params: &[Value]) -> Result<Output, SqlError> {
        let SetExpr::Select(select) = query.body.as_ref() else {
            return Err(SqlError::unsupported("only simple SELECT statements are supported"));
        };
        if query.with.is_some() || select.from.len() > 1 || select.from.iter().any(|f| !f.joins.is_empty()) {
            return Err(SqlError::unsupported("joins, subqueries and WITH are not supported"));
        }
        if !matches!(&select.group_by, ast::GroupByExpr::Expressions(exprs, _) if exprs.is_empty())
            || select.having.is_some()
        {
            return Err(SqlError::unsupported("GROUP BY and HAVING are not supported"));
        }
        let (limit, offset) = limit_of(query, params)?;
        let table = match select.from.first().map(|f| &f.relation) {
            None => None,
            Some(TableFactor::Table { name, .. }) => Some(self.table(session, name).await?),
            Some(_) => return Err(SqlError::unsupported("only table names are supported in FROM")),
        };
        let Some(table) = table else {
            return self.select_constant(session, select, params).await;
        };
        for item in &select.projection {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                && !count_star(item)
            {
                check_columns(e, &table)?;
            }
        }
        if let Some(selection) = &select.selection {
            check_columns(selection, &table)?;
        }
        if let Some(ast::OrderBy { kind: ast::OrderByKind::Expressions(exprs), .. }) = &query.order_by {
            for e in exprs {
                check_columns(&e.expr, &table)?;
            }
        }
        let mut rows = self.matching_rows(session, &table, select.selection.as_ref(), params).await?;
        if select.projection.len() == 1 && count_star(&select.projection[0]) {
            let name = match &select.projection[0] {
                SelectItem::ExprWithAlias { alias, .. } => ident(alias),
                _ => "count".to_string(),
            };
            // The aggregate is one row; LIMIT and OFFSET apply to that row, not to the rows counted.
            let out = if limit == Some(0) || offset > 0 { vec![] } else { vec![vec![Value::Int(rows.len() as i64)]] };
            return Ok(Output::Rows { fields: vec![Field { name, ty: SqlType::Int }], rows: out });
        }
        if let Some(order_by) = &query.order_by {
            let ast::OrderByKind::Expressions(exprs) = &order_by.kind else {
                return Err(SqlError::unsupported("ORDER BY ALL is not supported"));
            };
            let mut keyed: Vec<(Vec<Value>, Vec<Value>)> = Vec::with_capacity(rows.len());
            for row in rows {
                let ctx = Ctx { table: Some(&table), row: Some(&row), params, session: Some(session) };
                let key = exprs.iter().map(|e| eval(&e.expr, &ctx)).collect::<Result<Vec<_>, _>>()?;
                keyed.push((key, row));
            }
            let descending: Vec<bool> =
                exprs.iter().map(|e| matches!(e.options.sort, Some(ast::OrderBySort::Desc))).collect();
            keyed.sort_by(|(a, _), (b, _)| {
                for ((x, y), desc) in a.iter().zip(b).zip(&descending) {
                    // NULLs sort first ascending, as in CockroachDB.
                    let ord = match (x.is_null(), y.is_null()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Less,
                        (false, true) => Ordering::Greater,
                        _ => x.compare(y).unwrap_or(Ordering::Equal),
                    };
                    let ord = if *desc { ord.reverse() } else { ord };
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
                Ordering::Equal
            });
            rows = keyed.into_iter().map(|(_, row)| row).collect();
        }
        let rows: Vec<Vec<Value>> = rows.into_iter().skip(offset).take(limit.unwrap_or(usize::MAX)).collect();
        let fields = self.projection_fields(select, Some(&table))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let ctx = Ctx { table: Some(&table), row: Some(row), params, session: Some(session) };
            let mut values = Vec::with_capacity(fields.len());
            for item in &select.projection {
                match item {
                    SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => values.extend(row.iter().cloned()),
                    SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                        if count_star(item) {
                            return Err(SqlError::new(
                                "42803",
                                "count(*) must be the only output column (no GROUP BY)",
                            ));
                        }
                        values.push(eval(expr, &ctx)?)
                    }
                    other => return Err(SqlError::unsupported(format!("select item {other} is not supported"))),
                }
            }
            out.push(values);
        }
        Ok(Output::Rows { fields, rows: out })
    }

    async fn select_constant(
        &self,
        session: &SessionHandle,
        select: &ast::Select,
        params: &[Value],
    ) -> Result<Output, SqlError> {
        let fields = self.projection_fields(select, None)?;
        let mut row = Vec::new();
        for item in &select.projection {
            let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item else {
                return Err(SqlError::syntax("SELECT * with no tables specified is not valid"));
            };
            if let Expr::Function(f) = expr
                && f.name.to_string().eq_ignore_ascii_case("pg_sleep")
            {
                let ast::FunctionArguments::List(list) = &f.args else {
                    return Err(SqlError::syntax("pg_sleep takes one argument"));
                };
                let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))) = list.args.first() else {
                    return Err(SqlError::syntax("pg_sleep takes one argument"));
                };
                let seconds = match eval(arg, &Ctx::constant(params))?.coerce(SqlType::Float)? {
                    Value::Float(s) if s.is_finite() && s >= 0.0 => s,
                    other => return Err(SqlError::new("22023", format!("invalid sleep {}", other.display()))),
                };
                tokio::time::sleep(Duration::from_secs_f64(seconds).min(MAX_SLEEP)).await;
                row.push(Value::Bool(true));
                continue;
            }
            row.push(eval(expr, &Ctx { table: None, row: None, params, session: Some(session) })?);
        }
        Ok(Output::Rows { fields, rows: vec![row] })
    }

    async fn insert(
        &self,
        session: &SessionHandle,
        insert: &ast::Insert,
        flavor: Flavor,
        params: &[Value],
    ) -> Result<Output, SqlError> {
        let TableObject::TableName(name) = &insert.table else {
            return Err(SqlError::unsupported("INSERT into a table function is not supported"));
        };
        if insert.returning.is_some() {
            return Err(SqlError::unsupported("RETURNING is not supported"));
        }
        let table = self.table(session, name).await?;
        let columns = self.insert_columns(&table, &insert.columns)?;
        let do_nothing = match &insert.on {
            None => false,
            Some(OnInsert::OnConflict(conflict)) if matches!(conflict.action, OnConflictAction::DoNothing) => true,
            Some(_) => return Err(SqlError::unsupported("only ON CONFLICT DO NOTHING is supported")),
        };
        let Some(source) = &insert.source else { return Err(SqlError::syntax("INSERT needs VALUES")) };
        let SetExpr::Values(values) = source.body.as_ref() else {
            return Err(SqlError::unsupported("INSERT ... SELECT is not supported"));
        };
        let mut ops = Vec::with_capacity(values.rows.len());
        for exprs in &values.rows {
            if exprs.len() != columns.len() {
                return Err(SqlError::syntax(format!(
                    "INSERT has {} expressions but {} target columns",
                    exprs.len(),
                    columns.len()
                )));
            }
            let mut row = vec![Value::Null; table.columns.len()];
            for (expr, &col) in exprs.iter().zip(&columns) {
                let ctx = Ctx { table: None, row: None, params, session: Some(session) };
                row[col] = eval(expr, &ctx)?.coerce(table.columns[col].ty)?;
            }
            for (i, column) in table.columns.iter().enumerate() {
                if row[i].is_null() && !column.nullable {
                    return Err(SqlError::new(
                        "23502",
                        format!("null value in column \"{}\" violates not-null constraint", column.name),
                    ));
                }
            }
            let key = table.row_key(&row);
            let value = table.encode_row(&row);
            ops.push(match (flavor, do_nothing) {
                (Flavor::Upsert, _) => Op::Put { key, value },
                (_, true) => Op::PutIfAbsent { key, value },
                _ => Op::ConditionalPut { key, value, expected: None },
            });
        }
        if ops.is_empty() {
            return Ok(Output::Command { tag: "INSERT", rows: Some(0) });
        }
        match self.batch(ops).await {
            Ok(results) => {
                let inserted = if do_nothing { results.iter().filter(|r| !r.existed).count() } else { results.len() };
                Ok(Output::Command { tag: "INSERT", rows: Some(inserted) })
            }
            Err(Error::ConditionFailed { .. }) => Err(SqlError::new(
                "23505",
                format!("duplicate key value violates unique constraint \"{}\"", table.primary_index_name()),
            )),
            Err(err) => Err(err.into()),
        }
    }

    async fn update(
        &self,
        session: &SessionHandle,
        update: &ast::Update,
        params: &[Value],
    ) -> Result<Output, SqlError> {
        let TableFactor::Table { name, .. } = &update.table.relation else {
            return Err(SqlError::unsupported("UPDATE of a non-table is not supported"));
        };
        if update.from.is_some() || update.returning.is_some() {
            return Err(SqlError::unsupported("UPDATE ... FROM/RETURNING is not supported"));
        }
        let table = self.table(session, name).await?;
        let mut targets = Vec::new();
        for assignment in &update.assignments {
            let column = assignment.target.to_string().to_lowercase();
            let index = table.column(&column).ok_or_else(|| SqlError::undefined_column(&column))?;
            targets.push((index, &assignment.value));
        }
        if let Some(selection) = &update.selection {
            check_columns(selection, &table)?;
        }
        for (_, expr) in &targets {
            check_columns(expr, &table)?;
        }
        let rows = self.matching_rows(session, &table, update.selection.as_ref(), params).await?;
        let mut ops = Vec::new();
        // Which ops guard existing rows (a failure means "changed concurrently: retry") and
        // which create new keys (a failure means a duplicate key).
        let mut creates = Vec::new();
        for row in &rows {
            let ctx = Ctx { table: Some(&table), row: Some(row), params, session: Some(session) };
            let mut new = row.clone();
            for (index, expr) in &targets {
                new[*index] = eval(expr, &ctx)?.coerce(table.columns[*index].ty)?;
                if new[*index].is_null() && !table.columns[*index].nullable {
                    return Err(SqlError::new(
                        "23502",
                        format!("null value in column \"{}\" violates not-null constraint", table.columns[*index].name),
                    ));
                }
            }
            let old_key = table.row_key(row);
            let new_key = table.row_key(&new);
            let old_value = table.encode_row(row);
            if old_key == new_key {
                creates.push(false);
                ops.push(Op::ConditionalPut { key: new_key, value: table.encode_row(&new), expected: Some(old_value) });
            } else {
                creates.push(false);
                ops.push(Op::ConditionalPut {
                    key: old_key.clone(),
                    value: old_value.clone(),
                    expected: Some(old_value),
                });
                creates.push(false);
                ops.push(Op::Delete { key: old_key });
                creates.push(true);
                ops.push(Op::ConditionalPut { key: new_key, value: table.encode_row(&new), expected: None });
            }
        }
        self.guarded_write(&table, ops, &creates).await?;
        Ok(Output::Command { tag: "UPDATE", rows: Some(rows.len()) })
    }

    async fn guarded_write(&self, table: &TableDescriptor, ops: Vec<Op>, creates: &[bool]) -> Result<(), SqlError> {
        if ops.is_empty() {
            return Ok(());
        }
        match self.batch(ops).await {
            Ok(_) => Ok(()),
            Err(Error::ConditionFailed { op_index, .. }) if creates.get(op_index) == Some(&true) => Err(SqlError::new(
                "23505",
                format!("duplicate key value violates unique constraint \"{}\"", table.primary_index_name()),
            )),
            Err(Error::ConditionFailed { .. }) => Err(SqlError::new("40001", "rows changed concurrently; retry")),
            Err(err) => Err(err.into()),
        }
    }

    async fn delete(
        &self,
        session: &SessionHandle,
        delete: &ast::Delete,
        params: &[Value],
    ) -> Result<Output, SqlError> {
        let name = delete_table_name(delete).ok_or_else(|| SqlError::unsupported("DELETE needs one table"))?;
        if delete.returning.is_some() || delete.using.is_some() {
            return Err(SqlError::unsupported("DELETE ... USING/RETURNING is not supported"));
        }
        let table = self.table(session, &name).await?;
        if let Some(selection) = &delete.selection {
            check_columns(selection, &table)?;
        }
        let rows = self.matching_rows(session, &table, delete.selection.as_ref(), params).await?;
        let mut ops = Vec::with_capacity(rows.len() * 2);
        for row in &rows {
            let key = table.row_key(row);
            let value = table.encode_row(row);
            ops.push(Op::ConditionalPut { key: key.clone(), value: value.clone(), expected: Some(value) });
            ops.push(Op::Delete { key });
        }
        let creates = vec![false; ops.len()];
        self.guarded_write(&table, ops, &creates).await?;
        Ok(Output::Command { tag: "DELETE", rows: Some(rows.len()) })
    }

    async fn create_table(&self, session: &SessionHandle, create: &ast::CreateTable) -> Result<Output, SqlError> {
        let (database, name) = self.resolve_name(session, &create.name)?;
        if create.query.is_some() {
            return Err(SqlError::unsupported("CREATE TABLE ... AS is not supported"));
        }
        let mut columns = Vec::new();
        let mut primary_key = Vec::new();
        for (i, def) in create.columns.iter().enumerate() {
            let name = ident(&def.name);
            if columns.iter().any(|c: &Column| c.name == name) {
                return Err(SqlError::new("42701", format!("column \"{name}\" specified more than once")));
            }
            let mut nullable = true;
            for option in &def.options {
                match &option.option {
                    ColumnOption::NotNull => nullable = false,
                    ColumnOption::Null => {}
                    ColumnOption::PrimaryKey(_) => {
                        primary_key.push(i);
                        nullable = false;
                    }
                    other => return Err(SqlError::unsupported(format!("column option {other} is not supported"))),
                }
            }
            columns.push(Column { name, ty: SqlType::parse(&def.data_type.to_string())?, nullable });
        }
        for constraint in &create.constraints {
            match constraint {
                TableConstraint::PrimaryKey(pk) => {
                    if !primary_key.is_empty() {
                        return Err(SqlError::new("42P16", "multiple primary keys are not allowed"));
                    }
                    for column in &pk.columns {
                        let col_name = column.column.expr.to_string().trim_matches('"').to_lowercase();
                        let index = columns
                            .iter()
                            .position(|c| c.name == col_name)
                            .ok_or_else(|| SqlError::undefined_column(&col_name))?;
                        columns[index].nullable = false;
                        primary_key.push(index);
                    }
                }
                other => return Err(SqlError::unsupported(format!("constraint {other} is not supported"))),
            }
        }
        if primary_key.len() > 1
            && create
                .columns
                .iter()
                .filter(|c| c.options.iter().any(|o| matches!(o.option, ColumnOption::PrimaryKey(_))))
                .count()
                > 1
        {
            return Err(SqlError::new("42P16", "multiple primary keys are not allowed"));
        }
        if primary_key.is_empty() {
            return Err(SqlError::unsupported("tables without a PRIMARY KEY are not supported"));
        }
        let descriptor = TableDescriptor { id: 0, database, schema: PUBLIC_SCHEMA.into(), name, columns, primary_key };
        self.catalog().create_table(descriptor, create.if_not_exists).await?;
        Ok(Output::Command { tag: "CREATE TABLE", rows: None })
    }

    async fn drop(
        &self,
        session: &SessionHandle,
        object_type: ObjectType,
        if_exists: bool,
        names: &[ObjectName],
    ) -> Result<Output, SqlError> {
        match object_type {
            ObjectType::Table => {
                for name in names {
                    let (database, table) = self.resolve_name(session, name)?;
                    self.catalog().drop_table(&database, &table, if_exists).await?;
                }
                Ok(Output::Command { tag: "DROP TABLE", rows: None })
            }
            ObjectType::User | ObjectType::Role => {
                self.require_admin(session).await?;
                for name in names {
                    let user = name_parts(name).pop().unwrap_or_default();
                    self.users().drop(&user, if_exists).await?;
                }
                Ok(Output::Command {
                    tag: if object_type == ObjectType::User { "DROP USER" } else { "DROP ROLE" },
                    rows: None,
                })
            }
            other => Err(SqlError::unsupported(format!("DROP {other} is not supported"))),
        }
    }

    async fn set(&self, session: &SessionHandle, set: ast::Set, params: &[Value]) -> Result<Output, SqlError> {
        let (variable, values) = match set {
            ast::Set::SingleAssignment { variable, values, .. } => (variable.to_string().to_lowercase(), values),
            ast::Set::SetTimeZone { .. } | ast::Set::SetNames { .. } | ast::Set::SetNamesDefault { .. } => {
                return Ok(Output::Command { tag: "SET", rows: None });
            }
            other => return Err(SqlError::unsupported(format!("{other} is not supported"))),
        };
        let value = match values.first() {
            Some(Expr::Identifier(id)) => id.value.clone(),
            Some(expr) => eval(expr, &Ctx::constant(params))?.display(),
            None => String::new(),
        };
        match variable.as_str() {
            "application_name" => session.set_application_name(&value),
            "database" => self.use_database(session, &value).await?,
            "search_path"
            | "extra_float_digits"
            | "client_encoding"
            | "datestyle"
            | "timezone"
            | "time zone"
            | "statement_timeout"
            | "intervalstyle"
            | "client_min_messages"
            | "standard_conforming_strings"
            | "default_transaction_isolation"
            | "lock_timeout"
            | "idle_in_transaction_session_timeout"
            | "bytea_output"
            | "default_transaction_read_only"
            | "transaction_isolation"
            | "tracing" => {}
            other => return Err(SqlError::new("42704", format!("unrecognized configuration parameter \"{other}\""))),
        }
        Ok(Output::Command { tag: "SET", rows: None })
    }

    async fn show(&self, session: &SessionHandle, variable: &[ast::Ident]) -> Result<Output, SqlError> {
        let words: Vec<String> = variable.iter().map(ident).collect();
        match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["users"] | ["roles"] => self.show_users().await,
            ["ranges", "from", "table", ..] => {
                let name =
                    ObjectName(words[3..].iter().map(|w| ObjectNamePart::Identifier(ast::Ident::new(w))).collect());
                self.show_ranges(session, &name).await
            }
            [single] => {
                let value = match *single {
                    "application_name" => session.application_name(),
                    "database" => session.database(),
                    "server_version" => SERVER_VERSION.to_string(),
                    "server_version_num" => "130000".into(),
                    "transaction_isolation" | "default_transaction_isolation" => "serializable".into(),
                    "search_path" => "\"$user\", public".into(),
                    "client_encoding" | "server_encoding" => "UTF8".into(),
                    "standard_conforming_strings" => "on".into(),
                    "timezone" => "UTC".into(),
                    "datestyle" => "ISO, MDY".into(),
                    "session_user" | "current_user" => session.username(),
                    other => {
                        return Err(SqlError::new(
                            "42704",
                            format!("unrecognized configuration parameter \"{other}\""),
                        ));
                    }
                };
                Ok(rows_output(&[(single, SqlType::String)], vec![vec![Value::String(value)]]))
            }
            ["transaction", "isolation", "level"] => Ok(rows_output(
                &[("transaction_isolation", SqlType::String)],
                vec![vec![Value::String("serializable".into())]],
            )),
            _ => Err(SqlError::unsupported(format!("SHOW {} is not supported", words.join(" ")))),
        }
    }

    async fn show_users(&self) -> Result<Output, SqlError> {
        let rows = self
            .users()
            .list()
            .await?
            .into_iter()
            .map(|user| {
                let options = if user.can_login { "" } else { "NOLOGIN" };
                let member_of = if user.is_admin { "{admin}" } else { "{}" };
                vec![Value::String(user.username), Value::String(options.into()), Value::String(member_of.into())]
            })
            .collect();
        Ok(rows_output(
            &[("username", SqlType::String), ("options", SqlType::String), ("member_of", SqlType::String)],
            rows,
        ))
    }

    async fn show_ranges(&self, session: &SessionHandle, name: &ObjectName) -> Result<Output, SqlError> {
        let table = self.table(session, name).await?;
        let (start, end) = crate::services::sql::value::table_span(table.id);
        let mut rows = Vec::new();
        for replica in self.host.replicas().await? {
            let desc = &replica.descriptor;
            if !desc.overlaps(&start, &end) {
                continue;
            }
            let replicas: Vec<String> = replica.replicas.iter().map(|(id, _)| id.to_string()).collect();
            rows.push(vec![
                Value::String(pretty_any(&desc.start_key)),
                Value::String(pretty_any_end(&desc.end_key)),
                Value::Int(desc.range_id as i64),
                Value::Float(replica.size.bytes as f64 / 1_048_576.0),
                Value::Int(replica.leader_id as i64),
                Value::String(format!("{{{}}}", replicas.join(","))),
            ]);
        }
        Ok(rows_output(
            &[
                ("start_key", SqlType::String),
                ("end_key", SqlType::String),
                ("range_id", SqlType::Int),
                ("range_size_mb", SqlType::Float),
                ("lease_holder", SqlType::Int),
                ("replicas", SqlType::String),
            ],
            rows,
        ))
    }

    async fn split_at(
        &self,
        session: &SessionHandle,
        name: &ObjectName,
        rows: &Query,
        params: &[Value],
    ) -> Result<Output, SqlError> {
        let table = self.table(session, name).await?;
        let SetExpr::Values(values) = rows.body.as_ref() else {
            return Err(SqlError::unsupported("SPLIT AT needs VALUES"));
        };
        let mut out = Vec::new();
        for exprs in &values.rows {
            if exprs.is_empty() || exprs.len() > table.primary_key.len() {
                return Err(SqlError::new("42601", "SPLIT AT values must be a prefix of the primary key"));
            }
            let mut prefix = Vec::new();
            for (expr, &col) in exprs.iter().zip(&table.primary_key) {
                prefix.push(eval(expr, &Ctx::constant(params))?.coerce(table.columns[col].ty)?);
            }
            let key = table.key_for_pk(&prefix);
            self.host.split(key.clone()).await?;
            out.push(vec![Value::Bytes(key.clone()), Value::String(pretty_any(&key))]);
        }
        Ok(Output::Rows { fields: split_fields(), rows: out })
    }

    async fn require_admin(&self, session: &SessionHandle) -> Result<(), SqlError> {
        let user = self.users().get(&session.username()).await?;
        if user.is_some_and(|u| u.is_admin) {
            Ok(())
        } else {
            Err(SqlError::insufficient_privilege("only users with the admin role are allowed to manage users"))
        }
    }

    async fn create_role(
        &self,
        session: &SessionHandle,
        create: &ast::CreateRole,
        flavor: Flavor,
    ) -> Result<Output, SqlError> {
        self.require_admin(session).await?;
        let password = match &create.password {
            Some(ast::Password::Password(expr)) => match eval(expr, &Ctx::constant(&[]))? {
                Value::String(p) => Some(p),
                other => return Err(SqlError::new("22023", format!("invalid password {}", other.display()))),
            },
            Some(ast::Password::NullPassword) | None => None,
        };
        let is_user = flavor == Flavor::CreateUser;
        for name in &create.names {
            let username = users::normalize(&name_parts(name).pop().unwrap_or_default());
            if username.is_empty() || !username.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(SqlError::new("42601", format!("invalid user name {username:?}")));
            }
            let record = UserRecord {
                username,
                is_admin: false,
                can_login: create.login.unwrap_or(is_user),
                scram: password.as_deref().map(ScramVerifier::new),
            };
            self.users().create(record, create.if_not_exists).await?;
        }
        Ok(Output::Command { tag: if is_user { "CREATE USER" } else { "CREATE ROLE" }, rows: None })
    }

    async fn alter_role(
        &self,
        session: &SessionHandle,
        name: &ast::Ident,
        operation: &AlterRoleOperation,
    ) -> Result<Output, SqlError> {
        let target = users::normalize(&ident(name));
        // Users may change their own password; anything else needs admin.
        if target != session.username() {
            self.require_admin(session).await?;
        }
        let AlterRoleOperation::WithOptions { options } = operation else {
            return Err(SqlError::unsupported("only ALTER USER ... WITH options is supported"));
        };
        let mut password: Option<Option<ScramVerifier>> = None;
        let mut login: Option<bool> = None;
        for option in options {
            match option {
                RoleOption::Password(ast::Password::Password(expr)) => match eval(expr, &Ctx::constant(&[]))? {
                    Value::String(p) => password = Some(Some(ScramVerifier::new(&p))),
                    Value::Null => password = Some(None),
                    other => return Err(SqlError::new("22023", format!("invalid password {}", other.display()))),
                },
                RoleOption::Password(ast::Password::NullPassword) => password = Some(None),
                RoleOption::Login(b) => {
                    if target != session.username() {
                        login = Some(*b);
                    } else {
                        self.require_admin(session).await?;
                        login = Some(*b);
                    }
                }
                other => return Err(SqlError::unsupported(format!("role option {other} is not supported"))),
            }
        }
        self.users()
            .update(&target, |record| {
                if let Some(p) = &password {
                    record.scram = p.clone();
                }
                if let Some(l) = login {
                    record.can_login = l;
                }
            })
            .await?;
        Ok(Output::Command { tag: "ALTER ROLE", rows: None })
    }

    async fn set_admin(
        &self,
        session: &SessionHandle,
        roles: &[ast::Ident],
        grantees: Vec<String>,
        admin: bool,
    ) -> Result<Output, SqlError> {
        self.require_admin(session).await?;
        for role in roles {
            if ident(role) != ADMIN_ROLE {
                return Err(SqlError::unsupported(format!("only the {ADMIN_ROLE} role can be granted or revoked")));
            }
        }
        for grantee in grantees {
            let name = users::normalize(grantee.trim_matches('"'));
            if name == users::ROOT_USER && !admin {
                return Err(SqlError::insufficient_privilege("root must remain an admin"));
            }
            self.users().update(&name, |record| record.is_admin = admin).await?;
        }
        Ok(Output::Command { tag: if admin { "GRANT" } else { "REVOKE" }, rows: None })
    }
}

fn delete_table_name(delete: &ast::Delete) -> Option<ObjectName> {
    let tables = match &delete.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    match tables.first().map(|t| &t.relation) {
        Some(TableFactor::Table { name, .. }) if tables.len() == 1 => Some(name.clone()),
        _ => None,
    }
}

fn output_name(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(id) => ident(id),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident).unwrap_or_default(),
        Expr::Function(f) => f.name.to_string().to_lowercase(),
        _ => "?column?".into(),
    }
}

fn split_fields() -> Vec<Field> {
    vec![Field { name: "key".into(), ty: SqlType::Bytes }, Field { name: "pretty".into(), ty: SqlType::String }]
}

fn rows_output(columns: &[(&str, SqlType)], rows: Vec<Vec<Value>>) -> Output {
    Output::Rows { fields: columns.iter().map(|(name, ty)| Field { name: name.to_string(), ty: *ty }).collect(), rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableDescriptor {
        TableDescriptor {
            id: 104,
            database: "d".into(),
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                Column { name: "a".into(), ty: SqlType::Int, nullable: false },
                Column { name: "b".into(), ty: SqlType::String, nullable: false },
                Column { name: "v".into(), ty: SqlType::Float, nullable: true },
            ],
            primary_key: vec![0, 1],
        }
    }

    fn where_clause(sql: &str) -> Expr {
        let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &format!("SELECT * FROM t WHERE {sql}")).unwrap();
        let Statement::Query(query) = &parsed[0] else { panic!() };
        let SetExpr::Select(select) = query.body.as_ref() else { panic!() };
        select.selection.clone().unwrap()
    }

    #[test]
    fn full_key_equality_becomes_a_point_get() {
        let t = table();
        let access = plan_access(&t, Some(&where_clause("b = 'x' AND a = $1 AND v > 2")), &[Value::Int(7)]);
        assert_eq!(access, Access::Keys(vec![t.key_for_pk(&[Value::Int(7), Value::String("x".into())])]));
    }

    #[test]
    fn prefix_and_range_become_a_bounded_scan() {
        let t = table();
        let Access::Scan { start, end } = plan_access(&t, Some(&where_clause("a = 3 AND b >= 'm' AND b < 'p'")), &[])
        else {
            panic!("expected a scan")
        };
        let inside = t.key_for_pk(&[Value::Int(3), Value::String("n".into())]);
        let below = t.key_for_pk(&[Value::Int(3), Value::String("l".into())]);
        let above = t.key_for_pk(&[Value::Int(3), Value::String("p".into())]);
        let other = t.key_for_pk(&[Value::Int(4), Value::String("n".into())]);
        assert!(start <= inside && inside < end);
        assert!(below < start && above >= end && other >= end);
        let Access::Scan { start, end } = plan_access(&t, Some(&where_clause("v = 1")), &[]) else { panic!() };
        assert_eq!((start, end), t.index_span());
        assert_eq!(plan_access(&t, Some(&where_clause("a > 5 AND a < 3")), &[]), Access::Keys(vec![]));
    }

    #[test]
    fn in_lists_on_single_column_keys_become_gets() {
        let mut t = table();
        t.primary_key = vec![0];
        let Access::Keys(keys) = plan_access(&t, Some(&where_clause("a IN (3, 1, 3)")), &[]) else { panic!() };
        assert_eq!(keys, vec![t.key_for_pk(&[Value::Int(1)]), t.key_for_pk(&[Value::Int(3)])]);
    }

    #[test]
    fn expressions_follow_three_valued_logic() {
        let ctx = Ctx::constant(&[]);
        let e = |sql: &str| eval(&where_clause(sql), &ctx).unwrap();
        assert_eq!(e("1 < 2 AND 'a' = 'a'"), Value::Bool(true));
        assert_eq!(e("NULL = 1"), Value::Null);
        assert_eq!(e("NULL = 1 OR 1 = 1"), Value::Bool(true));
        assert_eq!(e("NULL = 1 AND 1 = 2"), Value::Bool(false));
        assert_eq!(e("3 BETWEEN 1 AND 5"), Value::Bool(true));
        assert_eq!(e("2 NOT IN (1, 2)"), Value::Bool(false));
        assert_eq!(e("7 / 2 = 3"), Value::Bool(true));
        assert_eq!(eval(&where_clause("1 / 0 = 1"), &ctx).unwrap_err().code, "22012");
    }

    #[test]
    fn placeholders_take_column_types() {
        let t = table();
        let mut params = Vec::new();
        infer_params(&where_clause("a = $1 AND $2 < v AND b IN ($3)"), Some(&t), &mut params);
        assert_eq!(params, vec![Some(SqlType::Int), Some(SqlType::Float), Some(SqlType::String)]);
    }

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
}
