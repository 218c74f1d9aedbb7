//! `POST /api/query`: one read-only SQL statement under the caller's plan, answered in the
//! format `Accept` asks for and streamed batch by batch (the client's reading pace bounds the
//! server's memory).
//!
//! The status is sent with the first encoded chunk, not before: a query that fails before it
//! produces anything (a timeout of a `count(*)` that never finished, a stall, a memory or row
//! limit) gets its error status and JSON body. A query that fails after the first chunk ends
//! its `200` body with the query layer's error record (`bluewave_query::error_record`,
//! `query/README.md`), and the body then ends normally so the record reaches the client.

use bluewave_query::{Format, encode};
use futures_util::StreamExt as _;
use serde::Deserialize;

use crate::api::ApiState;
use crate::auth::Permission;
use crate::header;
use crate::http::{ApiError, Reply, Request};

/// The SQL text.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqlBody {
    /// One `SELECT`/`WITH`/`VALUES`/`EXPLAIN` statement over `readings` and `buoys`.
    sql: String,
}

/// The answer format from `Accept`: the first listed type we produce; none or `*/*` is JSON.
fn negotiate(accept: Option<&str>) -> Result<Format, ApiError> {
    let Some(accept) = accept else { return Ok(Format::Json) };
    for media in accept.split(',') {
        let media = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let format = match media.as_str() {
            "application/json" | "application/*" | "*/*" => Format::Json,
            "text/csv" | "text/*" => Format::Csv,
            "application/vnd.apache.arrow.stream" => Format::ArrowIpc,
            "application/vnd.apache.parquet" => Format::Parquet,
            _ => continue,
        };
        return Ok(format);
    }
    Err(ApiError::NotAcceptable(
        "Accept must allow application/json, text/csv, application/vnd.apache.arrow.stream or \
         application/vnd.apache.parquet"
            .to_owned(),
    ))
}

/// Runs one read-only SQL statement under the caller's plan.
#[utoipa::path(post, path = "/api/query", request_body = SqlBody, tag = "query", security(("bearer" = [])),
    responses((status = 200, description = "Rows as JSON, CSV, Arrow IPC stream or Parquet (per Accept)"),
        (status = 400, description = "Invalid or refused SQL, or a limit of the plan hit before the first row (`query_row_limit`, `query_memory_limit`, `table_function_limit`)"),
        (status = 403, description = "Missing query:sql"),
        (status = 406, description = "No producible format in Accept"),
        (status = 429, description = "Daily query quota used up"),
        (status = 503, description = "Too many queries running (see Retry-After), or the query timed out (`query_timeout`) or produced nothing for the stall limit (`query_stalled`) before its first row")))]
pub(crate) async fn sql(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::QuerySql)?;
    let accept = request.headers().get(header::ACCEPT).map(|value| value.to_str().unwrap_or(""));
    let format = negotiate(accept)?;
    let body: SqlBody = request.json().await?;
    let policy = state.policy(&caller).await?;
    state.count_query(&caller).await?;
    let results = state.query.sql(&body.sql, &policy).await?;
    let mut chunks = encode(results, format);
    // Within the query's own deadline (the route's timeout is above the longest budget).
    let first = match chunks.next().await {
        None => return Ok(Reply::bytes(format.content_type(), Vec::new())),
        Some(first) => first?,
    };
    // After the first chunk an error has already been written as the error record: end the
    // body there instead of aborting it, so the client reads the record.
    let rest = chunks.take_while(|chunk| {
        if let Err(error) = chunk {
            tracing::info!(%error, "query failed after its first chunk; the answer ends with its error record");
        }
        std::future::ready(chunk.is_ok())
    });
    Ok(Reply::stream(format.content_type(), futures_util::stream::iter([Ok(first)]).chain(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_first_producible_type() {
        assert_eq!(negotiate(None).unwrap(), Format::Json);
        assert_eq!(negotiate(Some("text/csv")).unwrap(), Format::Csv);
        assert_eq!(
            negotiate(Some("image/png, application/vnd.apache.parquet;q=0.5")).unwrap(),
            Format::Parquet
        );
        assert_eq!(negotiate(Some("application/vnd.apache.arrow.stream")).unwrap(), Format::ArrowIpc);
        assert!(matches!(negotiate(Some("image/png")), Err(ApiError::NotAcceptable(_))));
    }
}
