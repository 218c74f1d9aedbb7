//! Products, stock, images, plan offers, and the demo catalogue of `bluewave shop seed-demo`.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::model::{IMAGE_BYTES_MAX, IMAGES_PER_PRODUCT_MAX, PRODUCTS_MAX, STOCK_MAX, check_product_id};
use super::store::{self, IMAGES, PLAN_OFFERS, PRODUCTS, STOCK};
use super::{
    AuditEvent, Caller, Money, PlanOffer, Product, ProductSpec, ShopError, ShopResult, ShopService, actor,
    now_ms,
};
use crate::auth::{BuoyScope, PlanSpec};

/// The images the demo catalogue uses: built-in assets (`asset:<name>` keys), served by the
/// pages with content-hashed names.
pub const DEMO_IMAGES: [&str; 3] = ["unit-compact.svg", "unit-container.svg", "unit-solar.svg"];

/// The buoys of the demo's Coastal plan (one region); Research and Fleet cover every buoy.
pub const DEMO_COASTAL_BUOYS: [&str; 3] = ["coastal-01", "coastal-02", "coastal-03"];

/// A product with its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductView {
    /// The product.
    pub product: Product,
    /// Units available now.
    pub stock: u32,
}

/// Catalogue filters (all optional, inclusive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProductFilter {
    /// Least daily capacity, litres.
    pub capacity_min: Option<u32>,
    /// Most power, watts.
    pub power_max: Option<u32>,
    /// Highest unit price, minor units.
    pub price_max_minor: Option<i64>,
}

impl ProductFilter {
    fn accepts(&self, p: &ProductSpec) -> bool {
        self.capacity_min.is_none_or(|c| p.capacity_l_per_day >= c)
            && self.power_max.is_none_or(|w| p.power_w <= w)
            && self.price_max_minor.is_none_or(|m| p.price.minor <= m)
    }
}

/// Image formats accepted for upload, recognised from the bytes (never from a name or header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// WebP.
    Webp,
}

impl ImageKind {
    /// The file extension of the stored key.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    /// The media type it is served with.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    /// The kind of a stored key's extension.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "png" => Some(Self::Png),
            "jpg" => Some(Self::Jpeg),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

/// The image kind of `bytes` from their signature: PNG (`89 50 4E 47 0D 0A 1A 0A` + an `IHDR`
/// chunk), JPEG (`FF D8 FF`), WebP (`RIFF….WEBP`). Anything else (SVG, HTML, GIF) is `None`.
pub fn sniff_image(bytes: &[u8]) -> Option<ImageKind> {
    if bytes.len() >= 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.get(12..16) == Some(b"IHDR") {
        Some(ImageKind::Png)
    } else if bytes.len() >= 4 && bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageKind::Jpeg)
    } else if bytes.len() >= 16 && bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        Some(ImageKind::Webp)
    } else {
        None
    }
}

/// What `seed_demo` added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedReport {
    /// Products added (existing ids are left alone).
    pub products: usize,
    /// Plan offers added.
    pub plans: usize,
}

fn stock_of(table: &impl ReadableTable<&'static str, u64>, id: &str) -> ShopResult<u32> {
    Ok(table.get(id)?.map_or(0, |v| u32::try_from(v.value()).unwrap_or(STOCK_MAX)))
}

impl ShopService {
    /// The products on sale (not retired) that pass `filter`, cheapest first.
    pub fn list_products(&self, filter: &ProductFilter) -> ShopResult<Vec<ProductView>> {
        let mut out = self.all_products()?;
        out.retain(|v| !v.product.retired && filter.accepts(&v.product.spec));
        out.sort_by(|a, b| {
            a.product.spec.price.minor.cmp(&b.product.spec.price.minor).then(a.product.id.cmp(&b.product.id))
        });
        Ok(out)
    }

    /// Every product, retired ones too (operator pages), by id.
    pub fn all_products(&self) -> ShopResult<Vec<ProductView>> {
        let txn = self.inner.db.begin_read()?;
        let products = txn.open_table(PRODUCTS)?;
        let stock = txn.open_table(STOCK)?;
        let mut out = Vec::new();
        for item in products.iter()? {
            let (key, value) = item?;
            let product: Product = store::decode("products", value.value())?;
            let units = stock_of(&stock, key.value())?;
            out.push(ProductView { product, stock: units });
        }
        Ok(out)
    }

    /// One product (retired too: old orders link to it) with its stock.
    pub fn product(&self, id: &str) -> ShopResult<ProductView> {
        check_product_id(id).map_err(|_| ShopError::NotFound { kind: "product" })?;
        let txn = self.inner.db.begin_read()?;
        let product: Product = store::get(&txn.open_table(PRODUCTS)?, "products", id)?
            .ok_or(ShopError::NotFound { kind: "product" })?;
        let units = stock_of(&txn.open_table(STOCK)?, id)?;
        Ok(ProductView { product, stock: units })
    }

    /// Adds a product with `stock` units. Staff only; audited.
    pub fn create_product(
        &self,
        caller: &Caller,
        id: &str,
        spec: ProductSpec,
        stock: u32,
    ) -> ShopResult<Product> {
        self.require_staff(caller, "shop.product.create")?;
        let product = self.insert_product(id, spec, stock, Vec::new())?;
        self.audit(
            AuditEvent::new(actor(caller), "shop.product.create", format!("product:{id}"), "ok").with_details(
                json!({ "name": product.spec.name, "price_minor": product.spec.price.minor, "stock": stock }),
            ),
        )?;
        Ok(product)
    }

    fn insert_product(
        &self,
        id: &str,
        spec: ProductSpec,
        stock: u32,
        images: Vec<String>,
    ) -> ShopResult<Product> {
        check_product_id(id)?;
        let spec = spec.validated()?;
        if spec.price.currency != self.inner.config.currency {
            return Err(ShopError::invalid("price", "must be in the shop's currency"));
        }
        if stock > STOCK_MAX {
            return Err(ShopError::invalid("stock", format!("0-{STOCK_MAX}")));
        }
        let now = now_ms();
        let product =
            Product { id: id.to_owned(), spec, images, retired: false, created_ms: now, updated_ms: now };
        let txn = self.inner.db.begin_write()?;
        {
            let mut products = txn.open_table(PRODUCTS)?;
            if products.get(id)?.is_some() {
                return Err(ShopError::invalid("product id", "already taken"));
            }
            if products.len()? >= PRODUCTS_MAX {
                return Err(ShopError::LimitReached { what: "products", max: PRODUCTS_MAX });
            }
            store::put(&mut products, id, &product)?;
            txn.open_table(STOCK)?.insert(id, u64::from(stock))?;
        }
        txn.commit()?;
        Ok(product)
    }

    /// Replaces a product's terms (name, text, specs, price). Staff only; audited with the
    /// price before and after. Orders already placed keep their copied prices.
    pub fn update_product(&self, caller: &Caller, id: &str, spec: ProductSpec) -> ShopResult<Product> {
        self.require_staff(caller, "shop.product.update")?;
        let spec = spec.validated()?;
        if spec.price.currency != self.inner.config.currency {
            return Err(ShopError::invalid("price", "must be in the shop's currency"));
        }
        let (before, after) = self.change_product(id, |p| {
            p.spec = spec;
            Ok(())
        })?;
        self.audit(
            AuditEvent::new(actor(caller), "shop.product.update", format!("product:{id}"), "ok").with_details(json!({
                "price_minor_before": before.spec.price.minor, "price_minor_after": after.spec.price.minor,
                "name": after.spec.name,
            })),
        )?;
        Ok(after)
    }

    /// Retires a product: no longer listed or sold; carts drop it at checkout. Staff only; audited.
    pub fn retire_product(&self, caller: &Caller, id: &str) -> ShopResult<()> {
        self.require_staff(caller, "shop.product.retire")?;
        self.change_product(id, |p| {
            p.retired = true;
            Ok(())
        })?;
        self.audit(AuditEvent::new(actor(caller), "shop.product.retire", format!("product:{id}"), "ok"))
    }

    /// Sets the units in stock. Staff only; audited with before and after.
    pub fn set_stock(&self, caller: &Caller, id: &str, units: u32) -> ShopResult<()> {
        self.require_staff(caller, "shop.stock.set")?;
        if units > STOCK_MAX {
            return Err(ShopError::invalid("stock", format!("0-{STOCK_MAX}")));
        }
        let txn = self.inner.db.begin_write()?;
        let before;
        {
            if txn.open_table(PRODUCTS)?.get(id)?.is_none() {
                return Err(ShopError::NotFound { kind: "product" });
            }
            let mut stock = txn.open_table(STOCK)?;
            before = stock_of(&stock, id)?;
            stock.insert(id, u64::from(units))?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(actor(caller), "shop.stock.set", format!("product:{id}"), "ok")
                .with_details(json!({ "before": before, "after": units })),
        )
    }

    /// Adds an uploaded image to a product: at most [`IMAGE_BYTES_MAX`] bytes of PNG, JPEG or
    /// WebP, recognised from the bytes. Stored under its SHA-256 (the key is its URL name, so
    /// it can be cached forever). Staff only; audited.
    pub fn add_image(&self, caller: &Caller, id: &str, bytes: &[u8]) -> ShopResult<String> {
        self.require_staff(caller, "shop.product.image")?;
        if bytes.len() > IMAGE_BYTES_MAX {
            return Err(ShopError::LimitReached { what: "image bytes", max: IMAGE_BYTES_MAX as u64 });
        }
        let kind = sniff_image(bytes).ok_or_else(|| {
            ShopError::invalid("image", "a PNG, JPEG or WebP file (checked from its bytes)")
        })?;
        let key = format!("{}.{}", crate::audit::hex(&Sha256::digest(bytes)), kind.extension());
        let txn = self.inner.db.begin_write()?;
        {
            let mut products = txn.open_table(PRODUCTS)?;
            let mut product: Product =
                store::get(&products, "products", id)?.ok_or(ShopError::NotFound { kind: "product" })?;
            if !product.images.contains(&key) {
                if product.images.len() >= IMAGES_PER_PRODUCT_MAX {
                    return Err(ShopError::LimitReached {
                        what: "images per product",
                        max: IMAGES_PER_PRODUCT_MAX as u64,
                    });
                }
                product.images.push(key.clone());
                product.updated_ms = now_ms();
                store::put(&mut products, id, &product)?;
            }
            txn.open_table(IMAGES)?.insert(key.as_str(), bytes)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(actor(caller), "shop.product.image", format!("product:{id}"), "ok")
                .with_details(json!({ "image": key, "bytes": bytes.len() })),
        )?;
        Ok(key)
    }

    /// An uploaded image's bytes and kind by key (`<sha256>.<ext>`).
    pub fn image(&self, key: &str) -> ShopResult<(ImageKind, Vec<u8>)> {
        let not_found = || ShopError::NotFound { kind: "image" };
        let (_, ext) = key.rsplit_once('.').ok_or_else(not_found)?;
        let kind = ImageKind::from_extension(ext).ok_or_else(not_found)?;
        let txn = self.inner.db.begin_read()?;
        let bytes = txn.open_table(IMAGES)?.get(key)?.map(|v| v.value().to_vec()).ok_or_else(not_found)?;
        Ok((kind, bytes))
    }

    fn change_product(
        &self,
        id: &str,
        change: impl FnOnce(&mut Product) -> ShopResult<()>,
    ) -> ShopResult<(Product, Product)> {
        let txn = self.inner.db.begin_write()?;
        let pair;
        {
            let mut products = txn.open_table(PRODUCTS)?;
            let before: Product =
                store::get(&products, "products", id)?.ok_or(ShopError::NotFound { kind: "product" })?;
            let mut after = before.clone();
            change(&mut after)?;
            after.updated_ms = now_ms();
            store::put(&mut products, id, &after)?;
            pair = (before, after);
        }
        txn.commit()?;
        Ok(pair)
    }

    /// The subscription plans on sale, cheapest first.
    pub fn plan_offers(&self) -> ShopResult<Vec<PlanOffer>> {
        let txn = self.inner.db.begin_read()?;
        let mut out = Vec::new();
        for item in txn.open_table(PLAN_OFFERS)?.iter()? {
            let (_, value) = item?;
            out.push(store::decode::<PlanOffer>("plan_offers", value.value())?);
        }
        out.sort_by_key(|o| o.monthly.minor);
        Ok(out)
    }

    /// Loads the example catalogue (three units) and three plan offers, each with the auth plan
    /// whose access it sells (Coastal covers [`DEMO_COASTAL_BUOYS`]); ids already present are
    /// left alone (an offer without an auth plan gets one). Audited as `actor` (`cli`).
    pub fn seed_demo(&self, actor: &str) -> ShopResult<SeedReport> {
        let c = self.inner.config.currency;
        let money = |minor| Money::new(minor, c);
        let units = [
            (
                "aquabuoy-c200",
                "AquaBuoy C200 compact",
                "Compact reverse-osmosis unit for a research vessel or a small island station.",
                "A single-stage reverse-osmosis unit in a marine-grade enclosure.\n\nSelf-cleaning pre-filters, remote telemetry over the BlueWave fleet link, and a salinity sensor on the permeate line.",
                2_000,
                900,
                180,
                1_290_000,
                12,
                DEMO_IMAGES[0],
            ),
            (
                "tidewell-x20",
                "TideWell X20 container",
                "Containerised plant for a coastal village: twenty cubic metres a day.",
                "A 20-foot container with two-pass reverse osmosis, energy recovery and a remineralisation stage.\n\nShips ready to connect: seawater intake, brine outfall, potable outlet.",
                20_000,
                7_500,
                9_800,
                8_950_000,
                4,
                DEMO_IMAGES[1],
            ),
            (
                "sunpure-s5",
                "SunPure S5 solar",
                "Off-grid solar desalination for remote stations: no diesel, no grid.",
                "Photovoltaic-driven membrane unit with a battery buffer for night operation.\n\nRated for 5,000 litres a day at 5 peak sun hours.",
                5_000,
                2_400,
                640,
                3_450_000,
                10,
                DEMO_IMAGES[2],
            ),
        ];
        let mut report = SeedReport { products: 0, plans: 0 };
        for (id, name, summary, description, capacity, power, weight, price, stock, image) in units {
            let spec = ProductSpec {
                name: name.into(),
                summary: summary.into(),
                description: description.into(),
                capacity_l_per_day: capacity,
                power_w: power,
                weight_kg: weight,
                price: money(price)?,
            };
            match self.insert_product(id, spec, stock, vec![format!("asset:{image}")]) {
                Ok(_) => report.products += 1,
                Err(ShopError::InvalidInput { field: "product id", .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // (id, name, description, monthly, annual, buoys in words, buoy scope, history days, quota)
        let offers = [
            (
                "coastal",
                "Coastal",
                "One region's buoys, 30 days of history.",
                4_900,
                49_000,
                "buoys of one region",
                BuoyScope::List(DEMO_COASTAL_BUOYS.iter().map(|b| (*b).to_owned()).collect()),
                Some(30),
                Some(1_000),
            ),
            (
                "research",
                "Research",
                "Every buoy, a year of history, SQL access.",
                19_900,
                199_000,
                "every buoy",
                BuoyScope::All,
                Some(365),
                Some(20_000),
            ),
            (
                "fleet",
                "Fleet",
                "Every buoy, all history, no query quota.",
                49_900,
                499_000,
                "every buoy",
                BuoyScope::All,
                None,
                None,
            ),
        ];
        for (id, name, description, monthly, annual, buoys, scope, history_days, daily_query_quota) in offers
        {
            let existing = {
                let txn = self.inner.db.begin_read()?;
                store::get::<PlanOffer>(&txn.open_table(PLAN_OFFERS)?, "plan_offers", id)?
            };
            if existing.as_ref().is_some_and(|o| o.auth_plan_id.is_some()) {
                continue;
            }
            // The access the offer sells: an auth plan (also made for an offer of a format-1
            // file that has none yet).
            let spec = PlanSpec {
                name: name.into(),
                buoys: scope,
                history_days,
                daily_query_quota,
                row_limit: None,
            };
            let plan = self.inner.auth.create_plan_as(actor, spec)?;
            let offer = match existing {
                Some(offer) => PlanOffer { auth_plan_id: Some(plan.id), ..offer },
                None => {
                    report.plans += 1;
                    PlanOffer {
                        id: id.into(),
                        name: name.into(),
                        description: description.into(),
                        monthly: money(monthly)?,
                        annual: money(annual)?,
                        buoys: buoys.into(),
                        history_days,
                        daily_query_quota,
                        auth_plan_id: Some(plan.id),
                    }
                }
            };
            let txn = self.inner.db.begin_write()?;
            store::put(&mut txn.open_table(PLAN_OFFERS)?, id, &offer)?;
            txn.commit()?;
        }
        self.audit(
            AuditEvent::new(actor, "shop.seed_demo", "-", "ok")
                .with_details(json!({ "products": report.products, "plans": report.plans })),
        )?;
        Ok(report)
    }
}
