//! [`ShopError`]: every way a shop operation can fail, and its HTTP answer (the one mapping).

use crate::audit::AuditError;
use crate::auth::AuthError;
use crate::http::ApiError;

use super::state::IllegalTransition;
use super::subs_state::IllegalSubscriptionTransition;

/// Result of shop operations.
pub type ShopResult<T> = std::result::Result<T, ShopError>;

/// Why the Stripe-style webhook signature was refused (each a 400 with this reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefusal {
    /// No `Stripe-Signature` header, or one that is not text.
    #[error("missing Stripe-Signature header")]
    Missing,
    /// The header has no `t=` timestamp or no `v1=` signature, or they do not parse.
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// The timestamp is further from now than the tolerance (a replay or a wrong clock).
    #[error("signature timestamp outside the tolerance")]
    OutsideTolerance,
    /// No `v1` signature matches (constant-time comparison).
    #[error("no signature matches")]
    Mismatch,
}

/// Errors of the shop (the web crate's sub-enum for the commerce layer).
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// A field the shop refuses (400).
    #[error("{field}: {reason}")]
    InvalidInput {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No such object, or one the caller may not see (404: another customer's order answers
    /// exactly as a missing one).
    #[error("{kind} not found")]
    NotFound {
        /// What was looked for.
        kind: &'static str,
    },
    /// Fewer units in stock than asked for (409).
    #[error("only {available} of {product_id} in stock")]
    OutOfStock {
        /// The product.
        product_id: String,
        /// Units left.
        available: u32,
    },
    /// The order's state does not allow this step (409).
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    /// The subscription's state does not allow this step (409).
    #[error(transparent)]
    SubscriptionTransition(#[from] IllegalSubscriptionTransition),
    /// A named limit was reached (409).
    #[error("limit reached: at most {max} {what}")]
    LimitReached {
        /// What is limited.
        what: &'static str,
        /// The limit.
        max: u64,
    },
    /// The cart is empty (409).
    #[error("the cart is empty")]
    EmptyCart,
    /// The caller's role may not do this (403).
    #[error("{0}")]
    Forbidden(&'static str),
    /// A webhook whose signature does not verify (400).
    #[error("webhook signature refused: {0}")]
    Signature(#[from] SignatureRefusal),
    /// A webhook body that is not a payment event we know (400).
    #[error("invalid webhook event: {0}")]
    InvalidEvent(String),
    /// An auth failure (fresh-auth gate, permissions), answered as auth answers it.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The storage layer failed (500).
    #[error("shop store: {0}")]
    Store(#[source] redb::Error),
    /// A stored record does not decode (500).
    #[error("corrupt shop record in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The codec's reason.
        reason: String,
    },
    /// `shop.redb` has a layout this build does not read (start-up error).
    #[error("shop format version {found} is not supported (this build reads {supported})")]
    FormatVersion {
        /// The file's version.
        found: u64,
        /// This build's.
        supported: u64,
    },
    /// The audit log could not be written (500; the change was made).
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    /// Randomness or a file operation failed (500).
    #[error("shop I/O: {0}")]
    Io(#[source] std::io::Error),
}

macro_rules! redb_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for ShopError {
            fn from(error: $ty) -> Self {
                Self::Store(error.into())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl ShopError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput { field, reason: reason.into() }
    }
}

impl From<ShopError> for ApiError {
    fn from(error: ShopError) -> Self {
        match error {
            ShopError::InvalidInput { .. } | ShopError::Signature(_) | ShopError::InvalidEvent(_) => {
                Self::InvalidInput(error.to_string())
            }
            ShopError::NotFound { .. } => Self::NotFound(error.to_string()),
            ShopError::OutOfStock { .. }
            | ShopError::Transition(_)
            | ShopError::SubscriptionTransition(_)
            | ShopError::LimitReached { .. }
            | ShopError::EmptyCart => Self::Conflict(error.to_string()),
            ShopError::Forbidden(_) => Self::Forbidden(error.to_string()),
            ShopError::Auth(auth) => auth.into(),
            ShopError::Store(_)
            | ShopError::Corrupt { .. }
            | ShopError::FormatVersion { .. }
            | ShopError::Audit(_)
            | ShopError::Io(_) => Self::internal(error),
        }
    }
}
