// A small typed client on the types openapi-typescript generates from openapi.yaml: it creates,
// retrieves and lists a session, reads its public view and first live-status event, and gets a
// typed error, all without a cast. scripts/api-conformance compiles it with `tsc --strict` and
// runs it against the server (CHECKOUT_BASE_URL, CHECKOUT_KEY: a test key).
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api.js";

type Session = components["schemas"]["Session"];
type CreateSessionRequest = components["schemas"]["CreateSessionRequest"];
type PublicView = components["schemas"]["PublicView"];

const baseUrl = process.env.CHECKOUT_BASE_URL ?? "http://localhost:8080";
const key = process.env.CHECKOUT_KEY;
if (key === undefined || key === "") {
  throw new Error("CHECKOUT_KEY is not set");
}

const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });

function check(condition: boolean, what: string): asserts condition {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

/** The first `session` event of the live-status stream, its data parsed. */
async function firstLiveEvent(id: string): Promise<{ event: string; view: PublicView }> {
  const { data, error, response } = await client.GET("/v1/checkout/sessions/{id}/events", {
    params: { path: { id } },
    parseAs: "stream",
  });
  check(error === undefined && response.status === 200, "the stream opens");
  check(data !== null && data !== undefined, "the stream has a body");
  const reader = data.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("\n\n")) {
    const chunk = await reader.read();
    if (chunk.done) {
      break;
    }
    text += decoder.decode(chunk.value, { stream: true });
  }
  await reader.cancel();
  const block = text.split("\n\n")[0] ?? "";
  let event = "message";
  const lines: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) {
      event = line.slice(6).trim();
    } else if (line.startsWith("data:")) {
      lines.push(line.slice(5).trimStart());
    }
  }
  const view: PublicView = JSON.parse(lines.join("\n"));
  return { event, view };
}

async function main(): Promise<void> {
  const reference = `typed-client-${Date.now()}`;
  const request: CreateSessionRequest = {
    pricing_amount: "10.50",
    pricing_currency: "USD",
    currency: "USDT",
    network: "TRON",
    success_url: "https://shop.example/success",
    cancel_url: "https://shop.example/cancel",
    client_reference_id: reference,
  };

  const created = await client.POST("/v1/checkout/sessions", {
    params: { header: { "Idempotency-Key": reference } },
    body: request,
  });
  if (created.error !== undefined) {
    throw new Error(`create: ${created.error.error.code}: ${created.error.error.message}`);
  }
  const session: Session = created.data;
  check(created.response.status === 201, "create answers 201");
  check(/^cs_[0-9a-f]{32}$/.test(session.id), "the id is cs_ + 32 hex");
  check(session.status === "Pending", "a new session is Pending");
  check(session.amount === "10.5" && session.amount_received === "0", "amounts are normalized");
  check(session.pricing.exchange_rate === "1.00000000", "USD prices at 1");
  check(session.transactions.length === 0, "no transactions yet");
  check(session.anomalies.dust === 0 && session.anomalies.unexpected === 0, "no anomalies");
  check(session.client_reference_id === reference, "the reference is echoed");

  const replayed = await client.POST("/v1/checkout/sessions", {
    params: { header: { "Idempotency-Key": reference } },
    body: request,
  });
  check(replayed.data?.id === session.id, "the same key replays the same session");
  check(replayed.response.headers.get("Idempotency-Replayed") === "true", "marked as a replay");

  const retrieved = await client.GET("/v1/checkout/sessions/{id}", {
    params: { path: { id: session.id } },
  });
  if (retrieved.error !== undefined) {
    throw new Error(`retrieve: ${retrieved.error.error.code}`);
  }
  check(retrieved.data.id === session.id && retrieved.data.pay_address === session.pay_address, "retrieve");

  const listed = await client.GET("/v1/checkout/sessions", {
    params: { query: { client_reference_id: reference, status: "Pending", page_size: 10 } },
  });
  if (listed.error !== undefined) {
    throw new Error(`list: ${listed.error.error.code}`);
  }
  check(listed.data.meta.total === 1 && listed.data.meta.total_pages === 1, "one match");
  check(listed.data.data[0]?.id === session.id, "the session is listed");

  const refused = await client.POST("/v1/checkout/sessions", {
    body: { ...request, pricing_amount: "0" },
  });
  check(refused.response.status === 400, "a zero amount is refused");
  check(refused.error?.error.code === "parameter_invalid", "parameter_invalid");
  check(refused.error?.error.param === "pricing_amount", "naming pricing_amount");

  const missing = await client.GET("/v1/checkout/sessions/{id}", {
    params: { path: { id: `cs_${"0".repeat(32)}` } },
  });
  check(missing.response.status === 404 && missing.error?.error.code === "resource_missing", "404");

  const view = await client.GET("/v1/checkout/sessions/{id}/view", {
    params: { path: { id: session.id } },
  });
  if (view.error !== undefined) {
    throw new Error(`view: ${view.error.error.code}`);
  }
  check(view.data.status === "Pending" && view.data.pay_address === session.pay_address, "the view");

  const live = await firstLiveEvent(session.id);
  check(live.event === "session", "the stream sends `session` events");
  check(live.view.status === "Pending" && live.view.amount === session.amount, "the event holds the view");

  console.log(
    `typed client: created, replayed, retrieved and listed ${session.id}; ` +
      `view and live event read; errors typed`,
  );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
