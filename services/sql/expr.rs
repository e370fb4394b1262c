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
use crate::services::sql::stack;
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

/// [`eval`] of a node `depth` recursions below the root: past [`MAX_EXPRESSION_DEPTH`] the
/// statement fails instead of recursing further (the token check should have refused it).
fn eval_at(expr: &Expr, ctx: &Ctx, depth: usize) -> Result<Value, SqlError> {
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(too_complex());
    }
    // The recursion runs through this small frame and one helper's: in a debug build a
    // single function matching every kind of expression takes kilobytes per level.
    let depth = depth + 1;
    stack::guarded(|| match expr {
        Expr::BinaryOp { left, op, right } => match left.as_ref() {
            Expr::BinaryOp { .. } => eval_chain(expr, ctx, depth),
            _ => eval_binary(eval_at(left, ctx, depth)?, op, right, ctx, depth),
        },
        Expr::UnaryOp { op, expr } => eval_unary(op, expr, ctx, depth),
        Expr::Nested(inner) => eval_at(inner, ctx, depth),
        other => eval_other(other, ctx, depth),
    })
}

/// The left spine of a chain of binary operators as sqlparser builds it (left-deep): the
/// leftmost operand, and each operator with its right operand from the innermost out.
fn left_spine(expr: &Expr) -> (&Expr, Vec<(&BinaryOperator, &Expr)>) {
    let mut steps = Vec::new();
    let mut node = expr;
    while let Expr::BinaryOp { left, op, right } = node {
        steps.push((op, right.as_ref()));
        node = left;
    }
    steps.reverse();
    (node, steps)
}

/// A chain such as `k = 1 OR k = 2 OR …` or `1 + 2 - 3 …`, evaluated along its left spine
/// in a loop: as deep as it is long, it recurses only into its operands.
fn eval_chain(expr: &Expr, ctx: &Ctx, depth: usize) -> Result<Value, SqlError> {
    let (leftmost, steps) = left_spine(expr);
    let mut value = eval_at(leftmost, ctx, depth)?;
    for (op, right) in steps {
        value = eval_binary(value, op, right, ctx, depth)?;
    }
    Ok(value)
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

/// `left op right`, with `left` already evaluated.
fn eval_binary(left: Value, op: &BinaryOperator, right: &Expr, ctx: &Ctx, depth: usize) -> Result<Value, SqlError> {
    match op {
        BinaryOperator::And | BinaryOperator::Or => eval_logical(left, op, right, ctx, depth),
        BinaryOperator::Eq
        | BinaryOperator::NotEq
        | BinaryOperator::Lt
        | BinaryOperator::LtEq
        | BinaryOperator::Gt
        | BinaryOperator::GtEq => compare(op, &left, &eval_at(right, ctx, depth)?),
        BinaryOperator::Plus
        | BinaryOperator::Minus
        | BinaryOperator::Multiply
        | BinaryOperator::Divide
        | BinaryOperator::Modulo => arithmetic(op, left, eval_at(right, ctx, depth)?),
        BinaryOperator::StringConcat => Ok(match (left, eval_at(right, ctx, depth)?) {
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            (a, b) => Value::String(format!("{}{}", a.display(), b.display())),
        }),
        other => Err(SqlError::unsupported(format!("operator {other} is not supported"))),
    }
}

/// AND and OR, in three-valued logic, evaluating the right side only when it matters.
fn eval_logical(left: Value, op: &BinaryOperator, right: &Expr, ctx: &Ctx, depth: usize) -> Result<Value, SqlError> {
    let decisive = *op == BinaryOperator::Or;
    let l = truthy(&left);
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

/// [`expr_type`] below `depth` recursions; past the depth limit the type is left as text
/// (the statement fails when evaluated).
fn expr_type_at(expr: &Expr, table: Option<&TableDescriptor>, depth: usize) -> SqlType {
    if depth > MAX_EXPRESSION_DEPTH {
        return SqlType::String;
    }
    stack::guarded(|| {
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
            Expr::BinaryOp { .. } => {
                let (leftmost, steps) = left_spine(expr);
                let mut ty = expr_type(leftmost, table);
                for (op, right) in steps {
                    ty = binary_type(op, ty, || expr_type(right, table));
                }
                ty
            }
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
    })
}

/// The type of `left op right`, given the type of `left` (`right`'s is asked only when it
/// matters).
fn binary_type(op: &BinaryOperator, left: SqlType, right: impl FnOnce() -> SqlType) -> SqlType {
    match op {
        BinaryOperator::Plus
        | BinaryOperator::Minus
        | BinaryOperator::Multiply
        | BinaryOperator::Divide
        | BinaryOperator::Modulo => match (left, right()) {
            (SqlType::Int, SqlType::Int) => SqlType::Int,
            _ => SqlType::Float,
        },
        BinaryOperator::StringConcat => SqlType::String,
        _ => SqlType::Bool,
    }
}

/// The type of column `name` of `table` (text when unknown).
pub(super) fn column_type(table: Option<&TableDescriptor>, name: &str) -> SqlType {
    table.and_then(|t| t.column(name).map(|i| t.columns[i].ty)).unwrap_or(SqlType::String)
}

/// Infers the types of `$n` placeholders in `expr`, which is compared with or assigned to
/// something of type `ty` (a column, a LIMIT).
pub(super) fn infer_params_against(
    expr: &Expr,
    ty: SqlType,
    table: Option<&TableDescriptor>,
    out: &mut Vec<Option<SqlType>>,
) {
    note_param(out, expr, ty);
    infer_params(expr, table, out);
}

/// Notes `ty` as the type of `placeholder` if it is one (`$n`) and has no type yet.
fn note_param(out: &mut Vec<Option<SqlType>>, placeholder: &Expr, ty: SqlType) {
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
}

/// Infers the types of `$n` placeholders from the columns they are compared with or assigned to.
pub(super) fn infer_params(expr: &Expr, table: Option<&TableDescriptor>, out: &mut Vec<Option<SqlType>>) {
    infer_params_at(expr, table, out, 0)
}

/// [`infer_params`] below `depth` recursions; past the depth limit nothing more is inferred
/// (the statement fails when evaluated). Operands are visited left to right: the first
/// type noted for a placeholder is its type.
fn infer_params_at(expr: &Expr, table: Option<&TableDescriptor>, out: &mut Vec<Option<SqlType>>, depth: usize) {
    if depth > MAX_EXPRESSION_DEPTH {
        return;
    }
    stack::guarded(|| {
        let infer_params = |expr: &Expr, table: Option<&TableDescriptor>, out: &mut Vec<Option<SqlType>>| {
            infer_params_at(expr, table, out, depth + 1)
        };
        match expr {
            Expr::BinaryOp { .. } => {
                let (leftmost, steps) = left_spine(expr);
                let mut left_type = expr_type(leftmost, table);
                for (index, (op, right)) in steps.into_iter().enumerate() {
                    let right_type = expr_type(right, table);
                    note_param(out, right, left_type);
                    if index == 0 {
                        note_param(out, leftmost, right_type);
                        infer_params(leftmost, table, out);
                    }
                    infer_params(right, table, out);
                    left_type = binary_type(op, left_type, || right_type);
                }
            }
            Expr::In { expr, target: ast::InTarget::List(list), .. } => {
                let ty = expr_type(expr, table);
                for item in list {
                    note_param(out, item, ty);
                }
            }
            Expr::Between { expr, low, high, .. } => {
                let ty = expr_type(expr, table);
                note_param(out, low, ty);
                note_param(out, high, ty);
            }
            Expr::Nested(inner) | Expr::UnaryOp { expr: inner, .. } | Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                infer_params(inner, table, out)
            }
            Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("pg_sleep") => {
                if let ast::FunctionArguments::List(list) = &f.args {
                    for arg in &list.args {
                        if let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) = arg {
                            note_param(out, e, SqlType::Float);
                        }
                    }
                }
            }
            Expr::Value(v) => {
                if let ast::Value::Placeholder(_) = &v.value {
                    note_param(out, expr, SqlType::String);
                }
            }
            _ => {}
        }
    })
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
    stack::guarded(|| match expr {
        Expr::Identifier(id) => {
            let name = ident(id);
            table.column(&name).map(drop).ok_or_else(|| SqlError::undefined_column(&name))
        }
        Expr::CompoundIdentifier(parts) => {
            let name = parts.last().map(ident).unwrap_or_default();
            table.column(&name).map(drop).ok_or_else(|| SqlError::undefined_column(&name))
        }
        Expr::BinaryOp { .. } => {
            let (leftmost, steps) = left_spine(expr);
            check(leftmost)?;
            steps.into_iter().try_for_each(|(_, right)| check(right))
        }
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
    })
}

#[cfg(test)]
pub(super) mod tests {
    use sqlparser::ast::{SetExpr, Statement};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    use super::*;
    use crate::services::sql::catalog::Column;
    use crate::services::sql::limits::SHALLOW_EXPRESSION_DEPTH;

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
        let mut parsed = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&format!("SELECT * FROM t WHERE {sql}"))
            .and_then(|mut parser| parser.parse_statements())
            .unwrap();
        // Moved out, not cloned: a clone of a deep chain needs kilobytes of stack per level.
        let Statement::Query(query) = parsed.remove(0) else { panic!() };
        let SetExpr::Select(select) = *query.body else { panic!() };
        select.selection.unwrap()
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

    /// Runs `test` on a thread of `stack` bytes, as small as a tokio worker's or smaller.
    fn on_thread(stack: usize, test: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new().stack_size(stack).spawn(test).unwrap().join().expect("the test fits the stack");
    }

    /// Drops `expr` on a stack large enough for its derived (recursive) `Drop`, as the engine
    /// does with deep statements.
    fn drop_deep(expr: Expr) {
        stacker::grow(crate::services::sql::limits::DEEP_STATEMENT_STACK, move || drop(expr));
    }

    #[test]
    fn shallow_statements_fit_a_small_stack() {
        // Half of a tokio worker's 2 MiB stack is all the deepest statement that runs on it
        // may need, in a debug build, for everything done with it, clones included (the other
        // half is the margin for what the worker already has on its stack).
        on_thread(1024 * 1024, || {
            let t = table();
            let row = [Value::Int(1), Value::String("x".into()), Value::Null];
            let ctx = Ctx { table: Some(&t), row: Some(&row), params: &[], session: None };
            let deepest = chain(SHALLOW_EXPRESSION_DEPTH);
            assert_eq!(eval(&deepest, &ctx), Ok(Value::Int(SHALLOW_EXPRESSION_DEPTH as i64 + 1)));
            assert_eq!(expr_type(&deepest, Some(&t)), SqlType::Int);
            check_columns(&deepest, &t).unwrap();
            let mut params = Vec::new();
            infer_params(&deepest, Some(&t), &mut params);
            let copy = deepest.clone();
            assert_eq!(copy.to_string(), deepest.to_string());
            drop(copy);
            let parsed = crate::services::sql::parse::parse(&format!("SELECT {deepest}")).unwrap();
            drop(parsed.clone());
        });
    }

    #[test]
    fn long_chains_evaluate_in_a_loop() {
        // Far more than a small stack holds if each level took a frame.
        on_thread(256 * 1024, || {
            let t = table();
            let row = |a: i64| [Value::Int(a), Value::String("x".into()), Value::Null];
            let terms: Vec<String> = (1..=10_000).map(|i| format!("a = {i}")).collect();
            let any = where_clause(&terms.join(" OR "));
            for (a, expected) in [(1, true), (5_000, true), (10_000, true), (0, false), (10_001, false)] {
                let row = row(a);
                let ctx = Ctx { table: Some(&t), row: Some(&row), params: &[], session: None };
                assert_eq!(eval(&any, &ctx), Ok(Value::Bool(expected)), "a = {a}");
            }
            // Three-valued: NULL OR … OR false is NULL, NULL OR … OR true is true.
            let with_null = where_clause(&format!("v = 1 OR {}", terms.join(" OR ")));
            let ctx_row = row(20_000);
            let ctx = Ctx { table: Some(&t), row: Some(&ctx_row), params: &[], session: None };
            assert_eq!(eval(&with_null, &ctx), Ok(Value::Null));
            assert_eq!(expr_type(&any, Some(&t)), SqlType::Bool);
            check_columns(&any, &t).unwrap();

            let sum = chain(9_999);
            let one = row(1);
            let ctx = Ctx { table: Some(&t), row: Some(&one), params: &[], session: None };
            assert_eq!(eval(&sum, &ctx), Ok(Value::Int(10_000)));
            assert_eq!(expr_type(&sum, Some(&t)), SqlType::Int);
            let mixed = where_clause(&format!("1{}", " * 1 + 1 - 1".repeat(5_000)));
            assert_eq!(eval(&mixed, &Ctx::constant(&[])), Ok(Value::Int(1)));
            let text = where_clause(&format!("'a'{}", " || 'b'".repeat(10_000)));
            assert_eq!(eval(&text, &Ctx::constant(&[])), Ok(Value::String(format!("a{}", "b".repeat(10_000)))));

            // Placeholders anywhere in the chain take the types of what they meet.
            let placeholders =
                where_clause(&format!("{} OR b = $2 OR v < $3", terms.join(" OR ").replace("a = 1 ", "a = $1 ")));
            let mut params = Vec::new();
            infer_params(&placeholders, Some(&t), &mut params);
            assert_eq!(params, vec![Some(SqlType::Int), Some(SqlType::String), Some(SqlType::Float)]);
            for deep in [any, with_null, sum, mixed, text, placeholders] {
                drop_deep(deep);
            }
        });
    }

    #[test]
    fn deep_operands_recurse_on_a_growing_stack() {
        // A chain of casts is as deep as it is long and is not a binary chain: evaluation
        // recurses into it, on stack segments the guard adds.
        on_thread(256 * 1024, || {
            let casts = where_clause(&format!("a{}", "::INT".repeat(10_000)));
            let row = [Value::Int(7), Value::String("x".into()), Value::Null];
            let t = table();
            let ctx = Ctx { table: Some(&t), row: Some(&row), params: &[], session: None };
            assert_eq!(eval(&casts, &ctx), Ok(Value::Int(7)));
            check_columns(&casts, &t).unwrap();
            drop_deep(casts);
        });
    }

    #[test]
    fn negating_the_smallest_integer_is_out_of_range() {
        let ctx = Ctx::constant(&[]);
        assert_eq!(eval(&where_clause("-(-9223372036854775807 - 1)"), &ctx).unwrap_err().code, "22003");
    }
}
