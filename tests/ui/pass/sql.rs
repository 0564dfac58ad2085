use agents_runtime::prelude::*;
use serde::Deserialize;

#[derive(Default)]
struct Lab;

#[derive(Deserialize)]
struct Row {
    key: String,
    value: Option<String>,
}

#[agent]
impl Lab {
    #[callable]
    fn run(&mut self, ctx: &mut Context<Self>, key: String, limit: u32) -> Result<Vec<String>> {
        // Interpolations may borrow the context, and `{{`/`}}` are literal braces.
        let rows: Vec<Row> = sql!(
            ctx,
            "SELECT key, value FROM t WHERE key >= {key} AND name = {ctx.name()} AND v <> '{{}}' LIMIT {limit}"
        )?
        .to_array()?;
        let one: Option<i64> = sql!(ctx, "SELECT count(*) FROM t")?.one_or_none()?;
        let _ = one;
        Ok(rows.into_iter().map(|row| row.value.unwrap_or(row.key)).collect())
    }
}

fn main() {}
