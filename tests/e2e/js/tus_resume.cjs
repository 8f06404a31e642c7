// An application that uploads with tus-js-client, remembering its uploads in a URL storage file,
// so that a restarted process can find and resume them (findPreviousUploads).
// Usage: node tus_resume.cjs <endpoint> <token> <file> <storage file> '<json>'
//   json.stopAfter: abort (as if the process quit) once this many bytes were acknowledged
//   json.resume:    look for a previous upload of the file and resume it
//   other keys are tus-js-client options (e.g. protocol, chunkSize)
// Prints {"url", "previous", "firstOffset", "stopped"} and exits 0; exits 1 with the error on failure.
"use strict";
const fs = require("fs");
const path = require("path");
const tus = require("tus-js-client");

const [endpoint, token, file, storageFile, optionsJson] = process.argv.slice(2);
const { stopAfter, resume, ...extra } = JSON.parse(optionsJson || "{}");
const data = fs.readFileSync(file);
let firstOffset = null;
let previous = 0;

const upload = new tus.Upload(data, {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: path.basename(file), filetype: "application/octet-stream" },
  retryDelays: [0, 200, 500, 1000, 2000],
  urlStorage: new tus.FileUrlStorage(storageFile),
  ...extra,
  onProgress(bytesSent) {
    if (firstOffset === null) firstOffset = bytesSent;
  },
  onChunkComplete(_chunkSize, bytesAccepted) {
    if (stopAfter !== undefined && bytesAccepted >= stopAfter) {
      upload.abort().then(() => {
        console.log(JSON.stringify({ url: upload.url, previous, firstOffset, stopped: bytesAccepted }));
        process.exit(0);
      });
    }
  },
  onError(error) {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url, previous, firstOffset, stopped: null }));
    process.exit(0);
  },
});

if (resume) {
  upload.findPreviousUploads().then((found) => {
    previous = found.length;
    if (found.length > 0) upload.resumeFromPreviousUpload(found[0]);
    upload.start();
  });
} else {
  upload.start();
}
