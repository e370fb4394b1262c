//! The PostgreSQL wire protocol (pgwire): authentication at startup, the simple and the
//! extended query protocols, and the mapping of [`Output`]s and [`SqlError`]s to protocol
//! messages. Every statement is recorded in the connection's session while it runs.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_execution_response};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::services::sql::SERVER_VERSION;
use crate::services::sql::SqlHost;
use crate::services::sql::catalog::DEFAULT_DATABASE;
use crate::services::sql::error::SqlError;
use crate::services::sql::exec::{Description, Field, Output, SqlEngine};
use crate::services::sql::session::SessionHandle;
use crate::services::sql::users::{self, Users};
use crate::services::sql::value::{SqlType, Value};

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into())))
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message.into())))
}

fn sql_error(err: SqlError) -> PgWireError {
    user_error(err.code, err.message)
}

/// What every connection's handlers share.
pub struct Shared {
    pub(crate) engine: SqlEngine,
    pub(crate) insecure: bool,
    /// Verifiers for logins that cannot succeed, so they fail like a wrong password.
    pub(crate) mock: users::MockVerifiers,
}

impl Shared {
    fn host(&self) -> &Arc<dyn SqlHost> {
        self.engine.host()
    }

    fn session<C: ClientInfo>(&self, client: &C) -> PgWireResult<SessionHandle> {
        self.host().sessions().get(&client.socket_addr()).ok_or_else(|| user_error("08006", "session not registered"))
    }
}

/// The one answer to every failed login, whatever the reason (no such user, NOLOGIN, no
/// password, wrong password): PostgreSQL's wording and SQLSTATE, with the name the client
/// sent, so the answer does not tell which users exist.
fn login_failed(user: &str) -> PgWireError {
    fatal("28P01", format!("password authentication failed for user \"{user}\""))
}

/// The user name a client sent in its startup message.
fn startup_user<C: ClientInfo>(client: &C) -> String {
    client.metadata().get("user").cloned().unwrap_or_default()
}

/// Looks up SCRAM verifiers. A login that cannot succeed gets a mock verifier and so runs
/// the whole exchange, failing at the proof like a wrong password, in the same time.
struct ScramSource {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ScramSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSource")
    }
}

#[async_trait]
impl AuthSource for ScramSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(login.user().unwrap_or_default().to_owned()))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = users::normalize(login.user().unwrap_or_default());
        let record =
            Users::new(self.shared.host().as_ref()).get(&user).await.map_err(|err| fatal("57P03", err.to_string()))?;
        match record {
            Some(users::UserRecord { can_login: true, scram: Some(verifier), .. }) => {
                Ok((verifier.scram_secret(), None))
            }
            _ => Ok((self.shared.mock.verifier(&user).scram_secret(), None)),
        }
    }
}

fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = SERVER_VERSION.to_string();
    parameters
}

/// Authenticates a connection, then registers who it is in its session.
pub struct Startup {
    shared: Arc<Shared>,
    scram: Option<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
}

impl Startup {
    fn new(shared: Arc<Shared>) -> Self {
        let scram = (!shared.insecure).then(|| {
            let mut scram = ScramAuth::new(Arc::new(ScramSource { shared: shared.clone() }));
            scram.set_iterations(users::SCRAM_ITERATIONS as usize);
            SASLAuthStartupHandler::new(Arc::new(server_parameters())).with_scram(scram)
        });
        Self { shared, scram }
    }

    fn register<C: ClientInfo>(&self, client: &C) {
        let Ok(session) = self.shared.session(client) else { return };
        let metadata = client.metadata();
        let user = users::normalize(metadata.get("user").map(String::as_str).unwrap_or_default());
        let database = metadata.get("database").cloned().unwrap_or_else(|| DEFAULT_DATABASE.to_string());
        let application = metadata.get("application_name").cloned().unwrap_or_default();
        session.set_user(&user, &database, &application);
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            if self.shared.host().node_id().is_none() {
                return Err(fatal("57P03", "node is not initialized: run `ranged init` or wait for it to join"));
            }
            if !self.shared.insecure && !client.is_secure() {
                return Err(fatal("28000", "node is running secure mode, SSL connection required"));
            }
            if self.shared.insecure {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let user = users::normalize(client.metadata().get("user").map(String::as_str).unwrap_or_default());
                // As in CockroachDB's insecure mode: any existing user with LOGIN, no password.
                let record = Users::new(self.shared.host().as_ref())
                    .get(&user)
                    .await
                    .map_err(|err| fatal("57P03", err.to_string()))?;
                if !record.is_some_and(|r| r.can_login) {
                    return Err(login_failed(&startup_user(client)));
                }
                finish_authentication(client, &server_parameters()).await?;
                self.register(client);
                return Ok(());
            }
        }
        let Some(scram) = &self.scram else { return Ok(()) };
        // pgwire names the user of the SCRAM message, which PostgreSQL clients leave empty
        // (the name is in the startup message): answer with the name the client logged in as.
        scram.on_startup(client, message).await.map_err(|err| match err {
            PgWireError::InvalidPassword(_) => login_failed(&startup_user(client)),
            other => other,
        })?;
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            self.register(client);
        }
        Ok(())
    }
}

fn field_infos(fields: &[Field], format: &Format) -> Vec<FieldInfo> {
    fields
        .iter()
        .enumerate()
        .map(|(i, field)| FieldInfo::new(field.name.clone(), None, None, field.ty.pg_type(), format.format_for(i)))
        .collect()
}

fn encode_row(encoder: &mut DataRowEncoder, row: Vec<Value>) -> PgWireResult<DataRow> {
    for value in row {
        match value {
            Value::Null => encoder.encode_field(&None::<i64>)?,
            Value::Int(i) => encoder.encode_field(&i)?,
            Value::Float(f) => encoder.encode_field(&f)?,
            Value::String(s) => encoder.encode_field(&s)?,
            Value::Bytes(b) => encoder.encode_field(&b)?,
            Value::Bool(b) => encoder.encode_field(&b)?,
            Value::Timestamp(us) => encoder.encode_field(&Value::as_system_time(us))?,
        }
    }
    Ok(encoder.take_row())
}

fn encode_rows(fields: Arc<Vec<FieldInfo>>, rows: Vec<Vec<Value>>) -> PgWireResult<Vec<PgWireResult<DataRow>>> {
    let mut encoder = DataRowEncoder::new(fields);
    rows.into_iter().map(|row| encode_row(&mut encoder, row).map(Ok)).collect()
}

/// The end of a statement in the session registry and the statement counters: when its
/// response is built, or, for streamed rows, once the last row is sent (or the rows are
/// dropped unsent).
struct StatementEnd {
    host: Arc<dyn SqlHost>,
    session: SessionHandle,
    query_id: [u8; 16],
    started: std::time::Instant,
}

impl Drop for StatementEnd {
    fn drop(&mut self) {
        self.host.sql_stats().record(self.started.elapsed());
        self.session.end_statement(self.query_id);
    }
}

/// The protocol response of `output`; streamed rows carry `end` until they are done.
fn response(output: Output, format: &Format, end: Option<StatementEnd>) -> PgWireResult<Response> {
    Ok(match output {
        Output::Stream { fields, rows } => {
            let infos = Arc::new(field_infos(&fields, format));
            let mut encoder = DataRowEncoder::new(infos.clone());
            let rows = rows.0.map(move |row| {
                let _statement = &end;
                encode_row(&mut encoder, row.map_err(sql_error)?)
            });
            Response::Query(QueryResponse::new(infos, rows))
        }
        Output::Rows { fields, rows } => {
            let infos = Arc::new(field_infos(&fields, format));
            let rows = encode_rows(infos.clone(), rows)?;
            Response::Query(QueryResponse::new(infos, stream::iter(rows)))
        }
        Output::Command { tag, rows } => {
            let mut tag_value = Tag::new(tag);
            if tag == "INSERT" {
                tag_value = tag_value.with_oid(0);
            }
            if let Some(rows) = rows {
                tag_value = tag_value.with_rows(rows);
            }
            Response::Execution(tag_value)
        }
    })
}

fn error_response(err: SqlError) -> Response {
    Response::Error(Box::new(ErrorInfo::new("ERROR".into(), err.code.into(), err.message)))
}

/// Runs statements for one connection.
pub struct Queries {
    shared: Arc<Shared>,
    parser: Arc<NoopQueryParser>,
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.shared.session(client)?;
        let query_id = session.begin_statement(query);
        session.executing(query_id, 0);
        let started = std::time::Instant::now();
        let outputs = self.shared.engine.execute(&session, query, &[]).await;
        let mut end = Some(StatementEnd { host: self.shared.host().clone(), session, query_id, started });
        // Rows are sent in statement order, so the statement ends with the last stream's rows.
        let last_stream = outputs.iter().rposition(|output| matches!(output, Ok(Output::Stream { .. })));
        let mut responses = Vec::with_capacity(outputs.len());
        for (i, output) in outputs.into_iter().enumerate() {
            let end = if Some(i) == last_stream { end.take() } else { None };
            responses.push(match output {
                Ok(output) => response(output, &Format::UnifiedText, end)?,
                Err(err) => error_response(err),
            });
        }
        Ok(responses)
    }
}

/// The type of placeholder `i`: the one the client declared in Parse, else the one inferred
/// from the statement, else text (the type the Describe answer told the client to send).
fn parameter_type(declared: &[Option<Type>], description: &Description, i: usize) -> Type {
    declared
        .get(i)
        .cloned()
        .flatten()
        .filter(|t| *t != Type::UNKNOWN)
        .or_else(|| description.params.get(i).copied().flatten().map(SqlType::pg_type))
        .unwrap_or(Type::TEXT)
}

fn decode_params(portal: &Portal<String>, description: &Description) -> PgWireResult<Vec<Value>> {
    let mut params = Vec::with_capacity(portal.parameter_len());
    for i in 0..portal.parameter_len() {
        let ty = parameter_type(&portal.statement.parameter_types, description, i);
        let value = match ty {
            Type::INT2 => portal.parameter::<i16>(i, &ty)?.map(|v| Value::Int(v as i64)),
            Type::INT4 => portal.parameter::<i32>(i, &ty)?.map(|v| Value::Int(v as i64)),
            Type::INT8 => portal.parameter::<i64>(i, &ty)?.map(Value::Int),
            Type::FLOAT4 => portal.parameter::<f32>(i, &ty)?.map(|v| Value::Float(v as f64)),
            Type::FLOAT8 => portal.parameter::<f64>(i, &ty)?.map(Value::Float),
            Type::BOOL => portal.parameter::<bool>(i, &ty)?.map(Value::Bool),
            Type::BYTEA => portal.parameter::<Vec<u8>>(i, &ty)?.map(Value::Bytes),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => portal.parameter::<std::time::SystemTime>(i, &ty)?.map(|t| {
                let micros = match t.duration_since(std::time::UNIX_EPOCH) {
                    Ok(d) => d.as_micros() as i64,
                    Err(e) => -(e.duration().as_micros() as i64),
                };
                Value::Timestamp(micros)
            }),
            _ => portal.parameter::<String>(i, &Type::TEXT)?.map(Value::String),
        };
        params.push(value.unwrap_or(Value::Null));
    }
    Ok(params)
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// pgwire gathers every row of a portal before sending any when the client asks for all
    /// of them (`max_rows` 0, what most drivers send), which would hold a streamed result
    /// whole: such an Execute sends the rows as they come instead. With a row limit pgwire
    /// holds at most that many at once and suspends the portal in between, so it is left to
    /// pgwire, as are the cases that produce no rows.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.max_rows != 0 || !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return self._on_execute(client, message).await;
        }
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let Some(Entry::Value(portal)) = client.portal_store().get_portal(name) else {
            return self._on_execute(client, message).await;
        };
        let state = portal.state();
        let mut state = state.lock().await;
        let mut results = match std::mem::replace(&mut *state, PortalExecutionState::Finished) {
            PortalExecutionState::Initial => {
                client.set_state(PgWireConnectionState::QueryInProgress);
                match ExtendedQueryHandler::do_query(self, client, &portal, 0).await {
                    Ok(Response::Query(results)) => results,
                    Ok(Response::Execution(tag)) => {
                        send_execution_response(client, tag).await?;
                        client.set_state(PgWireConnectionState::ReadyForQuery);
                        return Ok(());
                    }
                    Ok(_) => return Err(user_error("XX000", "internal error: unexpected response to Execute")),
                    Err(err) => {
                        *state = PortalExecutionState::Initial;
                        return Err(err);
                    }
                }
            }
            PortalExecutionState::Suspended(results) => {
                client.set_state(PgWireConnectionState::QueryInProgress);
                results
            }
            PortalExecutionState::Finished => {
                drop(state);
                return self._on_execute(client, message).await;
            }
        };
        drop(state);
        let tag = results.command_tag().to_owned();
        let mut sent = 0;
        while let Some(row) = results.data_rows().next().await {
            client.feed(PgWireBackendMessage::DataRow(row?)).await?;
            sent += 1;
        }
        client.send(PgWireBackendMessage::CommandComplete(Tag::new(&tag).with_rows(sent).into())).await?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        statement: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.shared.session(client)?;
        let description = self.shared.engine.describe(&session, &statement.statement).await.map_err(sql_error)?;
        let count = description.params.len().max(statement.parameter_types.len());
        let params = (0..count).map(|i| parameter_type(&statement.parameter_types, &description, i)).collect();
        Ok(DescribeStatementResponse::new(params, field_infos(&description.fields, &Format::UnifiedText)))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.shared.session(client)?;
        let description =
            self.shared.engine.describe(&session, &portal.statement.statement).await.map_err(sql_error)?;
        Ok(DescribePortalResponse::new(field_infos(&description.fields, &portal.result_column_format)))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.shared.session(client)?;
        let sql = &portal.statement.statement;
        let query_id = session.begin_statement(sql);
        let started = std::time::Instant::now();
        let result = async {
            let description = self.shared.engine.describe(&session, sql).await?;
            let params = decode_params(portal, &description).map_err(|err| SqlError::new("22P02", err.to_string()))?;
            session.executing(query_id, 0);
            let mut outputs = self.shared.engine.execute(&session, sql, &params).await;
            if outputs.len() != 1 {
                return Err(SqlError::syntax("the extended protocol takes exactly one statement"));
            }
            outputs.remove(0)
        }
        .await;
        let end = StatementEnd { host: self.shared.host().clone(), session, query_id, started };
        match result {
            Ok(output) => response(output, &portal.result_column_format, Some(end)),
            Err(err) => Err(sql_error(err)),
        }
    }
}

/// The handler factory pgwire calls for each connection.
pub struct Handlers {
    shared: Arc<Shared>,
    queries: Arc<Queries>,
}

impl Handlers {
    /// Handlers over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        let queries = Arc::new(Queries { shared: shared.clone(), parser: Arc::new(NoopQueryParser::new()) });
        Self { shared, queries }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup::new(self.shared.clone()))
    }
}
