//! A storefront on a real HTTPS server on loopback (real auth, engine, query service and
//! `shop.redb` in a tempdir), and a small browser-like client: cookies, CSRF tokens read from
//! the pages, form posts with this site's `Origin`. Shared by `shop_pages` and `shop_browser`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bluewave_engine::{Engine, EngineConfig};
use bluewave_query::{QueryConfig, QueryService};
use bluewave_web::shop_api::{ShopConfig, ShopService};
use bluewave_web::{
    ApiState, AuthService, CertificateDer, HttpConfig, HttpServer, LineProtocol, LineProtocolConfig, Method,
    NewUser, PrivateKeyDer, PrivatePkcs8KeyDer, Registry, Role, Secret, StatusCode, TlsIdentity, api_router,
    shop_routes,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use scraper::{Html, Selector};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::shop_store::fast_auth;

pub(crate) const PASSWORD: &str = "a-long-enough-password";
pub(crate) const ADMIN: &str = "admin@example.org";
pub(crate) const OPERATOR: &str = "operator@example.org";

pub(crate) struct Site {
    pub(crate) dir: TempDir,
    pub(crate) addr: SocketAddr,
    cert: CertificateDer<'static>,
    pub(crate) auth: Arc<AuthService>,
    pub(crate) shop: Arc<ShopService>,
    /// Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (Chromium's
    /// `--ignore-certificate-errors-spki-list`).
    pub(crate) spki_sha256: String,
    /// The engine behind the API (the browser suite's QUIC server ingests into it too).
    pub(crate) engine: Engine,
    /// The shop's manual clock (subscription periods), started at the system time.
    pub(crate) clock: bluewave_web::AuthClock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    ticker: tokio::task::JoinHandle<()>,
}

pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Bytes,
}

impl Page {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub(crate) fn html(&self) -> Html {
        Html::parse_document(&self.text())
    }
    /// The elements matching `css`.
    pub(crate) fn count(&self, css: &str) -> usize {
        self.html().select(&Selector::parse(css).unwrap()).count()
    }
    /// The text of the first element matching `css`.
    pub(crate) fn first_text(&self, css: &str) -> String {
        let html = self.html();
        let found = html.select(&Selector::parse(css).unwrap()).next().map(|e| e.text().collect::<String>());
        found.unwrap_or_else(|| panic!("no {css} in {}", self.text()))
    }
    /// The value of attribute `attribute` of the first element matching `css`.
    pub(crate) fn attr(&self, css: &str, attribute: &str) -> String {
        let html = self.html();
        let found = html
            .select(&Selector::parse(css).unwrap())
            .next()
            .and_then(|e| e.value().attr(attribute).map(str::to_owned));
        found.unwrap_or_else(|| panic!("no {css}[{attribute}] in {}", self.text()))
    }
}

impl Site {
    /// A server with the shop's demo catalogue, an operator and two customers.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(AuthService::open(dir.path(), fast_auth()).unwrap());
        auth.ensure_first_admin(ADMIN, Some(Secret::new(PASSWORD))).unwrap();
        let admin_pair = auth.login(ADMIN, &Secret::new(PASSWORD), [10, 9, 9, 9].into()).unwrap();
        let admin = auth.verify_access_token(admin_pair.access_token.expose()).unwrap();
        for (email, role) in [
            (OPERATOR, Role::Operator),
            ("alice@example.org", Role::Customer),
            ("bob@example.org", Role::Customer),
        ] {
            let new = NewUser { email: email.into(), password: Secret::new(PASSWORD), role, plan_id: None };
            auth.create_user(&admin, new).unwrap();
        }
        let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let clock = bluewave_web::AuthClock::manual(now_s);
        let config = ShopConfig { clock: clock.clone(), ..ShopConfig::default() };
        let shop = Arc::new(ShopService::open(dir.path(), config, Arc::clone(&auth)).unwrap());
        // The subscription ticker, fast (tests move the clock and wait for its records).
        let ticker = Arc::clone(&shop).spawn_subscription_ticker(std::time::Duration::from_millis(100));
        shop.seed_demo("test").unwrap();
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let query = Arc::new(QueryService::new(Arc::new(engine.clone()), QueryConfig::default()).unwrap());
        let line_protocol = Arc::new(LineProtocol::open(dir.path(), LineProtocolConfig::default()).unwrap());
        let state = ApiState {
            auth: Arc::clone(&auth),
            query,
            engine: Arc::new(engine.clone()),
            line_protocol,
            on_device_revoked: None,
        };
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let spki_sha256 = {
            use base64::Engine as _;
            use rcgen::PublicKeyData as _;
            use sha2::Digest as _;
            let spki = certified.signing_key.subject_public_key_info();
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&spki))
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let identity = TlsIdentity { cert_chain: vec![cert.clone()], key };
        let router = shop_routes(api_router(state).unwrap(), Arc::clone(&shop)).unwrap();
        let server = HttpServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            identity,
            HttpConfig::default(),
            router,
            Registry::default(),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self { dir, addr, cert, auth, shop, spki_sha256, engine, clock, stop: Some(stop), ticker }
    }

    /// One request on a fresh TLS connection that trusts only the server's certificate.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Page {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        let mut builder = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response =
            sender.send_request(builder.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        let (head, body) = response.into_parts();
        Page {
            status: head.status,
            headers: head.headers,
            body: body.collect().await.map(|c| c.to_bytes()).unwrap_or_default(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Page {
        self.send(Method::GET, path, &[], None, Vec::new()).await
    }

    /// A caller of `email` (an API login through the service).
    pub(crate) fn caller(&self, email: &str) -> bluewave_web::Caller {
        let pair = self.auth.login(email, &Secret::new(PASSWORD), [10, 9, 9, 8].into()).unwrap();
        self.auth.verify_access_token(pair.access_token.expose()).unwrap()
    }

    /// An order's state, as the operator sees it.
    pub(crate) fn order_state(&self, order_id: &str) -> &'static str {
        self.shop.order(&self.caller(OPERATOR), order_id).unwrap().order.state.as_str()
    }

    /// How many lines `email`'s cart has.
    pub(crate) fn cart_lines(&self, email: &str) -> usize {
        self.shop.cart(&self.caller(email)).unwrap().items.len()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.ticker.abort();
    }
}

/// A signed-in browser: its cookies and its session's CSRF token.
pub(crate) struct Browser<'s> {
    pub(crate) site: &'s Site,
    pub(crate) cookies: BTreeMap<String, String>,
    pub(crate) csrf: String,
}

fn encode(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

impl<'s> Browser<'s> {
    /// Signs `email` in through the login form.
    pub(crate) async fn login(site: &'s Site, email: &str) -> Self {
        let mut browser = Browser { site, cookies: BTreeMap::new(), csrf: String::new() };
        let form = browser.get("/login").await;
        assert_eq!(form.status, StatusCode::OK);
        let token = form.attr("input[name=csrf]", "value");
        let answer =
            browser.post_raw("/login", &[("csrf", &token), ("email", email), ("password", PASSWORD)]).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
        let cart = browser.get("/cart").await;
        assert_eq!(cart.status, StatusCode::OK, "{}", cart.text());
        browser.csrf = cart.attr("input[name=csrf]", "value");
        browser
    }

    fn keep_cookies(&mut self, page: &Page) {
        for value in page.headers.get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let cookie = self.cookie_header();
        let page = self.site.send(Method::GET, path, &[("cookie", &cookie)], None, Vec::new()).await;
        self.keep_cookies(&page);
        page
    }

    /// A form post with exactly these fields (no CSRF token added).
    pub(crate) async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(path, fields, &[("origin", "https://localhost")]).await
    }

    /// A form post with extra headers.
    pub(crate) async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let cookie = self.cookie_header();
        let mut all = vec![("cookie", cookie.as_str())];
        all.extend_from_slice(headers);
        let page = self
            .site
            .send(
                Method::POST,
                path,
                &all,
                Some("application/x-www-form-urlencoded"),
                encode(fields).into_bytes(),
            )
            .await;
        self.keep_cookies(&page);
        page
    }

    /// A form post with the session's CSRF token.
    pub(crate) async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }
}
