//! Statement execution: the engine, statement dispatch and describing statements for the
//! extended protocol; the statements themselves run in [`dml`], [`ddl`] and [`admin`], and
//! [`stream`] reads rows page by page and streams the results of SELECTs that hold no rows.
//!
//! Every statement is its own (implicit) transaction and is atomic: its writes go to the KV
//! layer as one batch. Statements that read then write (UPDATE, DELETE) guard each row they
//! change with a conditional put of the value they read, so a concurrent change aborts the
//! batch and the statement is retried on fresh data.

mod admin;
mod ddl;
mod dml;
mod stream;

pub use self::stream::RowStream;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use sqlparser::ast::{self, ObjectName, SelectItem, SetExpr, Statement, TableFactor, TableObject};

use crate::services::error::Error;
use crate::services::kv::{Op, OpResult};
use crate::services::sql::SqlHost;
use crate::services::sql::catalog::{Catalog, PUBLIC_SCHEMA, TableDescriptor};
use crate::services::sql::error::{SERIALIZATION_FAILURE, SqlError};
use crate::services::sql::expr::{column_type, infer_params, infer_params_against};
use crate::services::sql::limits::{self, MemoryBudget};
use crate::services::sql::parse::{Flavor, Parsed, name_parts, parse_tokens, tokenize};
use crate::services::sql::session::SessionHandle;
use crate::services::sql::stack::OnLargeStack;
use crate::services::sql::users::Users;
use crate::services::sql::value::{SqlType, Value};

use self::ddl::split_fields;
use self::dml::delete_table_name;

/// How many times a statement whose guarded rows changed underneath is retried.
const STATEMENT_RETRIES: usize = 5;

/// One result column.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Column name.
    pub name: String,
    /// Column type.
    pub ty: SqlType,
}

/// What a statement produced.
#[derive(Debug)]
pub enum Output {
    /// Rows produced as the client reads them (a SELECT that holds no rows itself).
    Stream {
        /// The columns.
        fields: Vec<Field>,
        /// The rows, in order.
        rows: RowStream,
    },
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
    statement_memory: u64,
    /// Room for statements deeper than [`limits::SHALLOW_EXPRESSION_DEPTH`].
    deep_statements: tokio::sync::Semaphore,
}

/// A statement text, parsed or about to be.
enum Text {
    /// Parsed: its expressions are shallow enough for any task's stack.
    Parsed(Arc<Vec<Parsed>>),
    /// Within the limits but deep: parsed, run and dropped in [`SqlEngine::on_large_stack`].
    Deep(Vec<sqlparser::tokenizer::Token>),
}

/// Most statement texts whose parse is kept. Clients repeat a few texts (prepared statements,
/// ORMs), and the extended protocol asks to describe and to execute the same text: parsing
/// each once took a tenth of a point read's CPU time. Full: forget them all.
const PARSE_CACHE_ENTRIES: usize = 1024;

/// Longest statement text whose parse is kept: a large one (a bulk UPSERT, a long IN list) is
/// rarely repeated, and its tree would stay in memory until the cache is next cleared.
const PARSE_CACHE_MAX_TEXT: usize = 16 * 1024;

impl SqlEngine {
    /// An engine running statements on `host`, reading the catalog through `catalog`; each
    /// statement may materialize up to `statement_memory` bytes.
    pub fn new(host: Arc<dyn SqlHost>, catalog: Arc<Catalog>, statement_memory: u64) -> Self {
        Self {
            host,
            catalog,
            parsed: Default::default(),
            statement_memory,
            deep_statements: tokio::sync::Semaphore::new(limits::DEEP_STATEMENTS_AT_ONCE),
        }
    }

    /// A fresh memory budget for one statement (or one attempt of it).
    fn budget(&self) -> MemoryBudget {
        MemoryBudget::new(self.statement_memory)
    }

    /// Parses `sql`, remembered by statement text (parsing is a pure function of the text);
    /// a deep statement is only tokenized and checked, and never remembered.
    fn parse(&self, sql: &str) -> Result<Text, SqlError> {
        if let Some(parsed) = self.parsed.lock().unwrap_or_else(|p| p.into_inner()).get(sql) {
            return Ok(Text::Parsed(parsed.clone()));
        }
        let tokens = tokenize(sql)?;
        if limits::check_depth(&tokens)? > limits::SHALLOW_EXPRESSION_DEPTH {
            return Ok(Text::Deep(tokens));
        }
        let parsed = Arc::new(parse_tokens(sql, tokens)?);
        if sql.len() > PARSE_CACHE_MAX_TEXT {
            return Ok(Text::Parsed(parsed));
        }
        let mut cache = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= PARSE_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(sql.to_string(), parsed.clone());
        Ok(Text::Parsed(parsed))
    }

    /// Runs `statement` (which parses, runs and drops a deep statement) on a stack of
    /// [`limits::DEEP_STATEMENT_STACK`], once one of the node's
    /// [`limits::DEEP_STATEMENTS_AT_ONCE`] places for deep statements is free.
    async fn on_large_stack<T>(&self, statement: impl Future<Output = T>) -> T {
        let _place = self.deep_statements.acquire().await.expect("the semaphore is never closed");
        OnLargeStack::new(statement, limits::DEEP_STATEMENT_STACK).await
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
    /// Runs every statement of `sql` (simple protocol); stops at the first error.
    pub async fn execute(&self, session: &SessionHandle, sql: &str, params: &[Value]) -> Vec<Result<Output, SqlError>> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.parse(sql))) {
            Ok(Ok(Text::Parsed(parsed))) => self.run_all(session, &parsed, params).await,
            Ok(Ok(Text::Deep(tokens))) => {
                self.on_large_stack(async move {
                    match std::panic::catch_unwind(AssertUnwindSafe(|| parse_tokens(sql, tokens))) {
                        Ok(Ok(parsed)) => self.run_all(session, &parsed, params).await,
                        Ok(Err(err)) => vec![Err(err)],
                        Err(panic) => vec![Err(panicked(panic))],
                    }
                })
                .await
            }
            Ok(Err(err)) => vec![Err(err)],
            Err(panic) => vec![Err(panicked(panic))],
        }
    }

    /// Runs `parsed` in order; stops at the first error.
    async fn run_all(
        &self,
        session: &SessionHandle,
        parsed: &[Parsed],
        params: &[Value],
    ) -> Vec<Result<Output, SqlError>> {
        let mut outputs = Vec::new();
        for statement in parsed {
            let result = isolated(self.run(session, statement, params)).await;
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
        isolated(self.describe_unguarded(session, sql)).await
    }

    async fn describe_unguarded(&self, session: &SessionHandle, sql: &str) -> Result<Description, SqlError> {
        match self.parse(sql)? {
            Text::Parsed(parsed) => self.describe_parsed(session, &parsed).await,
            Text::Deep(tokens) => {
                self.on_large_stack(async move { self.describe_parsed(session, &parse_tokens(sql, tokens)?).await })
                    .await
            }
        }
    }

    async fn describe_parsed(&self, session: &SessionHandle, parsed: &[Parsed]) -> Result<Description, SqlError> {
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
                    infer_params_against(limit, SqlType::Int, None, &mut description.params);
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
                            infer_params_against(expr, table.columns[col].ty, Some(&table), &mut description.params);
                        }
                    }
                }
            }
            Statement::Update(update) => {
                if let TableFactor::Table { name, .. } = &update.table.relation {
                    let table = self.table(session, name).await?;
                    for assignment in &update.assignments {
                        // Named as sqlparser prints it, folded as an unquoted identifier.
                        let target = assignment.target.to_string().to_lowercase();
                        let ty = column_type(Some(&table), &target);
                        infer_params_against(&assignment.value, ty, Some(&table), &mut description.params);
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

    async fn run(&self, session: &SessionHandle, parsed: &Parsed, params: &[Value]) -> Result<Output, SqlError> {
        let (statement, flavor) = match parsed {
            Parsed::Split { table, rows } => return self.split_at(session, table, rows, params).await,
            Parsed::Statement(statement, flavor) => (statement, *flavor),
        };
        match &**statement {
            Statement::Query(query) => self.select(session, query, params).await,
            Statement::Insert(insert) => retry_on_conflict(move || self.insert(session, insert, flavor, params)).await,
            Statement::Update(update) => retry_on_conflict(move || self.update(session, update, params)).await,
            Statement::Delete(delete) => retry_on_conflict(move || self.delete(session, delete, params)).await,
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
            Statement::Set(set) => self.set(session, set, params).await,
            Statement::ShowVariable { variable } => self.show(session, variable).await,
            Statement::ShowDatabases { .. } => self.show_databases().await,
            Statement::ShowTables { .. } => self.show_tables(session).await,
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
}

/// Runs `statement` so that a panic in it fails only this statement (XX000), not the
/// connection's task or, in a process that aborts on panic, the node. Logged once here.
pub(crate) async fn isolated<T, F>(statement: F) -> Result<T, SqlError>
where
    F: Future<Output = Result<T, SqlError>>,
{
    AssertUnwindSafe(statement).catch_unwind().await.unwrap_or_else(|panic| Err(panicked(panic)))
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> SqlError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    tracing::error!(panic = %message, "SQL statement panicked; only this statement failed");
    SqlError::new("XX000", "internal error: the statement failed unexpectedly (see the node's log)")
}

/// Runs `attempt` until it does not fail with a serialization failure, at most
/// [`STATEMENT_RETRIES`] more times: such a failure means the rows it read changed before its
/// batch applied, so running it again on fresh data may succeed.
async fn retry_on_conflict<F, Fut>(mut attempt: F) -> Result<Output, SqlError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Output, SqlError>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(err) if err.code == SERIALIZATION_FAILURE && retries < STATEMENT_RETRIES => retries += 1,
            other => return other,
        }
    }
}

fn rows_output(columns: &[(&str, SqlType)], rows: Vec<Vec<Value>>) -> Output {
    Output::Rows { fields: columns.iter().map(|(name, ty)| Field { name: name.to_string(), ty: *ty }).collect(), rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_statement_becomes_an_internal_error() {
        let failed = isolated(async {
            if std::hint::black_box(true) {
                panic!("a bug in one statement");
            }
            Ok(())
        })
        .await;
        assert_eq!(failed.unwrap_err().code, "XX000");
        assert_eq!(isolated(async { Ok::<_, SqlError>(7) }).await, Ok(7));
    }
}
