//! `TagsAgent`: the seeds' connection tags, with a message only admins receive.

use agents_runtime::prelude::*;
use serde_json::json;

// ANCHOR: tags_agent
/// Tags connections by `?role=`; `notify:<text>` and the callable `notifyAdmins` reach the
/// `admin` connections only.
#[derive(Default)]
pub struct TagsAgent;

#[agent(rename_all = "camelCase", typescript)]
impl TagsAgent {
    /// Sends `message` to every `admin` connection and returns how many got it.
    #[callable]
    fn notify_admins(&self, ctx: &mut Context<Self>, message: String) -> usize {
        let note = Message::from(message);
        ctx.get_connections(Some("admin")).filter(|admin| admin.send(note.clone()).is_ok()).count()
    }

    fn connection_tags(
        &mut self,
        _ctx: &mut Context<Self>,
        _conn: &Connection,
        conn_ctx: &ConnectionContext,
    ) -> Vec<String> {
        match conn_ctx.query("role").as_deref() {
            Some(role @ ("admin" | "moderator")) => vec![role.to_owned()],
            _ => Vec::new(),
        }
    }

    fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _conn_ctx: &ConnectionContext,
    ) -> Result<()> {
        let tags: Vec<&str> = conn.tags().iter().map(|tag| &**tag).collect();
        conn.send(json!({ "type": "tags", "id": conn.id(), "tags": tags }))?;
        Ok(())
    }

    fn on_message(
        &mut self,
        ctx: &mut Context<Self>,
        _conn: &Connection,
        message: Message,
    ) -> Result<()> {
        if let Some(text) = message.as_text().and_then(|t| t.strip_prefix("notify:")) {
            let note = Message::from(text);
            for admin in ctx.get_connections(Some("admin")) {
                admin.send(note.clone())?;
            }
        }
        Ok(())
    }
}
// ANCHOR_END: tags_agent
