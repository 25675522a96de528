#!/bin/sh
# Writes the seed corpus of the data_reader fuzz target: one file per encoding and per kind
# of bad input that the reader must handle. Run from the repository root.
set -eu
d=fuzz/corpus/data_reader
mkdir -p "$d"
printf '{"prompt":"What is 2+2?","response":"4"}\n{"prompt":"Hi","response":"Hello"}\n' > "$d/lab"
printf '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}\n' > "$d/chat"
printf '{"format_version":1,"id":"0a","messages":[{"role":"user","content":"q"}],"response":"a","teacher":{"model":"m","provider":"openai","finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":1},"latency_ms":5,"created":1},"logprobs":[{"token":"a","bytes":[97],"logprob":-0.1,"top_logprobs":[{"token":"b","bytes":[98],"logprob":-2.5}]}],"split":"train","metadata":{"answer_key":"A"}}\n' > "$d/full"
printf '\357\273\277{"prompt":"bom","response":"x"}\n' > "$d/bom"
printf '{"prompt":"a","response":"b"}\n{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}\n' > "$d/mixed"
printf '{"prompt":"a","response":"b"}\n{"prompt":"c","resp' > "$d/truncated"
printf '{"prompt":"\377","response":"b"}\n' > "$d/invalid_utf8"
printf '{"prompt":"a","response":"b"}\n{"prompt":"a","response":"c"}\n' > "$d/duplicate"
printf '{"prompt":1,"response":null}\n[1,2]\n\n{"format_version":2}\r\n' > "$d/wrong_types"
