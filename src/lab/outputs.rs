//! What a finished run leaves for others: the model card, the GGUF export and the manifest.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use distill_student::Pretrained;
use distill_student::checkpoint::gguf_export::{GgufQuant, export_gguf};
use distill_student::tch::Device;
use sha2::{Digest, Sha256};

use super::report::LabReport;
use super::stages::{write_atomic, write_json};
use super::{LabConfig, LabEvent, Stage, TeacherChoice};
use crate::error::{Result, io};
use crate::evaluate::Role;

/// Stage 5: the model card in `final_model/` and, if asked, `final_model.gguf`.
pub(super) fn write(
    config: &LabConfig,
    report: &LabReport,
    on_event: &mut dyn FnMut(LabEvent),
) -> Result<Option<PathBuf>> {
    on_event(LabEvent::StageStarted {
        stage: Stage::Outputs,
        total: 0,
        unit: "files",
    });
    let final_model = config.final_model();
    let dataset_sha256 = sha256_file(&config.path("data.jsonl"))?;
    write_atomic(
        &final_model.join("README.md"),
        model_card(config, report, &dataset_sha256).as_bytes(),
    )?;
    if !config.export_gguf {
        return Ok(None);
    }
    let gguf = config.path("final_model.gguf");
    if !gguf.exists() {
        let model = Pretrained::load(&final_model, Device::Cpu)?;
        let tmp = gguf.with_extension("gguf.tmp");
        export_gguf(&model, &tmp, GgufQuant::F16)?;
        std::fs::rename(&tmp, &gguf).map_err(io(&gguf))?;
    }
    Ok(Some(gguf))
}

/// The SHA-256 of a file, in hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// The terms under which the teacher's outputs may be used, as far as we know them.
fn teacher_terms(config: &LabConfig) -> String {
    match &config.teacher {
        TeacherChoice::Local { .. } if config.teacher_name().to_lowercase().contains("smollm2") => {
            "The training data are answers of SmolLM2-135M-Instruct, released by Hugging Face under the Apache-2.0 licence.".into()
        }
        TeacherChoice::Local { .. } => format!(
            "The training data are answers of the local model `{}`; their use is governed by that model's licence.",
            config.teacher_name()
        ),
        TeacherChoice::Remote { .. } => format!(
            "The training data are outputs of `{}`. Their use is governed by the provider's terms (OpenAI's Terms of Use, \
             or Microsoft's Product Terms for Azure OpenAI), which restrict using outputs to develop models that compete with the provider's.",
            config.teacher_name()
        ),
    }
}

fn model_card(config: &LabConfig, report: &LabReport, dataset_sha256: &str) -> String {
    let student = report.model(Role::Student);
    let untrained = report.model(Role::Untrained);
    let base = match &config.student {
        super::StudentChoice::TeacherLayers(n) => format!("{} ({n} of its layers)", config.teacher_name()),
        super::StudentChoice::Model(path) => super::model_name(path),
    };
    let license = match &config.teacher {
        TeacherChoice::Local { .. } if config.teacher_name().to_lowercase().contains("smollm2") => {
            "apache-2.0"
        }
        _ => "other",
    };
    let rouge =
        |m: Option<&crate::evaluate::ModelEval>| m.map_or("—".into(), |m| format!("{:.4}", m.rouge_l()));
    let mut card = format!(
        "---\nlibrary_name: transformers\npipeline_tag: text-generation\nlicense: {license}\nbase_model: {}\ntags:\n- distillation\n- distill\n- knowledge-distillation\n---\n\n",
        config.teacher_name()
    );
    let _ = writeln!(card, "# Distilled student of {}\n", config.teacher_name());
    let _ = writeln!(
        card,
        "A student language model trained by [distill](https://github.com/distill-rs/distill) on the answers of the teacher `{}`, \
         with hard labels (the teacher's text) and soft labels (the teacher's top-{} log-probabilities, aligned on bytes where its tokenizer differs).\n",
        config.teacher_name(),
        config.top_logprobs
    );
    let _ = writeln!(card, "- **Initialised from:** {base}");
    let _ = writeln!(card, "- **Teacher:** {}", config.teacher_name());
    let _ = writeln!(
        card,
        "- **Dataset:** `data.jsonl` beside this directory, SHA-256 `{dataset_sha256}`, drawn from `{}` ({} prompts, {} held out for testing, {} for validation)",
        config.prompts.display(),
        config.num_prompts,
        config.test_prompts,
        config.val_prompts
    );
    let t = &config.training;
    let _ = writeln!(
        card,
        "- **Training:** loss `{:?}` (alpha {}, temperature {}), {} epochs, batch {}, up to {} tokens, learning rate {} (cosine), seed {}",
        t.loss, t.alpha, t.temperature, t.epochs, t.batch_size, t.max_seq_len, t.learning_rate, config.seed
    );
    let _ = writeln!(card, "\n## Results on the held-out prompts\n");
    let _ = writeln!(
        card,
        "ROUGE-L F1 against the teacher's answers: student {}, untrained student {}.\n",
        rouge(student),
        rouge(untrained)
    );
    card.push_str(&report.summary());
    let _ = writeln!(
        card,
        "\n## Use\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\ntokenizer = AutoTokenizer.from_pretrained(\"final_model\")\nmodel = AutoModelForCausalLM.from_pretrained(\"final_model\")\n```\n"
    );
    let _ = writeln!(
        card,
        "## Licence of the training data\n\n{}",
        teacher_terms(config)
    );
    card
}

/// `manifest.json`: what reproduces and identifies the run.
pub(super) fn write_manifest(config: &LabConfig, report: &LabReport) -> Result<()> {
    let data = config.path("data.jsonl");
    let mut outputs = vec![
        "final_model/",
        "report.md",
        "report.json",
        "charts.svg",
        "loss_curve.svg",
        "metrics.jsonl",
    ];
    if config.export_gguf {
        outputs.insert(1, "final_model.gguf");
    }
    let manifest = serde_json::json!({
        "distill_version": env!("CARGO_PKG_VERSION"),
        // torch-sys refuses at build time any libtorch but the one tch binds.
        "libtorch": distill_student::LIBTORCH_VERSION,
        "configuration": config.fingerprint(),
        "dataset": {
            "path": "data.jsonl",
            "sha256": sha256_file(&data)?,
            "bytes": std::fs::metadata(&data).map_err(io(&data))?.len(),
        },
        "stage_seconds": report.stage_seconds,
        "outputs": outputs,
    });
    write_json(&config.path("manifest.json"), &manifest)
}
