// The reference tus server bench/compare.py measures chunkd against: @tus/server with its file store,
// as its README sets it up (no auth, no fsync), on node's own http server.
//   node server.js PORT DIRECTORY
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const [port, directory] = process.argv.slice(2);
const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
const server = http.createServer((req, res) => tus.handle(req, res));
server.keepAliveTimeout = 30000;
server.listen(Number(port), "127.0.0.1", () => console.log("listening"));
