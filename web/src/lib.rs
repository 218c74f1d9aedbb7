//! `bluewave-web`: the hyper HTTPS front (REST API, auth, shop and subscription pages).
//!
//! It is filled by the "HTTPS API and auth" issue; nothing here is implemented yet.
