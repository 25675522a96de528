//! Gives the test binaries of distill-serve an rpath to libtorch, so they run without LD_LIBRARY_PATH.

include!("../../build/libtorch_rpath.rs");

fn main() {
    emit_libtorch_rpath();
}
