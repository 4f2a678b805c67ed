//! Fail-fast or collect-all: the same checks serve `verify` (stop at the first failure) and
//! report mode (run every check that can still run and list every failure).
use crate::VerifyError;

/// Collects failures, or stops at the first one.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    collect: bool,
    pub(crate) failures: Vec<VerifyError>,
}

impl Checks {
    pub(crate) fn fail_fast() -> Self {
        Checks::default()
    }

    pub(crate) fn collect_all() -> Self {
        Checks {
            collect: true,
            failures: Vec::new(),
        }
    }

    /// Records `err`; in fail-fast mode returns it so that `?` stops the verification.
    pub(crate) fn fail(&mut self, err: VerifyError) -> Result<(), VerifyError> {
        if self.collect {
            self.failures.push(err);
            Ok(())
        } else {
            Err(err)
        }
    }

    /// `fail` unless `ok`.
    pub(crate) fn ensure(
        &mut self,
        ok: bool,
        err: impl FnOnce() -> VerifyError,
    ) -> Result<(), VerifyError> {
        if ok {
            Ok(())
        } else {
            self.fail(err())
        }
    }

    /// Number of failures so far (0 in fail-fast mode, which never records).
    pub(crate) fn count(&self) -> usize {
        self.failures.len()
    }
}
