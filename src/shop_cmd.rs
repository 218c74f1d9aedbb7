//! `bluewave shop seed-demo`: loads the example catalogue (three desalination units with
//! stock and images) and three data-plan offers into `<data-dir>/shop.redb`. Nothing is loaded
//! unless this runs; ids already present are left alone. Run it with the server stopped (the
//! stores are opened exclusively). Audited as `cli`.

use std::path::Path;
use std::sync::Arc;

use bluewave_web::shop_api::{ShopConfig, ShopService};
use bluewave_web::{AuthConfig, AuthService};

/// `bluewave shop ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ShopCommand {
    /// Load the example catalogue and plan offers (only when asked; existing ids are kept).
    SeedDemo,
}

/// Runs a shop subcommand against `<data_dir>`.
pub fn run(data_dir: &Path, command: &ShopCommand) -> Result<(), String> {
    match command {
        ShopCommand::SeedDemo => {
            let auth = AuthService::open(data_dir, AuthConfig::default()).map_err(|e| e.to_string())?;
            let shop = ShopService::open(data_dir, ShopConfig::default(), Arc::new(auth))
                .map_err(|e| e.to_string())?;
            let report = shop.seed_demo("cli").map_err(|e| e.to_string())?;
            println!("shop demo loaded: {} products and {} plan offers added", report.products, report.plans);
            Ok(())
        }
    }
}
