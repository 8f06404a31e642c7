// tus-js-client uploading a file, holding its third PATCH back until a line arrives on stdin, so
// that the test can stop the server first; the client's own retries then carry the upload across.
// Usage: node tus_held.cjs <endpoint> <token> <file> '<json options>'
// Prints {"held": url} when the PATCH is held, then {"url", "methods"} (the requests in the order
// sent, retries included) on success; exits 1 with the error on failure.
"use strict";
const fs = require("fs");
const path = require("path");
const readline = require("readline");
const tus = require("tus-js-client");

const [endpoint, token, file, optionsJson] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin });
const methods = [];
let patches = 0;

const upload = new tus.Upload(fs.readFileSync(file), {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: path.basename(file) },
  // A retry every half second for a minute: a loaded machine may take many seconds to start the
  // server again, and the test should go on as soon as it is back (not at the next long backoff).
  retryDelays: Array.from({ length: 120 }, () => 500),
  ...JSON.parse(optionsJson || "{}"),
  async onBeforeRequest(req) {
    methods.push(req.getMethod());
    if (req.getMethod() === "PATCH" && ++patches === 3) {
      console.log(JSON.stringify({ held: upload.url }));
      await new Promise((resolve) => lines.once("line", resolve));
    }
  },
  onError(error) {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url, methods }));
    process.exit(0);
  },
});
upload.start();
