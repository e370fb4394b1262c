//! SELECT, INSERT and UPSERT, UPDATE and DELETE: reading rows through the access plan and
//! writing them back as one KV batch.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlparser::ast::{
    self, Expr, FromTable, ObjectName, OnConflictAction, OnInsert, Query, SelectItem, SetExpr, TableFactor, TableObject,
};

use super::stream::{Pipeline, project_row, stream_rows};
use super::{Field, Output, SqlEngine};
use crate::services::error::Error;
use crate::services::kv::Op;
use crate::services::sql::catalog::TableDescriptor;
use crate::services::sql::error::{SERIALIZATION_FAILURE, SqlError};
use crate::services::sql::expr::{Ctx, check_columns, eval, expr_type};
use crate::services::sql::limits::{MemoryBudget, row_bytes};
use crate::services::sql::parse::{Flavor, ident, name_parts};
use crate::services::sql::plan::{limit_of, plan_access};
use crate::services::sql::session::SessionHandle;
use crate::services::sql::value::{SqlType, Value};

/// The longest `pg_sleep` allowed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

impl SqlEngine {
    /// The rows `selection` picks, decoded and held: for statements that need them all at
    /// once (UPDATE, DELETE, a sort). Each row kept is charged to `budget`; the pages read
    /// through are charged only while held.
    async fn matching_rows(
        &self,
        session: &SessionHandle,
        table: &TableDescriptor,
        selection: Option<&Expr>,
        params: &[Value],
        budget: &Arc<MemoryBudget>,
    ) -> Result<Vec<Vec<Value>>, SqlError> {
        let access = plan_access(table, selection, params);
        let mut reader = self.open_rows(&access, budget, None).await?;
        let mut rows = Vec::new();
        // One pass per stored row of a finite scan.
        while let Some((key, value)) = reader.next().await? {
            let row = table.decode_row(&value)?;
            if let Some(selection) = selection {
                let ctx = Ctx { table: Some(table), row: Some(&row), params, session: Some(session) };
                if eval(selection, &ctx)? != Value::Bool(true) {
                    continue;
                }
            }
            budget.charge(key.len() + value.len() + row_bytes(&row))?;
            rows.push(row);
        }
        Ok(rows)
    }

    pub(super) fn projection_fields(
        &self,
        select: &ast::Select,
        table: Option<&TableDescriptor>,
    ) -> Result<Vec<Field>, SqlError> {
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

    pub(super) fn insert_columns(
        &self,
        table: &TableDescriptor,
        columns: &[ObjectName],
    ) -> Result<Vec<usize>, SqlError> {
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

    pub(super) async fn select(
        &self,
        session: &SessionHandle,
        query: &Query,
        params: &[Value],
    ) -> Result<Output, SqlError> {
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
        let budget = Arc::new(self.budget());
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
        if select.distinct.is_some() {
            return Err(SqlError::unsupported("SELECT DISTINCT is not supported"));
        }
        let counting = select.projection.len() == 1 && count_star(&select.projection[0]);
        if !counting && select.projection.iter().any(count_star) {
            return Err(SqlError::new("42803", "count(*) must be the only output column (no GROUP BY)"));
        }
        let fields = if counting {
            let name = match &select.projection[0] {
                SelectItem::ExprWithAlias { alias, .. } => ident(alias),
                _ => "count".to_string(),
            };
            vec![Field { name, ty: SqlType::Int }]
        } else {
            self.projection_fields(select, Some(&table))?
        };
        let sort = match &query.order_by {
            None => None,
            Some(ast::OrderBy { kind: ast::OrderByKind::Expressions(exprs), .. }) => {
                (!in_key_order(&table, exprs)).then_some(exprs)
            }
            Some(_) => return Err(SqlError::unsupported("ORDER BY ALL is not supported")),
        };
        if counting || sort.is_none() {
            // Nothing to hold: rows go to the client, or into the count, as they are read.
            let access = plan_access(&table, select.selection.as_ref(), params);
            let wanted = if select.selection.is_none() && !counting { limit.map(|l| l + offset) } else { None };
            let mut reader = self.open_rows(&access, &budget, wanted).await?;
            let pipeline = Pipeline {
                table,
                selection: select.selection.clone(),
                projection: select.projection.clone(),
                params: params.to_vec(),
                session: session.clone(),
                offset,
                limit,
            };
            if !counting {
                return Ok(Output::Stream { fields, rows: stream_rows(reader, pipeline) });
            }
            let mut count = 0i64;
            // One pass per stored row of a finite scan.
            while let Some((_, value)) = reader.next().await? {
                if pipeline.selection.is_none() || pipeline.matches(&value)?.is_some() {
                    count += 1;
                }
            }
            // The aggregate is one row; LIMIT and OFFSET apply to that row, not to the rows counted.
            let out = if limit == Some(0) || offset > 0 { vec![] } else { vec![vec![Value::Int(count)]] };
            return Ok(Output::Rows { fields, rows: out });
        }
        let exprs: &[ast::OrderByExpr] = sort.map_or(&[], |exprs| exprs.as_slice());
        let rows = self.matching_rows(session, &table, select.selection.as_ref(), params, &budget).await?;
        let mut keyed: Vec<(Vec<Value>, Vec<Value>)> = Vec::with_capacity(rows.len());
        for row in rows {
            let ctx = Ctx { table: Some(&table), row: Some(&row), params, session: Some(session) };
            let key = exprs.iter().map(|e| eval(&e.expr, &ctx)).collect::<Result<Vec<_>, _>>()?;
            budget.charge_row(&key)?;
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
        let mut out = Vec::with_capacity(keyed.len().min(limit.unwrap_or(usize::MAX)));
        for (_, row) in keyed.into_iter().skip(offset).take(limit.unwrap_or(usize::MAX)) {
            let ctx = Ctx { table: Some(&table), row: Some(&row), params, session: Some(session) };
            let values = project_row(&select.projection, &row, &ctx)?;
            budget.charge_row(&values)?;
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

    pub(super) async fn insert(
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
        let budget = self.budget();
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
            budget.charge(row_bytes(&row) + key.len() + value.len() + std::mem::size_of::<Op>())?;
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

    pub(super) async fn update(
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
        let budget = Arc::new(self.budget());
        let rows = self.matching_rows(session, &table, update.selection.as_ref(), params, &budget).await?;
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
            // The new row, and up to three ops holding two copies each of its keys and values.
            budget.charge(row_bytes(&new) + 6 * (new_key.len() + old_value.len()) + 3 * std::mem::size_of::<Op>())?;
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
            Err(Error::ConditionFailed { .. }) => {
                Err(SqlError::new(SERIALIZATION_FAILURE, "rows changed concurrently; retry"))
            }
            Err(err) => Err(err.into()),
        }
    }

    pub(super) async fn delete(
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
        let budget = Arc::new(self.budget());
        let rows = self.matching_rows(session, &table, delete.selection.as_ref(), params, &budget).await?;
        let mut ops = Vec::with_capacity(rows.len() * 2);
        for row in &rows {
            let key = table.row_key(row);
            let value = table.encode_row(row);
            budget.charge(3 * key.len() + 2 * value.len() + 2 * std::mem::size_of::<Op>())?;
            ops.push(Op::ConditionalPut { key: key.clone(), value: value.clone(), expected: Some(value) });
            ops.push(Op::Delete { key });
        }
        let creates = vec![false; ops.len()];
        self.guarded_write(&table, ops, &creates).await?;
        Ok(Output::Command { tag: "DELETE", rows: Some(rows.len()) })
    }
}

/// Whether ORDER BY `exprs` asks for the order rows are stored in: ascending on a prefix of the
/// primary key's columns (key columns are never NULL), so no sort is needed.
fn in_key_order(table: &TableDescriptor, exprs: &[ast::OrderByExpr]) -> bool {
    exprs.len() <= table.primary_key.len()
        && exprs.iter().zip(&table.primary_key).all(|(e, &col)| {
            !matches!(e.options.sort, Some(ast::OrderBySort::Desc))
                && e.options.nulls_first.is_none()
                && column_name(&e.expr).is_some_and(|name| name == table.columns[col].name)
        })
}

fn column_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(id) => Some(ident(id)),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident),
        Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

pub(super) fn count_star(item: &SelectItem) -> bool {
    match item {
        SelectItem::UnnamedExpr(Expr::Function(f)) | SelectItem::ExprWithAlias { expr: Expr::Function(f), .. } => {
            f.name.to_string().eq_ignore_ascii_case("count")
        }
        _ => false,
    }
}

/// The one table a DELETE names, if it names exactly one.
pub(super) fn delete_table_name(delete: &ast::Delete) -> Option<ObjectName> {
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
