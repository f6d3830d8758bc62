//! Command line: `thaw run`, `thaw check`, `thaw explain`.
use crate::config::{Config, LogFormat};
pub mod check;
pub mod explain;
mod params;

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "thaw", version, about = "A MySQL/MariaDB sidecar that removes lock contention from check-then-write flows", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy: the app connects here instead of to the database.
    Run(RunArgs),
    /// Validate rule files; with --dsn also against the live schema. Exit 1 on any problem.
    Check(check::CheckArgs),
    /// Show what a statement (or a file of them, --file) becomes under the rules.
    Explain(explain::ExplainArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// YAML config file; command-line flags override its values.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address the app connects to [default: 127.0.0.1:3307].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// MySQL/MariaDB server, host:port [default: 127.0.0.1:3306].
    #[arg(long, value_name = "ADDR")]
    pub backend: Option<String>,
    /// Rules: a YAML file or a folder of them [default: rules/].
    #[arg(long, value_name = "PATH")]
    pub rules: Option<PathBuf>,
    /// Admin HTTP address for /metrics, /livez, /readyz [default: 127.0.0.1:9105].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Shadow mode for every rule: forward statements as sent, log and
    /// count what enforce mode would do.
    #[arg(long)]
    pub shadow: bool,
}

impl RunArgs {
    /// Defaults, then the config file, then flags.
    pub fn resolve(&self) -> Result<Config, crate::config::ConfigError> {
        let mut c = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.backend {
            c.backend = v.clone();
        }
        if let Some(v) = &self.rules {
            c.rules = v.clone();
        }
        if let Some(v) = self.admin {
            c.admin = v;
        }
        if self.shadow {
            c.shadow = true;
        }
        match self.log_format.as_deref() {
            Some("json") => c.log.format = LogFormat::Json,
            Some("text") => c.log.format = LogFormat::Text,
            Some(other) => {
                return Err(crate::config::ConfigError::Invalid {
                    file: "--log-format".into(),
                    message: format!("unknown format {other:?}, expected text or json"),
                });
            }
            None => {}
        }
        Ok(c)
    }
}
