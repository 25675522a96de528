//! AdamW on plain tensors (so that its moments can be saved and restored exactly), weight-decay
//! groups, global-norm gradient clipping, the learning-rate schedule, and dynamic loss scaling.
//!
//! The update is PyTorch's `torch.optim.AdamW` (single-tensor path), up to float rounding:
//! `p ← p·(1 − lr·wd)`, `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε)`.

use std::collections::BTreeMap;

use tch::{Kind, Tensor, nn};

use super::config::{LrSchedule, OptimConfig};
use super::error::TensorMismatch;

/// Whether a variable is decayed: matrices are; norms, biases and embeddings are not (the usual
/// GPT-2/Llama recipe: decay shrinks embeddings of rare tokens and fights the norms' gains).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.ends_with("norm.weight") || name.contains("embed_tokens"))
}

/// One trained variable and its state.
#[derive(Debug)]
struct Param {
    name: String,
    /// The model's variable (f32, or bf16 in bf16 mode).
    var: Tensor,
    /// f32 master copy when `var` is not f32.
    master: Option<Tensor>,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW over every trainable variable of a store, in name order.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<Param>,
    config: OptimConfig,
    /// Optimizer steps taken (Adam's `t`).
    steps: u64,
}

impl AdamW {
    /// An optimizer for the trainable variables of `vs`. With `masters`, `vs` holds reduced
    /// precision copies and the optimizer keeps (and updates) these f32 values instead.
    pub fn new(vs: &nn::VarStore, config: &OptimConfig, masters: Option<BTreeMap<String, Tensor>>) -> Self {
        let named: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let mut masters = masters.unwrap_or_default();
        let params = named
            .into_iter()
            .filter(|(_, var)| var.requires_grad())
            .map(|(name, var)| {
                let master = masters.remove(&name);
                let shape_of = master.as_ref().unwrap_or(&var);
                let m = shape_of.zeros_like().to_kind(Kind::Float);
                let v = m.zeros_like();
                Param {
                    decay: decays(&name),
                    name,
                    var,
                    master,
                    m,
                    v,
                }
            })
            .collect();
        Self {
            params,
            config: config.clone(),
            steps: 0,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// The gradients as f32 (a view when they already are), `None` where a variable got none.
    fn grads(&self) -> Vec<Option<Tensor>> {
        self.params
            .iter()
            .map(|p| {
                let g = p.var.grad();
                g.defined().then(|| {
                    if g.kind() == Kind::Float {
                        g
                    } else {
                        g.to_kind(Kind::Float)
                    }
                })
            })
            .collect()
    }

    /// Divides every gradient by `scale` (undoing loss scaling), clips the global L2 norm to
    /// `max_norm` (0 = no clipping), and returns the norm before clipping. A non-finite norm
    /// leaves the gradients as they are.
    pub fn unscale_and_clip(&mut self, scale: f64, max_norm: f64) -> f64 {
        let _guard = tch::no_grad_guard();
        let grads = self.grads();
        if scale != 1.0 {
            for (p, g) in self.params.iter_mut().zip(&grads) {
                if g.is_some() {
                    let mut grad = p.var.grad();
                    let _ = grad.g_div_scalar_(scale);
                }
            }
        }
        let grads = self.grads();
        let norms: Vec<Tensor> = grads.iter().flatten().map(|g| g.norm()).collect();
        if norms.is_empty() {
            return 0.0;
        }
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
        if max_norm > 0.0 && total.is_finite() {
            // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6), never up.
            let coef = max_norm / (total + 1e-6);
            if coef < 1.0 {
                for p in &self.params {
                    let mut grad = p.var.grad();
                    if grad.defined() {
                        let _ = grad.g_mul_scalar_(coef);
                    }
                }
            }
        }
        total
    }

    /// One AdamW update at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let c = &self.config;
        let t = self.steps as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let step_size = lr / bias1;
        let bias2_sqrt = bias2.sqrt();
        let grads = self.grads();
        for (p, g) in self.params.iter_mut().zip(grads) {
            let Some(g) = g else { continue };
            let mut value = match &p.master {
                Some(master) => master.shallow_clone(),
                None => p.var.shallow_clone(),
            };
            if p.decay && c.weight_decay != 0.0 {
                let _ = value.g_mul_scalar_(1.0 - lr * c.weight_decay);
            }
            // In place, with one temporary per tensor: large temporaries cost page faults on the CPU.
            let _ = p.m.lerp_(&g, 1.0 - c.beta1);
            // v ← (1−β2)·(β2/(1−β2)·v + g²), as tch's addcmul_ has no scale argument.
            let _ = p.v.g_mul_scalar_(c.beta2 / (1.0 - c.beta2));
            let _ = p.v.addcmul_(&g, &g);
            let _ = p.v.g_mul_scalar_(1.0 - c.beta2);
            // p ← p + m · (−step_size / (√v / √(1−β2^t) + ε))
            let mut scale = p.v.sqrt();
            let _ = scale.g_div_scalar_(bias2_sqrt);
            let _ = scale.g_add_scalar_(c.eps);
            let _ = scale.reciprocal_();
            let _ = scale.g_mul_scalar_(-step_size);
            let _ = value.addcmul_(&p.m, &scale);
            if p.master.is_some() {
                p.var.copy_(&value);
            }
        }
    }

    /// The optimizer state as named tensors: `m.<var>`, `v.<var>` and, with masters,
    /// `master.<var>`; plus the step count.
    pub fn state(&self) -> (Vec<(String, Tensor)>, u64) {
        let mut out = Vec::with_capacity(self.params.len() * 2);
        for p in &self.params {
            out.push((format!("m.{}", p.name), p.m.shallow_clone()));
            out.push((format!("v.{}", p.name), p.v.shallow_clone()));
        }
        (out, self.steps)
    }

    /// The f32 value of every variable (masters where there are masters).
    pub fn values(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| {
                let v = p.master.as_ref().unwrap_or(&p.var);
                (p.name.clone(), v.shallow_clone())
            })
            .collect()
    }

    /// Restores moments saved by [`Self::state`]; fails on the first that is missing or misshapen.
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        steps: u64,
    ) -> Result<(), TensorMismatch> {
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            for (prefix, slot) in [("m", &mut p.m), ("v", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                slot.copy_(saved(tensors, &key, slot)?);
            }
        }
        self.steps = steps;
        Ok(())
    }

    /// Restores variable values (into masters where there are masters, and the model copies).
    pub fn load_values(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<(), TensorMismatch> {
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            let target = p.master.as_mut().unwrap_or(&mut p.var);
            let saved = saved(tensors, &p.name, target)?;
            target.copy_(saved);
            if p.master.is_some() {
                p.var.copy_(saved);
            }
        }
        Ok(())
    }
}

/// The tensor saved as `name`, when it has the shape of `slot`.
fn saved<'a>(
    tensors: &'a BTreeMap<String, Tensor>,
    name: &str,
    slot: &Tensor,
) -> Result<&'a Tensor, TensorMismatch> {
    let saved = tensors
        .get(name)
        .ok_or_else(|| TensorMismatch::Missing(name.to_string()))?;
    if saved.size() != slot.size() {
        return Err(TensorMismatch::Shape {
            name: name.to_string(),
            found: saved.size(),
            expected: slot.size(),
        });
    }
    Ok(saved)
}

/// The learning rate before step `step` (0-based) of `total`: linear warm-up to `lr` over
/// `warmup_steps` (the first step already gets `lr / warmup_steps`), then the schedule down to 0.
pub fn learning_rate(config: &OptimConfig, step: u64, total: u64) -> f64 {
    let lr = config.lr;
    if step < config.warmup_steps {
        return lr * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let span = total.saturating_sub(config.warmup_steps).max(1) as f64;
    let progress = ((step - config.warmup_steps) as f64 / span).min(1.0);
    match config.schedule {
        LrSchedule::Constant => lr,
        LrSchedule::Linear => lr * (1.0 - progress),
        LrSchedule::Cosine => lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

/// Dynamic loss scaling for f16 (as `torch.amp.GradScaler`): multiply the loss by `scale`; on a
/// non-finite gradient skip the step and halve it; after `interval` good steps, double it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    /// The current scale (1 when disabled).
    pub scale: f64,
    /// Good steps since the last change.
    pub good_steps: u32,
    /// Whether scaling is on.
    pub enabled: bool,
}

impl LossScaler {
    /// Good steps before the scale grows.
    pub const INTERVAL: u32 = 2000;

    /// Scaling from 2^16 when `enabled`, else a no-op scaler.
    pub fn new(enabled: bool) -> Self {
        Self {
            scale: if enabled { 65536.0 } else { 1.0 },
            good_steps: 0,
            enabled,
        }
    }

    /// Records a step's outcome and adapts the scale.
    pub fn update(&mut self, finite: bool) {
        if !self.enabled {
            return;
        }
        if finite {
            self.good_steps += 1;
            if self.good_steps >= Self::INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale * 0.5).max(1.0);
            self.good_steps = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_groups_follow_names() {
        assert!(decays("model.layers.0.self_attn.q_proj.weight"));
        assert!(decays("lm_head.weight"));
        assert!(!decays("model.embed_tokens.weight"));
        assert!(!decays("model.layers.0.input_layernorm.weight"));
        assert!(!decays("model.norm.weight"));
        assert!(!decays("model.layers.0.self_attn.q_proj.bias"));
    }

    #[test]
    fn adamw_matches_a_hand_computed_update() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let layer = vs.root() / "layer";
        let w = layer.var_copy("weight", &Tensor::from_slice(&[1.0f32, -2.0]));
        let b = layer.var_copy("bias", &Tensor::from_slice(&[0.5f32]));
        let config = OptimConfig {
            lr: 0.1,
            weight_decay: 0.5,
            eps: 1e-8,
            ..OptimConfig::default()
        };
        let mut opt = AdamW::new(&vs, &config, None);
        // Two steps with gradients 2·w and a constant 3 for the bias.
        let mut want_w = [1.0f64, -2.0];
        let mut want_b = 0.5f64;
        let (mut mw, mut vw, mut mb, mut vb) = ([0.0f64; 2], [0.0f64; 2], 0.0f64, 0.0f64);
        for t in 1..=2 {
            opt.zero_grad();
            let loss = (&w * &w).sum(Kind::Float) + &b.sum(Kind::Float) * 3.0;
            loss.backward();
            opt.step(config.lr);
            let (b1, b2, lr) = (0.9f64, 0.999f64, 0.1f64);
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            for i in 0..2 {
                let g = 2.0 * want_w[i];
                want_w[i] *= 1.0 - lr * 0.5;
                mw[i] = b1 * mw[i] + (1.0 - b1) * g;
                vw[i] = b2 * vw[i] + (1.0 - b2) * g * g;
                want_w[i] -= lr / c1 * mw[i] / ((vw[i] / c2).sqrt() + 1e-8);
            }
            // No decay on the bias.
            mb = b1 * mb + (1.0 - b1) * 3.0;
            vb = b2 * vb + (1.0 - b2) * 9.0;
            want_b -= lr / c1 * mb / ((vb / c2).sqrt() + 1e-8);
        }
        let got_w = Vec::<f32>::try_from(&w).unwrap();
        for (g, want) in got_w.iter().zip(want_w) {
            assert!((f64::from(*g) - want).abs() < 1e-6, "{g} vs {want}");
        }
        assert!((b.double_value(&[0]) - want_b).abs() < 1e-6);
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_reports_the_norm_before() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[3.0f32, 4.0]));
        let mut opt = AdamW::new(&vs, &OptimConfig::default(), None);
        (&w * &w).sum(Kind::Float).backward(); // gradient (6, 8), norm 10
        let norm = opt.unscale_and_clip(2.0, 1.0); // unscaled: (3, 4), norm 5
        assert!((norm - 5.0).abs() < 1e-6);
        let g = Vec::<f32>::try_from(&w.grad()).unwrap();
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let mut c = OptimConfig {
            lr: 1.0,
            warmup_steps: 4,
            ..OptimConfig::default()
        };
        assert_eq!(learning_rate(&c, 0, 14), 0.25);
        assert_eq!(learning_rate(&c, 3, 14), 1.0);
        assert_eq!(learning_rate(&c, 4, 14), 1.0);
        assert!((learning_rate(&c, 9, 14) - 0.5).abs() < 1e-12);
        c.schedule = LrSchedule::Cosine;
        assert!((learning_rate(&c, 9, 14) - 0.5).abs() < 1e-12);
        assert!(learning_rate(&c, 13, 14) > 0.0);
        c.schedule = LrSchedule::Constant;
        assert_eq!(learning_rate(&c, 13, 14), 1.0);
    }

    #[test]
    fn loss_scaler_backs_off_and_grows() {
        let mut s = LossScaler::new(true);
        s.update(false);
        assert_eq!(s.scale, 32768.0);
        for _ in 0..LossScaler::INTERVAL {
            s.update(true);
        }
        assert_eq!(s.scale, 65536.0);
        let mut off = LossScaler::new(false);
        off.update(false);
        assert_eq!(off.scale, 1.0);
    }
}
