//! Compiles the wire contracts in `proto/` with a vendored `protoc`, so a fresh machine needs
//! nothing beyond the Rust toolchain. An explicit `$PROTOC` still wins.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => std::path::PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let well_known_types = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    let protos = [
        "proto/ranged/v1/kv.proto",
        "proto/ranged/v1/raft.proto",
        "proto/ranged/v1/node.proto",
        "proto/ranged/v1/status.proto",
        "proto/ranged/v1/auth.proto",
        "proto/etcd/kv.proto",
    ];
    tonic_prost_build::configure().build_server(true).build_client(true).compile_with_config(
        config,
        &protos.map(std::path::PathBuf::from),
        &[std::path::PathBuf::from("proto"), well_known_types],
    )?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
