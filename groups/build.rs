//! Compiles the `.proto` files with protox (pure Rust: no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/hush_group.proto", "proto/hush_group_state.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let mut config = prost_build::Config::new();
    // State messages hold secrets: wipe them when dropped. `Config` holds only numbers (and
    // prost makes it `Copy`, which cannot have a destructor).
    config.message_attribute(
        ".hush.group.state.v1.Config",
        "#[derive(::zeroize::Zeroize)]",
    );
    for m in [
        "GroupState",
        "StateMember",
        "Applied",
        "Removed",
        "OwnChain",
        "ReceiverChain",
        "Skipped",
        "SenderChains",
    ] {
        config.message_attribute(
            format!(".hush.group.state.v1.{m}"),
            "#[derive(::zeroize::Zeroize, ::zeroize::ZeroizeOnDrop)]",
        );
    }
    config.compile_fds(fds)?;
    Ok(())
}
