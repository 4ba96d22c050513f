// Hugging Face's Rust tokenizer (npm @anush008/tokenizers) on the same corpus
// as tokenizer_bench.cc: every "text" of a JSONL file, repeated to >= MIN_MB
// megabytes, each encoded without special tokens, one thread.
// Usage: node tokenizer_bench.js TOKENIZER_JSON CORPUS_JSONL [MIN_MB]
// Reports wall-clock and CPU-time throughput (CPU time counts every thread
// of the process). Prints two JSON lines: one encode() call per text (awaited one at a time),
// and encodeBatch() over chunks of 256 texts (RAYON_NUM_THREADS=1 keeps it on
// one thread), which avoids most of the per-call JS <-> Rust overhead.
const fs = require('fs');
const { Tokenizer } = require('@anush008/tokenizers');

async function main() {
  const [tokPath, corpusPath, minMbArg] = process.argv.slice(2);
  const minMb = Number(minMbArg || 10);
  const texts = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length > 0)
    .map((l) => JSON.parse(l).text);
  const unique = texts.reduce((n, t) => n + Buffer.byteLength(t, 'utf8'), 0);
  const repeats = Math.floor((minMb * 1e6) / unique) + 1;
  let t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(tokPath);
  const loadS = Number(process.hrtime.bigint() - t0) / 1e9;

  const cpu = (since) => { const u = process.cpuUsage(since); return (u.user + u.system) / 1e6; };
  let tokens = 0;
  let cpu0 = process.cpuUsage();
  t0 = process.hrtime.bigint();
  for (let r = 0; r < repeats; r++) {
    for (const t of texts) {
      const enc = await tok.encode(t, null, { addSpecialTokens: false });
      tokens += enc.getIds().length;
    }
  }
  let secs = Number(process.hrtime.bigint() - t0) / 1e9;
  let cpuS = cpu(cpu0);
  const bytes = unique * repeats;
  console.log(JSON.stringify({ bench: 'tokenizer_encode', impl: 'hf_encode', threads: 1,
    texts: texts.length * repeats, repeats, bytes, tokens, seconds: secs,
    mb_per_s: bytes / 1e6 / secs, cpu_seconds: cpuS, cpu_mb_per_s: bytes / 1e6 / cpuS,
    load_seconds: loadS }));

  tokens = 0;
  cpu0 = process.cpuUsage();
  t0 = process.hrtime.bigint();
  for (let r = 0; r < repeats; r++) {
    for (let i = 0; i < texts.length; i += 256) {
      const encs = await tok.encodeBatch(texts.slice(i, i + 256), { addSpecialTokens: false });
      for (const e of encs) tokens += e.getIds().length;
    }
  }
  secs = Number(process.hrtime.bigint() - t0) / 1e9;
  cpuS = cpu(cpu0);
  console.log(JSON.stringify({ bench: 'tokenizer_encode', impl: 'hf_encode_batch', threads: 1,
    texts: texts.length * repeats, repeats, bytes, tokens, seconds: secs,
    mb_per_s: bytes / 1e6 / secs, cpu_seconds: cpuS, cpu_mb_per_s: bytes / 1e6 / cpuS }));
}

main().catch((e) => { console.error(e); process.exit(1); });
