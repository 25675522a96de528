//! Parameter counts from safetensors headers against a full load in Python, and
//! percentiles against numpy.

mod common;

use common::{assert_close, f64_of, fixture, read_json};
use distill_eval::size::{disk_size, parameter_count_from_shapes, safetensors_parameter_count};
use distill_eval::stats::percentile;

#[test]
fn safetensors_count_equals_full_load() {
    let expected = read_json("tiny_model/expected.json");
    let dir = fixture("tiny_model");
    let count = safetensors_parameter_count(&dir).unwrap();
    assert_eq!(count.parameters, expected["parameters"].as_u64().unwrap());
    assert_eq!(count.files.len(), 2);
    assert_eq!(count.tensors, 8);
    for (name, n) in expected["per_file"].as_object().unwrap() {
        let one = safetensors_parameter_count(&dir.join(name)).unwrap();
        assert_eq!(one.parameters, n.as_u64().unwrap(), "{name}");
    }
    // Without the index, every *.safetensors file of the directory is counted.
    let copy = tempfile::tempdir().unwrap();
    for name in expected["per_file"].as_object().unwrap().keys() {
        std::fs::copy(dir.join(name), copy.path().join(name)).unwrap();
    }
    assert_eq!(
        safetensors_parameter_count(copy.path()).unwrap().parameters,
        count.parameters
    );
    assert!(safetensors_parameter_count(tempfile::tempdir().unwrap().path()).is_err());
    assert!(disk_size(&dir).unwrap() > 11_000);
}

#[test]
fn gguf_style_shapes() {
    // distill-gguf reports dims as u64 lists; a tied 49152 x 576 embedding and a norm.
    assert_eq!(
        parameter_count_from_shapes([vec![576u64, 49152], vec![576]]).unwrap(),
        576 * 49152 + 576
    );
}

#[test]
fn percentiles_match_numpy_linear() {
    let checks = read_json("python.json");
    for case in checks["percentiles"].as_array().unwrap() {
        let data: Vec<f64> = case["data"].as_array().unwrap().iter().map(f64_of).collect();
        for (q, want) in case["q"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["linear"].as_array().unwrap())
        {
            let got = percentile(&data, f64_of(q)).unwrap();
            assert_close(got, f64_of(want), &format!("n={} q={}", data.len(), f64_of(q)));
        }
    }
}
