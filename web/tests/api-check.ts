// Type-checks hush-wasm's generated declarations (wasm/pkg/hush_wasm.d.ts) against the way
// an app uses them: `npx tsc -p tests/tsconfig.json` in .ci/run. Never run; a declaration
// that loses a type or changes a name fails the check.

import init, {
  HushClient,
  generateStorageKey,
  qrCode,
  type HushEvent,
  type Message,
  type Presence,
  type SafetyNumber,
  type Group,
  type OpenOptions,
} from "../../wasm/pkg/hush_wasm.js";

export async function example(): Promise<void> {
  await init();
  const options: OpenOptions = {
    relay: "ws://127.0.0.1:7800",
    user: "alice",
    device: 1,
    storageKey: generateStorageKey(),
  };
  const client: HushClient = await HushClient.open(options);
  client.onEvent((e: HushEvent) => {
    switch (e.type) {
      case "message": {
        const m: Message = e.message;
        const text: string | undefined = "text" in m.body ? m.body.text : undefined;
        void client.markRead(m.from.user, m.from.device, [m.id]);
        void text;
        break;
      }
      case "receipt": {
        const kind: "sent" | "delivered" | "read" = e.kind;
        void kind;
        break;
      }
      case "disconnected":
        void (e.code ?? "offline");
        break;
      default:
        break;
    }
  });
  client.start();
  const id: string = await client.sendText("bob", "hello");
  const ticks: { kind: string }[] = client.receipts(id);
  const p: Presence = await client.presence("bob");
  const numbers: SafetyNumber[] = await client.safetyNumbers("bob");
  const code: { size: number; modules: Uint8Array } = qrCode(numbers[0].scannable);
  const group: string = await client.createGroup("Weekend", ["bob", "carol"]);
  await client.sendGroupText(group, "hi all");
  await client.addToGroup(group, "dave");
  const groups: Group[] = client.groups();
  const all: Message[] = client.messages();
  const connected: boolean = client.isConnected;
  void [ticks, p, code, groups, all, connected, client.outboxLength(), client.identityKey];
  client.close();
}
