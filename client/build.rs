//! Compiles the client payloads (`proto/hush_client.proto`) with protox (pure Rust: no
//! system `protoc`). The relay protocol comes from `hush-relay-protocol`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/hush_client.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
