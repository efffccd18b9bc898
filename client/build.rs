//! Compiles the client payloads and the relay protocol with protox (pure Rust: no system
//! `protoc`). The relay protocol is read from the relay's own `.proto` file, so both sides
//! build from one definition without the client depending on the relay crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/hush_client.proto",
        "../server-reference/proto/hush_relay.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto", "../server-reference/proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
