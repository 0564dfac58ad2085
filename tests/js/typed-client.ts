// A front end typed by the declarations agents-rs generates (`generated/agents.ts`, written by
// `agents-examples typescript` or tests/tests/interop.rs), on the official AgentClient.
// Compiled with `tsc --noEmit`: the @ts-expect-error lines fail the build if the types ever
// stop being checked.
// ANCHOR: typed
import { AgentClient } from "agents/client";

import type {
  AddMcpServerResult,
  Counter,
  CounterState,
  JsonValue,
  TagsAgent,
  ToolInfo,
  Toolbox,
} from "./generated/agents";

export async function typedFrontEnd(host: string): Promise<number> {
  const counter = new AgentClient<Counter>({ agent: "counter", name: "ts", host });
  await counter.ready;
  const count: number = await counter.call("increment");
  const sum: number = await counter.stub.add(2, 3);
  const state: CounterState | undefined = counter.state;
  counter.setState({ count: count + sum });
  const last: unknown = await counter.call("streamNumbers", [3], {
    stream: { onChunk: (chunk: unknown) => console.log(chunk) },
  });
  await counter.stub.fail().catch((error: Error) => error.message);
  // ANCHOR_END: typed

  // @ts-expect-error: add takes numbers
  await counter.stub.add("2", 3);
  // @ts-expect-error: there is no such callable
  await counter.call("decrement");
  // @ts-expect-error: the state is a CounterState
  counter.setState({ count: "many" });

  const tags = new AgentClient<TagsAgent>({ agent: "tags-agent", host });
  const reached: number = await tags.stub.notifyAdmins("deploy at 5");
  // @ts-expect-error: notifyAdmins takes a string
  await tags.stub.notifyAdmins(5);

  const toolbox = new AgentClient<Toolbox>({ agent: "toolbox", name: "ts", host });
  const added: AddMcpServerResult = await toolbox.stub.addServer("tools", "https://example.com/mcp");
  const tools: ToolInfo[] = await toolbox.stub.listTools();
  const result: JsonValue = await toolbox.stub.callTool(added.id, tools[0]?.name ?? "add", { a: 1 });
  await toolbox.stub.removeServer(added.id);
  // @ts-expect-error: a state is one of the SDK's connection states
  const done: boolean = added.state === "done";
  // @ts-expect-error: addServer takes a name and a URL
  await toolbox.stub.addServer("tools");
  console.log(state, last, result, done);
  return reached;
}
