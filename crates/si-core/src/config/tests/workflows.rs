//! Workflows: the built-in ones, and the errors of bad ones.

use super::*;

#[test]
fn builtin_workflows_run_three_views_then_the_summary() {
    let config = builtin();
    let names: Vec<&str> = config.workflows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "discharge_summary",
            "prior_authorization",
            "patient_education"
        ]
    );
    let discharge = config
        .workflow("discharge_summary")
        .map(|w| w.steps.clone());
    let discharge = discharge.unwrap_or_default();
    let deps: Vec<(&str, Vec<String>, bool)> = discharge
        .iter()
        .map(|s| (s.id.as_str(), s.depends_on.clone(), s.required))
        .collect();
    assert_eq!(deps[0], ("clinical_assessment", vec![], true));
    assert_eq!(deps[2], ("billing_codes", vec![], false));
    assert_eq!(
        deps[3].1,
        [
            "billing_codes",
            "clinical_assessment",
            "medication_reconciliation"
        ]
    );
}

#[test]
fn bad_workflows_name_the_workflow_and_step() {
    let workflow = |steps: &str| {
        BUILTIN_TOML.to_owned()
            + &format!("\n[[workflows]]\nname = \"w\"\ninputs = [\"note\"]\n{steps}")
    };
    let step = |id: &str, agent: &str, prompt: &str| {
        format!(
            "\n[[workflows.steps]]\nid = \"{id}\"\nagent = \"{agent}\"\nprompt = \"{prompt}\"\n"
        )
    };
    let cases = [
        (
            step("a", "Chat", "{{steps.b}}") + &step("b", "Chat", "{{steps.a}}"),
            "depends on itself",
        ),
        (step("a", "Chat", "{{steps.zzz}}"), "waits for `zzz`"),
        (step("a", "Chat", "{{steps.a}}"), "waits for `a`"),
        (step("a", "Chat", "{{input.mrn}}"), "{{input.mrn}}"),
        (step("a", "Radiology", "x"), "no agent is named `Radiology`"),
        (step("a", "Chat", "{{patient}}"), "not a placeholder"),
        (step("a", "Chat", "x") + &step("a", "Chat", "y"), "unique"),
        (String::new(), "at least one step"),
    ];
    for (steps, wanted) in cases {
        let error = parse_err(&workflow(&steps));
        assert!(error.key.starts_with("workflows[3]"), "{error}");
        assert!(error.to_string().contains(wanted), "{wanted}: {error}");
    }
    let twice = BUILTIN_TOML.to_owned()
        + "\n[[workflows]]\nname = \"patient_education\"\n[[workflows.steps]]\nid = \"a\"\nagent = \"Chat\"\nprompt = \"x\"\n";
    assert!(
        parse_err(&twice)
            .to_string()
            .contains("used by another workflow")
    );
}
