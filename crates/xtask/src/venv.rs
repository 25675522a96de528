//! Python venvs for the opt-in peers, each in its own git-ignored directory so that their
//! packages never meet the torch venv's.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::shell::{Failure, run};

/// A venv to make on demand.
pub struct Venv {
    /// Its directory under the repository root (`.venv-llama`).
    pub dir: &'static str,
    /// A module that imports once the packages are in.
    pub module: &'static str,
    /// What to `pip install`.
    pub packages: &'static [&'static str],
    /// Printed before installing (how long it takes).
    pub note: &'static str,
    /// Names the step in failures.
    pub step: &'static str,
}

impl Venv {
    /// The venv's python, after creating the venv and installing the packages unless
    /// `module` already imports.
    pub fn ensure(&self, root: &Path) -> Result<PathBuf, Failure> {
        let venv = root.join(self.dir);
        let python = venv.join("bin").join("python");
        let imports = |python: &Path| {
            Command::new(python)
                .args(["-c", &format!("import {}", self.module)])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if python.exists() && imports(&python) {
            return Ok(python);
        }
        if !python.exists() {
            println!("xtask: creating {}", venv.display());
            run(
                Command::new("python3").arg("-m").arg("venv").arg(&venv),
                self.step,
            )
            .map_err(|e| e.fix("install python3 with the venv module"))?;
        }
        println!("xtask: pip install {} ({})", self.packages.join(" "), self.note);
        run(
            Command::new(venv.join("bin").join("pip"))
                .args(["install", "--disable-pip-version-check"])
                .args(self.packages),
            self.step,
        )
        .map_err(|e| e.fix("check that PyPI is reachable"))?;
        if !imports(&python) {
            return Err(Failure::new(
                self.step,
                format!("{} does not import after installing", self.module),
            ));
        }
        Ok(python)
    }
}
