use anyhow::Context;
use clap::Parser;
use thaw::cli::{Cli, Command};
use thaw::config::{LogConfig, LogFormat};
use thaw::rules::RuleSet;

fn init_logging(cfg: &LogConfig) {
    let mut filter =
        tracing_subscriber::EnvFilter::try_from_env("THAW_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.level));
    if cfg.redact_literals {
        // The SQL parser's own debug events print statement text, literals included.
        filter = filter.add_directive("sqlparser=off".parse().expect("static directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let config = args.resolve()?;
            init_logging(&config.log);
            let rules = if config.rules.exists() {
                RuleSet::load(&config.rules).with_context(|| format!("loading rules from {}", config.rules.display()))?
            } else {
                tracing::warn!(path = %config.rules.display(), "rules path does not exist: relaying only");
                RuleSet::empty()
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let resolve_args = args.clone();
            let resolve: thaw::ops::reload::Resolve = Box::new(move || resolve_args.resolve());
            runtime.block_on(thaw::server::run(config, args.config.clone(), resolve, rules))?;
            Ok(())
        }
        Command::Explain(args) => {
            print!("{}", thaw::cli::explain::run(&args)?);
            Ok(())
        }
        Command::Check(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (warnings, problems) = match runtime.block_on(thaw::cli::check::run(&args)) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            };
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            for p in &problems {
                eprintln!("error: {p}");
            }
            if !problems.is_empty() {
                std::process::exit(1);
            }
            let n = thaw::rules::RuleSet::load(&args.rules)?.tables().count();
            println!(
                "ok: {n} table rule(s) in {}{}",
                args.rules.display(),
                if args.dsn.is_some() { ", checked against the live schema" } else { "" }
            );
            Ok(())
        }
    }
}
