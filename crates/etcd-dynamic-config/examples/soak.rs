//! The randomized fault soak, as long as asked: starts its own etcd members on loopback
//! ports, mixes random operations with faults, checks every published snapshot against
//! etcd, and prints its figures. Exits 1 on any violation.
//!
//! ```text
//! cargo run --release --example soak -- --minutes 30 [--seed 42]
//! ```

#[path = "../tests/soak_driver/mod.rs"]
mod soak_driver;

use std::time::Duration;

fn usage() -> ! {
    eprintln!("usage: soak [--minutes N] [--seed S]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut minutes = 1.0_f64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_secs());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--minutes" => minutes = value.parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
        usage();
    }
    let options = soak_driver::Options {
        seed,
        duration: Duration::from_secs_f64(minutes * 60.0),
    };
    let figures = soak_driver::run(options).await;
    print!("{}", figures.report(&options));
    if !figures.violations.is_empty() {
        std::process::exit(1);
    }
}
