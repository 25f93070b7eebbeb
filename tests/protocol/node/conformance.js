// A dspex session-store client in Node.js, written from proto/ and docs/protocol.md alone: the
// example for client writers in other languages, and a conformance test run by
// tests/protocol/test_node_client.py against a real `dspex serve --token TOKEN`.
//
//   node conformance.js HOST:PORT TOKEN
//
// It prints one JSON object per line: {"check": NAME} for every check that passed,
// {"ready": {"session_id": ID}} once it serves the tool "node_add" (the test then calls it from
// Python and writes "done" on stdin), and {"done": {"calls": N}} at the end. Any failed check
// ends the process with exit code 1 and the reason on stderr.
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const path = require("node:path");
const readline = require("node:readline");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTO_ROOT = path.resolve(__dirname, "../../../proto");
const definition = loader.loadSync(
  ["dspex/bridge/v1/store.proto", "dspex/bridge/v1/tools.proto"],
  { includeDirs: [PROTO_ROOT], keepCase: true, longs: Number, defaults: true, oneofs: true },
);
const v1 = grpc.loadPackageDefinition(definition).dspex.bridge.v1;
const rpc = protobuf.loadSync(path.join(__dirname, "google_rpc.proto"));
const Status = rpc.lookupType("google.rpc.Status");
const ErrorInfo = rpc.lookupType("google.rpc.ErrorInfo");
const ERROR_INFO_URL = "type.googleapis.com/google.rpc.ErrorInfo";

const [address, token] = process.argv.slice(2);
const credentials = grpc.credentials.createInsecure();
const store = new v1.SessionStore(address, credentials);
const tools = new v1.ToolStore(address, credentials);

function check(name) {
  process.stdout.write(JSON.stringify({ check: name }) + "\n");
}

// -- calls ------------------------------------------------------------------------------------

/** Call metadata: the bearer token plus any dspex-* keys. */
function metadata(extra = {}, authorization = `Bearer ${token}`) {
  const md = new grpc.Metadata();
  if (authorization) md.set("authorization", authorization);
  for (const [key, value] of Object.entries(extra)) md.set(key, value);
  return md;
}

/** One unary call as a promise. */
function call(client, method, request, md = metadata()) {
  return new Promise((resolve, reject) => {
    client[method](request, md, { deadline: Date.now() + 15000 }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

/** The standard error details: google.rpc.Status holding one google.rpc.ErrorInfo. */
function errorInfo(err) {
  const raw = err.metadata.get("grpc-status-details-bin")[0];
  assert.ok(raw, `no grpc-status-details-bin on: ${err.details}`);
  const status = Status.decode(raw);
  assert.equal(status.code, err.code);
  assert.equal(status.message, err.details);
  const detail = status.details.find((d) => d.type_url === ERROR_INFO_URL);
  assert.ok(detail, "no ErrorInfo in the status details");
  const info = ErrorInfo.decode(detail.value);
  assert.equal(info.domain, "dspex");
  assert.equal(err.metadata.get("dspex-error-code")[0], info.reason);
  const details = {};
  for (const [key, text] of Object.entries(info.metadata)) details[key] = JSON.parse(text);
  return { reason: info.reason, details };
}

/** Expect the call to fail with this status and stable code; return the parsed ErrorInfo. */
async function fails(promise, status, reason) {
  try {
    await promise;
  } catch (err) {
    if (err.code === undefined) throw err;
    assert.equal(err.code, grpc.status[status], `${reason}: got status ${err.code} ${err.details}`);
    const info = errorInfo(err);
    assert.equal(info.reason, reason, err.details);
    return info;
  }
  assert.fail(`expected ${status} / ${reason}, the call succeeded`);
}

// -- values -----------------------------------------------------------------------------------

const json = (value) => ({ json: JSON.stringify(value) });

function float32Array(shape, numbers) {
  const data = Buffer.alloc(numbers.length * 4);
  numbers.forEach((x, i) => data.writeFloatLE(x, i * 4));
  return { array: { dtype: "float32", shape, data } };
}

/** The plain value of a Value message: parsed JSON, or {dtype, shape, numbers} for arrays. */
function plain(value) {
  if (value.kind === "json") return JSON.parse(value.json);
  const { dtype, shape, data } = value.array;
  assert.equal(dtype, "float32", "arrays come back with the canonical dtype name");
  const numbers = [];
  for (let i = 0; i < data.length; i += 4) numbers.push(data.readFloatLE(i));
  return { dtype, shape, numbers };
}

// -- streams ----------------------------------------------------------------------------------

/** Read a server stream message by message: next() resolves with the next one (or fails). */
function reader(stream) {
  const queue = [];
  const waiting = [];
  let failure = null;
  stream.on("data", (m) => (waiting.length ? waiting.shift().resolve(m) : queue.push(m)));
  stream.on("error", (err) => {
    failure = err;
    while (waiting.length) waiting.shift().reject(err);
  });
  return {
    next(ms = 10000) {
      if (queue.length) return Promise.resolve(queue.shift());
      if (failure) return Promise.reject(failure);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no stream message in time")), ms);
        const done = (f) => (x) => { clearTimeout(timer); f(x); };
        waiting.push({ resolve: done(resolve), reject: done(reject) });
      });
    },
    /** The next `update` event, skipping heartbeats. */
    async update() {
      for (;;) {
        const message = await this.next();
        if (message.event === "update") return message.update;
      }
    },
  };
}

// -- the checks -------------------------------------------------------------------------------

async function auth() {
  await fails(call(store, "Ping", { message: "x" }, metadata({}, "")), "UNAUTHENTICATED",
    "unauthenticated");
  await fails(call(store, "Ping", { message: "x" }, metadata({}, "Bearer wrong")),
    "UNAUTHENTICATED", "unauthenticated");
  const pong = await call(store, "Ping", { message: "hi" }, metadata({}, `bearer ${token}`));
  assert.equal(pong.message, "hi");
  check("auth");
}

async function sessions() {
  const { session_id: sid } = await call(store, "CreateSession", { session_id: "" });
  assert.ok(sid);
  const { session } = await call(store, "GetSession", { session_id: sid });
  assert.equal(session.session_id, sid);
  await call(store, "Heartbeat", { session_id: sid });
  const { sessions: all } = await call(store, "ListSessions", {});
  assert.ok(all.some((s) => s.session_id === sid));
  await fails(call(store, "GetSession", { session_id: "no-such-session" }), "NOT_FOUND",
    "session_not_found");
  check("session_lifecycle");
  return sid;
}

const TYPES = [
  ["t", "float", 0.7, { min: 0, max: 2 }],
  ["n", "integer", 3, { min: 0 }],
  ["s", "string", "abc", { pattern: "[a-z]+", max_length: 8 }],
  ["b", "boolean", true, {}],
  ["c", "choice", "x", { choices: ["x", "y"] }],
  ["m", "module", "Predict", {}],
  ["e", "embedding", [0.25, 0.5, 0.75], { dimensions: 3 }],
  ["arr", "tensor", null, { dtype: "float32", shape: [2, 2] }],
  ["j", "json", { k: [1, 2] }, { max_length: 20 }],
];

async function nineTypes(sid) {
  for (const [name, type, value, constraints] of TYPES) {
    const request = {
      session_id: sid, name, type, constraints_json: JSON.stringify(constraints),
      value: type === "tensor" ? float32Array([2, 2], [1, 2, 3, 4]) : json(value),
    };
    const { variable } = await call(store, "RegisterVariable", request);
    assert.equal(variable.version, 1);
  }
  const names = TYPES.map(([name]) => name);
  const read = await call(store, "GetVariables", { session_id: sid, names });
  assert.deepEqual(read.variables.map((v) => v.name), names);
  const revisions = read.variables.map((v) => v.revision);
  assert.ok(read.revision >= Math.max(...revisions), "GetVariables reports its read revision");
  for (const [i, [, type, value]] of TYPES.entries()) {
    const got = plain(read.variables[i].value);
    if (type === "tensor") assert.deepEqual(got, { dtype: "float32", shape: [2, 2], numbers: [1, 2, 3, 4] });
    else assert.deepEqual(got, value);
    assert.equal(read.variables[i].type, type);
  }
  check("nine_types");
}

async function invalidValues(sid) {
  const bad = await fails(call(store, "SetVariable", { session_id: sid, name: "t", value: json(5) }),
    "INVALID_ARGUMENT", "invalid_value");
  assert.equal(bad.details.name, "t");
  assert.equal(bad.details.value, 5, "details are plain JSON values, not language reprs");
  await fails(call(store, "SetVariable", { session_id: sid, name: "n", value: { json: "9223372036854775808" } }),
    "INVALID_ARGUMENT", "invalid_value");
  await fails(call(store, "SetVariable", { session_id: sid, name: "b", value: json("yes") }),
    "INVALID_ARGUMENT", "invalid_type");
  await fails(call(store, "RegisterVariable", { session_id: sid, name: "p", type: "string",
    constraints_json: JSON.stringify({ pattern: "(?<w>a)" }), value: json("a") }),
    "INVALID_ARGUMENT", "invalid_pattern");
  await fails(call(store, "GetVariable", { session_id: sid, name: "nope" }), "NOT_FOUND",
    "variable_not_found");
  check("invalid_values");
}

async function compareAndSet(sid) {
  const { variable } = await call(store, "SetVariable",
    { session_id: sid, name: "n", value: json(4), expected_version: 1 },
    metadata({ "dspex-writer": "node-client" }));
  assert.equal(variable.version, 2);
  assert.ok(variable.writer.endsWith("node-client"), variable.writer);
  const conflict = await fails(call(store, "SetVariable",
    { session_id: sid, name: "n", value: json(5), expected_version: 1 }), "ABORTED",
    "version_conflict");
  assert.equal(conflict.details.name, "n");
  check("cas_conflict");
}

async function batches(sid) {
  const failed = await call(store, "UpdateVariables", { session_id: sid, atomic: true, values: [
    { name: "t", value: json(1.5) }, { name: "n", value: json(-1) }] });
  const codes = failed.results.map((r) => (r.outcome === "error" ? r.error.code : "ok"));
  assert.deepEqual(codes, ["batch_failed", "invalid_value"]);
  const { variable: t } = await call(store, "GetVariable", { session_id: sid, name: "t" });
  assert.equal(plain(t.value), 0.7, "an atomic batch that failed applied nothing");
  const done = await call(store, "UpdateVariables", { session_id: sid, atomic: true, values: [
    { name: "t", value: json(1.5) }, { name: "n", value: json(6) }] });
  assert.deepEqual(done.results.map((r) => r.outcome), ["variable", "variable"]);
  check("batches");
}

async function history(sid) {
  const { variables } = await call(store, "GetHistory", { session_id: sid, name: "t" });
  assert.deepEqual(variables.map((v) => plain(v.value)), [0.7, 1.5]);
  const { variable } = await call(store, "RollbackVariable", { session_id: sid, name: "t", version: 1 });
  assert.equal(plain(variable.value), 0.7);
  assert.equal(variable.version, 3);
  await fails(call(store, "RollbackVariable", { session_id: sid, name: "t", version: 99 }),
    "NOT_FOUND", "version_not_found");
  check("history_rollback");
}

async function watchWithResume(sid) {
  const set = (value) => call(store, "SetVariable", { session_id: sid, name: "n", value: json(value) });
  const first = store.WatchVariables({ session_id: sid, names: ["n"] }, metadata());
  const one = reader(first);
  const started = await one.next();
  assert.equal(started.event, "started");
  await set(10);
  await set(11);
  const seen = [await one.update(), await one.update()];
  assert.deepEqual(seen.map((u) => plain(u.variable.value)), [10, 11]);
  first.cancel();
  await set(12); // written while nobody watches
  await set(13);
  const resumed = store.WatchVariables(
    { session_id: sid, names: ["n"], after_revision: seen[1].revision }, metadata());
  const two = reader(resumed);
  assert.equal((await two.next()).event, "started");
  await set(14);
  const after = [await two.update(), await two.update(), await two.update()];
  assert.deepEqual(after.map((u) => plain(u.variable.value)), [12, 13, 14], "no gap, no duplicate");
  resumed.cancel();
  check("watch_resume");
}

async function batchMarkers(sid) {
  const stream = store.WatchVariables({ session_id: sid, names: ["t", "n"] }, metadata());
  const watch = reader(stream);
  await watch.next();
  await call(store, "UpdateVariables", { session_id: sid, atomic: true, values: [
    { name: "t", value: json(0.1) }, { name: "n", value: json(1) }, { name: "c", value: json("y") }] });
  const updates = [await watch.update(), await watch.update()];
  for (const u of updates) {
    assert.ok(u.batch_first > 0 && u.batch_last === u.batch_first + 2, JSON.stringify(u));
  }
  assert.deepEqual(updates.map((u) => u.batch_end), [false, true], "last of the batch on this stream");
  stream.cancel();
  check("batch_markers");
}

async function locks(sid) {
  const owner = "node-secret-token";
  const { variable } = await call(store, "AcquireLock",
    { session_id: sid, name: "t", owner, optimizer_id: "node-optimizer", lease: 30 });
  const lock = JSON.parse(variable.lock_json);
  const digest = crypto.createHash("sha256").update(owner).digest("hex").slice(0, 32);
  assert.equal(lock.owner, digest);
  const locked = await fails(call(store, "SetVariable", { session_id: sid, name: "t", value: json(0.3) }),
    "FAILED_PRECONDITION", "locked");
  assert.equal(locked.details.name, "t");
  const mine = await call(store, "SetVariable", { session_id: sid, name: "t", value: json(0.3) },
    metadata({ "dspex-lock-owner": owner }));
  assert.equal(plain(mine.variable.value), 0.3);
  await call(store, "ReleaseLock", { session_id: sid, name: "t", owner });
  await call(store, "SetVariable", { session_id: sid, name: "t", value: json(0.4) });
  check("locks");
}

const NODE_ADD = {
  name: "node_add",
  description: "Add two numbers (in Node.js).",
  parameters_json: JSON.stringify({
    type: "object",
    properties: { a: { type: "number" }, b: { type: "number" } },
    required: ["a", "b"],
    additionalProperties: false,
  }),
};

async function serveTool(sid) {
  const owner = `node:${process.pid}:${crypto.randomBytes(4).toString("hex")}`;
  await call(tools, "RegisterTool", { session_id: sid, owner_id: owner, spec: NODE_ADD });
  const stream = tools.ServeTools({ session_id: sid, owner_id: owner }, metadata());
  let calls = 0;
  const started = new Promise((resolve, reject) => {
    stream.on("error", (err) => (err.code === grpc.status.CANCELLED ? null : reject(err)));
    stream.on("data", (message) => {
      if (message.event === "started") resolve();
      if (message.event !== "call") return;
      calls += 1;
      const { a, b } = JSON.parse(message.call.arguments_json);
      call(tools, "ReturnToolResult", { session_id: sid, owner_id: owner,
        call_id: message.call.call_id, result_json: JSON.stringify({ sum: a + b, runtime: "node" }) })
        .catch((err) => process.stderr.write(`ReturnToolResult failed: ${err.message}\n`));
    });
  });
  await started;
  return { stream, owner, calls: () => calls };
}

async function main() {
  await auth();
  const sid = await sessions();
  await nineTypes(sid);
  await invalidValues(sid);
  await compareAndSet(sid);
  await batches(sid);
  await history(sid);
  await watchWithResume(sid);
  await batchMarkers(sid);
  await locks(sid);
  const served = await serveTool(sid);
  process.stdout.write(JSON.stringify({ ready: { session_id: sid } }) + "\n");
  const input = readline.createInterface({ input: process.stdin });
  for await (const line of input) if (line.trim() === "done") break;
  input.close();
  process.stdin.destroy(); // nothing more to read: let the process end
  served.stream.cancel();
  await call(store, "CloseSession", { session_id: sid });
  await fails(call(store, "GetSession", { session_id: sid }), "FAILED_PRECONDITION", "session_closed");
  check("close_session");
  process.stdout.write(JSON.stringify({ done: { calls: served.calls() } }) + "\n");
  store.close();
  tools.close();
}

main().catch((err) => {
  process.stderr.write(`conformance check failed: ${err.stack || err}\n`);
  process.exit(1);
});
