//! Compiles the contracts in pure Rust (protox: no system `protoc`) and writes the file
//! descriptor set that the servers publish through reflection.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    for dir in ["medins/identity/v1", "medins/insurance/v1", "medins/bench/v1"] {
        let full = root.join(dir);
        println!("cargo:rerun-if-changed={}", full.display());
        let mut protos: Vec<_> = std::fs::read_dir(&full)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
            .collect();
        protos.sort();
        files.extend(protos);
    }

    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("medins_descriptor.bin"), fds.encode_to_vec())?;

    // Error details are published for reflection only; tonic-types has their Rust types.
    let error_details = protox::compile([root.join("google/rpc/error_details.proto")], [&root])?;
    println!("cargo:rerun-if-changed={}", root.join("google/rpc").display());
    std::fs::write(out.join("error_details_descriptor.bin"), error_details.encode_to_vec())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
