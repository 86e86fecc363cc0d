#!/usr/bin/env bash
# The design-space benchmark in one lease of a lent GPU machine (one H200, 16 cores, python3 with torch
# and CUDA, no package registry): the project's packages that machine lacks travel as wheels in .whl/
# (diffusers, pydantic, dask + distributed for --jobs, and their small dependencies, downloaded for cp312
# with `pip download`).
#
#   1. speed: three configurations alone on the GPU, 3 epochs each (per-epoch rollout / update rates);
#   2. the table: every configuration and swept rate on 3 seeds at once (--jobs 33 --eager), all under
#      one deadline, so every run gets the same wall clock on the same shared GPU.
#
# Writes speed.log, full.log and full/ (runs.csv, lr_sweep.csv, summary.md, plots) under $OUT.
# The whole script ends within END seconds (default 560) of its start.
set -euo pipefail
OUT=${OUT:-build/gpu}
END=${END:-560}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, diffusers, transformers, os; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), os.cpu_count(), 'cores')"

python3 bench/design_space.py --device cuda --configs elbo/epg/dpm2,trajectory/grpo/flow_sde,nft/dpm2 --seeds 1 \
  --no-sweep --budget inf --max-epochs 3 --eval-every 3 --out /tmp/speed 2>&1 | tee "$OUT/speed.log"

# Runs stop starting epochs at the deadline; then a last evaluation each, the summary and the plots.
deadline=$((END - SECONDS - 90))
echo "full run: deadline ${deadline}s"
timeout $((END - SECONDS)) python3 bench/design_space.py --device cuda --jobs 33 --eager --seeds 3 --budget inf \
  --deadline "$deadline" --eval-every 4 --target 0.3 --out "$OUT/full" 2>&1 | tee "$OUT/full.log"
