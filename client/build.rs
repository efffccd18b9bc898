//! Compiles the client payloads (`proto/hush_client.proto`) with protox (pure Rust: no
//! system `protoc`). The relay protocol comes from `hush-relay-protocol`.

//!
//! It also names which driver this build has: `native_io` (tokio, TCP, TLS; the `native`
//! feature, not on wasm32), `web_io` (the browser's WebSocket and timers; the `web` feature
//! on wasm32), and `driver` for either (the `Client` API and its worker).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rustc-check-cfg=cfg(native_io, web_io, driver)");
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "wasm32");
    let native = std::env::var_os("CARGO_FEATURE_NATIVE").is_some() && !wasm;
    let web = std::env::var_os("CARGO_FEATURE_WEB").is_some() && wasm;
    if native {
        println!("cargo::rustc-cfg=native_io");
    }
    if web {
        println!("cargo::rustc-cfg=web_io");
    }
    if native || web {
        println!("cargo::rustc-cfg=driver");
    }
    let files = ["proto/hush_client.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
