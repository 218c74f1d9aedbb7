//! The storefront over real HTTPS, read as HTML: every page renders and parses with the shop's
//! CSP and no script; content-hashed static assets with immutable caching; catalogue filters;
//! a whole purchase (cart kept across logout, checkout with tax and shipping lines, the test
//! provider's decline / authenticate / success cards, confirmation, invoice); CSRF refusals;
//! `next` kept on this site; object-level authorization (another customer's order, invoice and
//! payment answer 404); role checks of the operator pages; escaping of user strings; limits
//! (quantities, cart lines, address fields, uploads checked from their bytes); the webhook's
//! signature, tolerance, replay and idempotency over HTTPS.

use bluewave_web::shop_api::{SHOP_FILE_NAME, sign_payload};
use bluewave_web::{Method, SHOP_CSP, StatusCode};
use serde_json::{Value, json};

use crate::shop_site::{Browser, OPERATOR, Page, Site};

pub(crate) fn assert_shop_page(page: &Page, status: StatusCode) {
    assert_eq!(page.status, status, "{}", page.text());
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("content-security-policy"), SHOP_CSP);
    assert_eq!(page.header("cache-control"), "no-store");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.count("script"), 0, "no script on a shop page");
    assert_eq!(page.count("html[lang=en] head title"), 1);
    assert_eq!(page.count("main#main h1"), 1);
    assert!(page.html().errors.is_empty(), "HTML parse errors: {:?}", page.html().errors);
    // Every form control has a label (wrapping it) or is hidden / a button.
    let html = page.html();
    let controls = scraper::Selector::parse("input:not([type=hidden]), select, textarea").unwrap();
    for control in html.select(&controls) {
        let labelled =
            control.ancestors().any(|a| a.value().as_element().is_some_and(|e| e.name() == "label"));
        assert!(labelled, "unlabelled control {:?}", control.value());
    }
}

#[tokio::test]
async fn catalogue_product_and_plan_pages_render_with_hashed_immutable_assets() {
    let site = Site::start().await;
    let list = site.get("/shop").await;
    assert_shop_page(&list, StatusCode::OK);
    assert_eq!(list.count("ul.grid li.card"), 3);
    // Cheapest first; anonymous visitors get a sign-in link, no cart.
    assert_eq!(list.first_text("li.card h2"), "AquaBuoy C200 compact");
    assert_eq!(list.count("a[href='/login']"), 1);
    assert_eq!(list.count("a[href='/cart']"), 0);

    let css = list.attr("link[rel=stylesheet]", "href");
    assert!(
        css.starts_with("/static/shop.") && css.ends_with(".css") && css.len() == "/static/shop.".len() + 16,
        "{css}"
    );
    let asset = site.get(&css).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert_eq!(asset.header("content-type"), "text/css; charset=utf-8");
    assert_eq!(asset.header("cache-control"), "public, max-age=31536000, immutable");
    assert!(asset.text().contains("@media print"));
    assert_eq!(site.get("/static/shop.css").await.status, StatusCode::NOT_FOUND, "only hashed names");
    let image = list.attr("li.card img", "src");
    let svg = site.get(&image).await;
    assert_eq!((svg.status, svg.header("content-type")), (StatusCode::OK, "image/svg+xml"));
    assert_eq!(svg.header("cache-control"), "public, max-age=31536000, immutable");

    // Filters: capacity, power, price (major units); a bad number is a 400 page.
    let big = site.get("/shop?capacity_min=10000").await;
    assert_eq!(big.count("li.card"), 1);
    assert_eq!(big.first_text("li.card h2"), "TideWell X20 container");
    assert_eq!(site.get("/shop?power_max=2400&price_max=").await.count("li.card"), 2);
    assert_eq!(site.get("/shop?price_max=12900").await.count("li.card"), 1);
    let bad = site.get("/shop?price_max=lots").await;
    assert_shop_page(&bad, StatusCode::BAD_REQUEST);
    assert_eq!(bad.count("[role=alert]"), 1);

    let detail = site.get("/shop/products/tidewell-x20").await;
    assert_shop_page(&detail, StatusCode::OK);
    assert_eq!(detail.first_text("h1"), "TideWell X20 container");
    assert_eq!(detail.first_text("p.price").split(' ').take(2).collect::<Vec<_>>(), ["EUR", "89,500.00"]);
    assert!(detail.text().contains("20000 L"));
    assert!(detail.text().contains("4 in stock"));
    assert_eq!(detail.count("img[alt='TideWell X20 container, picture 1']"), 1);
    assert_shop_page(&site.get("/shop/products/no-such-unit").await, StatusCode::NOT_FOUND);
    // A path the router never serves is refused before any page (the API's JSON 400).
    assert_eq!(site.get("/shop/products/..%2fetc").await.status, StatusCode::BAD_REQUEST);

    let plans = site.get("/shop/plans").await;
    assert_shop_page(&plans, StatusCode::OK);
    assert_eq!(plans.count("section.card"), 3);
    assert!(plans.text().contains("EUR 49.00") && plans.text().contains("EUR 490.00"));
}

#[tokio::test]
async fn a_customer_buys_a_unit_with_the_test_cards_and_sees_it_paid() {
    let site = Site::start().await;
    let mut alice = Browser::login(&site, "alice@example.org").await;
    let product = alice.get("/shop/products/sunpure-s5").await;
    assert_shop_page(&product, StatusCode::OK);
    assert_eq!(product.count("form[action='/cart/add'] input[name=quantity][max='10']"), 1);
    let added =
        alice.post("/cart/add", &[("product", "sunpure-s5"), ("quantity", "2"), ("next", "/cart")]).await;
    assert_eq!((added.status, added.header("location")), (StatusCode::SEE_OTHER, "/cart"));

    // The cart belongs to the account: it survives logout and a new login.
    let logout = alice.post("/logout", &[]).await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    assert_eq!(alice.get("/cart").await.header("location"), "/login");
    let mut alice = Browser::login(&site, "alice@example.org").await;
    let cart = alice.get("/cart").await;
    assert_shop_page(&cart, StatusCode::OK);
    assert_eq!(cart.count("tr[data-product=sunpure-s5]"), 1);
    assert_eq!(cart.attr("tr[data-product=sunpure-s5] input[name=quantity]", "value"), "2");
    // Change the quantity, then check out.
    let updated = alice.post("/cart/update", &[("product", "sunpure-s5"), ("quantity", "1")]).await;
    assert_eq!(updated.status, StatusCode::SEE_OTHER);
    let checkout = alice.get("/checkout").await;
    assert_shop_page(&checkout, StatusCode::OK);
    let text = checkout.text();
    // 34,500.00 + 150.00 shipping; 20 % tax = 6,930.00; total 41,580.00.
    for expected in [
        "Subtotal",
        "EUR 34,500.00",
        "Shipping",
        "EUR 150.00",
        "Tax (20.00 %)",
        "EUR 6,930.00",
        "EUR 41,580.00",
    ] {
        assert!(text.contains(expected), "{expected}");
    }
    let address = [
        ("name", "Alice"),
        ("line1", "2 Quay"),
        ("line2", ""),
        ("city", "Cork"),
        ("postal_code", "T12"),
        ("country", "Ireland"),
    ];
    let refused = alice.post("/checkout", &address).await;
    assert_shop_page(&refused, StatusCode::BAD_REQUEST);
    assert_eq!(refused.first_text("[role=alert]"), "country: a two-letter ISO 3166 code");
    assert_eq!(refused.attr("input[name=city]", "value"), "Cork", "the form keeps what was typed");
    let mut address = address;
    address[5] = ("country", "ie");
    let placed = alice.post("/checkout", &address).await;
    assert_eq!(placed.status, StatusCode::SEE_OTHER, "{}", placed.text());
    let order_path = placed.header("location").to_owned();
    let order_id = order_path.strip_prefix("/orders/").unwrap().to_owned();
    let order = alice.get(&order_path).await;
    assert_shop_page(&order, StatusCode::OK);
    assert_eq!(order.attr("[data-state]", "data-state"), "pending_payment");
    assert_eq!(alice.get("/cart").await.count("tr[data-product]"), 0, "checkout empties the cart");
    assert_eq!(site.shop.product("sunpure-s5").unwrap().stock, 9, "stock taken at checkout");

    // Pay: the hosted test page. Decline, then "authentication required" and approve.
    let pay = alice.post(&format!("/orders/{order_id}/pay"), &[]).await;
    assert_eq!(pay.status, StatusCode::SEE_OTHER);
    let hosted_path = pay.header("location").to_owned();
    assert!(hosted_path.starts_with("/pay/test/pay_test_"), "{hosted_path}");
    let hosted = alice.get(&hosted_path).await;
    assert_shop_page(&hosted, StatusCode::OK);
    assert!(hosted.text().contains("4242 4242 4242 4242"));
    let declined = alice.post(&hosted_path, &[("card_number", "4000 0000 0000 0002")]).await;
    assert_shop_page(&declined, StatusCode::PAYMENT_REQUIRED);
    let unknown = alice.post(&hosted_path, &[("card_number", "4111 1111 1111 1111")]).await;
    assert_shop_page(&unknown, StatusCode::BAD_REQUEST);
    let challenge = alice.post(&hosted_path, &[("card_number", "4000002500003155")]).await;
    assert_shop_page(&challenge, StatusCode::OK);
    assert_eq!(challenge.count("button[name=decision][value=approve]"), 1);
    assert_eq!(site.order_state(&order_id), "pending_payment");
    let approved = alice.post(&format!("{hosted_path}/authenticate"), &[("decision", "approve")]).await;
    assert_eq!(approved.header("location"), format!("/orders/{order_id}/confirmation"));
    let confirmation = alice.get(approved.header("location")).await;
    assert_shop_page(&confirmation, StatusCode::OK);
    assert_eq!(confirmation.first_text("h1"), "Order confirmed");
    assert_eq!(confirmation.attr("[data-state]", "data-state"), "paid");
    // No card number anywhere in the stores or the audit log.
    for file in [SHOP_FILE_NAME, "audit/audit.jsonl"] {
        let bytes = std::fs::read(site.dir.path().join(file)).unwrap();
        // Whole numbers only: a short prefix such as "4111" also occurs in random hex ids.
        for card in [
            &b"4000002500003155"[..],
            b"4000 0025 0000 3155",
            b"4000000000000002",
            b"4000 0000 0000 0002",
            b"4111111111111111",
            b"4111 1111 1111 1111",
        ] {
            assert!(!bytes.windows(card.len()).any(|w| w == card), "{file} holds a card number");
        }
    }

    let orders = alice.get("/orders").await;
    assert_shop_page(&orders, StatusCode::OK);
    assert_eq!(orders.first_text(&format!("tr[data-order='{order_id}'] td.state")), "paid");
    let invoice = alice.get("/invoices/1").await;
    assert_shop_page(&invoice, StatusCode::OK);
    assert_eq!(invoice.first_text("h1"), "Invoice 1");
    assert!(invoice.text().contains("EUR 41,580.00"));

    // Object-level authorization: Bob gets the 404 of a missing object for all of them.
    let mut bob = Browser::login(&site, "bob@example.org").await;
    for path in [
        order_path.clone(),
        format!("{order_path}/confirmation"),
        "/invoices/1".into(),
        hosted_path.clone(),
        "/invoices/2".into(),
    ] {
        assert_shop_page(&bob.get(&path).await, StatusCode::NOT_FOUND);
    }
    assert_shop_page(&bob.post(&format!("/orders/{order_id}/cancel"), &[]).await, StatusCode::NOT_FOUND);
    assert_shop_page(&bob.post(&format!("/orders/{order_id}/pay"), &[]).await, StatusCode::NOT_FOUND);
    // Paid orders cannot be cancelled by their owner either (the state machine's 409).
    let late = alice.post(&format!("/orders/{order_id}/cancel"), &[]).await;
    assert_shop_page(&late, StatusCode::CONFLICT);
    assert_eq!(late.first_text("[role=alert]"), "an order that is paid cannot be cancelled");
}

#[tokio::test]
async fn csrf_next_limits_and_escaping() {
    let site = Site::start().await;
    let mut alice = Browser::login(&site, "alice@example.org").await;
    // CSRF: no token, another token, a foreign Origin, a cross-site fetch.
    let fields = [("product", "sunpure-s5"), ("quantity", "1")];
    let own = alice.csrf.clone();
    for (csrf, headers) in [
        ("", vec![("origin", "https://localhost")]),
        ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", vec![("origin", "https://localhost")]),
        (own.as_str(), vec![("origin", "https://evil.example")]),
        (own.as_str(), vec![("sec-fetch-site", "cross-site")]),
        // `Origin: null` is vouched for only by a browser's `Sec-Fetch-Site: same-origin`.
        (own.as_str(), vec![("origin", "null")]),
        (own.as_str(), vec![("origin", "null"), ("sec-fetch-site", "cross-site")]),
    ] {
        let csrf = csrf.to_owned();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(&fields);
        let page = alice.post_with("/cart/add", &all, &headers).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{csrf} {headers:?}");
    }
    assert!(site.cart_lines("alice@example.org") == 0);
    // A browser's own post under `Referrer-Policy: no-referrer`: `Origin: null` + same-origin.
    let own_post = [("csrf", own.as_str()), ("product", "sunpure-s5"), ("quantity", "1")];
    let page = alice
        .post_with("/cart/add", &own_post, &[("origin", "null"), ("sec-fetch-site", "same-origin")])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    alice.post("/cart/remove", &[("product", "sunpure-s5")]).await;
    // `next`: only paths of this site.
    for (next, location) in [
        ("/shop/plans", "/shop/plans"),
        ("https://evil.example/", "/cart"),
        ("//evil.example/", "/cart"),
        ("/\\evil.example", "/cart"),
        ("javascript:alert(1)", "/cart"),
    ] {
        let page =
            alice.post("/cart/add", &[("product", "sunpure-s5"), ("quantity", "1"), ("next", next)]).await;
        assert_eq!((page.status, page.header("location")), (StatusCode::SEE_OTHER, location), "{next}");
        alice.post("/cart/remove", &[("product", "sunpure-s5")]).await;
    }
    // Limits: quantity per line, stock, address fields.
    let page = alice.post("/cart/add", &[("product", "aquabuoy-c200"), ("quantity", "51")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let page = alice.post("/cart/add", &[("product", "aquabuoy-c200"), ("quantity", "13")]).await;
    assert_shop_page(&page, StatusCode::CONFLICT);
    assert_eq!(page.first_text("[role=alert]"), "only 12 of aquabuoy-c200 in stock");
    alice.post("/cart/add", &[("product", "aquabuoy-c200"), ("quantity", "1")]).await;
    let long = "x".repeat(101);
    let page = alice
        .post(
            "/checkout",
            &[
                ("name", &long),
                ("line1", "1 Road"),
                ("city", "Brest"),
                ("postal_code", "29200"),
                ("country", "FR"),
            ],
        )
        .await;
    assert_shop_page(&page, StatusCode::BAD_REQUEST);
    assert_eq!(page.first_text("[role=alert]"), "name: at most 100 bytes");

    // Escaping: hostile strings typed by people come back as text, never as markup.
    let hostile = "<script>alert(1)</script><b>bold</b>\"'&";
    let placed = alice
        .post(
            "/checkout",
            &[
                ("name", hostile),
                ("line1", "<img src=x onerror=alert(1)>"),
                ("city", "Brest"),
                ("postal_code", "29200"),
                ("country", "FR"),
            ],
        )
        .await;
    assert_eq!(placed.status, StatusCode::SEE_OTHER);
    let order = alice.get(placed.header("location")).await;
    assert_shop_page(&order, StatusCode::OK);
    assert_eq!(order.count("address b, address img, main img"), 0);
    assert!(order.first_text("address").contains(hostile));
    assert!(order.text().contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    // Cart lines are limited (20 products).
    let mut operator = Browser::login(&site, OPERATOR).await;
    for i in 0..21 {
        let id = format!("unit-{i:02}");
        let page = operator
            .post(
                "/operator/products",
                &[
                    ("id", &id),
                    ("name", hostile),
                    ("summary", ""),
                    ("description", ""),
                    ("capacity_l_per_day", "10"),
                    ("power_w", "1"),
                    ("weight_kg", "1"),
                    ("price", "10.00"),
                    ("stock", "5"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text());
    }
    let mut refused = None;
    for i in 0..21 {
        let page = alice.post("/cart/add", &[("product", &format!("unit-{i:02}")), ("quantity", "1")]).await;
        if page.status != StatusCode::SEE_OTHER {
            refused = Some((i, page));
            break;
        }
    }
    let (at, page) = refused.unwrap();
    assert_eq!(at, 20, "the checkout above emptied the cart: 20 lines fit, the 21st is refused");
    assert_shop_page(&page, StatusCode::CONFLICT);
    assert_eq!(page.first_text("[role=alert]"), "limit reached: at most 20 cart lines");
    let listed = site.get("/shop?price_max=10").await;
    assert_eq!(listed.count("li.card"), 21);
    assert_eq!(listed.count("li.card h2 a b, script"), 0);
    assert!(listed.first_text("li.card h2").contains(hostile));
}

/// A tiny valid PNG (1×1), made here.
fn png() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89".to_vec();
    bytes.extend_from_slice(b"\x00\x00\x00\x0bIDATx\x9cc\x00\x01\x00\x00\x05\x00\x01\x0d\x0a\x2d\xb4\x00\x00\x00\x00IEND\xaeB`\x82");
    bytes
}

fn multipart(csrf: &str, filename: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----bluewave-test-boundary";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n").into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn operator_pages_roles_uploads_and_audited_order_actions() {
    let site = Site::start().await;
    let mut alice = Browser::login(&site, "alice@example.org").await;
    for path in ["/operator/products", "/operator/orders", "/operator/products/sunpure-s5"] {
        assert_eq!(alice.get(path).await.status, StatusCode::FORBIDDEN, "{path}");
    }
    let page = alice.post("/operator/products/sunpure-s5/stock", &[("stock", "999")]).await;
    assert_shop_page(&page, StatusCode::FORBIDDEN);
    assert_eq!(site.shop.product("sunpure-s5").unwrap().stock, 10);

    let mut operator = Browser::login(&site, OPERATOR).await;
    let list = operator.get("/operator/products").await;
    assert_shop_page(&list, StatusCode::OK);
    assert_eq!(list.count("tr[data-product]"), 3);
    let edit = operator.get("/operator/products/sunpure-s5").await;
    assert_shop_page(&edit, StatusCode::OK);
    // New price and stock; the product page shows them.
    let saved = operator
        .post(
            "/operator/products/sunpure-s5",
            &[
                ("name", "SunPure S5 solar"),
                ("summary", "s"),
                ("description", "d"),
                ("capacity_l_per_day", "5000"),
                ("power_w", "2400"),
                ("weight_kg", "640"),
                ("price", "33000.5"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.text());
    assert_eq!(
        operator.post("/operator/products/sunpure-s5/stock", &[("stock", "3")]).await.status,
        StatusCode::SEE_OTHER
    );
    let shown = site.get("/shop/products/sunpure-s5").await;
    assert!(shown.text().contains("EUR 33,000.50") && shown.text().contains("3 in stock"));

    // Uploads: type and size from the bytes.
    let csrf = operator.csrf.clone();
    let cookie = operator.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let upload = |name: &'static str, bytes: Vec<u8>| {
        let (content_type, body) = multipart(&csrf, name, &bytes);
        let cookie = cookie.clone();
        let site = &site;
        async move {
            site.send(
                Method::POST,
                "/operator/products/sunpure-s5/images",
                &[("cookie", &cookie), ("origin", "https://localhost")],
                Some(&content_type),
                body,
            )
            .await
        }
    };
    let ok = upload("unit.png", png()).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.text());
    let fake = upload(
        "evil.png",
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".to_vec(),
    )
    .await;
    assert_shop_page(&fake, StatusCode::BAD_REQUEST);
    assert_eq!(fake.first_text("[role=alert]"), "image: a PNG, JPEG or WebP file (checked from its bytes)");
    let mut big = png();
    big.resize(2 * 1024 * 1024 + 1, 0);
    let too_big = upload("big.png", big).await;
    assert_shop_page(&too_big, StatusCode::CONFLICT);
    assert_eq!(too_big.first_text("[role=alert]"), "limit reached: at most 2097152 image bytes");
    let huge = upload("huge.png", vec![0; 3 * 1024 * 1024 + 1]).await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    let product = site.get("/shop/products/sunpure-s5").await;
    let src = product.attr("img[alt='SunPure S5 solar, picture 2']", "src");
    assert!(src.starts_with("/shop/images/") && src.ends_with(".png"), "{src}");
    let served = site.get(&src).await;
    assert_eq!((served.status, served.header("content-type")), (StatusCode::OK, "image/png"));
    assert_eq!(served.header("cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(served.body.as_ref(), png().as_slice());

    // Orders: Alice buys and pays; the operator ships and refunds (a fresh login: allowed).
    alice.post("/cart/add", &[("product", "sunpure-s5"), ("quantity", "1")]).await;
    let placed = alice
        .post(
            "/checkout",
            &[
                ("name", "A"),
                ("line1", "1 Road"),
                ("city", "Brest"),
                ("postal_code", "29200"),
                ("country", "FR"),
            ],
        )
        .await;
    let order_id = placed.header("location").strip_prefix("/orders/").unwrap().to_owned();
    let hosted = alice.post(&format!("/orders/{order_id}/pay"), &[]).await.header("location").to_owned();
    assert_eq!(
        alice.post(&hosted, &[("card_number", "4242424242424242")]).await.status,
        StatusCode::SEE_OTHER
    );
    let orders = operator.get("/operator/orders").await;
    assert_shop_page(&orders, StatusCode::OK);
    assert_eq!(orders.first_text(&format!("tr[data-order='{order_id}'] td.state")), "paid");
    let bad = operator.post(&format!("/operator/orders/{order_id}/delete"), &[]).await;
    assert_shop_page(&bad, StatusCode::NOT_FOUND);
    assert_eq!(
        alice.post(&format!("/operator/orders/{order_id}/ship"), &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        operator.post(&format!("/operator/orders/{order_id}/ship"), &[]).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        operator.post(&format!("/operator/orders/{order_id}/refund"), &[]).await.status,
        StatusCode::SEE_OTHER
    );
    let orders = operator.get("/operator/orders").await;
    assert_eq!(orders.first_text(&format!("tr[data-order='{order_id}'] td.state")), "refunded");
    let retire = operator.post("/operator/products/tidewell-x20/retire", &[]).await;
    assert_eq!(retire.status, StatusCode::SEE_OTHER);
    assert_eq!(site.get("/shop").await.count("li.card"), 2);
    let audit = std::fs::read_to_string(site.dir.path().join("audit/audit.jsonl")).unwrap();
    for action in [
        "shop.product.update",
        "shop.stock.set",
        "shop.product.image",
        "shop.order.ship",
        "shop.order.refund",
        "shop.product.retire",
        "shop.payment.event",
    ] {
        assert!(audit.contains(&format!("\"action\":\"{action}\"")), "{action}");
    }
    assert!(audit.contains("\"action\":\"shop.stock.set\"") && audit.contains("\"outcome\":\"denied\""));
}

#[tokio::test]
async fn webhook_over_https_signature_tolerance_replay_and_idempotency() {
    let site = Site::start().await;
    let mut alice = Browser::login(&site, "alice@example.org").await;
    alice.post("/cart/add", &[("product", "aquabuoy-c200"), ("quantity", "1")]).await;
    let placed = alice
        .post(
            "/checkout",
            &[
                ("name", "A"),
                ("line1", "1 Road"),
                ("city", "Brest"),
                ("postal_code", "29200"),
                ("country", "FR"),
            ],
        )
        .await;
    let order_id = placed.header("location").strip_prefix("/orders/").unwrap().to_owned();
    let hosted = alice.post(&format!("/orders/{order_id}/pay"), &[]).await.header("location").to_owned();
    let payment_id = hosted.strip_prefix("/pay/test/").unwrap().to_owned();
    // 12,900.00 + 150.00 shipping + 20 % tax, in cents.
    let amount = 1_290_000 + 15_000 + (1_290_000 + 15_000) / 5;
    let now = crate::auth_fixtures::now_s() as i64;
    let body = serde_json::to_vec(&json!({ "id": "evt_https_1", "type": "payment.succeeded", "created": now,
        "data": { "payment_id": payment_id, "order_id": order_id, "amount": amount, "currency": "EUR" } }))
    .unwrap();
    let post = |signature: String, body: Vec<u8>| {
        let site = &site;
        async move {
            site.send(
                Method::POST,
                "/shop/webhooks/payments",
                &[("stripe-signature", &signature)],
                Some("application/json"),
                body,
            )
            .await
        }
    };
    let json = |page: &Page| serde_json::from_slice::<Value>(&page.body).unwrap();
    let secret = site.shop.webhook_secret().to_vec();
    // Outside the 5-minute tolerance, either way; a wrong secret; tampered body; no header.
    for t in [now - 301, now + 301] {
        let page = post(sign_payload(&secret, t, &body), body.clone()).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            json(&page)["message"],
            "webhook signature refused: signature timestamp outside the tolerance"
        );
    }
    let page = post(sign_payload(b"not-the-secret", now, &body), body.clone()).await;
    assert_eq!(json(&page)["message"], "webhook signature refused: no signature matches");
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let page = post(sign_payload(&secret, now, &body), tampered).await;
    assert_eq!(json(&page)["message"], "webhook signature refused: no signature matches");
    let page =
        site.send(Method::POST, "/shop/webhooks/payments", &[], Some("application/json"), body.clone()).await;
    assert_eq!(json(&page)["message"], "webhook signature refused: missing Stripe-Signature header");
    assert_eq!(site.order_state(&order_id), "pending_payment");
    // Within the tolerance (4 minutes old): paid; the same event again: duplicate, nothing changes.
    let page = post(sign_payload(&secret, now - 240, &body), body.clone()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(json(&page), json!({ "received": true, "outcome": "paid" }));
    let page = post(sign_payload(&secret, now, &body), body.clone()).await;
    assert_eq!(json(&page), json!({ "received": true, "outcome": "duplicate" }));
    assert_eq!(site.order_state(&order_id), "paid");
    // A stale failure arriving late changes nothing.
    let late =
        serde_json::to_vec(&json!({ "id": "evt_https_0", "type": "payment.failed", "created": now - 60,
        "data": { "payment_id": payment_id, "order_id": order_id, "amount": amount, "currency": "EUR" } }))
        .unwrap();
    let page = post(sign_payload(&secret, now, &late), late).await;
    assert_eq!(json(&page), json!({ "received": true, "outcome": "ignored_after_success" }));
    assert_eq!(site.order_state(&order_id), "paid");
}
