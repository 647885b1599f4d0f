//! A private PostgreSQL under `./.data/` for `serve --demo` when none is running.

use anyhow::Context;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const LOCAL_PORT: u16 = 54329;

pub struct LocalPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    run_as_postgres: bool,
}

/// The directory holding `initdb` and `pg_ctl`: on PATH, or Debian's versioned directories.
pub fn find_binaries() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

impl LocalPostgres {
    /// Initializes (first time) and starts the server; returns once it accepts connections.
    pub fn start(bin_dir: PathBuf, root: &Path) -> anyhow::Result<Self> {
        // Absolute: the server runs from its data directory, and the socket path must resolve.
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let data_dir = std::fs::canonicalize(root)
            .with_context(|| format!("cannot resolve {}", root.display()))?
            .join("postgres");
        let this = Self {
            bin_dir,
            data_dir,
            // PostgreSQL refuses to run as root: run it as the `postgres` user instead.
            run_as_postgres: is_root(),
        };
        if !this.data_dir.join("PG_VERSION").is_file() {
            std::fs::create_dir_all(&this.data_dir)
                .with_context(|| format!("cannot create {}", this.data_dir.display()))?;
            this.chown()?;
            let data = this.data_dir.display().to_string();
            this.run(
                "initdb",
                &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            )?;
        }
        let data = this.data_dir.display().to_string();
        let options = format!("-p {LOCAL_PORT} -k {data} -c listen_addresses=127.0.0.1");
        let log = this.data_dir.join("server.log").display().to_string();
        this.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        )?;
        Ok(this)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{LOCAL_PORT}/checkout")
    }

    pub fn stop(&self) {
        let data = self.data_dir.display().to_string();
        if let Err(e) = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]) {
            tracing::warn!(error = %e, "could not stop the local PostgreSQL");
        } else {
            tracing::info!("stopped the local PostgreSQL");
        }
    }

    fn chown(&self) -> anyhow::Result<()> {
        if self.run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.data_dir)
                .status()?;
            anyhow::ensure!(
                status.success(),
                "chown of {} failed",
                self.data_dir.display()
            );
        }
        Ok(())
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let binary = self.bin_dir.join(program);
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        let output = command
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }
}
