//! Parameter count of the offline SmolLM2 GGUF, from its header alone.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

#[test]
fn smollm2_gguf_parameter_count_comes_from_the_header() {
    let path = assets::smollm2_gguf();
    // 134,515,008 is also what distill-student counts after dequantizing and loading every
    // tensor (tests/model_parity.rs), and the published 134.5M.
    assert_eq!(
        distill_eval::size::gguf_parameter_count(&path).unwrap(),
        134_515_008
    );
}
