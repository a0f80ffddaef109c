//! Compiles every `.proto` under `proto/` with protox (pure Rust, no system `protoc`), writes the
//! encoded descriptor set for server reflection, and generates prost messages and tonic stubs.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

/// Keep in sync with the `redacted_debug!` list in src/proto.rs (the build fails otherwise).
const SECRET_MESSAGES: &[&str] = &[
    ".dynagate.auth.v1.RegisterRequest",
    ".dynagate.auth.v1.LoginRequest",
    ".dynagate.auth.v1.LoginResponse",
    ".dynagate.auth.v1.RefreshRequest",
    ".dynagate.auth.v1.RefreshResponse",
    ".dynagate.auth.v1.LogoutRequest",
    ".dynagate.auth.v1.GetCredentialsResponse",
    ".dynagate.auth.v1.ChangePasswordRequest",
    ".dynagate.auth.v1.EnrollTotpRequest",
    ".dynagate.auth.v1.EnrollTotpResponse",
    ".dynagate.auth.v1.ConfirmTotpRequest",
    ".dynagate.auth.v1.ConfirmTotpResponse",
    ".dynagate.auth.v1.DisableTotpRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let mut protos = Vec::new();
    collect_protos(&proto_root, &mut protos)?;
    protos.sort();

    println!("cargo:rerun-if-changed={}", proto_root.display());
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let mut compiler = protox::Compiler::new([&proto_root])?;
    // Source info keeps the proto comments: they become rustdoc and show up in `grpcurl describe`.
    compiler.include_source_info(true).include_imports(true);
    for proto in &protos {
        compiler.open_file(proto.strip_prefix(&proto_root)?)?;
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("dynagate_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        // Messages carrying passwords, tokens or keys get a redacting Debug (src/proto.rs),
        // so no log line or panic message can ever print them.
        .skip_debug(SECRET_MESSAGES)
        // Undecodable messages are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::Codec")
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
