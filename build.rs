//! Generates the gRPC code for `proto/oubli/v1` and the encoded file descriptor set that the
//! reflection service serves, so clients such as grpcurl work without the .proto files.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only the protos (and this file) feed the generated code: without these lines cargo would
    // rerun the script, and rebuild the crate, whenever any file of the package changed.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("oubli_v1_descriptor.bin"))
        // Templates are as sensitive as photos: no derived Debug may print one.
        .skip_debug([
            "oubli.v1.Embedding",
            "oubli.v1.Provenance",
            "oubli.v1.EnrollRequest",
            "oubli.v1.SubmitAccessRequestRequest",
            "oubli.v1.SubmitAccessRequestResponse",
            "oubli.v1.GetRequestRequest",
            "oubli.v1.GetAccessReportRequest",
            "oubli.v1.GetAccessReportResponse",
            "oubli.v1.RequestStatus",
        ])
        .compile_protos(
            &[
                "proto/oubli/v1/templates.proto",
                "proto/oubli/v1/transparency.proto",
                "proto/oubli/v1/rights.proto",
                "proto/oubli/v1/replication.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
