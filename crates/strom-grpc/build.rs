//! Generates the gRPC door's types and service from `proto/strom/v1/strom.proto` with protox
//! (a protobuf compiler in Rust: no `protoc` on the build machine) and tonic-prost-build, and
//! writes the file descriptor set that server reflection serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("strom/v1/strom.proto").display()
    );
    let fds = protox::compile(["strom/v1/strom.proto"], [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("strom_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .bytes(".strom.v1")
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
