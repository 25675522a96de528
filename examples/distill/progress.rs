//! Messages beside progress bars that reach the user even where the bar is not drawn.

use indicatif::ProgressBar;

/// Prints `line` above `bar`, or straight to stderr where the bar is hidden (stderr is a pipe
/// or a CI log), since indicatif drops a hidden bar's lines.
pub fn say(bar: &ProgressBar, line: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        bar.println(line);
    }
}
