//! `bluewave-loadtest`: fleet simulator and query load generator.
//!
//! It is filled by the "Load generator" issue. The deterministic marine workload it will drive
//! already lives in [`bluewave_engine::workload`], shared with the criterion benches.

fn main() {
    eprintln!("bluewave-loadtest: not implemented yet (see the load generator issue)");
    std::process::exit(2);
}
