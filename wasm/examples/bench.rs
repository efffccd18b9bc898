//! The browser benchmark's workloads natively, on this machine: JSON on stdout, as
//! `benchmark()` gives it in a page. `web/tests/bench.mjs` runs both and prints the ratios
//! (docs/BENCHMARKS.md).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let now = || start.elapsed().as_secs_f64() * 1000.0;
    let results = hush_wasm::bench::run(&now).map_err(|e| e.to_string())?;
    println!("{}", hush_wasm::bench::to_json(&results));
    Ok(())
}
