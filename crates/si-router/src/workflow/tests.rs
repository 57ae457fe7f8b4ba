use std::time::Duration;

use super::*;

/// Answers after `delay`, echoing what it was asked; fails prompts that start with
/// `fail`.
struct Echo {
    delay: Duration,
}

impl StepRunner for Echo {
    async fn run(&self, step: &StepConfig, prompt: String) -> Result<StepAnswer, String> {
        tokio::time::sleep(self.delay).await;
        if prompt.starts_with("fail") {
            return Err(format!("`{}` failed", step.id));
        }
        Ok(StepAnswer {
            text: format!("<{}: {prompt}>", step.id),
            model: "m".into(),
            backend: "b".into(),
            prompt_tokens: Some(1),
            completion_tokens: Some(2),
        })
    }
}

fn echo(millis: u64) -> Echo {
    Echo {
        delay: Duration::from_millis(millis),
    }
}

fn step(id: &str, prompt: &str, required: bool) -> StepConfig {
    let prompt = template::parse(prompt).unwrap();
    let mut depends_on: Vec<String> = prompt
        .iter()
        .filter_map(|p| match p {
            template::Piece::Placeholder(template::Placeholder::Step(id)) => Some(id.clone()),
            _ => None,
        })
        .collect();
    depends_on.dedup();
    StepConfig {
        id: id.into(),
        agent: "Chat".into(),
        system: None,
        prompt,
        max_tokens: None,
        temperature: None,
        timeout: Duration::from_secs(5),
        required,
        depends_on,
    }
}

fn workflow(steps: Vec<StepConfig>) -> WorkflowConfig {
    WorkflowConfig {
        name: "w".into(),
        description: String::new(),
        inputs: vec!["note".into()],
        timeout: Duration::from_secs(10),
        steps,
    }
}

fn inputs(note: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("note".to_owned(), note.to_owned())])
}

#[tokio::test(start_paused = true)]
async fn independent_steps_run_together_and_feed_the_last() {
    let w = workflow(vec![
        step("a", "A {{input.note}}", true),
        step("b", "B", true),
        step("c", "C", true),
        step("d", "D {{steps.a}} {{steps.b}} {{steps.c}}", true),
    ]);
    let mut events = Vec::new();
    let report = run(&w, &inputs("n"), &echo(200), |e| events.push(e)).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    // Three steps at once, then one: 400 ms on tokio's clock, not 800.
    assert!((report.wall_ms - 400.0).abs() < 5.0, "{}", report.wall_ms);
    assert!(report.efficiency > 1.9, "{}", report.efficiency);
    assert_eq!(
        report.output.as_deref(),
        Some("<d: D <a: A n> <b: B> <c: C>>")
    );
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Progress::StepStarted { step, .. } => Some(step.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["a", "b", "c", "d"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_required_step_skips_its_dependents_only() {
    let w = workflow(vec![
        step("a", "{{input.note}}", true),
        step("b", "B", true),
        step("c", "C {{steps.a}}", true),
        step("d", "D {{steps.c}}", true),
    ]);
    let report = run(&w, &inputs("fail"), &echo(10), |_| {}).await;
    assert_eq!(report.status, RunStatus::Failed);
    let status: Vec<StepStatus> = report.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        status,
        [
            StepStatus::Failed,
            StepStatus::Succeeded,
            StepStatus::Skipped,
            StepStatus::Skipped
        ]
    );
    assert!(report.steps[2].error.as_deref().unwrap().contains("`a`"));
    assert!(report.output.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_optional_step_may_fail_without_stopping_the_run() {
    let w = workflow(vec![
        step("codes", "{{input.note}}", false),
        step("summary", "S {{steps.codes}}", true),
    ]);
    let report = run(&w, &inputs("fail"), &echo(10), |_| {}).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.steps[0].status, StepStatus::Failed);
    assert_eq!(
        report.output.as_deref(),
        Some("<summary: S (not available)>")
    );
}

#[tokio::test(start_paused = true)]
async fn the_time_limit_cancels_what_is_still_running() {
    let mut w = workflow(vec![step("a", "A", true), step("b", "B {{steps.a}}", true)]);
    w.timeout = Duration::from_millis(150);
    w.steps[0].timeout = Duration::from_secs(60);
    let report = run(&w, &inputs("n"), &echo(1000), |_| {}).await;
    assert_eq!(report.status, RunStatus::TimedOut);
    assert_eq!(report.steps[0].status, StepStatus::Cancelled);
    assert!(
        report.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("while it ran")
    );
    assert!(
        report.steps[1]
            .error
            .as_deref()
            .unwrap()
            .contains("before it started")
    );
    assert!((report.wall_ms - 150.0).abs() < 5.0, "{}", report.wall_ms);
}

#[tokio::test(start_paused = true)]
async fn a_slow_step_hits_its_own_limit() {
    let mut w = workflow(vec![step("a", "A", true)]);
    w.steps[0].timeout = Duration::from_millis(50);
    let report = run(&w, &inputs("n"), &echo(1000), |_| {}).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(
        report.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("did not finish within")
    );
}
