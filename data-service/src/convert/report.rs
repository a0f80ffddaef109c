//! The violations one conversion collects, capped so a hostile request cannot make us build a
//! huge error.

use common::status::Violation;

use super::{MAX_VIOLATIONS, Path};

/// Collects violations up to [`MAX_VIOLATIONS`], counting the rest.
#[derive(Default)]
pub(super) struct Report {
    pub(super) violations: Vec<Violation>,
    omitted: usize,
}

impl Report {
    pub(super) fn add(&mut self, path: Path, description: impl Into<String>) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation::new(path(), description));
        } else {
            self.omitted += 1;
        }
    }

    pub(super) fn finish(mut self, field: &str) -> Result<(), Vec<Violation>> {
        if self.violations.is_empty() {
            return Ok(());
        }
        if self.omitted > 0 {
            self.violations.push(Violation::new(
                field,
                format!("has {} more problems not listed here", self.omitted),
            ));
        }
        Err(self.violations)
    }
}
