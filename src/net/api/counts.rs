//! `stratus_api_requests_total{path,status}`: API requests by part of the API and status.
//! Both labels come from small fixed sets, so the series stay few.

use std::fmt::Write;

use smallvec::SmallVec;

use super::Endpoint;

#[derive(Debug, Default)]
pub struct ApiCounts {
    counts: SmallVec<[((&'static str, u16), u64); 16]>,
}

impl ApiCounts {
    /// One request to `endpoint` was answered with `status`.
    pub fn count(&mut self, endpoint: Endpoint, status: u16) {
        let key = (endpoint.label(), status);
        match self.counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((key, 1)),
        }
    }

    /// Appends the counter to a metrics page.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP stratus_api_requests_total HTTP API requests answered, by path and status.\n# TYPE stratus_api_requests_total counter"
        );
        for ((path, status), n) in &self.counts {
            let _ = writeln!(
                out,
                "stratus_api_requests_total{{path=\"{path}\",status=\"{status}\"}} {n}"
            );
        }
    }
}
