//! Access planning: which keys a WHERE clause can touch (point gets or one bounded scan),
//! and a query's LIMIT and OFFSET.

use std::cmp::Ordering;

use sqlparser::ast::{self, BinaryOperator, Expr, Query};

use crate::services::keys;
use crate::services::sql::catalog::TableDescriptor;
use crate::services::sql::error::SqlError;
use crate::services::sql::expr::{Ctx, eval};
use crate::services::sql::parse::ident;
use crate::services::sql::value::{SqlType, Value};

/// A query's `(LIMIT, OFFSET)`, evaluated with `params`.
pub(super) fn limit_of(query: &Query, params: &[Value]) -> Result<(Option<usize>, usize), SqlError> {
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
pub(super) enum Access {
    /// Point gets of these keys, in key order.
    Keys(Vec<Vec<u8>>),
    /// One scan of `[start, end)`.
    Scan { start: Vec<u8>, end: Vec<u8> },
}

/// The parts of an AND chain, left to right. Iterative: a chain is as deep as it is long.
fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    let mut out = Vec::new();
    let mut pending = vec![expr];
    while let Some(expr) = pending.pop() {
        match expr {
            Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
                pending.push(right);
                pending.push(left);
            }
            Expr::Nested(inner) => pending.push(inner),
            other => out.push(other),
        }
    }
    out
}

fn is_column(mut expr: &Expr, name: &str) -> bool {
    while let Expr::Nested(inner) = expr {
        expr = inner;
    }
    match expr {
        Expr::Identifier(id) => ident(id) == name,
        Expr::CompoundIdentifier(parts) => parts.last().map(ident).as_deref() == Some(name),
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
pub(super) fn plan_access(table: &TableDescriptor, selection: Option<&Expr>, params: &[Value]) -> Access {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::sql::expr::tests::{table, where_clause};

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
}
