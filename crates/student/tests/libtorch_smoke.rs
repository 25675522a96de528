//! Proves that libtorch links and runs: a small graph, a backward pass, a known gradient.

use tch::{Kind, Tensor};

#[test]
fn backward_through_a_small_graph_gives_the_analytic_gradient() {
    // f(x) = sum(x^2 * w) + mean(tanh(x)), so df/dx_i = 2 x_i w_i + (1 - tanh(x_i)^2) / n.
    let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0]).set_requires_grad(true);
    let w = Tensor::from_slice(&[3.0f32, 0.25, -1.5]);
    let f = (&x * &x * &w).sum(Kind::Float) + x.tanh().mean(Kind::Float);
    f.backward();

    let grad: Vec<f32> = Vec::try_from(x.grad()).unwrap();
    let expected: Vec<f32> = [(0.5f32, 3.0f32), (-1.0, 0.25), (2.0, -1.5)]
        .iter()
        .map(|&(xi, wi)| 2.0 * xi * wi + (1.0 - xi.tanh().powi(2)) / 3.0)
        .collect();
    for (g, e) in grad.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-6, "gradient {grad:?}, expected {expected:?}");
    }
}

#[test]
fn runtime_reports_at_least_one_cpu_thread() {
    let runtime = distill_student::Runtime::query();
    assert!(runtime.cpu_threads >= 1, "{runtime:?}");
}
