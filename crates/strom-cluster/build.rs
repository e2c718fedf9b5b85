//! Generates the etcd v3 client from our minimal protos under `proto/etcd/` with protox (a
//! protobuf compiler in Rust: no `protoc` on the build machine) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["etcd/mvcc.proto", "etcd/rpc.proto", "etcd/election.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
