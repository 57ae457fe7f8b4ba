//! Running a workflow: steps whose dependencies have answered run at the same
//! time, each through a [`StepRunner`] (the gateway's runs a step as a chat
//! request through the router, with the chat path's routing, failover and audit).
//!
//! A required step that fails (or is skipped) skips every step that depends on
//! it; an optional one leaves `(not available)` where its answer was asked for.
//! When the run's time limit passes, the steps still running are dropped, which
//! closes their backend connections and frees the llama.cpp slots, and are
//! reported cancelled; so are they when the caller drops the run (the client went
//! away).

use std::collections::BTreeMap;
use std::future::Future;
use tokio::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use si_core::template;
use si_core::{StepConfig, WorkflowConfig};

/// What a step's agent answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepAnswer {
    /// The text.
    pub text: String,
    /// The model that answered.
    pub model: String,
    /// The backend that answered.
    pub backend: String,
    /// Prompt tokens, if reported.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, if reported.
    pub completion_tokens: Option<u64>,
}

/// Runs one step: asks `step.agent` with `prompt`.
pub trait StepRunner: Sync {
    /// The answer, or a message saying why there is none (safe to show: no
    /// prompt or answer text).
    fn run(
        &self,
        step: &StepConfig,
        prompt: String,
    ) -> impl Future<Output = Result<StepAnswer, String>> + Send;
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It answered.
    Succeeded,
    /// It failed or timed out.
    Failed,
    /// A required step it needs did not succeed.
    Skipped,
    /// The run ended (time limit) before it did.
    Cancelled,
}

/// One step's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// The step.
    pub id: String,
    /// Its agent.
    pub agent: String,
    /// How it ended.
    pub status: StepStatus,
    /// Whether the run needed it.
    pub required: bool,
    /// Its answer.
    pub output: Option<String>,
    /// Why it has none.
    pub error: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// The backend that answered.
    pub backend: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens.
    pub completion_tokens: Option<u64>,
    /// When it started, ms after the run started.
    pub started_ms: Option<f64>,
    /// When it ended, ms after the run started.
    pub ended_ms: Option<f64>,
}

impl StepReport {
    /// How long it ran, ms.
    pub fn duration_ms(&self) -> f64 {
        match (self.started_ms, self.ended_ms) {
            (Some(start), Some(end)) => end - start,
            _ => 0.0,
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every required step succeeded.
    Succeeded,
    /// A required step failed or was skipped.
    Failed,
    /// The time limit passed first.
    TimedOut,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The workflow.
    pub workflow: String,
    /// How it ended.
    pub status: RunStatus,
    /// The answer of the last step (the one no other step depends on), if there is
    /// exactly one such step and it answered.
    pub output: Option<String>,
    /// Every step, in configuration order.
    pub steps: Vec<StepReport>,
    /// From start to end, ms.
    pub wall_ms: f64,
    /// The sum of the steps' durations over the wall time: what running steps at
    /// the same time saved (1: nothing; 2: half the time).
    pub efficiency: f64,
}

/// Something that happened during a run, in the order it happened.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A step was sent to its agent.
    StepStarted {
        /// The step.
        step: String,
        /// Its agent.
        agent: String,
    },
    /// A step answered.
    StepFinished {
        /// The step.
        step: String,
        /// How long it took, ms.
        duration_ms: f64,
    },
    /// A step failed.
    StepFailed {
        /// The step.
        step: String,
        /// Why.
        error: String,
    },
    /// A step was skipped.
    StepSkipped {
        /// The step.
        step: String,
        /// Why.
        reason: String,
    },
}

/// Runs `workflow` with `inputs`, telling `progress` what happens.
pub async fn run<R: StepRunner>(
    workflow: &WorkflowConfig,
    inputs: &BTreeMap<String, String>,
    runner: &R,
    mut progress: impl FnMut(Progress),
) -> RunReport {
    let started = Instant::now();
    let since = |at: Instant| (at - started).as_secs_f64() * 1000.0;
    let mut reports: Vec<StepReport> = workflow
        .steps
        .iter()
        .map(|s| StepReport {
            id: s.id.clone(),
            agent: s.agent.clone(),
            status: StepStatus::Cancelled,
            required: s.required,
            output: None,
            error: None,
            model: None,
            backend: None,
            prompt_tokens: None,
            completion_tokens: None,
            started_ms: None,
            ended_ms: None,
        })
        .collect();
    let mut done = vec![false; workflow.steps.len()];
    let mut launched = vec![false; workflow.steps.len()];
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    let mut running = FuturesUnordered::new();
    let deadline = tokio::time::sleep(workflow.timeout);
    tokio::pin!(deadline);
    let mut timed_out = false;
    loop {
        // Settle what can be settled: skip steps whose required dependency did
        // not succeed, start those whose dependencies all finished.
        let mut changed = true;
        while changed {
            changed = false;
            for (i, step) in workflow.steps.iter().enumerate() {
                if launched[i] {
                    continue;
                }
                let deps: Vec<usize> = step
                    .depends_on
                    .iter()
                    .filter_map(|d| workflow.steps.iter().position(|s| &s.id == d))
                    .collect();
                let blocker = deps.iter().find(|&&d| {
                    done[d]
                        && reports[d].status != StepStatus::Succeeded
                        && workflow.steps[d].required
                });
                if let Some(&d) = blocker {
                    let reason =
                        format!("required step `{}` did not succeed", workflow.steps[d].id);
                    reports[i].status = StepStatus::Skipped;
                    reports[i].error = Some(reason.clone());
                    progress(Progress::StepSkipped {
                        step: step.id.clone(),
                        reason,
                    });
                    launched[i] = true;
                    done[i] = true;
                    changed = true;
                } else if deps.iter().all(|&d| done[d]) {
                    let prompt = template::render(&step.prompt, inputs, &outputs);
                    launched[i] = true;
                    reports[i].started_ms = Some(since(Instant::now()));
                    progress(Progress::StepStarted {
                        step: step.id.clone(),
                        agent: step.agent.clone(),
                    });
                    running.push(async move {
                        let answer = match tokio::time::timeout(
                            step.timeout,
                            runner.run(step, prompt),
                        )
                        .await
                        {
                            Ok(answer) => answer,
                            Err(_) => Err(format!(
                                "step `{}` did not finish within {} ms (timeout_ms)",
                                step.id,
                                step.timeout.as_millis()
                            )),
                        };
                        (i, answer)
                    });
                    changed = true;
                }
            }
        }
        if running.is_empty() {
            break;
        }
        let finished = tokio::select! {
            // An answer ready at the deadline still counts.
            biased;
            finished = running.next() => finished,
            () = &mut deadline => {
                timed_out = true;
                break;
            }
        };
        let Some((i, answer)) = finished else {
            break;
        };
        done[i] = true;
        let report = &mut reports[i];
        report.ended_ms = Some(since(Instant::now()));
        match answer {
            Ok(answer) => {
                report.status = StepStatus::Succeeded;
                report.model = Some(answer.model);
                report.backend = Some(answer.backend);
                report.prompt_tokens = answer.prompt_tokens;
                report.completion_tokens = answer.completion_tokens;
                outputs.insert(report.id.clone(), answer.text.clone());
                report.output = Some(answer.text);
                progress(Progress::StepFinished {
                    step: report.id.clone(),
                    duration_ms: report.duration_ms(),
                });
            }
            Err(error) => {
                report.status = StepStatus::Failed;
                report.error = Some(error.clone());
                progress(Progress::StepFailed {
                    step: report.id.clone(),
                    error,
                });
            }
        }
    }
    drop(running);
    let now = since(Instant::now());
    for report in reports
        .iter_mut()
        .filter(|r| r.status == StepStatus::Cancelled)
    {
        report.error = Some(if report.started_ms.is_some() {
            report.ended_ms = Some(now);
            "the run's time limit passed while it ran".into()
        } else {
            "the run's time limit passed before it started".into()
        });
    }
    finish(workflow, reports, now, timed_out)
}

fn finish(
    workflow: &WorkflowConfig,
    steps: Vec<StepReport>,
    wall_ms: f64,
    timed_out: bool,
) -> RunReport {
    let status = if timed_out {
        RunStatus::TimedOut
    } else if steps
        .iter()
        .any(|s| s.required && s.status != StepStatus::Succeeded)
    {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    let last: Vec<&StepReport> = workflow
        .steps
        .iter()
        .zip(&steps)
        .filter(|(step, _)| {
            !workflow
                .steps
                .iter()
                .any(|other| other.depends_on.contains(&step.id))
        })
        .map(|(_, report)| report)
        .collect();
    let output = match last.as_slice() {
        [only] => only.output.clone(),
        _ => None,
    };
    let busy: f64 = steps.iter().map(StepReport::duration_ms).sum();
    RunReport {
        workflow: workflow.name.clone(),
        status,
        output,
        efficiency: if wall_ms > 0.0 { busy / wall_ms } else { 0.0 },
        steps,
        wall_ms,
    }
}

#[cfg(test)]
mod tests;
