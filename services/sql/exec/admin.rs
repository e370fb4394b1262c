//! Users and roles (CREATE/ALTER/DROP USER and ROLE, GRANT and REVOKE admin, SHOW USERS) and
//! session settings (USE, SET, SHOW).

use sqlparser::ast::{self, AlterRoleOperation, Expr, ObjectName, ObjectNamePart, RoleOption};

use super::{Output, SqlEngine, rows_output};
use crate::services::sql::SERVER_VERSION;
use crate::services::sql::error::SqlError;
use crate::services::sql::expr::{Ctx, eval};
use crate::services::sql::parse::{Flavor, ident, name_parts};
use crate::services::sql::session::SessionHandle;
use crate::services::sql::users::{self, ADMIN_ROLE, ScramVerifier, UserRecord};
use crate::services::sql::value::{SqlType, Value};

impl SqlEngine {
    pub(super) async fn use_database(&self, session: &SessionHandle, database: &str) -> Result<(), SqlError> {
        if self.catalog().database(database).await?.is_none() {
            return Err(SqlError::new("3D000", format!("database \"{database}\" does not exist")));
        }
        session.set_database(database);
        Ok(())
    }

    pub(super) async fn set(
        &self,
        session: &SessionHandle,
        set: &ast::Set,
        params: &[Value],
    ) -> Result<Output, SqlError> {
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

    pub(super) async fn show(&self, session: &SessionHandle, variable: &[ast::Ident]) -> Result<Output, SqlError> {
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

    pub(super) async fn require_admin(&self, session: &SessionHandle) -> Result<(), SqlError> {
        let user = self.users().get(&session.username()).await?;
        if user.is_some_and(|u| u.is_admin) {
            Ok(())
        } else {
            Err(SqlError::insufficient_privilege("only users with the admin role are allowed to manage users"))
        }
    }

    pub(super) async fn create_role(
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

    pub(super) async fn alter_role(
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

    pub(super) async fn set_admin(
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
