#!/usr/bin/env bash
# What the GPU machine lacks, for bench/gpu.py, into .gpu_carry/ (git-ignored; the device tool's `carry` takes it).
#
# The GPU machine has no network; it has Python 3.12, torch 2.11 (CUDA 13), transformers 5.17, accelerate 1.15, peft,
# pyarrow, pandas and xxhash, and lacks trl, datasets, bitsandbytes, unsloth and unsloth_zoo (../shared/RESEARCH.md).
# Run here, in the repository root, with the package index reachable:
#     bash bench/gpu_carry.sh
# then on the GPU machine, with carry [".gpu_carry"]:
#     python bench/gpu.py --carry .gpu_carry --budget 480 --out $OUT/gpu.json
# The wheels are unpacked and stripped to what runs (Unsloth's web app `studio/`, bitsandbytes' libraries for other
# CUDA versions), their .dist-info kept (Unsloth reads unsloth_zoo's version from it), and packed into site.tgz,
# which must stay under the carry's 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
rm -rf "$CARRY"
mkdir -p "$CARRY/wheels" "$CARRY/site"
PLATFORM="--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
# The versions of requirements.txt / requirements-gpu.txt, and the small dependencies the machine lacks (datasets'
# dill and multiprocess at the versions datasets 4.8.5 takes; math-verify's parsers; psutil for Unsloth).
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps $PLATFORM -d "$CARRY/wheels" \
  unsloth==2026.10.7 unsloth-zoo==2026.10.7 trl==1.14.2 datasets==4.8.5 peft==0.21.2 bitsandbytes==0.50.2 \
  gguf==0.19.0 dill==0.4.1 multiprocess==0.70.19 math-verify==0.9.0 latex2sympy2_extended==1.11.0 \
  antlr4-python3-runtime==4.13.2 psutil
for wheel in "$CARRY"/wheels/*.whl; do
  python3 -m zipfile -e "$wheel" "$CARRY/site"
done
rm -rf "$CARRY/site/studio" "$CARRY/site/unsloth_cli" "$CARRY/wheels"
find "$CARRY/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*cuda130*' ! -name '*cuda132*' -delete
find "$CARRY/site" -name '__pycache__' -type d -prune -exec rm -rf {} +
(cd "$CARRY" && tar czf site.tgz site && rm -rf site)
size=$(stat -c %s "$CARRY/site.tgz")
echo "$CARRY/site.tgz: $((size / 1024 / 1024)) MiB"
if [ "$size" -ge $((60 * 1024 * 1024)) ]; then
  echo "error: $CARRY/site.tgz is over 60 MiB; the device tool carries at most 64 MiB in all" >&2
  exit 2
fi
