//! What a run shows while it runs: a progress bar over the load, spinners over waits.
//! Only indicatif: the load generator and the targets draw with it, and nothing here reads
//! what they record.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over a run of `duration`, labelled.
pub fn progress_bar(label: &str, duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {elapsed:>3} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// A spinner for waits (draining the backlog).
pub fn spinner(label: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} {spinner} {elapsed:>3} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
