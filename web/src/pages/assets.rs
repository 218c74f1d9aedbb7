//! Static assets embedded in the binary and served under content-hashed names
//! (`/assets/<stem>-<first 16 hex of SHA-256>.<ext>`) with a one-year, `immutable` cache
//! lifetime: a changed file gets a new name, so a cached copy is never stale. An old or
//! unknown name answers 404.
//!
//! Assets: `dashboard.js`, the live-update script of the metrics dashboard (vanilla JS, no
//! build step; the pages' CSP allows scripts from this origin only, never inline).

use std::sync::LazyLock;

use http::{HeaderValue, header};
use sha2::{Digest, Sha256};

use crate::api::ApiState;
use crate::http::{ApiError, Reply, Request};

/// `Cache-Control` of a hashed asset: one year, never revalidated.
pub const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Hex digits of the content hash in an asset's name.
const HASH_HEX_CHARS: usize = 16;

/// One embedded file.
struct Asset {
    /// `/assets/<stem>-<hash>.<ext>`.
    path: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

fn hashed(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    let digest = crate::audit::hex(&Sha256::digest(bytes));
    let hash = digest.get(..HASH_HEX_CHARS).unwrap_or(&digest);
    Asset { path: format!("/assets/{stem}-{hash}.{ext}"), content_type, bytes }
}

static DASHBOARD_JS: LazyLock<Asset> = LazyLock::new(|| {
    hashed("dashboard", "js", "text/javascript; charset=utf-8", include_bytes!("assets/dashboard.js"))
});

/// The hashed path of the dashboard's live script.
pub(crate) fn dashboard_script_path() -> &'static str {
    &DASHBOARD_JS.path
}

/// `GET /assets/{name}`.
pub(crate) async fn serve(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let name = request.param("name")?;
    let asset: &Asset = &DASHBOARD_JS;
    if asset.path.strip_prefix("/assets/") != Some(name) {
        return Err(ApiError::NotFound("no such asset".to_owned()));
    }
    Ok(Reply::bytes(asset.content_type, asset.bytes)
        .header(header::CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE_CONTROL)))
}
