// Uploads one file to a tus endpoint with tus-js-client, the way an application would.
// Usage: node tus_upload.cjs <endpoint> <token> <file> '<json options>'
// Prints {"url": ...} on success (with "terminated": bytes for the option terminateAfter); exits 1
// with the error on failure. The option "stream": true sends the file as an fs.ReadStream (with its
// size given) instead of a Buffer; "pipe": true as a plain stream (piped through a PassThrough),
// whose size is given unless uploadLengthDeferred is set. (tus-js-client 4.3 reads an fs.ReadStream
// by path and, with uploadLengthDeferred, declares a whole chunk's Content-Length for the file's
// shorter last slice, then never sends the rest: a plain stream avoids that client bug.)
"use strict";
const fs = require("fs");
const path = require("path");
const { PassThrough } = require("stream");
const tus = require("tus-js-client");

const [endpoint, token, file, optionsJson] = process.argv.slice(2);
const { stream, pipe, terminateAfter, ...extra } = JSON.parse(optionsJson || "{}");
const data = pipe
  ? fs.createReadStream(file).pipe(new PassThrough())
  : stream
    ? fs.createReadStream(file)
    : fs.readFileSync(file);
if ((stream || pipe) && !extra.uploadLengthDeferred) extra.uploadSize = fs.statSync(file).size;
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
  onChunkComplete(_chunkSize, bytesAccepted) {
    // terminateAfter: once this many bytes were acknowledged, abort and delete the upload (the
    // termination extension), as an application's "cancel" button does.
    if (terminateAfter !== undefined && bytesAccepted >= terminateAfter) {
      upload.abort(true).then(
        () => {
          console.log(JSON.stringify({ url: upload.url, terminated: bytesAccepted }));
          process.exit(0);
        },
        (error) => {
          console.error(String(error));
          process.exit(1);
        },
      );
    }
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
