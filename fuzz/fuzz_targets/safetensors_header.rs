//! Safetensors on arbitrary bytes, through both readers the workspace uses: distill-eval's own
//! header parser (parameter counts) and the `safetensors` crate (which distill-student loads
//! weights through, via tch). Neither may panic; when both accept a file they must agree on
//! its parameter count, and every tensor view must hold exactly the bytes its shape needs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safetensors::SafeTensors;

fuzz_target!(|data: &[u8]| {
    let ours = distill_eval::size::safetensors_parameter_count_from_bytes(data);
    let Ok(theirs) = SafeTensors::deserialize(data) else {
        return;
    };
    let mut elements = 0u64;
    for (_, view) in theirs.tensors() {
        let count: usize = view.shape().iter().product();
        let bits = view.dtype().bitsize();
        assert_eq!(view.data().len(), (count * bits).div_ceil(8), "view size disagrees with its shape");
        elements += count as u64;
    }
    if let Ok(ours) = ours {
        assert_eq!(ours, elements, "parameter counts disagree");
    }
});
