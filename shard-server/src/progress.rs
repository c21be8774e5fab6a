//! Progress bars of the `ddc` commands that can run long (`bench`, `repair`,
//! `produce --file` of a large file).
//!
//! Bars are drawn on stderr, and only when stderr is a terminal and
//! `--quiet` is off: a script, a pipe or a test sees exactly the output it saw
//! before bars existed, and stdout never carries one.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting items (`{pos}/{len}`).
pub const COUNT_TEMPLATE: &str = "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})";
/// A bar over bytes, with rate and time left.
pub const BYTES_TEMPLATE: &str = "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left";
/// A bar over time (position and length in milliseconds); the message says what was done.
pub const TIME_TEMPLATE: &str = "{prefix} [{bar:30}] {elapsed}/{duration} {msg}";
/// No known end: a spinner and the message.
pub const SPINNER_TEMPLATE: &str = "{prefix} {spinner} {msg} ({elapsed})";

/// Whether to draw progress at all: stderr is a terminal and `--quiet` is off.
pub fn wanted(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A bar of `len` steps drawn with `template` (one of the templates above),
/// or a hidden bar (every call on it does nothing) when `show` is false.
/// `len` None gives a spinner.
pub fn bar(show: bool, len: Option<u64>, template: &str, prefix: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr_with_hz(10));
    // The templates are constants of this module; a bad one is a bug caught by the test below.
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(prefix.to_owned());
    // Redraw even when nothing moves, so the elapsed time and a spinner stay alive.
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Print a line on stderr without tearing a visible bar (it is printed above it).
pub fn note(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for t in [COUNT_TEMPLATE, BYTES_TEMPLATE, TIME_TEMPLATE, SPINNER_TEMPLATE] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn a_hidden_bar_draws_nothing() {
        let bar = bar(false, Some(10), COUNT_TEMPLATE, "x");
        assert!(bar.is_hidden());
        bar.inc(3);
        bar.finish_and_clear();
    }
}
