//! `[[workflows]]`: multi-step runs across agents. Each step asks one agent with
//! a prompt template; a step that names another step's answer runs after it, and
//! steps whose inputs are ready run at the same time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::reliability::millis;
use super::{Config, ConfigError};
use crate::template::{self, Piece, Placeholder};

/// One workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowConfig {
    /// Its name, in the URL (`/v1/workflows/{name}/runs`).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The values a caller must give.
    pub inputs: Vec<String>,
    /// The longest a whole run may take.
    pub timeout: Duration,
    /// Its steps, in configuration order.
    pub steps: Vec<StepConfig>,
}

/// One step of a workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct StepConfig {
    /// Unique within the workflow.
    pub id: String,
    /// The agent that answers (its configured name).
    pub agent: String,
    /// An optional system message.
    pub system: Option<String>,
    /// The prompt template, parsed.
    pub prompt: Vec<Piece>,
    /// `max_tokens` of the request, if set.
    pub max_tokens: Option<u32>,
    /// `temperature` of the request, if set.
    pub temperature: Option<f64>,
    /// The longest this step may take.
    pub timeout: Duration,
    /// A required step that fails fails the run and skips its dependents; an
    /// optional one leaves `(not available)` where its answer was asked for.
    pub required: bool,
    /// Steps that must finish first: those its prompt names, and `after`.
    pub depends_on: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default = "default_run_timeout")]
    timeout_ms: u64,
    #[serde(default)]
    steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: String,
    agent: String,
    prompt: String,
    system: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    #[serde(default = "default_step_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_required")]
    required: bool,
    #[serde(default)]
    after: Vec<String>,
}

fn default_run_timeout() -> u64 {
    600_000
}

fn default_step_timeout() -> u64 {
    300_000
}

fn default_required() -> bool {
    true
}

/// Parses the raw tables: keys, templates and time limits. References between
/// steps, agents and cycles are checked by [`check`], over the whole config.
pub(super) fn validate(
    raw: Vec<RawWorkflow>,
    source: &str,
) -> Result<Vec<WorkflowConfig>, ConfigError> {
    raw.into_iter()
        .enumerate()
        .map(|(w, workflow)| {
            let key = |field: &str| format!("workflows[{w}].{field}");
            let timeout = millis(source, key("timeout_ms"), workflow.timeout_ms)?;
            let steps = workflow
                .steps
                .into_iter()
                .enumerate()
                .map(|(s, step)| {
                    let key = |field: &str| format!("workflows[{w}].steps[{s}].{field}");
                    let prompt = template::parse(&step.prompt)
                        .map_err(|problem| ConfigError::new(source, key("prompt"), problem))?;
                    if let Some(t) = step.temperature
                        && !(0.0..=2.0).contains(&t)
                    {
                        return Err(ConfigError::new(
                            source,
                            key("temperature"),
                            "expected 0 to 2",
                        ));
                    }
                    let mut depends_on: Vec<String> = prompt
                        .iter()
                        .filter_map(|piece| match piece {
                            Piece::Placeholder(Placeholder::Step(id)) => Some(id.clone()),
                            _ => None,
                        })
                        .chain(step.after)
                        .collect();
                    depends_on.sort();
                    depends_on.dedup();
                    Ok(StepConfig {
                        timeout: millis(source, key("timeout_ms"), step.timeout_ms)?,
                        id: step.id,
                        agent: step.agent,
                        system: step.system,
                        prompt,
                        max_tokens: step.max_tokens,
                        temperature: step.temperature,
                        required: step.required,
                        depends_on,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(WorkflowConfig {
                name: workflow.name,
                description: workflow.description,
                inputs: workflow.inputs,
                timeout,
                steps,
            })
        })
        .collect()
}

/// Names are usable and unique; every step's agent exists (names ignore case);
/// every placeholder names an input or another step; and no step depends on
/// itself, directly or not.
pub(super) fn check(config: &Config, source: &str) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for (w, workflow) in config.workflows.iter().enumerate() {
        let key = |field: String| format!("workflows[{w}].{field}");
        let is_name = |n: &str| {
            (1..=64).contains(&n.len())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        };
        if !is_name(&workflow.name) {
            return Err(ConfigError::new(
                source,
                key("name".into()),
                "expected 1-64 letters, digits, `-` or `_`",
            ));
        }
        if !names.insert(workflow.name.clone()) {
            let problem = format!("`{}` is used by another workflow", workflow.name);
            return Err(ConfigError::new(source, key("name".into()), problem));
        }
        if workflow.steps.is_empty() {
            return Err(ConfigError::new(
                source,
                key("steps".into()),
                "expected at least one step",
            ));
        }
        let ids: BTreeSet<&str> = workflow.steps.iter().map(|s| s.id.as_str()).collect();
        if ids.len() != workflow.steps.len() || workflow.steps.iter().any(|s| !is_name(&s.id)) {
            return Err(ConfigError::new(
                source,
                key("steps".into()),
                "step ids must be unique, 1-64 letters, digits, `-` or `_`",
            ));
        }
        let inputs: BTreeSet<&str> = workflow.inputs.iter().map(String::as_str).collect();
        for (s, step) in workflow.steps.iter().enumerate() {
            let at = |field: &str| key(format!("steps[{s}].{field}"));
            if config.agent(&step.agent).is_none() {
                let problem = format!("no agent is named `{}`", step.agent);
                return Err(ConfigError::new(source, at("agent"), problem));
            }
            for piece in &step.prompt {
                if let Piece::Placeholder(Placeholder::Input(name)) = piece
                    && !inputs.contains(name.as_str())
                {
                    let problem = format!(
                        "`{{{{input.{name}}}}}` is not among the workflow's inputs ({})",
                        workflow.inputs.join(", ")
                    );
                    return Err(ConfigError::new(source, at("prompt"), problem));
                }
            }
            for dependency in &step.depends_on {
                if dependency == &step.id || !ids.contains(dependency.as_str()) {
                    let problem = format!(
                        "step `{}` waits for `{dependency}`, which is not another step of `{}`",
                        step.id, workflow.name
                    );
                    return Err(ConfigError::new(source, at("prompt"), problem));
                }
            }
        }
        if let Some(step) = in_a_cycle(&workflow.steps) {
            let problem = format!(
                "step `{step}` of `{}` depends on itself through other steps",
                workflow.name
            );
            return Err(ConfigError::new(source, key("steps".into()), problem));
        }
    }
    Ok(())
}

/// A step on a dependency cycle, if there is one.
fn in_a_cycle(steps: &[StepConfig]) -> Option<String> {
    let deps: BTreeMap<&str, &[String]> = steps
        .iter()
        .map(|s| (s.id.as_str(), s.depends_on.as_slice()))
        .collect();
    // Repeatedly remove steps whose dependencies are all removed.
    let mut left: BTreeSet<&str> = deps.keys().copied().collect();
    loop {
        let ready: Vec<&str> = left
            .iter()
            .copied()
            .filter(|id| deps[id].iter().all(|d| !left.contains(d.as_str())))
            .collect();
        if ready.is_empty() {
            return left.first().map(|s| (*s).to_owned());
        }
        for id in ready {
            left.remove(id);
        }
    }
}
