//! `explain`: why a rule did or did not match a resident on a day, as a trace of the same
//! evaluation the daily run does.

use std::fmt;
use std::path::PathBuf;

use chrono::NaiveDate;
use serde::Serialize;

use crate::catalogue::RuleSet;
use crate::eval::{
    evaluate_subject, Decision, DecisionKey, Occasion, Outcome, RuleFailure, TraceStep,
};
use crate::ids::{ResidentId, RuleId};
use crate::population::Population;
use crate::rule::{Audience, Trigger, Validity};
use crate::trigger::{occurrences_of, Occurrence};

/// The answer to "why did (or didn't) this rule match this resident on this day?".
///
/// The rule's trigger, validity and audience are given as written, each with its words
/// beside it (`*_text`, `describe.rs`), so that a reader of the JSON has both.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub rule: RuleId,
    pub rule_version: u32,
    pub rule_file: String,
    pub rule_set_version: String,
    /// The layers of the catalogue, national first (`national`, `municipality … (133621)`).
    pub catalogue: Vec<String>,
    pub resident: ResidentId,
    pub date: NaiveDate,
    pub trigger: Trigger,
    pub trigger_text: String,
    pub valid: Validity,
    /// Every condition of the rule in words, in order, whether or not the trace reached it.
    pub conditions_text: Vec<String>,
    pub audience: Vec<Audience>,
    pub audience_text: Vec<String>,
    pub steps: Vec<TraceStep>,
    pub decision: Option<Decision>,
    pub outcome: ExplainOutcome,
    /// `outcome` as the table prints it.
    pub outcome_text: String,
}

/// How an explained evaluation ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ExplainOutcome {
    /// The rule matched and made this decision (flagged for staff when nobody can be reached).
    Match {
        key: DecisionKey,
        #[serde(skip_serializing_if = "Option::is_none")]
        staff_review: Option<String>,
    },
    /// The trigger never fires for this resident (no such event).
    NeverTriggered,
    /// The trigger fires, but the notice is due on another day.
    DueOn { day: NaiveDate },
    /// The trigger fires for this resident only outside the rule's validity: no notice was or
    /// will be due (a milestone reached before the rule began, or after it ended).
    OutsideValidity {
        occurrence: NaiveDate,
        valid: Validity,
    },
    /// The trigger fired and a step refused.
    NoMatch { reason: String },
    /// The rule failed at run time for this resident.
    Failed { failure: RuleFailure },
}

impl fmt::Display for ExplainOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExplainOutcome::Match {
                key,
                staff_review: Some(r),
            } => write!(f, "match: decision {key} flagged for staff: {r}"),
            ExplainOutcome::Match { key, .. } => write!(f, "match: decision {key}"),
            ExplainOutcome::NeverTriggered => {
                f.write_str("no match: the trigger never fires for this resident")
            }
            ExplainOutcome::DueOn { day } => {
                write!(f, "no match: the notice for this resident is due on {day}")
            }
            ExplainOutcome::OutsideValidity { occurrence, valid } => write!(
                f,
                "no match: outside the rule's validity ({}): the occurrence for this resident \
                 is {occurrence}",
                valid.describe()
            ),
            ExplainOutcome::NoMatch { reason } => write!(f, "no match: {reason}"),
            ExplainOutcome::Failed { failure } => write!(f, "error: {failure}"),
        }
    }
}

/// What cannot be explained at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("no rule {rule} in {}", dir.display())]
    NoRule { rule: RuleId, dir: PathBuf },
    #[error("no resident {resident} in the snapshot")]
    NoResident { resident: ResidentId },
}

/// Traces one rule for one resident on one day.
pub fn explain(
    rules: &RuleSet,
    pop: &Population,
    resident: &ResidentId,
    rule_id: &RuleId,
    today: NaiveDate,
) -> Result<Explanation, ExplainError> {
    let rule = rules.get(rule_id).ok_or_else(|| ExplainError::NoRule {
        rule: rule_id.clone(),
        dir: rules.dir.clone(),
    })?;
    let s = pop
        .index_of(resident)
        .ok_or_else(|| ExplainError::NoResident {
            resident: resident.clone(),
        })?;
    let mut steps = Vec::new();
    let occurrences = occurrences_of(rule, pop, s, today);
    // Only an occurrence inside the rule's validity ever has a notice: one outside it is told
    // as such, never with a notice day (a milestone reached decades before the rule began).
    let in_force: Vec<&Occurrence> = occurrences
        .iter()
        .filter(|o| rule.valid.contains(o.occurrence))
        .collect();
    let due = in_force.iter().find(|o| o.notice_day == today).copied();
    let outside = occurrences
        .iter()
        .find(|o| o.notice_day == today)
        .or(occurrences.first());
    let trigger_text = rule.trigger.describe();
    // What the trigger read: the event for an event, otherwise the birth date.
    let read = |o: &Occurrence| match &o.event {
        Some(id) => vec![("event.id".to_owned(), id.clone())],
        None => vec![(
            "subject.birth_date".to_owned(),
            pop.get(s).birth_date.to_string(),
        )],
    };
    let run = |o: &Occurrence, day: NaiveDate, trace: &mut Vec<TraceStep>| {
        let params = rules.params_for(rule, o.occurrence);
        let occasion = Occasion {
            rules,
            rule,
            pop,
            subject: s,
            occurrence: o.occurrence,
            today: day,
            event: o.event.as_deref(),
            params: &params,
        };
        evaluate_subject(&occasion, &mut Some(trace))
    };
    let mut decision = None;
    let outcome = match (due, in_force.first(), outside) {
        (None, None, None) => {
            steps.push(TraceStep {
                step: "trigger".into(),
                detail: format!("{trigger_text}: this resident has no such event"),
                passed: Some(false),
                inputs: vec![],
            });
            ExplainOutcome::NeverTriggered
        }
        (None, None, Some(o)) => {
            steps.push(TraceStep {
                step: "trigger".into(),
                detail: format!("{trigger_text}: occurrence {}", o.occurrence),
                passed: None,
                inputs: read(o),
            });
            steps.push(TraceStep {
                step: "validity".into(),
                detail: format!(
                    "occurrence {} is outside the rule's validity ({})",
                    o.occurrence,
                    rule.valid.describe()
                ),
                passed: Some(false),
                inputs: vec![],
            });
            ExplainOutcome::OutsideValidity {
                occurrence: o.occurrence,
                valid: rule.valid,
            }
        }
        (None, Some(first), _) => {
            let notice_day = first.notice_day;
            steps.push(TraceStep {
                step: "trigger".into(),
                detail: format!(
                    "{trigger_text}: occurrence {}, notice due {notice_day}, not {today}",
                    first.occurrence
                ),
                passed: Some(false),
                inputs: read(first),
            });
            // What would happen on the notice day.
            let mut rest = Vec::new();
            let _ = run(first, notice_day, &mut rest);
            for mut st in rest {
                st.step = format!("(on {notice_day}) {}", st.step);
                steps.push(st);
            }
            ExplainOutcome::DueOn { day: notice_day }
        }
        (Some(o), _, _) => {
            steps.push(TraceStep {
                step: "trigger".into(),
                detail: format!(
                    "{trigger_text}: occurrence {}, notice due {today}",
                    o.occurrence
                ),
                passed: Some(true),
                inputs: read(o),
            });
            match run(o, today, &mut steps) {
                Outcome::Decision(d) => {
                    let outcome = ExplainOutcome::Match {
                        key: d.key.clone(),
                        staff_review: d.staff_review.clone(),
                    };
                    decision = Some(*d);
                    outcome
                }
                Outcome::NotEligible(reason) => ExplainOutcome::NoMatch { reason },
                Outcome::Failed(failure) => ExplainOutcome::Failed { failure: *failure },
            }
        }
    };
    Ok(Explanation {
        rule: rule.id.clone(),
        rule_version: rule.version,
        rule_file: rule.source.file.clone(),
        rule_set_version: rules.version.clone(),
        catalogue: rules.layers.iter().map(ToString::to_string).collect(),
        resident: resident.clone(),
        date: today,
        trigger: rule.trigger,
        trigger_text,
        valid: rule.valid,
        conditions_text: rule.conditions.iter().map(|(_, c)| c.describe()).collect(),
        audience: rule.audience.clone(),
        audience_text: rule.audience.iter().map(Audience::describe).collect(),
        steps,
        decision,
        outcome_text: outcome.to_string(),
        outcome,
    })
}
