//! Logging with `tracing`: human-readable text by default, JSON lines when configured.

use tracing_subscriber::EnvFilter;

use crate::runtime::settings::{LogFormat, LogSettings};

/// Install the global subscriber; `RUST_LOG` overrides the configured filter.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    let result = match settings.format {
        LogFormat::Text => builder.try_init(),
        // Each line carries the fields of the span it was logged in (request id, order id).
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
