//! Expression evaluation (three-valued logic, arithmetic, functions) and the types
//! expressions and `$n` placeholders take, for describing statements before running them.

use std::cmp::Ordering;
use std::time::SystemTime;

use sqlparser::ast::{self, BinaryOperator, Expr, UnaryOperator};

use crate::services::sql::SERVER_VERSION;
use crate::services::sql::catalog::TableDescriptor;
use crate::services::sql::error::SqlError;
use crate::services::sql::limits::{MAX_EXPRESSION_DEPTH, too_complex};
use crate::services::sql::parse::ident;
use crate::services::sql::session::SessionHandle;
use crate::services::sql::value::{SqlType, Value};

/// The values a statement's expressions are evaluated against.
pub(super) struct Ctx<'a> {
    /// The table `row` belongs to.
    pub(super) table: Option<&'a TableDescriptor>,
    /// The row column names refer to.
    pub(super) row: Option<&'a [Value]>,
    /// The values of `$1..$n`.
    pub(super) params: &'a [Value],
    /// The session, for functions such as `current_user()`.
    pub(super) session: Option<&'a SessionHandle>,
}

impl<'a> Ctx<'a> {
    /// Expressions that name no column and no session.
    pub(super) fn constant(params: &'a [Value]) -> Self {
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

/// Evaluates `expr` against `ctx`.
pub(super) fn eval(expr: &Expr, ctx: &Ctx) -> Result<Value, SqlError> {
    eval_at(expr, ctx, 0)
}

/// [`eval`] of a node `depth` levels below the root: past [`MAX_EXPRESSION_DEPTH`] the
/// statement fails instead of recursing further (the token check should have refused it).
fn eval_at(expr: &Expr, ctx: &Ctx, depth: usize) -> Result<Value, SqlError> {
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(too_complex());
    }
    // The recursion runs through this small frame and one helper's: in a debug build a
    // single function matching every kind of expression takes kilobytes per level.
    let depth = depth + 1;
    match expr {
        Expr::BinaryOp { left, op, right } => eval_binary(left, op, right, ctx, depth),
        Expr::UnaryOp { op, expr } => eval_unary(op, expr, ctx, depth),
        Expr::Nested(inner) => eval_at(inner, ctx, depth),
        other => eval_other(other, ctx, depth),
    }
}

fn eval_unary(op: &UnaryOperator, expr: &Expr, ctx: &Ctx, depth: usize) -> Result<Value, SqlError> {
    Ok({
        let v = eval_at(expr, ctx, depth)?;
        match (op, v) {
            (_, Value::Null) => Value::Null,
            (UnaryOperator::Not, Value::Bool(b)) => Value::Bool(!b),
            (UnaryOperator::Minus, Value::Int(i)) => {
                Value::Int(i.checked_neg().ok_or_else(|| SqlError::new("22003", "integer out of range"))?)
            }
            (UnaryOperator::Minus, Value::Float(f)) => Value::Float(-f),
            (UnaryOperator::Plus, v @ (Value::Int(_) | Value::Float(_))) => v,
            (op, v) => {
                return Err(SqlError::new("42883", format!("unsupported unary operator {op} {}", v.display())));
            }
        }
    })
}

fn eval_binary(left: &Expr, op: &BinaryOperator, right: &Expr, ctx: &Ctx, depth: usize) -> Result<Value, SqlError> {
    match op {
        BinaryOperator::And | BinaryOperator::Or => eval_logical(left, op, right, ctx, depth),
        BinaryOperator::Eq
        | BinaryOperator::NotEq
        | BinaryOperator::Lt
        | BinaryOperator::LtEq
        | BinaryOperator::Gt
        | BinaryOperator::GtEq => {
            let (l, r) = eval_operands(left, right, ctx, depth)?;
            compare(op, &l, &r)
        }
        BinaryOperator::Plus
        | BinaryOperator::Minus
        | BinaryOperator::Multiply
        | BinaryOperator::Divide
        | BinaryOperator::Modulo => {
            let (l, r) = eval_operands(left, right, ctx, depth)?;
            arithmetic(op, l, r)
        }
        BinaryOperator::StringConcat => {
            let (l, r) = eval_operands(left, right, ctx, depth)?;
            Ok(match (l, r) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (a, b) => Value::String(format!("{}{}", a.display(), b.display())),
            })
        }
        other => Err(SqlError::unsupported(format!("operator {other} is not supported"))),
    }
}

fn eval_operands(left: &Expr, right: &Expr, ctx: &Ctx, depth: usize) -> Result<(Value, Value), SqlError> {
    let l = eval_at(left, ctx, depth)?;
    let r = eval_at(right, ctx, depth)?;
    Ok((l, r))
}

/// AND and OR, in three-valued logic, evaluating the right side only when it matters.
fn eval_logical(left: &Expr, op: &BinaryOperator, right: &Expr, ctx: &Ctx, depth: usize) -> Result<Value, SqlError> {
    let decisive = *op == BinaryOperator::Or;
    let l = truthy(&eval_at(left, ctx, depth)?);
    if l == Some(decisive) {
        return Ok(Value::Bool(decisive));
    }
    let r = truthy(&eval_at(right, ctx, depth)?);
    Ok(match (l, r) {
        (_, Some(b)) if b == decisive => Value::Bool(decisive),
        (Some(a), Some(b)) if a != decisive && b != decisive => Value::Bool(!decisive),
        _ => Value::Null,
    })
}

fn eval_other(expr: &Expr, ctx: &Ctx, depth: usize) -> Result<Value, SqlError> {
    Ok(match expr {
        Expr::Identifier(id) => ctx.column(&ident(id))?,
        Expr::CompoundIdentifier(parts) => ctx.column(&parts.last().map(ident).unwrap_or_default())?,
        Expr::Value(v) => literal(&v.value, ctx.params)?,
        Expr::IsNull(inner) => Value::Bool(eval_at(inner, ctx, depth)?.is_null()),
        Expr::IsNotNull(inner) => Value::Bool(!eval_at(inner, ctx, depth)?.is_null()),
        Expr::In { expr, target: ast::InTarget::List(list), negated, .. } => {
            let v = eval_at(expr, ctx, depth)?;
            if v.is_null() {
                return Ok(Value::Null);
            }
            let mut found = false;
            for item in list {
                if compare(&BinaryOperator::Eq, &v, &eval_at(item, ctx, depth)?)? == Value::Bool(true) {
                    found = true;
                    break;
                }
            }
            Value::Bool(found != *negated)
        }
        Expr::Between { expr, negated, low, high } => {
            let v = eval_at(expr, ctx, depth)?;
            let lo = compare(&BinaryOperator::GtEq, &v, &eval_at(low, ctx, depth)?)?;
            let hi = compare(&BinaryOperator::LtEq, &v, &eval_at(high, ctx, depth)?)?;
            match (truthy(&lo), truthy(&hi)) {
                (Some(a), Some(b)) => Value::Bool((a && b) != *negated),
                _ => Value::Null,
            }
        }
        Expr::Cast { expr, data_type, .. } => {
            eval_at(expr, ctx, depth)?.coerce(SqlType::parse(&data_type.to_string())?)?
        }
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
pub(super) fn expr_type(expr: &Expr, table: Option<&TableDescriptor>) -> SqlType {
    expr_type_at(expr, table, 0)
}

/// [`expr_type`] below `depth` levels; past the depth limit the type is left as text (the
/// statement fails when evaluated).
fn expr_type_at(expr: &Expr, table: Option<&TableDescriptor>, depth: usize) -> SqlType {
    if depth > MAX_EXPRESSION_DEPTH {
        return SqlType::String;
    }
    let expr_type = |expr: &Expr, table: Option<&TableDescriptor>| expr_type_at(expr, table, depth + 1);
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
pub(super) fn infer_params(expr: &Expr, table: Option<&TableDescriptor>, out: &mut Vec<Option<SqlType>>) {
    infer_params_at(expr, table, out, 0)
}

/// [`infer_params`] below `depth` levels; past the depth limit nothing more is inferred
/// (the statement fails when evaluated).
fn infer_params_at(expr: &Expr, table: Option<&TableDescriptor>, out: &mut Vec<Option<SqlType>>, depth: usize) {
    if depth > MAX_EXPRESSION_DEPTH {
        return;
    }
    let infer_params = |expr: &Expr, table: Option<&TableDescriptor>, out: &mut Vec<Option<SqlType>>| {
        infer_params_at(expr, table, out, depth + 1)
    };
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
pub(super) fn check_columns(expr: &Expr, table: &TableDescriptor) -> Result<(), SqlError> {
    check_columns_at(expr, table, 0)
}

fn check_columns_at(expr: &Expr, table: &TableDescriptor, depth: usize) -> Result<(), SqlError> {
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(too_complex());
    }
    let check = |e: &Expr| check_columns_at(e, table, depth + 1);
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

#[cfg(test)]
pub(super) mod tests {
    use sqlparser::ast::{SetExpr, Statement};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    use super::*;
    use crate::services::sql::catalog::Column;

    /// Table `d.t (a INT, b STRING, v FLOAT NULL, PRIMARY KEY (a, b))`.
    pub(in crate::services::sql) fn table() -> TableDescriptor {
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

    /// The WHERE clause of `SELECT * FROM t WHERE <sql>`.
    pub(in crate::services::sql) fn where_clause(sql: &str) -> Expr {
        let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &format!("SELECT * FROM t WHERE {sql}")).unwrap();
        let Statement::Query(query) = &parsed[0] else { panic!() };
        let SetExpr::Select(select) = query.body.as_ref() else { panic!() };
        select.selection.clone().unwrap()
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

    /// `a + 1 + … + 1` with `operators` operators.
    fn chain(operators: usize) -> Expr {
        where_clause(&format!("a{}", " + 1".repeat(operators)))
    }

    #[test]
    fn evaluation_at_the_limit_fits_a_small_stack() {
        // Half of a tokio worker's 2 MiB stack is all the deepest allowed expression may
        // need, in a debug build, for everything done with it (the other half is the margin
        // for what the worker already has on its stack).
        let worker = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| {
                let t = table();
                let row = [Value::Int(1), Value::String("x".into()), Value::Null];
                let ctx = Ctx { table: Some(&t), row: Some(&row), params: &[], session: None };
                let deepest = chain(MAX_EXPRESSION_DEPTH);
                assert_eq!(eval(&deepest, &ctx), Ok(Value::Int(MAX_EXPRESSION_DEPTH as i64 + 1)));
                assert_eq!(expr_type(&deepest, Some(&t)), SqlType::Int);
                check_columns(&deepest, &t).unwrap();
                let mut params = Vec::new();
                infer_params(&deepest, Some(&t), &mut params);
                let copy = deepest.clone();
                assert_eq!(copy.to_string(), deepest.to_string());
                drop(copy);
                let parsed = crate::services::sql::parse::parse(&format!("SELECT {deepest}")).unwrap();
                drop(parsed.clone());
                // One deeper than allowed: evaluation refuses instead of recursing on.
                let deeper = chain(MAX_EXPRESSION_DEPTH + 1);
                assert_eq!(eval(&deeper, &ctx).unwrap_err().code, "54001");
                assert_eq!(check_columns(&deeper, &t).unwrap_err().code, "54001");
                let parsed = crate::services::sql::parse::parse(&format!("SELECT {deeper}"));
                assert_eq!(parsed.err().map(|e| e.code), Some("54001"));
            })
            .unwrap();
        worker.join().expect("the deepest allowed expression fits");
    }

    #[test]
    fn negating_the_smallest_integer_is_out_of_range() {
        let ctx = Ctx::constant(&[]);
        assert_eq!(eval(&where_clause("-(-9223372036854775807 - 1)"), &ctx).unwrap_err().code, "22003");
    }
}
