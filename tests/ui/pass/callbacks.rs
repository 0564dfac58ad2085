//! `#[callback]` methods in every accepted form, `on_alarm`, and the generated
//! `{Agent}Callback` enum passed to `schedule`, `schedule_every` and `queue`; a private agent
//! type may have callbacks.
use std::time::Duration;

use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Job {
    name: String,
}

#[derive(Default)]
struct Planner;

#[agent]
impl Planner {
    async fn on_alarm(&mut self, ctx: &mut Context<Self>, info: AlarmInfo) -> Result<()> {
        if info.is_retry {
            ctx.storage().delete_alarm()?;
        }
        Ok(())
    }

    #[callable]
    fn plan(&mut self, ctx: &mut Context<Self>) -> Result<String> {
        ctx.schedule(Duration::from_secs(5), PlannerCallback::Tick)?;
        ctx.schedule(When::cron("0 * * * *"), PlannerCallback::Run(Job { name: "hourly".into() }))?;
        ctx.schedule_every(Duration::from_secs(60), PlannerCallback::Timed(7))?;
        ctx.queue(PlannerCallback::Later("soon".into()))?;
        ctx.queue(PlannerCallback::Tick)?;
        Ok(ctx.schedule(std::time::SystemTime::now(), PlannerCallback::Tick)?.id)
    }

    #[callback]
    fn tick(&mut self) {}

    #[callback]
    async fn run(&mut self, _ctx: &mut Context<Self>, job: Job) -> Result<()> {
        let _ = job.name;
        Ok(())
    }

    #[callback]
    fn timed(&self, _ctx: &mut Context<Self>, _n: u32, schedule: &Schedule) -> Result<(), std::io::Error> {
        let _ = &schedule.id;
        Ok(())
    }

    #[callback]
    fn later(&mut self, _text: String, item: &QueueItem) {
        let _ = &item.created_at;
    }
}

fn main() {}
