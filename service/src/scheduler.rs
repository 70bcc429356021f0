//! The scheduler: evaluates every day from the watermark to the day due, in order, each day
//! in one store transaction; re-evaluates today after a new ingest. Idempotent by decision
//! key, so crashes, re-runs and concurrent instances are harmless.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use tokio::sync::watch;

use oshirase_engine::calendar;
use oshirase_engine::catalogue::RuleSet;
use oshirase_engine::clock::Clock;
use oshirase_engine::eval::{evaluate_run, Decision, DecisionKey, RuleFailure};
use oshirase_engine::population::{DataErrors, Population};
use oshirase_store::{DayCommit, Store, StoreError};

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
    /// The register batch the run read.
    pub register_batch: i64,
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
    /// How a day rides out store errors (the database restarting, its primary moving to the
    /// standby): the day is one transaction, so it is run again whole after the wait.
    pub store_retry: crate::outbox::StoreRetry,
    /// The register as of an ingest batch, kept between runs: after a new ingest only what it
    /// wrote is read, so an event costs the size of the change, not of the register.
    register: tokio::sync::Mutex<Option<(i64, Arc<Population>)>>,
    /// The last day run, the register batch recorded for it and the keys stored for it:
    /// running it again after an ingest writes only the decisions the change brought.
    decided: std::sync::Mutex<Option<(NaiveDate, i64, HashSet<DecisionKey>)>>,
    /// The rule-set version already recorded in the store.
    recorded_rule_set: std::sync::Mutex<Option<String>>,
    /// Whether the store holds rule failures from this process's last run (unknown until the
    /// first): a run without failures after one without needs no write.
    failures_stored: std::sync::Mutex<Option<bool>>,
}

impl Scheduler {
    /// A scheduler running daily at 06:00 Tokyo time, starting at the day due, looking for
    /// new ingests every 10 seconds.
    pub fn new(store: Store, rules: Arc<RuleSet>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            rules,
            clock,
            tick: NaiveTime::from_hms_opt(6, 0, 0).expect("a valid time"),
            start: None,
            poll: Duration::from_secs(10),
            store_retry: crate::outbox::StoreRetry::default(),
            register: tokio::sync::Mutex::new(None),
            decided: std::sync::Mutex::new(None),
            recorded_rule_set: std::sync::Mutex::new(None),
            failures_stored: std::sync::Mutex::new(None),
        }
    }

    /// The register as stored now: read whole the first time, then brought up to date with
    /// the records and events later ingest batches wrote.
    pub async fn register(&self) -> Result<Arc<Population>, SchedulerError> {
        Ok(self.register_at().await?.1)
    }

    /// `register`, with the newest ingest batch it includes.
    async fn register_at(&self) -> Result<(i64, Arc<Population>), SchedulerError> {
        let mut cached = self.register.lock().await;
        let latest = self.store.latest_batch().await?;
        if let Some((batch, pop)) = cached.as_mut() {
            if *batch == latest {
                return Ok((latest, pop.clone()));
            }
            let changes = self.store.register_changes(*batch, latest).await?;
            // Copies the register only if a caller still holds the old version.
            match Arc::make_mut(pop).apply(changes.residents, changes.events) {
                Ok(()) => {
                    *batch = latest;
                    return Ok((latest, pop.clone()));
                }
                // Read it whole below, which reports the problem with its context.
                Err(e) => tracing::warn!("re-reading the whole register: {e}"),
            }
        }
        *cached = None;
        let residents = self.store.residents().await?;
        let events = self.store.events().await?;
        let lines = vec![0; residents.len()];
        let pop = Arc::new(
            Population::build(residents, &lines, "store", events)
                .map_err(SchedulerError::Population)?,
        );
        *cached = Some((latest, pop.clone()));
        Ok((latest, pop))
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

    /// Evaluates and commits one day on the register as stored now (again, if it was done
    /// before: nothing is decided twice). Events stored after the last run read the register
    /// are due now if their day has passed: an ingest that comes after its day's run, or
    /// while the service is down, loses nothing.
    pub async fn run_day(&self, day: NaiveDate) -> Result<DayReport, SchedulerError> {
        let (batch, pop) = self.register_at().await?;
        let arrivals = match self.store.evaluated_batch().await? {
            Some(seen) if seen < batch => self.store.arrivals(seen, batch).await?,
            // Before the first run nothing was missed: the register is where it starts.
            _ => Vec::new(),
        };
        // Every decision names the rule-set version that made it.
        let version = &self.rules.version;
        let recorded = self.recorded_rule_set.lock().expect("not poisoned").clone();
        if recorded.as_ref() != Some(version) {
            self.store
                .record_rule_set(
                    version,
                    self.rules.rules().len(),
                    &self.rules.dir.display().to_string(),
                    self.clock.now(),
                )
                .await?;
            *self.recorded_rule_set.lock().expect("not poisoned") = Some(version.clone());
        }
        let rules = self.rules.clone();
        let result =
            tokio::task::spawn_blocking(move || evaluate_run(&rules, &pop, day, &arrivals))
                .await
                .map_err(|e| SchedulerError::Task(e.to_string()))?;
        for f in &result.failures {
            tracing::warn!(rule = %f.rule, resident = %f.resident, file = %f.file, line = f.line, field = %f.field, "rule failed: {}", f.message);
        }
        // Decisions this scheduler stored for the day already (a run of the same day before
        // an ingest) need no round trip; the store still refuses any other repeat.
        let fresh: Vec<&Decision> = {
            let decided = self.decided.lock().expect("not poisoned");
            match decided.as_ref() {
                Some((d, _, keys)) if *d == day => result
                    .decisions
                    .iter()
                    .filter(|x| !keys.contains(&x.key))
                    .collect(),
                _ => result.decisions.iter().collect(),
            }
        };
        let known = result.decisions.len() - fresh.len();
        let fresh_keys: Vec<DecisionKey> = fresh.iter().map(|x| x.key.clone()).collect();
        let recorded_batch = {
            let decided = self.decided.lock().expect("not poisoned");
            decided
                .as_ref()
                .filter(|(d, _, _)| *d == day)
                .map(|(_, b, _)| *b)
        };
        let commit = if fresh.is_empty() && known > 0 && recorded_batch == Some(batch) {
            DayCommit::default()
        } else {
            self.store
                .commit_day(day, &self.rules.version, batch, fresh, self.clock.now())
                .await?
        };
        {
            let mut decided = self.decided.lock().expect("not poisoned");
            if decided.as_ref().map(|(d, _, _)| *d) != Some(day) {
                *decided = Some((day, batch, HashSet::new()));
            }
            if let Some((_, b, keys)) = decided.as_mut() {
                *b = batch;
                keys.extend(fresh_keys);
            }
        }
        // The staff console lists the last run's failures; most days there are none to
        // replace with none, and the day's run takes no extra write.
        let stored = *self.failures_stored.lock().expect("not poisoned");
        if stored != Some(false) || !result.failures.is_empty() {
            self.store
                .record_rule_failures(day, &result.failures, self.clock.now())
                .await?;
            *self.failures_stored.lock().expect("not poisoned") = Some(!result.failures.is_empty());
        }
        let already_decided = commit.already_decided + known;
        tracing::info!(%day, decisions = result.decisions.len(), inserted = commit.inserted, already = already_decided, "day committed");
        Ok(DayReport {
            day,
            register_batch: batch,
            decisions: result.decisions.len(),
            inserted: commit.inserted,
            already_decided,
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
        let mut day = from;
        while day <= until {
            let r = self.run_day_retrying(day).await?;
            on_day(&r);
            reports.push(r);
            day = calendar::add_days(day, 1);
        }
        Ok(reports)
    }

    /// `run_day`, run again after a store error with `store_retry`'s waits, up to its limit.
    /// A failed try wrote nothing (the day commits in one transaction; what it reads is kept
    /// only after a commit), and a commit whose answer was lost is found done: decisions and
    /// outbox rows are keyed, so none is written twice.
    async fn run_day_retrying(&self, day: NaiveDate) -> Result<DayReport, SchedulerError> {
        let mut failures = 0;
        loop {
            match self.run_day(day).await {
                Err(SchedulerError::Store(e))
                    if failures + 1 < self.store_retry.give_up_after.max(1) =>
                {
                    failures += 1;
                    let wait = self.store_retry.wait(failures);
                    tracing::warn!(%day, error = %e, ?wait, "store error: the day will be run again");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// The long-running service: catch up, then wait for the next daily run or a new ingest
    /// (which re-evaluates today), until `shutdown` turns true. Work in flight finishes first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), SchedulerError> {
        // The register is read whole now, at start, not when the first event arrives. Batches
        // no run has read yet (ingested while the service was down) make the day due run again.
        self.register_at().await?;
        let mut seen_batch = self.store.evaluated_batch().await?.unwrap_or(0);
        loop {
            let due = self.due_day();
            if let Some(last) = self.catch_up(due, |_| {}).await?.last() {
                seen_batch = last.register_batch;
            }
            let (batch, _) = self.register_at().await?;
            if batch != seen_batch {
                seen_batch = batch;
                self.run_day_retrying(due).await?;
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
