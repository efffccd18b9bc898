//! Compiles the `.proto` files with protox (pure Rust: no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/hush_session.proto", "proto/hush_session_state.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        // State messages hold secrets: wipe them when dropped.
        .message_attribute(
            ".hush.session.state.v1",
            "#[derive(::zeroize::Zeroize, ::zeroize::ZeroizeOnDrop)]",
        )
        .compile_fds(fds)?;
    Ok(())
}
