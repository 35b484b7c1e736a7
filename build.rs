//! Compiles `proto/` with tonic-prost-build. protoc comes from `$PROTOC` when set, otherwise from
//! the vendored binary, so that a machine with only the Rust toolchain can build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    println!("cargo:rerun-if-changed=proto/raftnode.proto");
    tonic_prost_build::configure().compile_protos(&["proto/raftnode.proto"], &["proto"])?;
    Ok(())
}
