// Uploads one file to a tus endpoint with tus-js-client, the way an application would.
// Usage: node tus_upload.cjs <endpoint> <token> <file> '<json options>'
// Prints {"url": ...} on success; exits 1 with the error on failure. The option "stream": true
// sends the file as an fs.ReadStream (with its size given) instead of a Buffer.
"use strict";
const fs = require("fs");
const path = require("path");
const tus = require("tus-js-client");

const [endpoint, token, file, optionsJson] = process.argv.slice(2);
const { stream, ...extra } = JSON.parse(optionsJson || "{}");
const data = stream ? fs.createReadStream(file) : fs.readFileSync(file);
if (stream) extra.uploadSize = fs.statSync(file).size;
let progressEvents = 0;

const upload = new tus.Upload(data, {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: path.basename(file), filetype: "application/octet-stream" },
  retryDelays: [0, 200, 500, 1000, 2000],
  removeFingerprintOnSuccess: true,
  ...extra,
  onProgress() {
    progressEvents += 1;
  },
  onError(error) {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url, progressEvents }));
    process.exit(0); // don't wait for idle keep-alive sockets
  },
});
upload.start();
