// Cross-language oracle for tests/protocol/test_value_rules.py: how ECMAScript reads the
// portable pattern dialect and writes JSON numbers. Reads one JSON request on stdin, writes
// one JSON answer on stdout:
//   {"patterns": [[pattern, [text, ...]], ...], "numbers": [x, ...], "values": [v, ...]}
//   -> {"matches": [[bool, ...], ...], "numbers": [text, ...], "lengths": [int, ...]}
"use strict";

function fullMatch(pattern, text) {
  // Patterns match the whole value: anchor the dialect pattern as a group.
  return new RegExp("^(?:" + pattern + ")$").test(text);
}

let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const request = JSON.parse(input);
  const answer = {
    matches: request.patterns.map(([pattern, texts]) => texts.map((t) => fullMatch(pattern, t))),
    numbers: request.numbers.map((x) => JSON.stringify(x)),
    // Code points of the JSON text: member order does not change the length.
    lengths: request.values.map((v) => [...JSON.stringify(v)].length),
  };
  process.stdout.write(JSON.stringify(answer));
});
