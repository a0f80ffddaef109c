//! The one markdown table: each figure with its baseline measured in the same run, the ratio
//! and the target it is held to.

use std::time::Duration;

/// One line of the table.
pub struct Row {
    figure: String,
    baseline: String,
    measured: String,
    ratio: String,
    target: String,
}

/// A figure compared with its baseline.
pub fn row(
    figure: impl Into<String>,
    baseline: impl Into<String>,
    measured: impl Into<String>,
    ratio: impl Into<String>,
    target: impl Into<String>,
) -> Row {
    Row {
        figure: figure.into(),
        baseline: baseline.into(),
        measured: measured.into(),
        ratio: ratio.into(),
        target: target.into(),
    }
}

/// A figure with no baseline and no target.
pub fn note(figure: impl Into<String>, measured: impl Into<String>) -> Row {
    row(figure, "—", measured, "—", "—")
}

/// `measured / baseline` as `1.23×`.
pub fn ratio(measured: Duration, baseline: Duration) -> String {
    times(measured.as_secs_f64() / baseline.as_secs_f64().max(1e-9))
}

/// `1.23×`.
pub fn times(ratio: f64) -> String {
    format!("{ratio:.2}×")
}

/// `123 µs`.
pub fn micros(duration: Duration) -> String {
    format!("{} µs", duration.as_micros())
}

/// `12.3 ms`.
pub fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// The table under `header`.
pub fn render(header: &str, rows: &[Row]) -> String {
    let mut table = format!(
        "{header}\n\n| figure | baseline (same run) | measured | ratio | target |\n\
         |---|---|---|---|---|\n"
    );
    for row in rows {
        let cell = |text: &str| text.replace('|', "\\|");
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(&row.figure),
            cell(&row.baseline),
            cell(&row.measured),
            cell(&row.ratio),
            cell(&row.target)
        ));
    }
    table
}
