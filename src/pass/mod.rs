//! The pass manager: runs passes to a fixed point, checks the IR after every pass, rolls a
//! failed pass back, and records what each one did.

pub mod pattern;

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::Graph;

/// Settings every pass can read.
#[derive(Debug, Clone)]
pub struct Context {
    /// A DETR pass that does not apply is an error instead of a note.
    pub strict: bool,
    /// Constant folding never creates a tensor larger than this many bytes unless it replaces
    /// at least as many bytes of constant inputs.
    pub fold_budget_bytes: usize,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            strict: false,
            fold_budget_bytes: 1 << 20,
        }
    }
}

/// What a pass reports back.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The graph was rewritten; each line says what changed.
    Changed(Vec<String>),
    /// The pass applied but found nothing to do.
    Unchanged,
    /// The pattern the pass looks for is not in this model; the reason says why.
    NotApplicable(String),
}

impl Outcome {
    pub fn changed(lines: Vec<String>) -> Outcome {
        if lines.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Changed(lines)
        }
    }
}

/// A graph rewrite. Implementations find their targets by pattern every time they run; node
/// indices never survive from one run to the next.
pub trait Pass: Send + Sync {
    fn name(&self) -> &'static str;
    /// One line for `detrc passes`.
    fn about(&self) -> &'static str;
    /// True for the passes that only make sense on DETR models (they may say not applicable).
    fn detr_specific(&self) -> bool {
        false
    }
    /// Rewrites the graph. An `Err` makes the manager restore the graph as it was before.
    fn run(&self, g: &mut Graph, cx: &Context) -> Result<Outcome, String>;
}

/// What became of one pass execution. Reports, the CLI's progress lines and the JSON of
/// `--report` spell it as [`Status::as_str`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The pass rewrote the graph.
    Changed,
    /// The pass applied and found nothing to do.
    Unchanged,
    /// The pattern the pass looks for is not in this model.
    NotApplicable,
    /// The pass failed and the graph was restored as it was before it.
    RolledBack,
}

impl Status {
    /// The spelling in reports and messages: "changed", "unchanged", "not-applicable",
    /// "rolled-back".
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Changed => "changed",
            Status::Unchanged => "unchanged",
            Status::NotApplicable => "not-applicable",
            Status::RolledBack => "rolled-back",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: progress lines align it with `{:<14}`.
        f.pad(self.as_str())
    }
}

// Callers (and tests) compare a status with its spelling.
impl PartialEq<str> for Status {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub step: usize,
    pub iteration: usize,
    pub pass: String,
    pub status: Status,
    pub details: Vec<String>,
    pub ops_before: usize,
    pub ops_after: usize,
    /// Wall time of the pass, validation included.
    pub millis: f64,
}

/// Progress events for the caller (progress bars, logs).
pub enum Event<'a> {
    Start { step: usize, pass: &'a str },
    Done(&'a Report),
}

pub struct Pipeline {
    pub passes: Vec<Box<dyn Pass>>,
    pub max_iterations: usize,
    pub context: Context,
    /// Write the IR as text after every pass that changed it.
    pub dump_dir: Option<PathBuf>,
    /// Stop after this many pass executions: bisects a bad rewrite to the step that made it.
    pub max_steps: Option<usize>,
}

impl Pipeline {
    pub fn new(passes: Vec<Box<dyn Pass>>) -> Self {
        Pipeline {
            passes,
            max_iterations: 8,
            context: Context::default(),
            dump_dir: None,
            max_steps: None,
        }
    }

    pub fn run(&self, g: &mut Graph, on: &mut dyn FnMut(Event)) -> Result<Vec<Report>> {
        g.validate().map_err(|reason| Error::Validation {
            stage: "loading".into(),
            reason,
        })?;
        if let Some(dir) = &self.dump_dir {
            std::fs::create_dir_all(dir).map_err(|cause| Error::Write {
                path: dir.clone(),
                cause,
            })?;
            self.dump(dir, 0, "input", g)?;
        }
        let mut reports = Vec::new();
        let mut step = 0;
        // The graph as it was before the running pass, to restore if the pass fails. Taken
        // again only after a pass changed the graph: a pass that reports no change has left
        // it as it was, so the copy stays good, and on a 2 MB model copying (and dropping) the
        // graph before each of ~60 pass runs was half the compile time (measured with perf).
        let mut snapshot: Option<Graph> = None;
        for iteration in 1..=self.max_iterations {
            let mut any = false;
            for p in &self.passes {
                if self.max_steps.is_some_and(|m| step >= m) {
                    return Ok(reports);
                }
                step += 1;
                on(Event::Start {
                    step,
                    pass: p.name(),
                });
                let before = snapshot.get_or_insert_with(|| g.clone());
                let ops_before = g.num_ops();
                let t0 = std::time::Instant::now();
                let result = p.run(g, &self.context).and_then(|o| {
                    g.fix_output_names();
                    g.validate()
                        .map(|_| o)
                        .map_err(|e| format!("left an invalid graph: {e}"))
                });
                let (status, details) = match result {
                    Ok(Outcome::Changed(lines)) => {
                        any = true;
                        snapshot = None;
                        (Status::Changed, lines)
                    }
                    Ok(Outcome::Unchanged) => (Status::Unchanged, vec![]),
                    Ok(Outcome::NotApplicable(why)) => (Status::NotApplicable, vec![why]),
                    Err(reason) => {
                        *g = before.clone();
                        if self.context.strict {
                            return Err(Error::Pass {
                                pass: p.name().into(),
                                reason,
                            });
                        }
                        (Status::RolledBack, vec![reason])
                    }
                };
                let report = Report {
                    step,
                    iteration,
                    pass: p.name().into(),
                    status,
                    details,
                    ops_before,
                    ops_after: g.num_ops(),
                    millis: t0.elapsed().as_secs_f64() * 1e3,
                };
                if status == Status::Changed {
                    if let Some(dir) = &self.dump_dir {
                        self.dump(dir, step, p.name(), g)?;
                    }
                }
                if status == Status::Changed {
                    // A rewrite reads the input's weights it replaces (folding BatchNorm reads
                    // every Conv weight); those pages of the model's map would stay resident
                    // until the map goes. Pages read again later come back from the page cache.
                    crate::load::release_mapped_pages();
                }
                crate::phases::end(&report.pass);
                on(Event::Done(&report));
                reports.push(report);
            }
            if !any {
                break;
            }
        }
        // A DETR pass that never applied in any round is what --strict is about; passing
        // "not applicable" in round 2 after doing its job in round 1 is normal.
        if self.context.strict {
            for p in self.passes.iter().filter(|p| p.detr_specific()) {
                let mine = reports.iter().filter(|r| r.pass == p.name());
                let mut why = None;
                let mut applied = false;
                for r in mine {
                    applied |= matches!(r.status, Status::Changed | Status::Unchanged);
                    if r.status == Status::NotApplicable && why.is_none() {
                        why = r.details.first().cloned();
                    }
                }
                if !applied {
                    if let Some(why) = why {
                        return Err(Error::Pass {
                            pass: p.name().into(),
                            reason: format!("not applicable (--strict): {why}"),
                        });
                    }
                }
            }
        }
        Ok(reports)
    }

    fn dump(&self, dir: &std::path::Path, step: usize, name: &str, g: &Graph) -> Result<()> {
        let path = dir.join(format!("{step:03}-{name}.ir"));
        crate::emit::atomic::write_bytes(&path, g.dump().as_bytes())
    }
}
