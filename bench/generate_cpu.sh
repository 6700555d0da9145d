#!/usr/bin/env bash
# Tokens/s of `ssalab generate` (KV cache, greedy) for the shipped models on
# this machine's CPU: each model, prompts of about 600, 2,400 and 9,000
# tokens of the tutorial text (4x the models' training context at the end), full and sparse attention at the model's own k and block
# size, 128 new tokens (--ignore-eos, so every run decodes all of them).
#   bash bench/generate_cpu.sh [BUILD_DIR]   -> a markdown table on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}/ssalab
text=/tmp/ssalab-tutorial.txt
cat /usr/share/doc/python3.11/html/_sources/tutorial/*.txt > "$text"
echo "| model | prompt tokens | attention | prefill s | decode tokens/s |"
echo "|---|---|---|---|---|"
for model in full moba ssa; do
  for chars in 2200 9000 36000; do
    head -c "$chars" "$text" > /tmp/ssalab-prompt.txt
    for mode in full sparse; do
      flag=""; [ "$mode" = sparse ] && flag="--sparse"
      "$bin" generate "assets/models/$model" --prompt-file /tmp/ssalab-prompt.txt --max-new-tokens 128 \
        --ignore-eos --json --device cpu $flag 2>/dev/null |
        python3 -c "import json,sys; j=json.load(sys.stdin); s=j['sequences'][0]
print('| %s | %d | %s | %.3f | %.0f |' % ('$model', s['prompt_tokens'], j['attention'], j['prefill_seconds'], j['tokens_per_second']))"
    done
  done
done
