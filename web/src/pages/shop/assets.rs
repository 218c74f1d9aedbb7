//! Static assets embedded in the binary (`web/assets/shop/`), served under content-hashed
//! names (`shop.<12 hex of SHA-256>.css`) with `Cache-Control: public, max-age=31536000,
//! immutable`: a changed file gets a new name, so a cached copy is never stale.

use std::sync::OnceLock;

use http::{HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::api::ApiState;
use crate::http::{ApiError, Reply, Request};

/// One embedded file.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 4] = [
    Asset {
        name: "shop.css",
        media_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../assets/shop/shop.css"),
    },
    Asset {
        name: "unit-compact.svg",
        media_type: "image/svg+xml",
        bytes: include_bytes!("../../../assets/shop/unit-compact.svg"),
    },
    Asset {
        name: "unit-container.svg",
        media_type: "image/svg+xml",
        bytes: include_bytes!("../../../assets/shop/unit-container.svg"),
    },
    Asset {
        name: "unit-solar.svg",
        media_type: "image/svg+xml",
        bytes: include_bytes!("../../../assets/shop/unit-solar.svg"),
    },
];

/// `Cache-Control` of a content-addressed file.
pub(crate) const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// (hashed name, asset), built once.
fn table() -> &'static [(String, &'static Asset)] {
    static TABLE: OnceLock<Vec<(String, &'static Asset)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let hash = crate::audit::hex(&Sha256::digest(asset.bytes));
                let (stem, ext) = asset.name.rsplit_once('.').unwrap_or((asset.name, ""));
                (format!("{stem}.{}.{ext}", hash.get(..12).unwrap_or(&hash)), asset)
            })
            .collect()
    })
}

/// The URL of asset `name` (e.g. `shop.css` → `/static/shop.1a2b3c4d5e6f.css`).
pub(crate) fn url(name: &str) -> String {
    table()
        .iter()
        .find(|(_, asset)| asset.name == name)
        .map_or_else(|| format!("/static/{name}"), |(hashed, _)| format!("/static/{hashed}"))
}

/// `GET /static/{file}`: an embedded asset by its hashed name.
pub(crate) async fn serve(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let file = request.param("file")?;
    let (_, asset) = table()
        .iter()
        .find(|(hashed, _)| hashed == file)
        .ok_or_else(|| ApiError::NotFound("no such asset".to_owned()))?;
    Ok(Reply::bytes(asset.media_type, asset.bytes)
        .status(StatusCode::OK)
        .header(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE))
        // An SVG opened on its own runs nothing.
        .header(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        ))
}
