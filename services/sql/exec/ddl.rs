//! CREATE and DROP of databases and tables, SHOW DATABASES, SHOW TABLES with table sizes,
//! SHOW RANGES and ALTER TABLE .. SPLIT AT.

use futures::StreamExt;
use sqlparser::ast::{self, ColumnOption, ObjectName, ObjectType, Query, SetExpr, TableConstraint};

use super::{Field, Output, SqlEngine, rows_output};
use crate::services::sql::catalog::{Column, PUBLIC_SCHEMA, TableDescriptor};
use crate::services::sql::error::SqlError;
use crate::services::sql::expr::{Ctx, eval};
use crate::services::sql::parse::{ident, name_parts};
use crate::services::sql::session::SessionHandle;
use crate::services::sql::users;
use crate::services::sql::value::{SqlType, Value, pretty_any, pretty_any_end};

impl SqlEngine {
    pub(super) async fn create_table(
        &self,
        session: &SessionHandle,
        create: &ast::CreateTable,
    ) -> Result<Output, SqlError> {
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

    pub(super) async fn drop(
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

    pub(super) async fn show_databases(&self) -> Result<Output, SqlError> {
        let rows = self
            .catalog()
            .databases()
            .await?
            .into_iter()
            .map(|db| vec![Value::String(db.name), Value::String(users::ROOT_USER.into())])
            .collect();
        Ok(rows_output(&[("database_name", SqlType::String), ("owner", SqlType::String)], rows))
    }

    pub(super) async fn show_tables(&self, session: &SessionHandle) -> Result<Output, SqlError> {
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

    async fn table_size(&self, table: &TableDescriptor) -> Result<u64, SqlError> {
        let (start, end) = table.index_span();
        Ok(self.host.ranges_in_span(&start, &end).await?.iter().map(|r| r.size.keys).sum())
    }

    pub(super) async fn show_ranges(&self, session: &SessionHandle, name: &ObjectName) -> Result<Output, SqlError> {
        let table = self.table(session, name).await?;
        let (start, end) = crate::services::sql::value::table_span(table.id);
        let mut rows = Vec::new();
        for replica in self.host.ranges_in_span(&start, &end).await? {
            let desc = &replica.descriptor;
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

    pub(super) async fn split_at(
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
        // Every value is checked before any range is split.
        let mut split_keys = Vec::with_capacity(values.rows.len());
        for exprs in &values.rows {
            if exprs.is_empty() || exprs.len() > table.primary_key.len() {
                return Err(SqlError::new("42601", "SPLIT AT values must be a prefix of the primary key"));
            }
            let mut prefix = Vec::new();
            for (expr, &col) in exprs.iter().zip(&table.primary_key) {
                prefix.push(eval(expr, &Ctx::constant(params))?.coerce(table.columns[col].ty)?);
            }
            split_keys.push(table.key_for_pk(&prefix));
        }
        // Highest key first, a few at once: each split leaves the keys still to split in its
        // left-hand range, so the splits in flight go to one Raft group and are appended
        // together. In the order given, a split would move the next keys to its new range
        // while the splits behind it were on their way to the old one, to fail and retry.
        let mut order: Vec<Vec<u8>> = split_keys.clone();
        order.sort_unstable_by(|a, b| b.cmp(a));
        order.dedup();
        let host = &self.host;
        let mut splits = futures::stream::iter(order).map(|key| host.split(key)).buffer_unordered(SPLITS_IN_FLIGHT);
        while let Some(done) = splits.next().await {
            done?;
        }
        let rows = (split_keys.into_iter())
            .map(|key| {
                let pretty = pretty_any(&key);
                vec![Value::Bytes(key), Value::String(pretty)]
            })
            .collect();
        Ok(Output::Rows { fields: split_fields(), rows })
    }
}

/// How many of one `SPLIT AT`'s splits are proposed at once.
const SPLITS_IN_FLIGHT: usize = 16;

pub(super) fn split_fields() -> Vec<Field> {
    vec![Field { name: "key".into(), ty: SqlType::Bytes }, Field { name: "pretty".into(), ty: SqlType::String }]
}
