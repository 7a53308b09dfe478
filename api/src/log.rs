//! The daemons' logging (`--log FILTER --log-format text|json`), one setup for bgpd and meshd.
//! JSON is one object per line (`timestamp`, `level`, `fields.message` and the event's other
//! fields, the span list), for log shippers; text is for people (colours on a terminal only).

use std::io::IsTerminal;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// Parses a `--log-format` value; the error names the choices.
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?}: use \"text\" or \"json\"")),
        }
    }
}

/// Installs the global subscriber: `filter` in tracing's env-filter syntax (an invalid one
/// falls back to "info", said on stderr), events to stderr in `format`.
pub fn init(filter: &str, format: LogFormat) {
    let env = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("--log {filter:?}: {e}; logging at info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_target(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => b.json().with_current_span(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_name_the_choices() {
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert!(
            LogFormat::parse("yaml")
                .unwrap_err()
                .contains("\"text\" or \"json\"")
        );
    }
}
