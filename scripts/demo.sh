#!/usr/bin/env bash
# The seed documents' flow on the bundled MNIST example, with `az ml` replaced by `bepbuild`.
# Needs the venv and a Docker engine (`make demo` sets up both).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BEPBUILD=${BEPBUILD:-$ROOT/.venv/bin/bepbuild}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
cd "$ROOT/examples/mnist"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$*"; "$@"; }

run "$BEPBUILD" compute create -n batch-cluster --type amlcompute --min-instances 0 --max-instances 5 -o none
ENDPOINT_NAME="mnist-batch"
run "$BEPBUILD" batch-endpoint create --file endpoint.yml --name "$ENDPOINT_NAME" -o table
run "$BEPBUILD" model create --name mnist-classifier-torch --type custom_model --path deployment-torch/model \
  --query "{name: name, version: version}" -o table
run "$BEPBUILD" batch-deployment create --file deployment-torch/deployment.yml --endpoint-name "$ENDPOINT_NAME" \
  --set-default --query "{name: name, image: image, built: built, seconds: seconds}" -o table
run "$BEPBUILD" batch-deployment show --name mnist-torch-dpl --endpoint-name "$ENDPOINT_NAME" \
  --query "{name: name, model: model, image: image, settings: settings}" -o yaml
step "JOB_NAME=\$($BEPBUILD batch-endpoint invoke --name $ENDPOINT_NAME --input sample --input-type uri_folder --query name -o tsv)"
JOB_NAME=$("$BEPBUILD" batch-endpoint invoke --name "$ENDPOINT_NAME" --input sample --input-type uri_folder \
  --query name -o tsv)
echo "$JOB_NAME"
run "$BEPBUILD" job show -n "$JOB_NAME" --query "{name: name, status: status, counts: counts, output: output_file}" -o yaml
OUTPUT=$("$BEPBUILD" job show -n "$JOB_NAME" --query output_file -o tsv)
step "predictions ($OUTPUT), read as the Azure examples do"
"$PYTHON" - "$OUTPUT" sample-labels.csv <<'PY'
import sys
import pandas as pd

pred = pd.read_csv(sys.argv[1], header=None, names=["file", "class", "probability"], sep=" ")
labels = pd.read_csv(sys.argv[2])
both = pred.merge(labels, on="file")
print(pred.head(10).to_string(index=False))
print(f"... {len(pred)} rows; accuracy against the true labels: {(both['class'] == both['label']).mean():.3f}")
PY
