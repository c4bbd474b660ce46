// Verifies a request signed by adapters/webhook with the Standard Webhooks
// reference library (npm standardwebhooks). Usage:
//   node verify.js <secret> <id> <timestamp> <signature> < body
// Exit 0: verified; 1: refused; 2: the library is missing.
let Webhook;
try {
  ({ Webhook } = require("standardwebhooks"));
} catch (e) {
  console.error("standardwebhooks is not installed: " + e.message);
  process.exit(2);
}
const [secret, id, timestamp, signature] = process.argv.slice(2);
let body = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (c) => (body += c));
process.stdin.on("end", () => {
  try {
    new Webhook(secret).verify(body, {
      "webhook-id": id,
      "webhook-timestamp": timestamp,
      "webhook-signature": signature,
    });
    process.exit(0);
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
});
