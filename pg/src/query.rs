//! The simple and extended query protocols over the query service: every statement runs as
//! the session's caller, under the policy, quota and limits of `POST /api/query`.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bluewave_query::ResultStream;
use bluewave_query::datafusion::arrow::datatypes::DataType;
use futures::{Sink, StreamExt, stream};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use crate::error::from_query;
use crate::session::Session;
use crate::types;

/// A parsed (planned) statement of the extended protocol.
#[derive(Debug)]
pub(crate) struct Prepared {
    sql: String,
    /// The type each `$n` is described and decoded as: the client's where it gave one, else
    /// the plan's.
    params: Vec<Type>,
    /// The type the plan expects for each `$n` (`None`: open).
    expected: Vec<Option<DataType>>,
    /// The columns of the result.
    schema: bluewave_query::datafusion::arrow::datatypes::SchemaRef,
}

/// The query handlers of one session.
pub(crate) struct Queries {
    session: Arc<Session>,
    parser: Arc<Parser>,
}

impl Queries {
    pub(crate) fn new(session: Arc<Session>) -> Self {
        Self { parser: Arc::new(Parser(Arc::clone(&session))), session }
    }
}

/// Plans statements at Parse (under the caller's policy, without counting a query).
pub(crate) struct Parser(Arc<Session>);

/// Waits for the first batch (so a refusal, a timeout or a cancel before any row is an
/// `ErrorResponse`, and a cancel request interrupts it), then streams the rest.
async fn respond(mut results: ResultStream, formats: Option<&Format>) -> PgWireResult<QueryResponse> {
    let fields: Arc<Vec<FieldInfo>> = Arc::new(types::fields(&results.schema(), formats));
    let first = match results.next().await {
        None => None,
        Some(Ok(batch)) => Some(batch),
        Some(Err(e)) => return Err(from_query(&e)),
    };
    let encode = Arc::clone(&fields);
    let rows = stream::iter(first.map(Ok)).chain(results).flat_map(move |batch| {
        let rows = match batch {
            Ok(batch) => match types::encode_batch(&batch, &encode) {
                Ok(rows) => rows.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            },
            Err(e) => vec![Err(from_query(&e))],
        };
        stream::iter(rows)
    });
    Ok(QueryResponse::new(fields, rows))
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.session.busy();
        let policy = self.session.policy(true).await?;
        let results = self.session.shared.query.sql(query, &policy).await.map_err(|e| from_query(&e))?;
        Ok(vec![Response::Query(respond(results, None).await?)])
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let _busy = self.0.busy();
        let policy = self.0.policy(false).await?;
        let described = self.0.shared.query.describe_sql(sql, &policy).await.map_err(|e| from_query(&e))?;
        let count = described.params.len().max(types.len());
        let params = (0..count)
            .map(|i| match types.get(i) {
                Some(Some(given)) => given.clone(),
                _ => types::param_type(described.params.get(i).and_then(Option::as_ref)),
            })
            .collect();
        let mut expected = described.params;
        expected.resize(count, None);
        Ok(Some(Arc::new(Prepared { sql: sql.to_owned(), params, expected, schema: described.schema })))
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(statement.params.clone())
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        formats: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(types::fields(&statement.schema, formats))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Arc<Prepared>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _busy = self.session.busy();
        let prepared = &portal.statement.statement;
        let params = prepared
            .params
            .iter()
            .zip(&prepared.expected)
            .enumerate()
            .map(|(index, (pg, expected))| types::param(portal, index, pg, expected.as_ref()))
            .collect::<PgWireResult<Vec<_>>>()?;
        let policy = self.session.policy(true).await?;
        let results = self
            .session
            .shared
            .query
            .sql_with_params(&prepared.sql, params, &policy)
            .await
            .map_err(|e| from_query(&e))?;
        Ok(Response::Query(respond(results, Some(&portal.result_column_format)).await?))
    }
}
