// Shared by the build scripts of every package that produces binaries linked to libtorch
// (the root package's examples and benches, distill-student's tests). Link arguments only
// reach the binaries of the package whose build script emits them, hence one copy each.

/// Emits an rpath to libtorch, and keeps libtorch_cuda linked where the torch build has it.
fn emit_libtorch_rpath() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // A bare `-Wl,--no-as-needed` lands too late on the link line to keep libtorch_cuda;
    // naming the library inside the switch does, so CUDA is found where torch has it.
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
