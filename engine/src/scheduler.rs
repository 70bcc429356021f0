//! The scheduler: evaluates every day from the watermark to the day due, in order, each day
//! in one store transaction; re-evaluates today after a new ingest. Idempotent by decision
//! key, so crashes, re-runs and concurrent instances are harmless.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use tokio::sync::watch;

use crate::calendar;
use crate::catalogue::RuleSet;
use crate::clock::Clock;
use crate::eval::{evaluate_day, RuleFailure};
use crate::population::{DataErrors, Population};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored population is invalid:\n{0}")]
    Population(DataErrors),
    #[error("evaluation task failed: {0}")]
    Task(String),
}

/// What one evaluated day gave.
#[derive(Debug, Clone)]
pub struct DayReport {
    pub day: NaiveDate,
    pub decisions: usize,
    pub inserted: usize,
    pub already_decided: usize,
    pub failures: Vec<RuleFailure>,
}

pub struct Scheduler {
    pub store: Store,
    pub rules: Arc<RuleSet>,
    pub clock: Arc<dyn Clock>,
    /// Local (Asia/Tokyo) time of the daily run.
    pub tick: NaiveTime,
    /// First day to evaluate when the store has no watermark yet (default: the day due).
    pub start: Option<NaiveDate>,
    /// How often `run` looks for new ingests.
    pub poll: Duration,
}

impl Scheduler {
    /// Builds the population from the stored residents and events.
    pub async fn population(&self) -> Result<Population, SchedulerError> {
        let residents = self.store.residents().await?;
        let events = self.store.events().await?;
        let lines = vec![0; residents.len()];
        Population::build(residents, &lines, "store", events).map_err(SchedulerError::Population)
    }

    /// The day whose notices are due now: today once the daily run time has passed.
    pub fn due_day(&self) -> NaiveDate {
        let now = self.clock.now();
        let today = now.date_naive();
        if now.time() >= self.tick {
            today
        } else {
            calendar::add_days(today, -1)
        }
    }

    /// Evaluates and commits one day (again, if it was done before: nothing is decided twice).
    pub async fn run_day(
        &self,
        pop: Arc<Population>,
        day: NaiveDate,
    ) -> Result<DayReport, SchedulerError> {
        // Every decision names the rule-set version that made it.
        self.store
            .record_rule_set(
                &self.rules.version,
                self.rules.rules().len(),
                &self.rules.dir.display().to_string(),
                self.clock.now(),
            )
            .await?;
        let rules = self.rules.clone();
        let result = tokio::task::spawn_blocking(move || evaluate_day(&rules, &pop, day))
            .await
            .map_err(|e| SchedulerError::Task(e.to_string()))?;
        for f in &result.failures {
            tracing::warn!(rule = %f.rule, resident = %f.resident, file = %f.file, line = f.line, field = %f.field, "rule failed: {}", f.message);
        }
        let commit = self
            .store
            .commit_day(
                day,
                &self.rules.version,
                &result.decisions,
                self.clock.now(),
            )
            .await?;
        tracing::info!(%day, decisions = result.decisions.len(), inserted = commit.inserted, already = commit.already_decided, "day committed");
        Ok(DayReport {
            day,
            decisions: result.decisions.len(),
            inserted: commit.inserted,
            already_decided: commit.already_decided,
            failures: result.failures,
        })
    }

    /// Evaluates every day after the watermark up to `until`, in order.
    pub async fn catch_up(
        &self,
        until: NaiveDate,
        mut on_day: impl FnMut(&DayReport),
    ) -> Result<Vec<DayReport>, SchedulerError> {
        let from = match self.store.watermark().await? {
            Some(w) => calendar::add_days(w, 1),
            None => self.start.unwrap_or(until),
        };
        let mut reports = Vec::new();
        if from > until {
            return Ok(reports);
        }
        let pop = Arc::new(self.population().await?);
        let mut day = from;
        while day <= until {
            let r = self.run_day(pop.clone(), day).await?;
            on_day(&r);
            reports.push(r);
            day = calendar::add_days(day, 1);
        }
        Ok(reports)
    }

    /// The long-running service: catch up, then wait for the next daily run or a new ingest
    /// (which re-evaluates today), until `shutdown` turns true. Work in flight finishes first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), SchedulerError> {
        let mut seen_batch = self.store.latest_batch().await?;
        loop {
            let due = self.due_day();
            self.catch_up(due, |_| {}).await?;
            let batch = self.store.latest_batch().await?;
            if batch != seen_batch {
                seen_batch = batch;
                let pop = Arc::new(self.population().await?);
                self.run_day(pop, due).await?;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                tracing::info!("scheduler stopped");
                return Ok(());
            }
        }
    }
}
