//! `GET /api/usage`: the caller's daily query usage against their plan's quota (the numbers
//! of the `/account/usage` page).

use std::sync::Arc;

use crate::api::{ApiState, blocking};
use crate::http::{ApiError, Reply, Request};

/// The caller's query usage today and over the last seven days.
#[utoipa::path(get, path = "/api/usage", tag = "query", security(("bearer" = [])),
    responses((status = 200, description = "`{day, used, quota, remaining, resets_in_s, history: [{day, used}]}`; days are UTC day numbers since 1970-01-01, `quota` and `remaining` null when the plan has no daily limit"),
        (status = 401, description = "No valid bearer token")))]
pub(crate) async fn usage(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let auth = Arc::clone(&request.state().auth);
    let usage = blocking(move || Ok(auth.query_usage(&caller)?)).await?;
    Reply::json(&usage)
}
