//! Decoding SmolLM2 from its GGUF blocks as stored (`--dtype native`) and from Q8_0, against
//! the same file dequantized to f32 and run on libtorch.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

use distill_student::tch::{self, Device, Kind, Tensor};
use distill_student::{CausalLm, ForwardInput, InferenceDtype, LoadedModel};

/// Logits of every position of one prompt.
fn logits(model: &LoadedModel, ids: &[i64]) -> Tensor {
    let ids = Tensor::from_slice(ids).unsqueeze(0);
    model
        .model
        .forward(&ForwardInput::new(&ids), None)
        .squeeze_dim(0)
        .to_kind(Kind::Float)
}

#[test]
fn stored_blocks_decode_close_to_the_dequantized_model_in_about_the_file_size() {
    let _guard = tch::no_grad_guard();
    let path = assets::smollm2_gguf();
    let wide = LoadedModel::load(&path, Device::Cpu).unwrap();
    let ids: Vec<i64> = (0..40).map(|i| 100 + i * 37).collect();
    let want = logits(&wide, &ids);
    for dtype in [InferenceDtype::Native, InferenceDtype::Q8_0] {
        let ours = LoadedModel::load_for_inference(&path, Device::Cpu, dtype).unwrap();
        assert!(matches!(ours.model, CausalLm::CpuLlama(_)));
        let got = logits(&ours, &ids);
        let diff = (&got - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        let agree = got
            .argmax(-1, false)
            .eq_tensor(&want.argmax(-1, false))
            .to_kind(Kind::Float)
            .mean(Kind::Float);
        let agree = agree.double_value(&[]);
        eprintln!("{dtype}: logits within {diff:.4} (largest {scale:.2}); top-1 agrees on {agree:.3}");
        // Measured: native (Q4_1 blocks, 8-bit inputs) 1.18 of 36.0 with 85% agreement; Q8_0
        // 1.55 with 92.5%. The f32 path on the same kernels is within 1e-4 (unit tests).
        assert!(
            diff <= 0.06 * scale,
            "{dtype}: logits differ by {diff} (largest {scale})"
        );
        assert!(agree >= 0.8, "{dtype}: top-1 agrees on {agree} only");
        if dtype == InferenceDtype::Native {
            let CausalLm::CpuLlama(m) = &ours.model else {
                unreachable!()
            };
            let file = std::fs::metadata(&path).unwrap().len();
            eprintln!(
                "native weights: {} bytes in memory, file {file}; formats {:?}",
                m.weight_bytes(),
                m.formats()
            );
            assert!(
                m.weight_bytes() <= file,
                "the stored blocks take no more than the file"
            );
            assert!(m.weight_bytes() * 10 >= file * 9, "every weight is held");
        }
    }
}
